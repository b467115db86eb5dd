"""Whisper from a CTranslate2 folder (model.bin + config.json + tokenizer.json) to the store's ONNX layout.

model.bin (CTranslate2 binary version >= 4): uint32 version, string spec name, uint32 revision, uint32 count,
then per variable: string name, uint8 rank, rank x uint32 dims, uint8 dtype, uint32 byte count, the bytes;
then uint32 alias count and (alias, target) string pairs. Strings are uint16 length (with a trailing NUL) + bytes.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.modelstore.manifest import ModelError

VERSION = "1"
FILES = ("model.bin", "config.json", "tokenizer.json")
# CTranslate2's DataType enum order (include/ctranslate2/types.h)
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def check_source(src: Path) -> None:
    src = Path(src)
    if not src.is_dir():
        raise ModelError(f"{src} is not a CTranslate2 Whisper folder: not a directory")
    for name in FILES:
        if not (src / name).is_file():
            raise ModelError(f"{src} is not a CTranslate2 Whisper folder: missing {name}")
    with open(src / "model.bin", "rb") as fh:
        head = fh.read(260)
    try:
        version, spec, _ = _header(head)
    except (struct.error, UnicodeDecodeError):
        raise ModelError(f"{src} is not a CTranslate2 Whisper folder: model.bin is not a CTranslate2 model") from None
    if version < 4 or spec != "WhisperSpec":
        raise ModelError(f"{src} is not a CTranslate2 Whisper folder: model.bin holds {spec!r} "
                         f"(binary version {version}); expected WhisperSpec, version >= 4")


def _header(data: bytes) -> tuple[int, str, int]:
    version = struct.unpack_from("<I", data, 0)[0]
    (n,) = struct.unpack_from("<H", data, 4)
    spec = data[6:6 + n - 1].decode("utf-8")
    return version, spec, 6 + n


def read_model_bin(path: Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin by name (aliases resolved), as numpy arrays (views of the file)."""
    data = memoryview(Path(path).read_bytes())
    version, _, off = _header(bytes(data[:260]))

    def take(fmt: str):
        nonlocal off
        vals = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return vals[0]

    def string() -> str:
        nonlocal off
        n = take("<H")
        s = bytes(data[off:off + n - 1]).decode("utf-8")
        off += n
        return s

    take("<I")  # revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = string()
        dims = [take("<I") for _ in range(take("<B"))]
        dtype = DTYPES.get(take("<B"))
        nbytes = take("<I")
        raw = data[off:off + nbytes]
        off += nbytes
        if dtype is None:
            raise ModelError(f"{path}: variable {name} has an unknown data type")
        if dtype == "bfloat16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype)
        out[name] = arr.reshape(dims)
    if version >= 3:
        for _ in range(take("<I")):
            alias, target = string(), string()
            out[alias] = out[target]
    return out


def _weight(v: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    w = v[f"{prefix}/weight"]
    scale = v.get(f"{prefix}/weight_scale")
    if w.dtype == np.int8 and scale is not None:  # int8 CTranslate2 model: per-row scales
        return w.astype(np.float32) / scale.astype(np.float32).reshape(-1, 1)
    return w.astype(np.float32)


def _linear(t: dict, v: dict, src: str, dst: str) -> None:
    t[f"{dst}.weight"] = _weight(v, src)
    t[f"{dst}.bias"] = v[f"{src}/bias"].astype(np.float32)


def _fused(t: dict, v: dict, src: str, dsts: list[str]) -> None:
    w, b = _weight(v, src), v[f"{src}/bias"].astype(np.float32)
    for dst, wi, bi in zip(dsts, np.split(w, len(dsts)), np.split(b, len(dsts))):
        t[f"{dst}.weight"], t[f"{dst}.bias"] = wi, bi


def _norm(t: dict, v: dict, src: str, dst: str) -> None:
    t[f"{dst}.weight"] = v[f"{src}/gamma"].astype(np.float32)
    t[f"{dst}.bias"] = v[f"{src}/beta"].astype(np.float32)


def _layers(v: dict, side: str) -> int:
    return len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})


