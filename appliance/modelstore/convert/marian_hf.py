"""Hugging Face OPUS-MT / MarianMTModel folders -> the same ONNX layout as the Bergamot converter.

Input: config.json (model_type "marian"), model.safetensors or pytorch_model.bin, source.spm, target.spm and
vocab.json (one shared piece -> id map). Output: encoder.onnx, decoder.onnx (a post-norm transformer decoder step
with a self-attention KV cache instead of Bergamot's SSRU), output.onnx, the two sentencepiece models, vocab.json
and marian.json with decoder "transformer"; the runtime picks its decode loop from marian.json.
The weights are read directly (safetensors / torch), so converting needs no `transformers`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.modelstore.convert import bergamot as common
from appliance.modelstore.manifest import ModelError

VERSION = "1"
QUANTIZATION_INT8 = "int8 dynamic per-channel (MatMul weights), embedding Gather per tensor"
REQUIRED = ("config.json", "source.spm", "target.spm", "vocab.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def check_source(src: Path) -> None:
    src = Path(src)
    if not src.is_dir():
        raise ModelError(f"{src} is not a Hugging Face Marian (OPUS-MT) folder: not a folder")
    missing = [name for name in REQUIRED if not (src / name).is_file()]
    if not any((src / name).is_file() for name in WEIGHTS):
        missing.append(" or ".join(WEIGHTS))
    if missing:
        raise ModelError(f"{src} is not a Hugging Face Marian (OPUS-MT) folder: missing {', '.join(missing)}")
    try:
        config = json.loads((src / "config.json").read_text())
    except ValueError as exc:
        raise ModelError(f"{src}/config.json is not valid JSON ({exc}); re-download the model") from None
    if config.get("model_type") != "marian":
        raise ModelError(f"{src} is not a Hugging Face Marian (OPUS-MT) folder: config.json model_type is "
                         f"'{config.get('model_type')}', expected 'marian'")


def _state_dict(src: Path) -> dict[str, np.ndarray]:
    if (src / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        raw = load_file(str(src / "model.safetensors"))
    else:
        import torch

        raw = {k: v.float().numpy() for k, v in torch.load(str(src / "pytorch_model.bin"), map_location="cpu",
                                                           weights_only=True).items()}
    out = {}
    for key, value in raw.items():
        out[key[len("model."):] if key.startswith("model.") else key] = np.asarray(value, dtype=np.float32)
    return out


def _languages(src: Path) -> tuple[str, str]:
    tok_cfg = src / "tokenizer_config.json"
    if tok_cfg.is_file():
        cfg = json.loads(tok_cfg.read_text())
        if cfg.get("source_lang") and cfg.get("target_lang"):
            return str(cfg["source_lang"]), str(cfg["target_lang"])
    found = re.search(r"opus-mt-([a-z]{2,3})-([a-z]{2,3})$", src.resolve().name, re.IGNORECASE)
    if found:
        return found.group(1).lower(), found.group(2).lower()
    raise ModelError(f"{src}: cannot tell the language pair; add \"source_lang\" and \"target_lang\" to "
                     "tokenizer_config.json or name the folder opus-mt-<src>-<tgt>")


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    started = time.monotonic()
    src, out = Path(src), Path(out)
    check_source(src)
    cfg = json.loads((src / "config.json").read_text())
    tok_cfg = json.loads((src / "tokenizer_config.json").read_text()) if (src / "tokenizer_config.json").is_file() \
        else {}
    if tok_cfg.get("separate_vocabs"):
        raise ModelError(f"{src}: separate source/target vocabularies (separate_vocabs) are not supported; "
                         "use an OPUS-MT model with one shared vocab.json")
    if cfg.get("normalize_before") or cfg.get("add_final_layer_norm"):
        raise ModelError(f"{src}: pre-norm Marian variants are not supported (normalize_before / add_final_layer_norm)")
    source_lang, target_lang = _languages(src)
    vocab = json.loads((src / "vocab.json").read_text())
    dim, heads = int(cfg["d_model"]), int(cfg["encoder_attention_heads"])
    enc_layers, dec_layers = int(cfg["encoder_layers"]), int(cfg["decoder_layers"])
    if int(cfg.get("decoder_attention_heads", heads)) != heads:
        raise ModelError(f"{src}: different encoder/decoder head counts are not supported")
    act = str(cfg.get("activation_function", "swish"))
    eos, pad = int(cfg["eos_token_id"]), int(cfg["pad_token_id"])
    start = int(cfg["decoder_start_token_id"]) if cfg.get("decoder_start_token_id") is not None else pad
    positions = int(cfg.get("max_position_embeddings", 512))
    progress(f"reading weights ({enc_layers}+{dec_layers} layers, dim {dim}, {heads} heads)")
    t = _state_dict(src)
    emb = t.get("shared.weight", t.get("encoder.embed_tokens.weight"))
    if emb is None:
        raise ModelError(f"{src}: no shared embedding (model.shared.weight) in the weights")
    dec_emb = t.get("decoder.embed_tokens.weight", emb)
    vocab_size = emb.shape[0]
    if vocab_size != int(cfg.get("vocab_size", vocab_size)) or max(vocab.values()) >= vocab_size:
        raise ModelError(f"{src}: vocab.json ({len(vocab)} pieces) does not fit the embedding ({vocab_size} rows)")
    lm_head = emb if cfg.get("tie_word_embeddings", True) or "lm_head.weight" not in t else t["lm_head.weight"]
    bias = t.get("final_logits_bias", np.zeros((1, vocab_size), np.float32)).reshape(-1)
    scale = math.sqrt(dim) if cfg.get("scale_embedding", True) else 1.0
    enc_pos = t.get("encoder.embed_positions.weight", common.sinusoid_table(positions, dim, marian=False))
    dec_pos = t.get("decoder.embed_positions.weight", common.sinusoid_table(positions, dim, marian=False))

    mods = common.build_modules()
    Dense, Norm, Attention, FFN = mods["Dense"], mods["Norm"], mods["Attention"], mods["FFN"]

    def lin(prefix: str):
        return Dense(t[prefix + ".weight"].T, t.get(prefix + ".bias"))

    def att(prefix: str):
        return Attention(lin(prefix + ".q_proj"), lin(prefix + ".k_proj"), lin(prefix + ".v_proj"),
                         lin(prefix + ".out_proj"), heads)

    def norm(prefix: str):
        return Norm(t[prefix + ".weight"], t[prefix + ".bias"], 1e-5)

    def ffn(prefix: str):
        return FFN(lin(prefix + ".fc1"), lin(prefix + ".fc2"), act)

    try:
        enc = [mods["EncoderLayer"](att(f"encoder.layers.{i}.self_attn"), norm(f"encoder.layers.{i}.self_attn_layer_norm"),
                                    ffn(f"encoder.layers.{i}"), norm(f"encoder.layers.{i}.final_layer_norm"))
               for i in range(enc_layers)]
        dec = [(att(f"decoder.layers.{i}.self_attn"), norm(f"decoder.layers.{i}.self_attn_layer_norm"),
                att(f"decoder.layers.{i}.encoder_attn"), norm(f"decoder.layers.{i}.encoder_attn_layer_norm"),
                ffn(f"decoder.layers.{i}"), norm(f"decoder.layers.{i}.final_layer_norm")) for i in range(dec_layers)]
    except KeyError as exc:
        raise ModelError(f"{src}: missing weight {exc}; not a MarianMTModel checkpoint") from None
    modules = {
        "encoder": mods["Encoder"](emb, scale, enc_pos, enc, [d[2] for d in dec]),
        "decoder": mods["TransformerDecoderStep"](dec_emb, scale, dec_pos, dec),
        "output": mods["Output"](lm_head, bias),
    }
    shapes = {"decoder_layers": dec_layers, "heads": heads, "head_dim": dim // heads, "dim": dim}
    common.export_set(modules, shapes, out, quantize=quantize, progress=progress, decoder_kind="transformer",
                      per_channel=True)
    for name in ("source.spm", "target.spm", "vocab.json"):
        shutil.copy2(src / name, out / name)
    suppress = sorted({pad, *(int(i) for ids in (cfg.get("bad_words_ids") or []) for i in ids if len(ids) == 1)})
    facts = {
        "format": "marian-hf", "decoder": "transformer", "source_lang": source_lang, "target_lang": target_lang,
        "dim": dim, "heads": heads, "encoder_layers": enc_layers, "decoder_layers": dec_layers,
        "vocab_size": vocab_size, "eos_id": eos, "unk_id": int(vocab.get("<unk>", 1)), "pad_id": pad,
        "decoder_start_id": start, "zero_start_embedding": False, "source_spm": "source.spm",
        "target_spm": "target.spm", "vocab": "vocab.json", "max_positions": int(enc_pos.shape[0]),
        "max_length_factor": 2.5, "allow_unk": True, "shortlist": None, "suppress_ids": suppress,
        "quantized": quantize, "files": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "output": "output.onnx"},
    }
    (out / "marian.json").write_text(json.dumps(facts, indent=2) + "\n")
    progress(f"converted in {time.monotonic() - started:.1f} s")
    return {
        "source_lang": source_lang, "target_lang": target_lang, "languages": [source_lang, target_lang],
        "quantization": QUANTIZATION_INT8 if quantize else "none (float32)", "opset": common.OPSET,
        "architecture": {"type": "transformer encoder-decoder (Hugging Face MarianMTModel)", "dim": dim,
                         "heads": heads, "encoder_layers": enc_layers, "decoder_layers": dec_layers,
                         "ffn": int(cfg.get("encoder_ffn_dim", 0)), "vocab": vocab_size, "activation": act},
    }
