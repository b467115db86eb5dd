"""Bergamot / Firefox Translations "tiny" Marian models (int8 `*.intgemm.alphas.bin`) -> ONNX.

The Marian binary is parsed here (no Marian needed), its int8 matrices are dequantized, an equivalent
torch module is built and exported as three pieces the runtime (`appliance.translate`) drives:

- `encoder.onnx`: tokens [B,S] + lengths [B] -> encoder_out, src_mask, and every decoder layer's
  cross-attention keys/values (computed once per sentence);
- `decoder.onnx`: one step of the SSRU decoder (recurrent state in, state out) -> hidden [N,D];
- `output.onnx`: hidden -> logits over the whole vocabulary; plus `output.npz` (int8 rows + scales + bias)
  so the runtime can score only the lexical shortlist's rows (`lex.s2t.bin`, copied as-is).

The torch building blocks here are shared with `marian_hf` (the Hugging Face OPUS-MT importer).
Marian references: src/common/binary.cpp (file layout), src/models/transformer.h (post-norm "dan",
sqrt(dim) embedding scale, sinusoidal positions, zero start embedding), src/rnn/cells.h (SSRU),
src/data/shortlist.h (binary lexical shortlist).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.modelstore.manifest import ModelError

log = logging.getLogger(__name__)

VERSION = "1"
OPSET = 17
MAX_POSITIONS = 1024  # rows of the position table baked into the graphs; the runtime caps lengths below it
SHORTLIST_MAGIC = 0xF11A48D5013417F5
SHORTLIST_FILE = "lex.s2t.bin"
VOCAB_FILE = "vocab.spm"

# Marian Type codes (src/common/types.h)
_FLOAT32 = 0x0404
_INTGEMM8 = 0x4101

# Bergamot weights are already int8 with one scale per matrix: quantizing per tensor gives back exactly those
# values, while per-channel re-quantization rounds them again (measured: 27/35 vs 33/35 outputs identical to the
# reference engine on the en->pt test set). Float sources (OPUS-MT) use per-channel.
QUANTIZATION_INT8 = ("int8 dynamic, MatMul weights per tensor (exactly the source's Marian int8 values), "
                     "embedding Gather per tensor")


# ----------------------------------------------------------------------------------------- Marian binary


@dataclass
class MarianModel:
    config: dict  # top-level scalars of special:model.yml
    tensors: dict[str, np.ndarray]  # float32, matrices oriented [in, out] for `x @ W`
    embedding_int8: np.ndarray | None  # Wemb as stored (int8 [V, D]) when the file is int8
    embedding_scale: float  # Wemb = embedding_int8 / embedding_scale


def _yaml_scalars(text: str) -> dict:
    """The top-level `key: value` pairs of Marian's model.yml (lists are kept as lists of strings)."""
    out: dict = {}
    key = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("  - ") and key is not None:
            out.setdefault(key, [])
            if isinstance(out[key], list):
                out[key].append(line[4:].strip())
            continue
        if ":" in line and not line.startswith(" "):
            key, _, value = line.partition(":")
            value = value.strip().strip('"')
            if value == "":
                out[key] = []
                continue
            low = value.lower()
            if low in ("true", "false"):
                out[key] = low == "true"
            else:
                try:
                    out[key] = int(value)
                except ValueError:
                    try:
                        out[key] = float(value)
                    except ValueError:
                        out[key] = value
    return out


def read_marian_items(path: Path) -> list[tuple[str, int, tuple[int, ...], bytes]]:
    """(name, type, shape, raw bytes) for every item of a Marian binary model (src/common/binary.cpp)."""
    data = path.read_bytes()
    if len(data) < 16:
        raise ModelError(f"{path} is not a Marian binary model: file too short")
    version, count = struct.unpack_from("<QQ", data, 0)
    if version != 1 or not 0 < count < 100_000:
        raise ModelError(f"{path} is not a Marian binary model (version {version}, {count} items); "
                         "expected a Bergamot model.*.intgemm.alphas.bin")
    pos = 16
    headers = [struct.unpack_from("<4Q", data, pos + 32 * i) for i in range(count)]
    pos += 32 * count
    names = []
    for name_len, _t, _s, _d in headers:
        names.append(data[pos:pos + name_len].rstrip(b"\0").decode("utf-8", "replace"))
        pos += name_len
    shapes = []
    for _n, _t, shape_len, _d in headers:
        shapes.append(struct.unpack_from(f"<{shape_len}i", data, pos))
        pos += 4 * shape_len
    (pad,) = struct.unpack_from("<Q", data, pos)
    pos += 8 + pad
    items = []
    for (_n, typ, _s, data_len), name, shape in zip(headers, names, shapes):
        if pos + data_len > len(data):
            raise ModelError(f"{path} is truncated: item {name} runs past the end of the file; re-download the model")
        items.append((name, typ, tuple(shape), data[pos:pos + data_len]))
        pos += data_len
    return items


