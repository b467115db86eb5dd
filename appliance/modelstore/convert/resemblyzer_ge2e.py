"""Resemblyzer's GE2E speaker encoder (`resemblyzer/pretrained.pt`, Apache-2.0) converted to ONNX, without torch.

The network is a 3-layer LSTM over 40-band power-mel frames, a Linear(256, 256), ReLU and an
L2 normalisation of the last layer's final hidden state. The checkpoint's `similarity_*` keys are
training-only and dropped. One graph: `mels` (batch, frames, 40) -> `embedding` (batch, 256),
batch and frames dynamic. Float32 only: onnxruntime's int8 dynamic quantization (DynamicQuantizeLSTM) was
measured 3x faster but it loses the separation (2026-11-30, the bench-speakers voices: int8 embeddings as far
as cosine 0.42 from float32 ones; different-voice similarity p99 0.66 -> 0.83, above the same-voice p10 0.60).

The weights are read with `torch_pickle` and the graph is written node by node with `onnx.helper`: PyTorch's
LSTM gates are ordered i, f, g, o and ONNX's i, o, f, c, and ONNX wants the input and recurrent biases as one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.modelstore.convert import torch_pickle
from appliance.modelstore.manifest import ModelError

VERSION = "2"
WEIGHTS = "pretrained.pt"
ONNX_FILE = "encoder.onnx"
CONFIG_FILE = "speaker.json"
OPSET = 17
IR_VERSION = 8  # the IR of opset 17, what torch.onnx wrote before: readable by older onnxruntime builds
N_MELS = 40
HIDDEN = 256
LAYERS = 3
TORCH_TO_ONNX_GATES = (0, 3, 1, 2)  # ONNX (i, o, f, c) taken from PyTorch's (i, f, g, o) blocks
# the features the model was trained on (resemblyzer/hparams.py), read back by appliance.speakers.features
FEATURES = {"sample_rate": 16000, "n_fft": 400, "hop_length": 160, "n_mels": N_MELS, "window_frames": 160,
            "mel": "librosa power mel, Slaney scale and norm, hann window, centred with zero padding",
            "norm_target_dbfs": -30.0}


def check_source(src: Path) -> None:
    if not (src / WEIGHTS).is_file():
        raise ModelError(f"{src} is not a resemblyzer package folder: missing {WEIGHTS}")


def load_weights(src: Path) -> dict[str, np.ndarray]:
    """The encoder's float32 weights by their PyTorch names (`lstm.weight_ih_l0`, ..., `linear.bias`)."""
    state = torch_pickle.state_dict(src / WEIGHTS, "model_state")
    weights = {k: v for k, v in state.items() if not k.startswith("similarity_")}
    expected = {"linear.weight": (HIDDEN, HIDDEN), "linear.bias": (HIDDEN,)}
    for layer in range(LAYERS):
        expected |= {f"lstm.weight_ih_l{layer}": (4 * HIDDEN, N_MELS if layer == 0 else HIDDEN),
                     f"lstm.weight_hh_l{layer}": (4 * HIDDEN, HIDDEN),
                     f"lstm.bias_ih_l{layer}": (4 * HIDDEN,), f"lstm.bias_hh_l{layer}": (4 * HIDDEN,)}
    got = {k: v.shape for k, v in weights.items()}
    if got != expected or any(v.dtype != np.float32 for v in weights.values()):
        raise ModelError(f"{src / WEIGHTS}: not the GE2E encoder's weights: {got} (expected {expected}, float32)")
    return weights


def _onnx_gates(w: np.ndarray) -> np.ndarray:
    """PyTorch's stacked (4H, ...) gate weights or biases in ONNX's gate order, with the direction axis added."""
    blocks = np.split(w, 4, axis=0)
    return np.concatenate([blocks[i] for i in TORCH_TO_ONNX_GATES], axis=0)[None]


def _lstm_layer(weights: dict[str, np.ndarray], layer: int, x: str, last: bool):
    """The nodes and initializers of one LSTM layer on `x` (frames, batch, features); returns its output name:
    the next layer's input (frames, batch, H), or for the last layer the final hidden state (batch, H)."""
    from onnx import helper, numpy_helper

    name = f"lstm_l{layer}"
    init = [numpy_helper.from_array(_onnx_gates(weights[f"lstm.weight_ih_l{layer}"]), f"{name}.W"),
            numpy_helper.from_array(_onnx_gates(weights[f"lstm.weight_hh_l{layer}"]), f"{name}.R"),
            numpy_helper.from_array(np.concatenate([_onnx_gates(weights[f"lstm.bias_ih_l{layer}"]),
                                                    _onnx_gates(weights[f"lstm.bias_hh_l{layer}"])], axis=1),
                                    f"{name}.B")]
    outputs = ["", f"{name}.Y_h"] if last else [f"{name}.Y"]
    nodes = [helper.make_node("LSTM", [x, f"{name}.W", f"{name}.R", f"{name}.B"], outputs, name=name,
                              hidden_size=HIDDEN, direction="forward")]
    squeeze_axis = "axis0" if last else "axis1"  # Y_h is (1, batch, H); Y is (frames, 1, batch, H)
    nodes.append(helper.make_node("Squeeze", [outputs[-1], squeeze_axis], [f"{name}.out"], name=f"{name}.squeeze"))
    return nodes, init, f"{name}.out"


def build_graph(weights: dict[str, np.ndarray]):
    """The encoder as an ONNX model: `mels` (batch, frames, 40) float32 -> `embedding` (batch, 256) float32."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Transpose", ["mels"], ["frames_first"], name="frames_first", perm=[1, 0, 2])]
    init = [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            numpy_helper.from_array(np.array(1e-12, np.float32), "min_norm"),
            numpy_helper.from_array(weights["linear.weight"], "linear.weight"),
            numpy_helper.from_array(weights["linear.bias"], "linear.bias")]
    x = "frames_first"
    for layer in range(LAYERS):
        layer_nodes, layer_init, x = _lstm_layer(weights, layer, x, last=layer == LAYERS - 1)
        nodes += layer_nodes
        init += layer_init
    nodes += [helper.make_node("Gemm", [x, "linear.weight", "linear.bias"], ["linear"], name="linear", transB=1),
              helper.make_node("Relu", ["linear"], ["raw"], name="relu"),
              helper.make_node("ReduceL2", ["raw"], ["norm"], name="norm", axes=[1], keepdims=1),
              helper.make_node("Clip", ["norm", "min_norm"], ["norm_clamped"], name="norm_clamped"),
              helper.make_node("Div", ["raw", "norm_clamped"], ["embedding"], name="normalise")]
    mels = helper.make_tensor_value_info("mels", TensorProto.FLOAT, ["batch", "frames", N_MELS])
    embedding = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", HIDDEN])
    graph = helper.make_graph(nodes, "resemblyzer_ge2e", [mels], [embedding], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                             producer_name="appliance", producer_version=VERSION)


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    import onnx

    check_source(src)
    weights = load_weights(src)
    progress(f"writing {ONNX_FILE} (opset {OPSET}, dynamic batch and frames)")
    model = build_graph(weights)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out / ONNX_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(FEATURES, indent=1) + "\n", encoding="utf-8")
    return {
        "languages": [],
        "quantization": "none: float32 (5.7 MB); int8 measured to lose the same/different-voice separation",
        "opset": OPSET,
        "architecture": {"embedding": HIDDEN, "layers": LAYERS, **{k: v for k, v in FEATURES.items() if k != "mel"}},
    }
