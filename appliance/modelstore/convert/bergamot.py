"""Bergamot / Firefox Translations "tiny" Marian models (int8 `*.intgemm.alphas.bin`) -> ONNX.

The Marian binary is parsed here (no Marian needed), its int8 matrices are dequantized, and `marian_graph` builds
from them the three graphs the runtime (`appliance.translate`) drives:

- `encoder.onnx`: tokens [B,S] + lengths [B] -> encoder_out, src_mask, and every decoder layer's
  cross-attention keys/values (computed once per sentence);
- `decoder.onnx`: one step of the SSRU decoder (recurrent state in, state out) -> hidden [N,D];
- `output.onnx`: hidden -> logits over the whole vocabulary; plus `output.npz` (int8 rows + scales + bias)
  so the runtime can score only the lexical shortlist's rows (`lex.s2t.bin`, copied as-is).

Marian references: src/common/binary.cpp (file layout), src/models/transformer.h (post-norm "dan",
sqrt(dim) embedding scale, sinusoidal positions, zero start embedding), src/rnn/cells.h (SSRU),
src/data/shortlist.h (binary lexical shortlist).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.modelstore.convert import marian_graph as mg
from appliance.modelstore.manifest import ModelError

VERSION = "1"
MAX_POSITIONS = 1024  # rows of the position table baked into the graphs; the runtime caps lengths below it
SHORTLIST_MAGIC = 0xF11A48D5013417F5
SHORTLIST_FILE = "lex.s2t.bin"
VOCAB_FILE = "vocab.spm"
NORM_EPS = 1e-6  # Marian layerNorm (src/models/transformer.h)

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


# ----------------------------------------------------------------------------------------- output rows


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


def _check_config(m: MarianModel, model_path: Path) -> None:
    """Refuse what the graphs cannot express, naming the setting."""
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
    depth = int(cfg.get("transformer-ffn-depth", 2))
    if depth != 2:
        raise ModelError(f"{model_path}: transformer-ffn-depth {depth} is not supported (expected 2)")
    act = str(cfg.get("transformer-ffn-activation", "relu"))
    if act not in mg.ACTIVATIONS:
        raise ModelError(f"{model_path}: transformer-ffn-activation '{act}' is not supported "
                         f"(expected one of {', '.join(mg.ACTIVATIONS)})")


def _attention(t: dict[str, np.ndarray], prefix: str) -> mg.Attention:
    return mg.Attention(*(mg.Linear(t[f"{prefix}_W{p}"], t[f"{prefix}_b{p}"]) for p in "qkvo"))


def _norm(t: dict[str, np.ndarray], prefix: str) -> mg.Norm:
    return mg.Norm(t[prefix + "_ln_scale"], t[prefix + "_ln_bias"], NORM_EPS)


def _ffn(t: dict[str, np.ndarray], prefix: str, act: str) -> mg.FFN:
    return mg.FFN(mg.Linear(t[prefix + "_W1"], t[prefix + "_b1"]), mg.Linear(t[prefix + "_W2"], t[prefix + "_b2"]), act)


def _weights(m: MarianModel, model_path: Path) -> mg.MarianWeights:
    """The Marian tensors arranged as a transformer encoder + SSRU decoder sharing one embedding with the output."""
    cfg, t = m.config, m.tensors
    dim = int(cfg.get("dim-emb", t["Wemb"].shape[1]))
    act = str(cfg.get("transformer-ffn-activation", "relu"))
    try:
        enc = [mg.EncoderLayer(_attention(t, f"encoder_l{i}_self"), _norm(t, f"encoder_l{i}_self_Wo"),
                               _ffn(t, f"encoder_l{i}_ffn", act), _norm(t, f"encoder_l{i}_ffn_ffn"))
               for i in range(1, int(cfg.get("enc-depth", 6)) + 1)]
        dec = [mg.SSRULayer(t[f"decoder_l{i}_rnn_W"], mg.Linear(t[f"decoder_l{i}_rnn_Wf"], t[f"decoder_l{i}_rnn_bf"]),
                            _norm(t, f"decoder_l{i}_rnn_ffn"), _attention(t, f"decoder_l{i}_context"),
                            _norm(t, f"decoder_l{i}_context_Wo"), _ffn(t, f"decoder_l{i}_ffn", act),
                            _norm(t, f"decoder_l{i}_ffn_ffn"))
               for i in range(1, int(cfg.get("dec-depth", 2)) + 1)]
    except KeyError as exc:
        raise ModelError(f"{model_path}: missing tensor {exc}; not a Bergamot tiny transformer/SSRU model") from None
    emb, pos = t["Wemb"], mg.sinusoid_table(MAX_POSITIONS, dim, marian=True)
    return mg.MarianWeights(heads=int(cfg.get("transformer-heads", 8)), emb_scale=math.sqrt(dim), enc_emb=emb,
                            enc_pos=pos, encoder=enc, dec_emb=emb, dec_pos=pos, decoder=dec,
                            output=mg.Linear(np.ascontiguousarray(emb.T), t["decoder_ff_logit_out_b"]))


def _shared_vocab(src: Path) -> Path:
    vocabs = _find(src, "vocab*.spm")
    if len({p.read_bytes() for p in vocabs}) != 1:
        raise ModelError(f"{src}: separate source and target vocabularies are not supported (found "
                         f"{', '.join(p.name for p in vocabs)}); Bergamot tiny models share one vocab")
    return vocabs[0]


def _copy_shortlist(src: Path, out: Path, vocab_size: int) -> dict | None:
    lex = _find(src, "lex*.bin")
    if not lex:
        return None
    shortlist = read_shortlist(lex[0], vocab_size)
    shutil.copy2(lex[0], out / SHORTLIST_FILE)
    shortlist["shared_vocab"] = True  # one vocabulary: Marian adds the source tokens to the shortlist
    return shortlist


def _facts(w: mg.MarianWeights, langs: tuple[str, str], shortlist: dict | None, max_length_factor: float,
           quantize: bool) -> dict:
    """marian.json: what the runtime needs to drive the graphs."""
    return {
        "format": "bergamot", "decoder": "ssru", "source_lang": langs[0], "target_lang": langs[1],
        "dim": w.dim, "heads": w.heads, "encoder_layers": len(w.encoder), "decoder_layers": len(w.decoder),
        "vocab_size": int(w.enc_emb.shape[0]), "eos_id": 0, "unk_id": 1, "pad_id": 0, "decoder_start_id": 0,
        "zero_start_embedding": True, "source_spm": VOCAB_FILE, "target_spm": VOCAB_FILE, "vocab": None,
        "max_positions": MAX_POSITIONS, "max_length_factor": max_length_factor, "allow_unk": False,
        "shortlist": shortlist, "quantized": quantize,
        "files": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "output": "output.onnx",
                  "output_rows": "output.npz"},
    }


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    started = time.monotonic()
    src, out = Path(src), Path(out)
    check_source(src)
    model_path = _find(src, "model.*.bin")[0]
    vocab = _shared_vocab(src)
    langs = _lang_pair(src, model_path)
    progress(f"reading {model_path.name}")
    m = load_marian(model_path)
    _check_config(m, model_path)
    w = _weights(m, model_path)
    vocab_size = int(w.enc_emb.shape[0])
    progress(f"building graphs: {len(w.encoder)} encoder layers, {len(w.decoder)} SSRU decoder layers, "
             f"dim {w.dim}, {w.heads} heads, vocab {vocab_size}")
    mg.write_graphs(w, out, quantize=quantize, per_channel=False, progress=progress)
    save_output_rows(w.enc_emb, w.output.b, out, m.embedding_int8, m.embedding_scale)
    shutil.copy2(vocab, out / VOCAB_FILE)
    shortlist = _copy_shortlist(src, out, vocab_size)
    facts = _facts(w, langs, shortlist, _read_max_length_factor(src), quantize)
    (out / "marian.json").write_text(json.dumps(facts, indent=2) + "\n")
    progress(f"converted in {time.monotonic() - started:.1f} s")
    return {
        "source_lang": langs[0], "target_lang": langs[1], "languages": list(langs),
        "quantization": QUANTIZATION_INT8 if quantize else "none (float32; weights dequantized from Marian int8)",
        "opset": mg.OPSET,
        "architecture": {"type": "transformer encoder + SSRU decoder (Marian/Bergamot tiny)", "dim": w.dim,
                         "heads": w.heads, "encoder_layers": len(w.encoder), "decoder_layers": len(w.decoder),
                         "ffn": int(w.encoder[0].ffn.w1.w.shape[1]), "vocab": vocab_size,
                         "shortlist": bool(shortlist)},
    }


def _read_max_length_factor(src: Path) -> float:
    for cfg in _find(src, "config*.yml"):
        value = _yaml_scalars(cfg.read_text(errors="replace")).get("max-length-factor")
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 2.5