def load_marian(path: Path) -> MarianModel:
    """Parse a Marian binary model; int8 (intgemm8) matrices are dequantized (value / quantMult).

    intgemm8 matrices are stored transposed ([out, in] row-major while the shape says [in, out]), except the
    shared embedding Wemb, which is stored as [vocab, dim]; each is followed by its float32 quantMult.
    """
    config: dict = {}
    tensors: dict[str, np.ndarray] = {}
    emb_int8, emb_scale = None, 1.0
    for name, typ, shape, raw in read_marian_items(path):
        if name.startswith("special:"):
            if name == "special:model.yml":
                config = _yaml_scalars(raw.rstrip(b"\0").decode("utf-8", "replace"))
            continue
        if name.endswith("_QuantMultA"):
            continue  # activation quantization multipliers of intgemm; a float graph does not need them
        n = int(np.prod(shape))
        if typ == _FLOAT32:
            tensors[name] = np.frombuffer(raw, np.float32, n).reshape(shape).copy()
        elif typ == _INTGEMM8:
            q = np.frombuffer(raw, np.int8, n)
            (scale,) = struct.unpack_from("<f", raw, n)
            if name == "Wemb" or name.endswith("_Wemb"):
                q = q.reshape(shape)
                if name == "Wemb":
                    emb_int8, emb_scale = q.copy(), float(scale)
            else:
                q = q.reshape(shape[1], shape[0]).T  # stored transposed
            tensors[name] = q.astype(np.float32) / np.float32(scale)
        else:
            raise ModelError(f"{path}: item {name} has Marian type {typ:#x}, which this importer does not read; "
                             "use a float32 or intgemm8 Bergamot model")
    return MarianModel(config, tensors, emb_int8, emb_scale)


