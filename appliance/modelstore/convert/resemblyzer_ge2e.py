"""Resemblyzer's GE2E speaker encoder (`resemblyzer/pretrained.pt`, Apache-2.0) exported to ONNX.

The network is a 3-layer LSTM over 40-band power-mel frames, a Linear(256, 256), ReLU and an
L2 normalisation of the last layer's final hidden state. The checkpoint's `similarity_*` keys are
training-only and dropped. One graph: `mels` (batch, frames, 40) -> `embedding` (batch, 256),
batch and frames dynamic. Float32 only: onnxruntime's int8 dynamic quantization (DynamicQuantizeLSTM) was
measured 3x faster but it loses the separation (2026-11-30, the bench-speakers voices: int8 embeddings as far
as cosine 0.42 from float32 ones; different-voice similarity p99 0.66 -> 0.83, above the same-voice p10 0.60).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from appliance.modelstore.manifest import ModelError

VERSION = "1"
WEIGHTS = "pretrained.pt"
ONNX_FILE = "encoder.onnx"
CONFIG_FILE = "speaker.json"
OPSET = 17
N_MELS = 40
HIDDEN = 256
LAYERS = 3
# the features the model was trained on (resemblyzer/hparams.py), read back by appliance.speakers.features
FEATURES = {"sample_rate": 16000, "n_fft": 400, "hop_length": 160, "n_mels": N_MELS, "window_frames": 160,
            "mel": "librosa power mel, Slaney scale and norm, hann window, centred with zero padding",
            "norm_target_dbfs": -30.0}


def check_source(src: Path) -> None:
    if not (src / WEIGHTS).is_file():
        raise ModelError(f"{src} is not a resemblyzer package folder: missing {WEIGHTS}")


def _module(state: dict):
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
            self.linear = nn.Linear(HIDDEN, HIDDEN)

        def forward(self, mels):
            _, (hidden, _) = self.lstm(mels)
            raw = torch.relu(self.linear(hidden[-1]))
            return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)

    model = Encoder()
    weights = {k: v for k, v in state.items() if not k.startswith("similarity_")}
    model.load_state_dict(weights, strict=True)
    return model.eval()


def load_torch(src: Path):
    """The encoder in torch, from the package's checkpoint (also the reference of the equivalence test)."""
    import torch

    checkpoint = torch.load(src / WEIGHTS, map_location="cpu", weights_only=True)
    return _module(checkpoint["model_state"])


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    import torch

    check_source(src)
    model = load_torch(src)
    progress(f"exporting {ONNX_FILE} (opset {OPSET}, dynamic batch and frames)")
    example = torch.zeros(2, FEATURES["window_frames"], N_MELS)
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(out / ONNX_FILE), input_names=["mels"], output_names=["embedding"],
                          dynamic_axes={"mels": {0: "batch", 1: "frames"}, "embedding": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    (out / CONFIG_FILE).write_text(json.dumps(FEATURES, indent=1) + "\n", encoding="utf-8")
    return {
        "languages": [],
        "quantization": "none: float32 (5.7 MB); int8 measured to lose the same/different-voice separation",
        "opset": OPSET,
        "architecture": {"embedding": HIDDEN, "layers": LAYERS, **{k: v for k, v in FEATURES.items() if k != "mel"}},
    }
