"""Build-time only (torch): a small Whisper in torch, its ONNX export, int8 quantization and `whisper.json`.

Both Whisper importers (CTranslate2 `whisper_ct2`, Hugging Face `whisper_hf`) fill this one module with
weights, so every Whisper model in the store has the same ONNX layout, which `appliance.asr` runs:

- `encoder.onnx`: mel [1, n_mels, frames] (any frames up to 3000) -> cross_k_<i>, cross_v_<i> for each decoder layer i,
  [1, heads, frames/2, head_dim] (the decoder's cross-attention keys/values, computed once per utterance).
- `decoder.onnx`: tokens [batch, n], logit_at [m] (positions in n whose logits are wanted), self_k_<i>, self_v_<i>
  [batch, heads, past, head_dim] and cross_k_<i>, cross_v_<i> for each layer -> logits [batch, m, vocab],
  new_self_k_<i>, new_self_v_<i> [batch, heads, past + n, head_dim].
  One tensor per layer, not one stacked tensor: a stacked input is sliced into layers (copied) at every decoding step,
  and a stacked output is copied together; logits only where asked: a prompt's other positions cost a vocabulary
  projection each (measured on whisper-base, 2 cores: a decoding step 7.8 -> 6.5 ms with per-layer cross keys/values).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from appliance.modelstore.convert.whisper_layout import layer_names
from appliance.modelstore.manifest import ModelError

OPSET = 17
ENCODER = "encoder.onnx"
DECODER = "decoder.onnx"
TOKENIZER = "tokenizer.json"
FACTS = "whisper.json"
QUANTIZATION = "int8 dynamic per-channel (MatMul weights); convolutions float32; token embedding float16"
# Encoder input is the audio's own length plus PAD_SECONDS of silence, and at least MIN_INPUT_SECONDS
# (measurements in appliance/asr/whisper.py's docstring).
PAD_SECONDS = 1.0
MIN_INPUT_SECONDS = 0.0


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


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)  # Whisper has no key bias: loaded as zeros
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def split(self, x):  # [B, T, d] -> [B, H, T, hd]
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def query(self, x):  # scaled by 1/sqrt(head_dim) here, a constant in the graph
        d = self.q.out_features
        return self.split(self.q(x)) * (1.0 / math.sqrt(d // self.heads))

    @staticmethod
    def attend(q, k, v, mask=None):
        w = torch.matmul(q, k.transpose(-1, -2))
        if mask is not None:
            w = w + mask
        w = torch.softmax(w, dim=-1)
        out = torch.matmul(w, v)  # [B, H, T, hd]
        b, h, t, hd = out.shape
        return out.transpose(1, 2).reshape(b, t, h * hd)


class EncoderBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int = 0):
        super().__init__()
        ffn = ffn or 4 * d
        self.attn_ln = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.mlp_ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)

    def forward(self, x):
        h = self.attn_ln(x)
        a = self.attn
        x = x + a.o(a.attend(a.query(h), a.split(a.k(h)), a.split(a.v(h))))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))


class DecoderBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int = 0):
        super().__init__()
        ffn = ffn or 4 * d
        self.attn_ln = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.cross_ln = nn.LayerNorm(d)
        self.cross = Attention(d, heads)
        self.mlp_ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)

    def forward(self, x, past_k, past_v, cross_k, cross_v, mask):
        a = self.attn
        h = self.attn_ln(x)
        k = torch.cat([past_k, a.split(a.k(h))], dim=2)
        v = torch.cat([past_v, a.split(a.v(h))], dim=2)
        x = x + a.o(a.attend(a.query(h), k, v, mask))
        c = self.cross
        x = x + c.o(c.attend(c.query(self.cross_ln(x)), cross_k, cross_v))
        x = x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))
        return x, k, v


class Whisper(nn.Module):
    """Weights are filled by the importers through `load_state()`; names are listed by `state_dict()`."""

    def __init__(self, dims: Dims):
        super().__init__()
        self.dims = dims
        d, td = dims.n_audio_state, dims.n_text_state
        self.conv1 = nn.Conv1d(dims.n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("audio_pos", torch.zeros(dims.n_audio_ctx, d))
        self.encoder = nn.ModuleList(EncoderBlock(d, dims.n_audio_head, dims.n_audio_ffn) for _ in range(dims.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)
        self.token_emb = nn.Parameter(torch.zeros(dims.n_vocab, td))
        self.text_pos = nn.Parameter(torch.zeros(dims.n_text_ctx, td))
        self.decoder = nn.ModuleList(DecoderBlock(td, dims.n_text_head, dims.n_text_ffn) for _ in range(dims.n_text_layer))
        self.ln = nn.LayerNorm(td)
        self.register_buffer("proj", torch.zeros(td, dims.n_vocab))  # tied output projection, stored transposed

    def load_state(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy numpy arrays in by name; every parameter must be given once, shapes must match."""
        own = self.state_dict()
        missing = sorted(set(own) - set(tensors) - {"proj"})
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise ModelError(f"Whisper weights do not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
        with torch.no_grad():
            for name, value in tensors.items():
                t = torch.from_numpy(np.ascontiguousarray(value)).float()
                if tuple(t.shape) != tuple(own[name].shape):
                    raise ModelError(f"Whisper weight {name} has shape {tuple(t.shape)}, expected {tuple(own[name].shape)}")
                own[name].copy_(t)
            self.proj.copy_(self.token_emb.detach().t())


class EncoderGraph(nn.Module):
    def __init__(self, m: Whisper):
        super().__init__()
        self.m = m

    def forward(self, mel):
        m = self.m
        x = F.gelu(m.conv1(mel))
        x = F.gelu(m.conv2(x)).permute(0, 2, 1)
        x = x + m.audio_pos[: x.shape[1]]
        for block in m.encoder:
            x = block(x)
        x = m.ln_post(x)
        ks = [blk.cross.split(blk.cross.k(x)) for blk in m.decoder]
        vs = [blk.cross.split(blk.cross.v(x)) for blk in m.decoder]
        return (*ks, *vs)


class DecoderGraph(nn.Module):
    def __init__(self, m: Whisper, half_embedding: bool):
        super().__init__()
        self.m = m
        emb = m.token_emb.detach()
        self.register_buffer("emb", emb.half() if half_embedding else emb.clone())

    def forward(self, tokens, logit_at, *kv):
        m = self.m
        layers = len(m.decoder)
        self_k, self_v, cross_k, cross_v = (kv[i * layers:(i + 1) * layers] for i in range(4))
        past = self_k[0].shape[2]
        n = tokens.shape[1]
        x = F.embedding(tokens, self.emb).float() + m.text_pos[past: past + n]
        rows = torch.arange(n).unsqueeze(1) + past
        cols = torch.arange(past + n).unsqueeze(0)
        mask = (cols > rows).float() * -1e9
        new_k, new_v = [], []
        for i, block in enumerate(m.decoder):
            x, k, v = block(x, self_k[i], self_v[i], cross_k[i], cross_v[i], mask)
            new_k.append(k)
            new_v.append(v)
        logits = torch.matmul(m.ln(torch.index_select(x, 1, logit_at)), m.proj)
        return (logits, *new_k, *new_v)


def _export(module, args, path: Path, inputs, outputs, axes, large: bool) -> None:
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact for this static graph
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    if large:  # keep the weights beside the graph (protobuf's 2 GB limit)
        import onnx

        model = onnx.load(str(path))
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")


def export(model: Whisper, out: Path, *, quantize: bool, progress: Callable[[str], None]) -> None:
    """Write encoder.onnx and decoder.onnx into `out` (int8 per-channel MatMul weights when `quantize`)."""
    d = model.dims
    model.eval()
    large = sum(p.numel() for p in model.state_dict().values()) * 4 > 1_800_000_000
    hd = d.n_text_state // d.n_text_head
    frames = 200
    cross_names, self_names, new_names = (layer_names(p, d.n_text_layer) for p in ("cross", "self", "new_self"))
    with torch.no_grad():
        progress("exporting encoder.onnx")
        _export(EncoderGraph(model), (torch.zeros(1, d.n_mels, frames),), out / ENCODER, ["mel"], cross_names,
                {"mel": {2: "frames"}, **{name: {2: "audio_ctx"} for name in cross_names}}, large)
        progress("exporting decoder.onnx")
        past = torch.zeros(2, d.n_text_head, 3, hd)
        cross = torch.zeros(1, d.n_text_head, frames // 2, hd)
        args = (torch.zeros(2, 2, dtype=torch.long), torch.tensor([0, 1]), *[past] * len(self_names),
                *[cross] * len(cross_names))
        axes = {"tokens": {0: "batch", 1: "n"}, "logit_at": {0: "m"}, "logits": {0: "batch", 1: "m"},
                **{name: {0: "batch", 2: "past"} for name in self_names},
                **{name: {2: "audio_ctx"} for name in cross_names},
                **{name: {0: "batch", 2: "total"} for name in new_names}}
        _export(DecoderGraph(model, half_embedding=quantize), args, out / DECODER,
                ["tokens", "logit_at", *self_names, *cross_names], ["logits", *new_names], axes, large)
    if quantize:
        for name in (ENCODER, DECODER):
            progress(f"quantizing {name} (int8, per-channel)")
            _quantize(out / name, large)


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(path: Path, large: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name(path.stem + ".int8.onnx")
    hint = _DropHint()  # onnxruntime's root-logger advice to pre-process (shape inference) does not apply here
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(str(path), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], use_external_data_format=large)
    finally:
        logging.getLogger().removeFilter(hint)
    for f in list(path.parent.glob(path.name + "*")):  # the float graph and its external weights
        f.unlink()
    if not large:
        os.replace(tmp, path)
        return
    import onnx

    model = onnx.load(str(tmp))
    onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
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
