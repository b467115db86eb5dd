"""The names of the Whisper graphs' per-layer tensors: written by the converter (whisper_onnx), read by the runtime
(appliance.asr.whisper). No torch here: the appliance imports this at run time."""

from __future__ import annotations


def layer_names(prefix: str, n_layers: int) -> list[str]:
    """Keys of each layer, then values: `<prefix>_k_0 ... <prefix>_k_<n-1>, <prefix>_v_0 ...` (prefix `cross`: the
    encoder's outputs and the decoder's inputs; `self`: the decoder's cache in; `new_self`: the cache out)."""
    return [f"{prefix}_{kv}_{i}" for kv in "kv" for i in range(n_layers)]
