"""Whisper from a Hugging Face checkpoint folder (any size) to the store's ONNX layout.

Expects config.json (model_type "whisper"), weights in model.safetensors (possibly sharded) or pytorch_model.bin,
and a tokenizer: tokenizer.json, or the slow files (vocab.json + merges.txt) which transformers turns into one.
Suppress lists come from generation_config.json (or config.json in older checkpoints).
"""

from __future__ import annotations

import json
import re
import struct
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.modelstore.convert import torch_pickle
from appliance.modelstore.manifest import ModelError

VERSION = "1"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
DEFAULT_BEGIN_SUPPRESS = (220,)  # " " ; <|endoftext|> is added from the tokenizer
# safetensors dtype -> how its bytes are read (BF16 as raw 16 bits, widened to float32 in read_safetensors)
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def check_source(src: Path) -> None:
    src = Path(src)
    what = f"{src} is not a Hugging Face Whisper checkpoint"
    if not src.is_dir():
        raise ModelError(f"{what}: not a directory")
    if not (src / "config.json").is_file():
        raise ModelError(f"{what}: missing config.json")
    try:
        config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{what}: config.json is not valid JSON ({exc})") from None
    if config.get("model_type") != "whisper":
        raise ModelError(f"{what}: config.json has model_type {config.get('model_type')!r}, expected 'whisper'")
    if not any((src / w).is_file() for w in WEIGHTS):
        raise ModelError(f"{what}: missing weights ({' or '.join(WEIGHTS)})")
    slow_tokenizer = (src / "vocab.json").is_file() and (src / "merges.txt").is_file()
    if not (src / "tokenizer.json").is_file() and not slow_tokenizer:
        raise ModelError(f"{what}: missing tokenizer (tokenizer.json, or vocab.json + merges.txt)")


def dims_from_config(config: dict):
    from appliance.modelstore.convert.whisper_onnx import Dims

    return Dims(n_mels=config["num_mel_bins"], n_audio_ctx=config["max_source_positions"],
                n_audio_state=config["d_model"], n_audio_head=config["encoder_attention_heads"],
                n_audio_layer=config["encoder_layers"], n_vocab=config["vocab_size"],
                n_text_ctx=config["max_target_positions"], n_text_state=config["d_model"],
                n_text_head=config["decoder_attention_heads"], n_text_layer=config["decoder_layers"],
                n_audio_ffn=config.get("encoder_ffn_dim", 0), n_text_ffn=config.get("decoder_ffn_dim", 0))


