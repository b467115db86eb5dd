"""Hugging Face OPUS-MT / MarianMTModel folders -> the same ONNX layout as the Bergamot converter.

Input: config.json (model_type "marian"), model.safetensors or pytorch_model.bin, source.spm, target.spm and
vocab.json (one shared piece -> id map). Output: encoder.onnx, decoder.onnx (a post-norm transformer decoder step
with a self-attention KV cache instead of Bergamot's SSRU), output.onnx, the two sentencepiece models, vocab.json
and marian.json with decoder "transformer"; the runtime picks its decode loop from marian.json.
The weights are read with numpy (safetensors, or `torch_pickle` for a torch checkpoint) and `marian_graph` builds the
graphs, so converting needs neither `transformers` nor torch.
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

from appliance.modelstore.convert import marian_graph as mg
from appliance.modelstore.convert import torch_pickle
from appliance.modelstore.manifest import ModelError

VERSION = "1"
QUANTIZATION_INT8 = "int8 dynamic per-channel (MatMul weights), embedding Gather per tensor"
REQUIRED = ("config.json", "source.spm", "target.spm", "vocab.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which MarianMTModel keeps


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
    """Every weight as float32 without the leading "model." (safetensors, or a torch checkpoint read without torch)."""
    if (src / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        raw = load_file(str(src / "model.safetensors"))
    else:
        raw = torch_pickle.state_dict(src / "pytorch_model.bin")
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


def _check_config(src: Path, cfg: dict) -> None:
    tok_cfg = json.loads((src / "tokenizer_config.json").read_text()) if (src / "tokenizer_config.json").is_file() \
        else {}
    if tok_cfg.get("separate_vocabs"):
        raise ModelError(f"{src}: separate source/target vocabularies (separate_vocabs) are not supported; "
                         "use an OPUS-MT model with one shared vocab.json")
    if cfg.get("normalize_before") or cfg.get("add_final_layer_norm"):
        raise ModelError(f"{src}: pre-norm Marian variants are not supported (normalize_before / add_final_layer_norm)")
    if int(cfg.get("decoder_attention_heads", cfg["encoder_attention_heads"])) != int(cfg["encoder_attention_heads"]):
        raise ModelError(f"{src}: different encoder/decoder head counts are not supported")
    act = str(cfg.get("activation_function", "swish"))
    if act not in mg.ACTIVATIONS:
        raise ModelError(f"{src}: activation_function '{act}' is not supported "
                         f"(expected one of {', '.join(mg.ACTIVATIONS)})")


def _lin(t: dict[str, np.ndarray], prefix: str) -> mg.Linear:
    return mg.Linear(t[prefix + ".weight"].T, t.get(prefix + ".bias"))  # torch Linear stores [out, in]


def _attention(t: dict[str, np.ndarray], prefix: str) -> mg.Attention:
    return mg.Attention(*(_lin(t, f"{prefix}.{p}_proj") for p in ("q", "k", "v", "out")))


def _norm(t: dict[str, np.ndarray], prefix: str) -> mg.Norm:
    return mg.Norm(t[prefix + ".weight"], t[prefix + ".bias"], NORM_EPS)


def _ffn(t: dict[str, np.ndarray], prefix: str, act: str) -> mg.FFN:
    return mg.FFN(_lin(t, prefix + ".fc1"), _lin(t, prefix + ".fc2"), act)


def _layers(t: dict[str, np.ndarray], cfg: dict) -> tuple[list[mg.EncoderLayer], list[mg.TransformerLayer]]:
    act = str(cfg.get("activation_function", "swish"))
    enc = [mg.EncoderLayer(_attention(t, f"encoder.layers.{i}.self_attn"),
                           _norm(t, f"encoder.layers.{i}.self_attn_layer_norm"), _ffn(t, f"encoder.layers.{i}", act),
                           _norm(t, f"encoder.layers.{i}.final_layer_norm"))
           for i in range(int(cfg["encoder_layers"]))]
    dec = [mg.TransformerLayer(_attention(t, f"decoder.layers.{i}.self_attn"),
                               _norm(t, f"decoder.layers.{i}.self_attn_layer_norm"),
                               _attention(t, f"decoder.layers.{i}.encoder_attn"),
                               _norm(t, f"decoder.layers.{i}.encoder_attn_layer_norm"),
                               _ffn(t, f"decoder.layers.{i}", act), _norm(t, f"decoder.layers.{i}.final_layer_norm"))
           for i in range(int(cfg["decoder_layers"]))]
    return enc, dec


def _weights(src: Path, cfg: dict, vocab: dict[str, int]) -> mg.MarianWeights:
    t = _state_dict(src)
    emb = t.get("shared.weight", t.get("encoder.embed_tokens.weight"))
    if emb is None:
        raise ModelError(f"{src}: no shared embedding (model.shared.weight) in the weights")
    vocab_size, dim = emb.shape
    if vocab_size != int(cfg.get("vocab_size", vocab_size)) or max(vocab.values()) >= vocab_size:
        raise ModelError(f"{src}: vocab.json ({len(vocab)} pieces) does not fit the embedding ({vocab_size} rows)")
    lm_head = emb if cfg.get("tie_word_embeddings", True) or "lm_head.weight" not in t else t["lm_head.weight"]
    bias = t.get("final_logits_bias", np.zeros((1, vocab_size), np.float32)).reshape(-1)
    try:
        enc, dec = _layers(t, cfg)
    except KeyError as exc:
        raise ModelError(f"{src}: missing weight {exc}; not a MarianMTModel checkpoint") from None
    table = mg.sinusoid_table(int(cfg.get("max_position_embeddings", 512)), dim, marian=False)
    scale = math.sqrt(dim) if cfg.get("scale_embedding", True) else 1.0
    return mg.MarianWeights(
        heads=int(cfg["encoder_attention_heads"]), emb_scale=scale, enc_emb=emb,
        enc_pos=t.get("encoder.embed_positions.weight", table), encoder=enc,
        dec_emb=t.get("decoder.embed_tokens.weight", emb), dec_pos=t.get("decoder.embed_positions.weight", table),
        decoder=dec, output=mg.Linear(np.ascontiguousarray(lm_head.T), bias))


def _facts(w: mg.MarianWeights, cfg: dict, vocab: dict[str, int], langs: tuple[str, str], quantize: bool) -> dict:
    """marian.json: what the runtime needs to drive the graphs."""
    eos, pad = int(cfg["eos_token_id"]), int(cfg["pad_token_id"])
    start = int(cfg["decoder_start_token_id"]) if cfg.get("decoder_start_token_id") is not None else pad
    suppress = sorted({pad, *(int(i) for ids in (cfg.get("bad_words_ids") or []) for i in ids if len(ids) == 1)})
    return {
        "format": "marian-hf", "decoder": "transformer", "source_lang": langs[0], "target_lang": langs[1],
        "dim": w.dim, "heads": w.heads, "encoder_layers": len(w.encoder), "decoder_layers": len(w.decoder),
        "vocab_size": int(w.enc_emb.shape[0]), "eos_id": eos, "unk_id": int(vocab.get("<unk>", 1)), "pad_id": pad,
        "decoder_start_id": start, "zero_start_embedding": False, "source_spm": "source.spm",
        "target_spm": "target.spm", "vocab": "vocab.json", "max_positions": int(w.enc_pos.shape[0]),
        "max_length_factor": 2.5, "allow_unk": True, "shortlist": None, "suppress_ids": suppress,
        "quantized": quantize, "files": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "output": "output.onnx"},
    }


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    started = time.monotonic()
    src, out = Path(src), Path(out)
    check_source(src)
    cfg = json.loads((src / "config.json").read_text())
    _check_config(src, cfg)
    langs = _languages(src)
    vocab = json.loads((src / "vocab.json").read_text())
    progress(f"reading weights ({cfg['encoder_layers']}+{cfg['decoder_layers']} layers, dim {cfg['d_model']}, "
             f"{cfg['encoder_attention_heads']} heads)")
    w = _weights(src, cfg, vocab)
    mg.write_graphs(w, out, quantize=quantize, per_channel=True, progress=progress)
    for name in ("source.spm", "target.spm", "vocab.json"):
        shutil.copy2(src / name, out / name)
    (out / "marian.json").write_text(json.dumps(_facts(w, cfg, vocab, langs, quantize), indent=2) + "\n")
    progress(f"converted in {time.monotonic() - started:.1f} s")
    return {
        "source_lang": langs[0], "target_lang": langs[1], "languages": list(langs),
        "quantization": QUANTIZATION_INT8 if quantize else "none (float32)", "opset": mg.OPSET,
        "architecture": {"type": "transformer encoder-decoder (Hugging Face MarianMTModel)", "dim": w.dim,
                         "heads": w.heads, "encoder_layers": len(w.encoder), "decoder_layers": len(w.decoder),
                         "ffn": int(cfg.get("encoder_ffn_dim", 0)), "vocab": int(w.enc_emb.shape[0]),
                         "activation": str(cfg.get("activation_function", "swish"))},
    }