def sinusoid_table(positions: int, dim: int, *, marian: bool) -> np.ndarray:
    """Sinusoidal positions: sin in the first half, cos in the second.

    Marian: frequency_i = exp(-i * ln(10000) / (dim/2 - 1)); Hugging Face Marian: 1 / 10000^(2i/dim).
    """
    half = dim // 2
    i = np.arange(half, dtype=np.float64)
    freq = np.exp(-i * math.log(10000.0) / (half - 1)) if marian else 1.0 / np.power(10000.0, 2 * i / dim)
    angles = np.arange(positions, dtype=np.float64)[:, None] * freq[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------ shortlist


def read_shortlist(path: Path, vocab_size: int) -> dict:
    """Check a Bergamot binary lexical shortlist and return its header facts (src/data/shortlist.h)."""
    data = path.read_bytes()
    if len(data) < 48:
        raise ModelError(f"{path} is not a binary lexical shortlist: file too short")
    magic, _checksum, first, best, n_offsets, n_ids = struct.unpack_from("<6Q", data, 0)
    if magic != SHORTLIST_MAGIC:
        raise ModelError(f"{path} is not a binary lexical shortlist (bad magic); expected lex.*.s2t.bin")
    if len(data) != 48 + 8 * n_offsets + 4 * n_ids:
        raise ModelError(f"{path}: shortlist size does not match its header; re-download the model")
    offsets = np.frombuffer(data, np.uint64, n_offsets, 48)
    ids = np.frombuffer(data, np.uint32, n_ids, 48 + 8 * n_offsets)
    if n_offsets == 0 or int(offsets[-1]) != n_ids or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise ModelError(f"{path}: shortlist offset table is corrupt; re-download the model")
    if n_ids and int(ids.max()) >= vocab_size:
        raise ModelError(f"{path}: shortlist names target id {int(ids.max())} beyond the vocabulary ({vocab_size})")
    return {"file": SHORTLIST_FILE, "first_num": int(first), "best_num": int(best),
            "source_vocab": int(n_offsets - 1), "entries": int(n_ids)}


# ----------------------------------------------------------------------------------------- torch parts


def _torch():
    import torch  # build-time only

    return torch


def build_modules():
    """The torch modules (defined lazily so importing this file never needs torch)."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    def param(a) -> nn.Parameter:
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), requires_grad=False)

    class Dense(nn.Module):
        """x @ W + b with W stored [in, out] (exports as MatMul with a weight initializer: quantizable)."""

        def __init__(self, w, b=None):
            super().__init__()
            self.w = param(w)
            self.b = param(np.asarray(b).reshape(-1)) if b is not None else None

        def forward(self, x):
            y = torch.matmul(x, self.w)
            return y + self.b if self.b is not None else y

    class Norm(nn.Module):
        def __init__(self, g, b, eps):
            super().__init__()
            self.g, self.b, self.eps = param(np.asarray(g).reshape(-1)), param(np.asarray(b).reshape(-1)), eps

        def forward(self, x):
            return F.layer_norm(x, (int(self.g.shape[0]),), self.g, self.b, self.eps)

    def activation(name: str):
        return {"relu": F.relu, "swish": F.silu, "silu": F.silu, "gelu": F.gelu,
                "gelu_new": lambda x: F.gelu(x, approximate="tanh")}[name]

    def split_heads(x, heads: int, head_dim: int):  # [N, T, D] -> [N, H, T, dh]; static sizes keep the graph small
        return x.reshape(x.shape[0], -1, heads, head_dim).transpose(1, 2)

    def attend(q, k, v, bias, heads: int, head_dim: int):  # q [N,H,Tq,dh], k/v [N,H,Tk,dh], bias broadcast to [N,H,Tq,Tk]
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(head_dim)) + bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [N,H,Tq,dh]
        return out.transpose(1, 2).reshape(out.shape[0], -1, heads * head_dim)

    class Attention(nn.Module):
        def __init__(self, q, k, v, o, heads):
            super().__init__()
            self.q, self.k, self.v, self.o, self.heads = q, k, v, o, heads
            self.head_dim = int(q.w.shape[1]) // heads

        def project_kv(self, x):
            return (split_heads(self.k(x), self.heads, self.head_dim),
                    split_heads(self.v(x), self.heads, self.head_dim))

        def forward(self, x, k, v, bias):
            q = split_heads(self.q(x), self.heads, self.head_dim)
            return self.o(attend(q, k, v, bias, self.heads, self.head_dim))

    class FFN(nn.Module):
        def __init__(self, w1, w2, act):
            super().__init__()
            self.w1, self.w2, self.act = w1, w2, activation(act)

        def forward(self, x):
            return self.w2(self.act(self.w1(x)))

    class EncoderLayer(nn.Module):
        """Post-norm transformer layer: x = LN(x + att(x)); x = LN(x + ffn(x))."""

        def __init__(self, att, att_norm, ffn, ffn_norm):
            super().__init__()
            self.att, self.att_norm, self.ffn, self.ffn_norm = att, att_norm, ffn, ffn_norm

        def forward(self, x, bias):
            k, v = self.att.project_kv(x)
            x = self.att_norm(x + self.att(x, k, v, bias))
            return self.ffn_norm(x + self.ffn(x))

    class Encoder(nn.Module):
        """tokens [B,S] int64, lengths [B] int64 -> encoder_out [B,S,D], src_mask [B,S], cross_k/v [L,B,H,S,dh]."""

        def __init__(self, emb, emb_scale, pos, layers, cross, final_norm=None):
            super().__init__()
            self.emb, self.emb_scale, self.pos = param(emb), emb_scale, param(pos)
            self.layers = nn.ModuleList(layers)
            self.cross = nn.ModuleList(cross)  # decoder cross-attention modules (their k/v projections)
            self.final_norm = final_norm

        def forward(self, tokens, lengths):
            s = tokens.shape[1]
            steps = torch.arange(s, dtype=torch.int64)
            x = self.emb[tokens] * self.emb_scale + self.pos[steps].unsqueeze(0)
            mask = (steps.unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float32)
            bias = ((1.0 - mask) * -1e9).unsqueeze(1).unsqueeze(1)
            for layer in self.layers:
                x = layer(x, bias)
            if self.final_norm is not None:
                x = self.final_norm(x)
            ks, vs = zip(*(c.project_kv(x) for c in self.cross))
            return x, mask, torch.stack(ks), torch.stack(vs)

    class SSRU(nn.Module):
        """Marian SSRU: c = sigmoid(f) * c_prev + (1 - sigmoid(f)) * xW; out = relu(c)  (src/rnn/cells.h)."""

        def __init__(self, w, wf, bf):
            super().__init__()
            self.w, self.wf = Dense(w), Dense(wf, bf)

        def forward(self, x, c):
            f = torch.sigmoid(self.wf(x))
            c = f * c + (1.0 - f) * self.w(x)
            return torch.relu(c), c

    class SSRUDecoderStep(nn.Module):
        """One step: tokens [N] (previous output; ignored at step 0, where Marian feeds a zero embedding),
        step [1] int64, states [L,N,D], cross_k/v [L,N,H,S,dh], src_mask [N,S] -> hidden [N,D], states."""

        def __init__(self, emb, emb_scale, pos, layers):
            super().__init__()
            self.emb, self.emb_scale, self.pos = param(emb), emb_scale, param(pos)
            self.layers = nn.ModuleList(nn.ModuleList(parts) for parts in layers)  # (ssru, norm, att, norm, ffn, norm)

        def forward(self, tokens, step, states, cross_k, cross_v, src_mask):
            started = (step > 0).to(torch.float32)
            x = self.emb[tokens] * (self.emb_scale * started) + self.pos[step]  # [N,D]
            x = x.unsqueeze(1)  # [N,1,D]
            bias = ((1.0 - src_mask) * -1e9).unsqueeze(1).unsqueeze(1)
            new_states = []
            for i, (ssru, ssru_norm, att, att_norm, ffn, ffn_norm) in enumerate(self.layers):
                out, c = ssru(x, states[i].unsqueeze(1))
                new_states.append(c.squeeze(1))
                x = ssru_norm(x + out)
                x = att_norm(x + att(x, cross_k[i], cross_v[i], bias))
                x = ffn_norm(x + ffn(x))
            return x.squeeze(1), torch.stack(new_states)

    class TransformerDecoderStep(nn.Module):
        """One step with a self-attention KV cache: tokens [N], step [1], past_k/v [L,N,H,T,dh], cross_k/v,
        src_mask -> hidden [N,D], present_k/v [L,N,H,T+1,dh]."""

        def __init__(self, emb, emb_scale, pos, layers, final_norm=None):
            super().__init__()
            self.emb, self.emb_scale, self.pos = param(emb), emb_scale, param(pos)
            self.layers = nn.ModuleList(nn.ModuleList(parts) for parts in layers)  # (self, norm, cross, norm, ffn, norm)
            self.final_norm = final_norm

        def forward(self, tokens, step, past_k, past_v, cross_k, cross_v, src_mask):
            x = (self.emb[tokens] * self.emb_scale + self.pos[step]).unsqueeze(1)
            bias = ((1.0 - src_mask) * -1e9).unsqueeze(1).unsqueeze(1)
            ks, vs = [], []
            for i, (self_att, self_norm, att, att_norm, ffn, ffn_norm) in enumerate(self.layers):
                k, v = self_att.project_kv(x)
                k = torch.cat([past_k[i], k], dim=2)
                v = torch.cat([past_v[i], v], dim=2)
                ks.append(k)
                vs.append(v)
                x = self_norm(x + self_att(x, k, v, 0.0))
                x = att_norm(x + att(x, cross_k[i], cross_v[i], bias))
                x = ffn_norm(x + ffn(x))
            if self.final_norm is not None:
                x = self.final_norm(x)
            return x.squeeze(1), torch.stack(ks), torch.stack(vs)

    class Output(nn.Module):
        """hidden [N,D] -> logits [N,V] = hidden @ E^T + b."""

        def __init__(self, emb, bias):
            super().__init__()
            self.proj = Dense(np.ascontiguousarray(np.asarray(emb).T), bias)

        def forward(self, hidden):
            return self.proj(hidden)

    return {"Dense": Dense, "Norm": Norm, "Attention": Attention, "FFN": FFN, "EncoderLayer": EncoderLayer,
            "Encoder": Encoder, "SSRU": SSRU, "SSRUDecoderStep": SSRUDecoderStep,
            "TransformerDecoderStep": TransformerDecoderStep, "Output": Output}


# ----------------------------------------------------------------------------------------- export


def export(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    import warnings

    torch = _torch()
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / legacy-exporter notices: the graphs are checked after export
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)


def quantize_file(path: Path, *, per_channel: bool) -> None:
    """int8 dynamic quantization in place: MatMul weights (per output channel or per tensor), embedding Gathers."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer warns on the root logger about optional shape pre-processing
    try:
        quantize_dynamic(str(path), str(tmp), per_channel=per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather"])
    finally:
        root.setLevel(level)
    tmp.replace(path)


def check_onnx(path: Path) -> None:
    import onnx

    onnx.checker.check_model(str(path))


def export_set(modules: dict, shapes: dict, out: Path, *, quantize: bool, progress: Callable[[str], None],
               decoder_kind: str, per_channel: bool) -> None:
    """Export encoder / decoder step / output graphs with small example inputs and dynamic axes."""
    torch = _torch()
    layers, heads, dh, dim = shapes["decoder_layers"], shapes["heads"], shapes["head_dim"], shapes["dim"]
    b, s, n = 2, 5, 2
    tokens = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0]], dtype=torch.int64)
    lengths = torch.tensor([5, 3], dtype=torch.int64)
    progress("exporting encoder.onnx")
    export(modules["encoder"], (tokens, lengths), out / "encoder.onnx", ["tokens", "lengths"],
           ["encoder_out", "src_mask", "cross_k", "cross_v"],
           {"tokens": {0: "batch", 1: "src_len"}, "lengths": {0: "batch"}, "encoder_out": {0: "batch", 1: "src_len"},
            "src_mask": {0: "batch", 1: "src_len"}, "cross_k": {1: "batch", 3: "src_len"},
            "cross_v": {1: "batch", 3: "src_len"}})
    step_tokens = torch.tensor([3, 4], dtype=torch.int64)
    step = torch.tensor([1], dtype=torch.int64)
    cross = torch.zeros(layers, n, heads, s, dh)
    mask = torch.ones(n, s)
    progress("exporting decoder.onnx")
    if decoder_kind == "ssru":
        states = torch.zeros(layers, n, dim)
        export(modules["decoder"], (step_tokens, step, states, cross, cross, mask), out / "decoder.onnx",
               ["tokens", "step", "states", "cross_k", "cross_v", "src_mask"], ["hidden", "new_states"],
               {"tokens": {0: "n"}, "states": {1: "n"}, "cross_k": {1: "n", 3: "src_len"},
                "cross_v": {1: "n", 3: "src_len"}, "src_mask": {0: "n", 1: "src_len"}, "hidden": {0: "n"},
                "new_states": {1: "n"}})
    else:
        past = torch.zeros(layers, n, heads, 1, dh)
        export(modules["decoder"], (step_tokens, step, past, past, cross, cross, mask), out / "decoder.onnx",
               ["tokens", "step", "past_k", "past_v", "cross_k", "cross_v", "src_mask"],
               ["hidden", "present_k", "present_v"],
               {"tokens": {0: "n"}, "past_k": {1: "n", 3: "past"}, "past_v": {1: "n", 3: "past"},
                "cross_k": {1: "n", 3: "src_len"}, "cross_v": {1: "n", 3: "src_len"},
                "src_mask": {0: "n", 1: "src_len"}, "hidden": {0: "n"}, "present_k": {1: "n", 3: "total"},
                "present_v": {1: "n", 3: "total"}})
    progress("exporting output.onnx")
    export(modules["output"], (torch.zeros(n, dim),), out / "output.onnx", ["hidden"], ["logits"],
           {"hidden": {0: "n"}, "logits": {0: "n"}})
    for name in ("encoder.onnx", "decoder.onnx", "output.onnx"):
        if quantize:
            progress(f"quantizing {name} (int8 dynamic, per {'channel' if per_channel else 'tensor'})")
            quantize_file(out / name, per_channel=per_channel)
        check_onnx(out / name)


