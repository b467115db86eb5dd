"""Build-time only: Whisper's two ONNX graphs written from numpy weights (no torch), int8 quantization, `whisper.json`.

Both Whisper importers (CTranslate2 `whisper_ct2`, Hugging Face `whisper_hf`) give this module their weights as one
dict (names and shapes in `shapes()`, Linear weights [out, in] as in torch), so every Whisper model in the store has
the same ONNX layout, which `appliance.asr` runs:

- `encoder.onnx`: mel [1, n_mels, frames] (any frames up to 3000) -> cross_k_<i>, cross_v_<i> for each decoder layer i,
  [1, heads, frames/2, head_dim] (the decoder's cross-attention keys/values, computed once per utterance).
- `decoder.onnx`: tokens [batch, n], logit_at [m] (positions in n whose logits are wanted), self_k_<i>, self_v_<i>
  [batch, heads, past, head_dim] and cross_k_<i>, cross_v_<i> for each layer -> logits [batch, m, vocab],
  new_self_k_<i>, new_self_v_<i> [batch, heads, past + n, head_dim].
  One tensor per layer, not one stacked tensor: a stacked input is sliced into layers (copied) at every decoding step,
  and a stacked output is copied together; logits only where asked: a prompt's other positions cost a vocabulary
  projection each (measured on whisper-base, 2 cores: a decoding step 7.8 -> 6.5 ms with per-layer cross keys/values).

Linear layers are MatMul with an initializer [in, out] then Add (`onnx_graph`), so int8 quantization
(`quantize_dynamic`, MatMul only, per channel) turns exactly those weights and the tied output projection into int8;
the exact (erf) GELU and LayerNormalization (opset 17) are written in the forms onnxruntime fuses.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from appliance.modelstore.convert import onnx_graph as og
from appliance.modelstore.convert.whisper_layout import layer_names
from appliance.modelstore.manifest import ModelError

OPSET = og.OPSET
ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
TOKENIZER = "tokenizer.json"
FACTS = "whisper.json"
QUANTIZATION = "int8 dynamic per-channel (MatMul weights); convolutions float32; token embedding float16"
# Encoder input is the audio's own length plus PAD_SECONDS of silence, and at least MIN_INPUT_SECONDS
# (measurements in appliance/asr/whisper.py's docstring).
PAD_SECONDS = 1.0
MIN_INPUT_SECONDS = 0.0
EXTERNAL_DATA_BYTES = 1_800_000_000  # float32 weights above this are written beside the graphs (protobuf's 2 GB limit)


@dataclass(frozen=True)
class Dims:
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_audio_ffn: int = 0  # 0: 4 x state, as in every OpenAI checkpoint
    n_text_ffn: int = 0


def shapes(dims: Dims) -> dict[str, tuple[int, ...]]:
    """Every weight the graphs are built from, by name (torch's layout: Linear weights [out, in]), with its shape."""
    d, td = dims.n_audio_state, dims.n_text_state
    out = {"conv1.weight": (d, dims.n_mels, 3), "conv1.bias": (d,), "conv2.weight": (d, d, 3), "conv2.bias": (d,),
           "audio_pos": (dims.n_audio_ctx, d), "ln_post.weight": (d,), "ln_post.bias": (d,),
           "token_emb": (dims.n_vocab, td), "text_pos": (dims.n_text_ctx, td), "ln.weight": (td,), "ln.bias": (td,)}
    for i in range(dims.n_audio_layer):
        out.update(_block_shapes(f"encoder.{i}", d, dims.n_audio_ffn or 4 * d, ("attn",)))
    for i in range(dims.n_text_layer):
        out.update(_block_shapes(f"decoder.{i}", td, dims.n_text_ffn or 4 * td, ("attn", "cross")))
    return out


def _block_shapes(block: str, d: int, ffn: int, attentions: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    out = {f"{block}.mlp_ln.weight": (d,), f"{block}.mlp_ln.bias": (d,), f"{block}.fc1.weight": (ffn, d),
           f"{block}.fc1.bias": (ffn,), f"{block}.fc2.weight": (d, ffn), f"{block}.fc2.bias": (d,)}
    for a in attentions:
        out.update({f"{block}.{a}_ln.weight": (d,), f"{block}.{a}_ln.bias": (d,)})
        for p in "qkvo":  # Whisper has no key bias: the importers give zeros
            out.update({f"{block}.{a}.{p}.weight": (d, d), f"{block}.{a}.{p}.bias": (d,)})
    return out


def check_weights(dims: Dims, weights: dict[str, np.ndarray]) -> None:
    """Every weight of `shapes(dims)` given once with its shape, nothing else; else ModelError."""
    want = shapes(dims)
    missing, extra = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
    if missing or extra:
        raise ModelError(f"Whisper weights do not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, shape in want.items():
        if tuple(np.shape(weights[name])) != shape:
            raise ModelError(f"Whisper weight {name} has shape {tuple(np.shape(weights[name]))}, expected {shape}")


class _Layers:
    """The Whisper layers on one graph, reading weights by name from the importers' dict."""

    def __init__(self, g: og.Graph, w: dict[str, np.ndarray], heads: int, d: int):
        self.g, self.w, self.heads, self.d, self.hd = g, w, heads, d, d // heads

    def linear(self, x: str, name: str) -> str:
        return og.linear(self.g, x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], name)

    def norm(self, x: str, name: str) -> str:
        return og.layer_norm(self.g, x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], name)

    def split(self, x: str, out: str | None = None) -> str:
        """[B, T, d] -> [B, heads, T, head_dim]"""
        g = self.g
        return g.op("Transpose", g.op("Reshape", x, g.const([0, 0, self.heads, self.hd], np.int64)),
                    perm=[0, 2, 1, 3], out=out)

    def query(self, x: str, name: str) -> str:
        """Scaled by 1/sqrt(head_dim) here, a constant in the graph."""
        return self.g.op("Mul", self.split(self.linear(x, name)), self.g.const(1.0 / math.sqrt(self.hd)))

    def attend(self, q: str, k: str, v: str, name: str, mask: str | None = None) -> str:
        """softmax(q k^T + mask) v, heads merged again: [B, T, d], then the output projection `<name>.o`."""
        g = self.g
        w = g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2]))
        if mask is not None:
            w = g.op("Add", w, mask)
        out = g.op("Transpose", g.op("MatMul", g.op("Softmax", w, axis=-1), v), perm=[0, 2, 1, 3])
        return self.linear(g.op("Reshape", out, g.const([0, 0, self.d], np.int64)), f"{name}.o")

    def mlp(self, x: str, block: str) -> str:
        """x + fc2(gelu(fc1(mlp_ln(x))))"""
        h = og.gelu(self.g, self.linear(self.norm(x, f"{block}.mlp_ln"), f"{block}.fc1"))
        return self.g.op("Add", x, self.linear(h, f"{block}.fc2"))