def read_weights(src: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint by name (float32 numpy), the "model." prefix removed."""
    index = src / "model.safetensors.index.json"
    if index.is_file() or (src / "model.safetensors").is_file():
        files = ["model.safetensors"]
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        raw = {}
        for f in files:
            raw.update(read_safetensors(src / f))
    else:
        raw = torch_pickle.state_dict(src / "pytorch_model.bin")
    return {re.sub(r"^model\.", "", k): np.asarray(v, np.float32) for k, v in raw.items()}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as float32. The format: an 8-byte little-endian header length, the JSON
    header ({name: {"dtype", "shape", "data_offsets"}}, and "__metadata__"), then the tensors' bytes. Read here, not
    with safetensors' numpy API, which has no bfloat16: its bits are the top half of a float32's."""
    try:
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        data = np.memmap(path, np.uint8, mode="r", offset=8 + size)
    except (OSError, struct.error, ValueError) as exc:
        raise ModelError(f"{path} is not a safetensors file ({exc})") from None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ModelError(f"{path}: tensor {name} has data type {info['dtype']}, which this importer does not read")
        start, end = info["data_offsets"]
        raw = data[start:end].view(SAFETENSORS_DTYPES[info["dtype"]])
        if info["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.astype(np.float32).reshape(info["shape"])
    return out


def to_state(w: dict[str, np.ndarray], dims) -> dict[str, np.ndarray]:
    """Map transformers' Whisper parameter names onto those of `whisper_onnx.shapes()`."""
    t: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str, bias: bool = True) -> None:
        t[f"{dst}.weight"] = w[f"{src}.weight"]
        t[f"{dst}.bias"] = w[f"{src}.bias"] if bias else np.zeros(w[f"{src}.weight"].shape[0], np.float32)

    def attention(src: str, dst: str) -> None:
        linear(f"{src}.q_proj", f"{dst}.q")
        linear(f"{src}.k_proj", f"{dst}.k", bias=f"{src}.k_proj.bias" in w)
        linear(f"{src}.v_proj", f"{dst}.v")
        linear(f"{src}.out_proj", f"{dst}.o")

    try:
        linear("encoder.conv1", "conv1")
        linear("encoder.conv2", "conv2")
        t["audio_pos"] = w["encoder.embed_positions.weight"]
        for i in range(dims.n_audio_layer):
            s, d = f"encoder.layers.{i}", f"encoder.{i}"
            attention(f"{s}.self_attn", f"{d}.attn")
            linear(f"{s}.self_attn_layer_norm", f"{d}.attn_ln")
            linear(f"{s}.fc1", f"{d}.fc1")
            linear(f"{s}.fc2", f"{d}.fc2")
            linear(f"{s}.final_layer_norm", f"{d}.mlp_ln")
        linear("encoder.layer_norm", "ln_post")
        t["token_emb"] = w["decoder.embed_tokens.weight"]
        t["text_pos"] = w["decoder.embed_positions.weight"]
        for i in range(dims.n_text_layer):
            s, d = f"decoder.layers.{i}", f"decoder.{i}"
            attention(f"{s}.self_attn", f"{d}.attn")
            linear(f"{s}.self_attn_layer_norm", f"{d}.attn_ln")
            attention(f"{s}.encoder_attn", f"{d}.cross")
            linear(f"{s}.encoder_attn_layer_norm", f"{d}.cross_ln")
            linear(f"{s}.fc1", f"{d}.fc1")
            linear(f"{s}.fc2", f"{d}.fc2")
            linear(f"{s}.final_layer_norm", f"{d}.mlp_ln")
        linear("decoder.layer_norm", "ln")
    except KeyError as exc:
        raise ModelError(f"the checkpoint's weights are not Whisper's: missing {exc.args[0]}") from None
    return t


def _tokenizer_json(src: Path, tmp: Path) -> Path:
    if (src / "tokenizer.json").is_file():
        return src / "tokenizer.json"
    try:
        from transformers import WhisperTokenizerFast  # builds tokenizer.json from vocab.json + merges.txt, offline
    except ImportError:
        raise ModelError(f"{src} has no tokenizer.json: building one from vocab.json + merges.txt needs transformers "
                         "(pip install transformers), or save the checkpoint with its fast tokenizer") from None

    tok = WhisperTokenizerFast.from_pretrained(str(src), local_files_only=True)
    path = tmp / "tokenizer.json"
    tok.backend_tokenizer.save(str(path))
    return path


def _generation(src: Path, config: dict) -> dict:
    gen = src / "generation_config.json"
    out = json.loads(gen.read_text(encoding="utf-8")) if gen.is_file() else {}
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        if out.get(key) is None and config.get(key) is not None:
            out[key] = config[key]
    return out


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    from appliance.modelstore.convert import whisper_onnx as wo

    src, out = Path(src), Path(out)
    check_source(src)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    dims = dims_from_config(config)
    progress("reading Hugging Face weights")
    wo.export(dims, to_state(read_weights(src), dims), out, quantize=quantize, progress=progress)
    gen = _generation(src, config)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer_json(src, Path(tmp))
        eot = wo.special_ids(tokenizer)["eot"]
        begin = gen.get("begin_suppress_tokens") or [*DEFAULT_BEGIN_SUPPRESS, eot]
        fields = wo.write_facts(out, dims, tokenizer, multilingual=dims.n_vocab >= 51865,
                                suppress=gen.get("suppress_tokens") or [], begin_suppress=begin, fmt="whisper-hf")
    fields["quantization"] = wo.QUANTIZATION if quantize else "none (float32)"
    return fields