def save_output_rows(emb: np.ndarray, bias: np.ndarray, out: Path, int8: np.ndarray | None = None,
                     scale: float | None = None) -> None:
    """output.npz: the output embedding as int8 rows with a float scale per row, and the bias.

    The runtime dequantizes only the shortlisted rows per sentence. An int8 source keeps its exact values.
    """
    if int8 is not None and scale is not None:
        q, scales = int8, np.full(int8.shape[0], 1.0 / scale, np.float32)
    else:
        peak = np.maximum(np.abs(emb).max(axis=1), 1e-12)
        scales = (peak / 127.0).astype(np.float32)
        q = np.clip(np.rint(emb / scales[:, None]), -127, 127).astype(np.int8)
    np.savez(out / "output.npz", weight=q, scale=scales, bias=np.asarray(bias, np.float32).reshape(-1))


# ----------------------------------------------------------------------------------------- Bergamot


def _find(src: Path, pattern: str) -> list[Path]:
    return sorted(p for p in src.glob(pattern) if p.is_file())


def _lang_pair(src: Path, model: Path) -> tuple[str, str]:
    """en, pt from `model.enpt.intgemm.alphas.bin` (or the folder name `enpt-1693087644`)."""
    for token in (model.name.split(".")[1] if model.name.count(".") >= 2 else "", src.name.split("-")[0]):
        if len(token) == 4 and token.isalpha():
            return token[:2], token[2:]
    raise ModelError(f"{src}: cannot tell the language pair from {model.name}; name the model model.<src><tgt>.*.bin")