def encoder_graph(dims: Dims, w: dict[str, np.ndarray]) -> og.Graph:
    """mel [1, n_mels, frames] -> cross_k_<i>, cross_v_<i> [1, heads, frames/2, head_dim] for each decoder layer."""
    g = og.Graph("whisper_encoder")
    a = _Layers(g, w, dims.n_audio_head, dims.n_audio_state)
    x = g.input("mel", og.FLOAT, [1, dims.n_mels, "frames"])
    for name, stride in (("conv1", 1), ("conv2", 2)):
        weight, bias = g.weight(f"{name}.weight", w[f"{name}.weight"]), g.weight(f"{name}.bias", w[f"{name}.bias"])
        x = og.gelu(g, g.op("Conv", x, weight, bias, kernel_shape=[3], pads=[1, 1], strides=[stride]))
    x = g.op("Transpose", x, perm=[0, 2, 1])
    ctx = g.op("Shape", x, start=1, end=2)
    x = g.op("Add", x, g.op("Slice", g.weight("audio_pos", w["audio_pos"]), g.const([0], np.int64), ctx))
    for i in range(dims.n_audio_layer):
        b = f"encoder.{i}"
        h = a.norm(x, f"{b}.attn_ln")
        x = g.op("Add", x, a.attend(a.query(h, f"{b}.attn.q"), a.split(a.linear(h, f"{b}.attn.k")),
                                    a.split(a.linear(h, f"{b}.attn.v")), f"{b}.attn"))
        x = a.mlp(x, b)
    x = a.norm(x, "ln_post")
    t = _Layers(g, w, dims.n_text_head, dims.n_text_state)
    hd = dims.n_text_state // dims.n_text_head
    for out in layer_names("cross", dims.n_text_layer):
        _, kv, i = out.split("_")
        t.split(t.linear(x, f"decoder.{i}.cross.{kv}"), out=out)
        g.output(out, og.FLOAT, [1, dims.n_text_head, "audio_ctx", hd])
    return g