def to_state(v: dict[str, np.ndarray]) -> tuple["Dims", dict[str, np.ndarray]]:  # noqa: F821
    """Map CTranslate2 WhisperSpec variables onto the weight names of `whisper_onnx.shapes()` (float32 arrays)."""
    from appliance.modelstore.convert.whisper_onnx import Dims

    conv1, emb = v["encoder/conv1/weight"], v["decoder/embeddings/weight"]
    dims = Dims(n_mels=conv1.shape[1], n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
                n_audio_state=conv1.shape[0], n_audio_head=int(v["encoder/num_heads"]),
                n_audio_layer=_layers(v, "encoder"), n_vocab=emb.shape[0],
                n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
                n_text_state=emb.shape[1], n_text_head=int(v["decoder/num_heads"]),
                n_text_layer=_layers(v, "decoder"))
    t: dict[str, np.ndarray] = {}
    for n in ("conv1", "conv2"):
        _linear(t, v, f"encoder/{n}", n)
    t["audio_pos"] = v["encoder/position_encodings/encodings"].astype(np.float32)
    for i in range(dims.n_audio_layer):
        s, d = f"encoder/layer_{i}", f"encoder.{i}"
        _norm(t, v, f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        _fused(t, v, f"{s}/self_attention/linear_0", [f"{d}.attn.q", f"{d}.attn.k", f"{d}.attn.v"])
        _linear(t, v, f"{s}/self_attention/linear_1", f"{d}.attn.o")
        _norm(t, v, f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
        _linear(t, v, f"{s}/ffn/linear_0", f"{d}.fc1")
        _linear(t, v, f"{s}/ffn/linear_1", f"{d}.fc2")
    _norm(t, v, "encoder/layer_norm", "ln_post")
    t["token_emb"] = v["decoder/embeddings/weight"].astype(np.float32)
    t["text_pos"] = v["decoder/position_encodings/encodings"].astype(np.float32)
    for i in range(dims.n_text_layer):
        s, d = f"decoder/layer_{i}", f"decoder.{i}"
        _norm(t, v, f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        _fused(t, v, f"{s}/self_attention/linear_0", [f"{d}.attn.q", f"{d}.attn.k", f"{d}.attn.v"])
        _linear(t, v, f"{s}/self_attention/linear_1", f"{d}.attn.o")
        _norm(t, v, f"{s}/attention/layer_norm", f"{d}.cross_ln")
        _linear(t, v, f"{s}/attention/linear_0", f"{d}.cross.q")
        _fused(t, v, f"{s}/attention/linear_1", [f"{d}.cross.k", f"{d}.cross.v"])
        _linear(t, v, f"{s}/attention/linear_2", f"{d}.cross.o")
        _norm(t, v, f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
        _linear(t, v, f"{s}/ffn/linear_0", f"{d}.fc1")
        _linear(t, v, f"{s}/ffn/linear_1", f"{d}.fc2")
    _norm(t, v, "decoder/layer_norm", "ln")
    return dims, t


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    from appliance.modelstore.convert import whisper_onnx as wo

    src, out = Path(src), Path(out)
    check_source(src)
    progress("reading CTranslate2 model.bin")
    dims, weights = to_state(read_model_bin(src / "model.bin"))
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    wo.export(dims, weights, out, quantize=quantize, progress=progress)
    fields = wo.write_facts(out, dims, src / "tokenizer.json", multilingual=dims.n_vocab >= 51865,
                            suppress=config.get("suppress_ids", []),
                            begin_suppress=config.get("suppress_ids_begin", []), fmt="whisper-ct2")
    fields["quantization"] = wo.QUANTIZATION if quantize else "none (float32)"
    return fields