def check_source(src: Path) -> None:
    src = Path(src)
    if not src.is_dir():
        raise ModelError(f"{src} is not a Bergamot model folder: not a folder")
    models = _find(src, "model.*.bin")
    if not models:
        raise ModelError(f"{src} is not a Bergamot model folder: missing model.<pair>.intgemm.alphas.bin")
    if not _find(src, "vocab*.spm"):
        raise ModelError(f"{src} is not a Bergamot model folder: missing vocab.<pair>.spm")
    head = models[0].read_bytes()[:16]
    if len(head) < 16 or struct.unpack("<QQ", head)[0] != 1:
        raise ModelError(f"{src} is not a Bergamot model folder: {models[0].name} is not a Marian binary model")


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    started = time.monotonic()
    src, out = Path(src), Path(out)
    check_source(src)
    model_path = _find(src, "model.*.bin")[0]
    vocabs = _find(src, "vocab*.spm")
    if len({p.read_bytes() for p in vocabs}) != 1:
        raise ModelError(f"{src}: separate source and target vocabularies are not supported (found "
                         f"{', '.join(p.name for p in vocabs)}); Bergamot tiny models share one vocab")
    source_lang, target_lang = _lang_pair(src, model_path)
    progress(f"reading {model_path.name}")
    m = load_marian(model_path)
    cfg, t = m.config, m.tensors
    if cfg.get("type") != "transformer" or cfg.get("transformer-decoder-autoreg") != "rnn" \
            or cfg.get("dec-cell") != "ssru":
        raise ModelError(f"{model_path}: not a Bergamot tiny model (type={cfg.get('type')}, decoder "
                         f"{cfg.get('transformer-decoder-autoreg')}/{cfg.get('dec-cell')}); expected a transformer "
                         "encoder with an SSRU decoder")
    if cfg.get("transformer-postprocess", "dan") != "dan" or cfg.get("transformer-preprocess", "") not in ("", []):
        raise ModelError(f"{model_path}: pre/post-processing '{cfg.get('transformer-preprocess')}'/"
                         f"'{cfg.get('transformer-postprocess')}' is not supported; expected post-norm 'dan'")
    if "Wemb" not in t or "decoder_ff_logit_out_b" not in t:
        raise ModelError(f"{model_path}: missing the tied embedding Wemb or decoder_ff_logit_out_b")
    dim = int(cfg.get("dim-emb", t["Wemb"].shape[1]))
    heads = int(cfg.get("transformer-heads", 8))
    enc_layers = int(cfg.get("enc-depth", 6))
    dec_layers = int(cfg.get("dec-depth", 2))
    act = str(cfg.get("transformer-ffn-activation", "relu"))
    depth = int(cfg.get("transformer-ffn-depth", 2))
    if depth != 2:
        raise ModelError(f"{model_path}: transformer-ffn-depth {depth} is not supported (expected 2)")
    emb = t["Wemb"]
    vocab_size = emb.shape[0]
    progress(f"building torch module: {enc_layers} encoder layers, {dec_layers} SSRU decoder layers, "
             f"dim {dim}, {heads} heads, vocab {vocab_size}")
    mods = build_modules()
    Dense, Norm, Attention, FFN = mods["Dense"], mods["Norm"], mods["Attention"], mods["FFN"]
    eps = 1e-6  # Marian layerNorm (src/models/transformer.h)

    def att(prefix: str):
        return Attention(Dense(t[prefix + "_Wq"], t[prefix + "_bq"]), Dense(t[prefix + "_Wk"], t[prefix + "_bk"]),
                         Dense(t[prefix + "_Wv"], t[prefix + "_bv"]), Dense(t[prefix + "_Wo"], t[prefix + "_bo"]),
                         heads)

    def norm(prefix: str):
        return Norm(t[prefix + "_ln_scale"], t[prefix + "_ln_bias"], eps)

    def ffn(prefix: str):
        return FFN(Dense(t[prefix + "_W1"], t[prefix + "_b1"]), Dense(t[prefix + "_W2"], t[prefix + "_b2"]), act)

    try:
        pos = sinusoid_table(MAX_POSITIONS, dim, marian=True)
        enc = [mods["EncoderLayer"](att(f"encoder_l{i}_self"), norm(f"encoder_l{i}_self_Wo"),
                                    ffn(f"encoder_l{i}_ffn"), norm(f"encoder_l{i}_ffn_ffn"))
               for i in range(1, enc_layers + 1)]
        dec = [(mods["SSRU"](t[f"decoder_l{i}_rnn_W"], t[f"decoder_l{i}_rnn_Wf"], t[f"decoder_l{i}_rnn_bf"]),
                norm(f"decoder_l{i}_rnn_ffn"), att(f"decoder_l{i}_context"), norm(f"decoder_l{i}_context_Wo"),
                ffn(f"decoder_l{i}_ffn"), norm(f"decoder_l{i}_ffn_ffn")) for i in range(1, dec_layers + 1)]
    except KeyError as exc:
        raise ModelError(f"{model_path}: missing tensor {exc}; not a Bergamot tiny transformer/SSRU model") from None
    scale = math.sqrt(dim)
    modules = {
        "encoder": mods["Encoder"](emb, scale, pos, enc, [d[2] for d in dec]),
        "decoder": mods["SSRUDecoderStep"](emb, scale, pos, dec),
        "output": mods["Output"](emb, t["decoder_ff_logit_out_b"]),
    }
    shapes = {"decoder_layers": dec_layers, "heads": heads, "head_dim": dim // heads, "dim": dim}
    export_set(modules, shapes, out, quantize=quantize, progress=progress, decoder_kind="ssru", per_channel=False)
    save_output_rows(emb, t["decoder_ff_logit_out_b"], out, m.embedding_int8, m.embedding_scale)

    shutil.copy2(vocabs[0], out / VOCAB_FILE)
    shortlist = None
    lex = _find(src, "lex*.bin")
    if lex:
        shortlist = read_shortlist(lex[0], vocab_size)
        shutil.copy2(lex[0], out / SHORTLIST_FILE)
        shortlist["shared_vocab"] = True  # one vocabulary: Marian adds the source tokens to the shortlist
    max_length_factor = _read_max_length_factor(src)
    facts = {
        "format": "bergamot", "decoder": "ssru", "source_lang": source_lang, "target_lang": target_lang,
        "dim": dim, "heads": heads, "encoder_layers": enc_layers, "decoder_layers": dec_layers,
        "vocab_size": vocab_size, "eos_id": 0, "unk_id": 1, "pad_id": 0, "decoder_start_id": 0,
        "zero_start_embedding": True, "source_spm": VOCAB_FILE, "target_spm": VOCAB_FILE, "vocab": None,
        "max_positions": MAX_POSITIONS, "max_length_factor": max_length_factor, "allow_unk": False,
        "shortlist": shortlist, "quantized": quantize,
        "files": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "output": "output.onnx",
                  "output_rows": "output.npz"},
    }
    (out / "marian.json").write_text(json.dumps(facts, indent=2) + "\n")
    progress(f"converted in {time.monotonic() - started:.1f} s")
    return {
        "source_lang": source_lang, "target_lang": target_lang, "languages": [source_lang, target_lang],
        "quantization": QUANTIZATION_INT8 if quantize else "none (float32; weights dequantized from Marian int8)",
        "opset": OPSET,
        "architecture": {"type": "transformer encoder + SSRU decoder (Marian/Bergamot tiny)", "dim": dim,
                         "heads": heads, "encoder_layers": enc_layers, "decoder_layers": dec_layers,
                         "ffn": int(t["encoder_l1_ffn_W1"].shape[1]), "vocab": vocab_size,
                         "shortlist": bool(shortlist)},
    }


def _read_max_length_factor(src: Path) -> float:
    for cfg in _find(src, "config*.yml"):
        value = _yaml_scalars(cfg.read_text(errors="replace")).get("max-length-factor")
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 2.5