def decoder_graph(dims: Dims, w: dict[str, np.ndarray], *, half_embedding: bool) -> og.Graph:
    """tokens [batch, n], logit_at [m], self_k/v_<i> [batch, heads, past, head_dim], cross_k/v_<i> -> logits
    [batch, m, vocab], new_self_k/v_<i> [batch, heads, past + n, head_dim]. The output projection is the token
    embedding, transposed: a MatMul initializer `proj` [d, vocab], quantized like the other MatMul weights."""
    g = og.Graph("whisper_decoder")
    layers, heads, d = dims.n_text_layer, dims.n_text_head, dims.n_text_state
    t = _Layers(g, w, heads, d)
    tokens = g.input("tokens", og.INT64, ["batch", "n"])
    logit_at = g.input("logit_at", og.INT64, ["m"])
    self_names, cross_names = layer_names("self", layers), layer_names("cross", layers)
    for name in self_names:
        g.input(name, og.FLOAT, ["batch", heads, "past", t.hd])
    for name in cross_names:
        g.input(name, og.FLOAT, [1, heads, "audio_ctx", t.hd])
    past, n = g.op("Shape", self_names[0], start=2, end=3), g.op("Shape", tokens, start=1, end=2)
    total = g.op("Add", past, n)
    emb = g.weight("token_emb", w["token_emb"].astype(np.float16 if half_embedding else np.float32))
    x = g.op("Gather", emb, tokens)
    if half_embedding:
        x = g.op("Cast", x, to=og.FLOAT)
    x = g.op("Add", x, g.op("Slice", g.weight("text_pos", w["text_pos"]), past, total, g.const([0], np.int64)))
    mask = _causal_mask(g, past, total)
    for i in range(layers):
        x = _decoder_block(t, x, i, mask, self_names, cross_names)
    x = t.norm(g.op("Gather", x, logit_at, axis=1), "ln")
    g.op("MatMul", x, g.weight("proj", w["token_emb"].T), out="logits")
    g.output("logits", og.FLOAT, ["batch", "m", dims.n_vocab])
    for name in layer_names("new_self", layers):
        g.output(name, og.FLOAT, ["batch", heads, "total", t.hd])
    return g


def _causal_mask(g: og.Graph, past: str, total: str) -> str:
    """[n, past + n]: -1e9 where a column lies after the row's own position (past + row), else 0."""
    axis0 = g.const([0], np.int64)
    past0, total0, one = g.op("Squeeze", past, axis0), g.op("Squeeze", total, axis0), g.const(1, np.int64)
    rows = g.op("Unsqueeze", g.op("Range", past0, total0, one), g.const([1], np.int64))
    cols = g.op("Unsqueeze", g.op("Range", g.const(0, np.int64), total0, one), axis0)
    return g.op("Mul", g.op("Cast", g.op("Greater", cols, rows), to=og.FLOAT), g.const(-1e9))


def _decoder_block(t: _Layers, x: str, i: int, mask: str, self_names: list[str], cross_names: list[str]) -> str:
    """Self-attention over the cache and the new tokens (the cache with them is a graph output), cross-attention
    over the encoder's keys/values, the MLP."""
    g, b, layers = t.g, f"decoder.{i}", len(self_names) // 2
    h = t.norm(x, f"{b}.attn_ln")
    k = g.op("Concat", self_names[i], t.split(t.linear(h, f"{b}.attn.k")), axis=2, out=f"new_{self_names[i]}")
    v = g.op("Concat", self_names[layers + i], t.split(t.linear(h, f"{b}.attn.v")), axis=2,
             out=f"new_{self_names[layers + i]}")
    x = g.op("Add", x, t.attend(t.query(h, f"{b}.attn.q"), k, v, f"{b}.attn", mask))
    q = t.query(t.norm(x, f"{b}.cross_ln"), f"{b}.cross.q")
    x = g.op("Add", x, t.attend(q, cross_names[i], cross_names[layers + i], f"{b}.cross"))
    return t.mlp(x, b)


def export(dims: Dims, weights: dict[str, np.ndarray], out: Path, *, quantize: bool,
           progress: Callable[[str], None], external_data: bool | None = None) -> None:
    """Write encoder.onnx and decoder.onnx into `out` from the importers' weights (int8 per-channel MatMul weights
    and a float16 token embedding when `quantize`). `external_data`: the weights in `<graph>.data` files beside the
    graphs (protobuf's 2 GB limit); by default when they pass EXTERNAL_DATA_BYTES."""
    check_weights(dims, weights)
    weights = {name: np.asarray(a, np.float32) for name, a in weights.items()}
    if external_data is None:  # the output projection is a second copy of the token embedding
        size = 4 * (sum(a.size for a in weights.values()) + weights["token_emb"].size)
        external_data = size > EXTERNAL_DATA_BYTES
    progress(f"writing {ENCODER}")
    og.save(encoder_graph(dims, weights).model(), out / ENCODER, external_data=external_data)
    progress(f"writing {DECODER}")
    og.save(decoder_graph(dims, weights, half_embedding=quantize).model(), out / DECODER, external_data=external_data)
    if quantize:
        for name in (ENCODER, DECODER):
            progress(f"quantizing {name} (int8, per-channel)")
            _quantize(out / name, external_data)


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(path: Path, external_data: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.stem + ".int8.onnx")
    hint = _DropHint()  # onnxruntime's root-logger advice to pre-process (shape inference) does not apply here
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(str(path), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], use_external_data_format=external_data)
    finally:
        logging.getLogger().removeFilter(hint)
    for f in list(path.parent.glob(path.name + "*")):  # the float graph and its external weights
        f.unlink()
    if not external_data:
        os.replace(tmp, path)
        return
    og.save(onnx.load(str(tmp)), path, external_data=True)  # the weights renamed after the graph
    for f in list(path.parent.glob(tmp.name + "*")):
        f.unlink()


def special_ids(tokenizer_json: Path) -> dict[str, int]:
    """The Whisper special tokens' ids, read from tokenizer.json's added tokens."""
    added = {t["content"]: int(t["id"]) for t in json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]}
    names = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "translate": "<|translate|>",
             "transcribe": "<|transcribe|>", "sot_lm": "<|startoflm|>", "sot_prev": "<|startofprev|>",
             "no_timestamps": "<|notimestamps|>"}
    ids = {}
    for key, tok in names.items():
        if tok not in added:
            raise ModelError(f"{tokenizer_json} is not a Whisper tokenizer: missing {tok}")
        ids[key] = added[tok]
    no_speech = added.get("<|nospeech|>", added.get("<|nocaptions|>"))
    if no_speech is None:
        raise ModelError(f"{tokenizer_json} is not a Whisper tokenizer: missing <|nospeech|> / <|nocaptions|>")
    ids["no_speech"] = no_speech
    ids["timestamp_begin"] = ids["no_timestamps"] + 1
    return ids


def language_tokens(tokenizer_json: Path) -> dict[str, int]:
    """{"en": 50259, ...}: the language tokens between <|startoftranscript|> and <|translate|>, in Whisper's order."""
    ids = special_ids(tokenizer_json)
    added = json.loads(tokenizer_json.read_text(encoding="utf-8"))["added_tokens"]
    langs = {}
    for t in sorted(added, key=lambda t: t["id"]):
        if ids["sot"] < t["id"] < ids["translate"]:
            langs[t["content"].strip("<|>")] = int(t["id"])
    return langs


def write_facts(out: Path, dims: Dims, tokenizer_json: Path, *, multilingual: bool, suppress: list[int],
                begin_suppress: list[int], fmt: str) -> dict:
    """Copy tokenizer.json and write whisper.json; return the manifest fields."""
    shutil.copy2(tokenizer_json, out / TOKENIZER)
    ids = special_ids(tokenizer_json)
    langs = language_tokens(tokenizer_json) if multilingual else {"en": language_tokens(tokenizer_json).get("en", -1)}
    facts = {
        "format": fmt,
        "dims": asdict(dims),
        "n_mels": dims.n_mels,
        "is_multilingual": multilingual,
        "special": ids,
        "languages": langs,
        "suppress_tokens": sorted(set(int(i) for i in suppress)),
        "begin_suppress_tokens": sorted(set(int(i) for i in begin_suppress)),
        "min_input_seconds": MIN_INPUT_SECONDS,
        "pad_input_seconds": PAD_SECONDS,
        "sample_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
    }
    (out / FACTS).write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    return {"languages": list(langs) if multilingual else ["en"], "opset": OPSET,
            "architecture": {"family": "whisper", **asdict(dims), "multilingual": multilingual}}
