"""The OPUS-MT / Hugging Face Marian importer, checked against a numpy forward pass written here (the oracle).

The model is tiny and random: its checkpoint (model.safetensors, config.json, vocab.json) is written with numpy and
its sentencepiece models are trained here from a few sentences, so nothing is downloaded and no torch is needed.
The oracle follows MarianMTModel as transformers defines it (post-norm layers, sqrt(d) embedding scale, sinusoidal
positions, causal self-attention over the whole prefix, logits = hidden @ shared^T + final_logits_bias) and shares no
code with the converter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_bus_support import require

spm = require("sentencepiece", "pip install -e . installs sentencepiece")
safetensors_numpy = require("safetensors.numpy", "pip install -e .[build] installs safetensors")

from appliance.modelstore.convert import marian_hf  # noqa: E402
from appliance.modelstore.manifest import ModelError  # noqa: E402
from appliance.translate import Translator  # noqa: E402

SOURCE = [
    "the cat sits on the mat", "a dog runs in the park", "we translate short sentences",
    "the meeting starts at nine", "please turn off your phones", "thank you for coming tonight",
    "the weather is nice today", "where is the train station", "i would like a cup of coffee",
]
TARGET = [
    "o gato senta no tapete", "um cão corre no parque", "nós traduzimos frases curtas",
    "a reunião começa às nove", "por favor desliguem os telefones", "obrigado por virem esta noite",
    "o tempo está bom hoje", "onde fica a estação de comboio", "eu queria um café",
]
MAX_NEW = 12
DIM, HEADS, FFN_DIM, LAYERS, POSITIONS = 32, 4, 64, 2, 64
MARGIN = 1e-3  # the oracle's best token beats the runner-up by more than float32 rounding at every greedy step


def _train(prefix: Path, lines: list[str]) -> list[str]:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines * 4), model_prefix=str(prefix), vocab_size=60,
                                   model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1,
                                   unk_id=0, pad_id=-1, hard_vocab_limit=False, minloglevel=2)
    proc = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    return [proc.id_to_piece(i) for i in range(proc.get_piece_size())]


def _random_weights(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """MarianMTModel's state dict (torch Linear layout [out, in]) with random values, biases and norms included."""
    rng = np.random.default_rng(seed)

    def normal(*shape, std=0.3):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = {"model.shared.weight": normal(vocab_size, DIM), "final_logits_bias": normal(1, vocab_size, std=0.5)}

    def add(prefix: str, out_dim: int, in_dim: int):
        w[f"{prefix}.weight"], w[f"{prefix}.bias"] = normal(out_dim, in_dim), normal(out_dim, std=0.1)

    def add_norm(prefix: str):
        w[f"{prefix}.weight"], w[f"{prefix}.bias"] = 1 + normal(DIM, std=0.1), normal(DIM, std=0.1)

    for side, attentions in (("encoder", ("self_attn",)), ("decoder", ("self_attn", "encoder_attn"))):
        for i in range(LAYERS):
            p = f"model.{side}.layers.{i}"
            for att in attentions:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    add(f"{p}.{att}.{proj}", DIM, DIM)
                add_norm(f"{p}.{att}_layer_norm")
            add(f"{p}.fc1", FFN_DIM, DIM)
            add(f"{p}.fc2", DIM, FFN_DIM)
            add_norm(f"{p}.final_layer_norm")
    return w


def _config(vocab_size: int) -> dict:
    pad = vocab_size - 1
    return {"model_type": "marian", "vocab_size": vocab_size, "d_model": DIM, "encoder_layers": LAYERS,
            "decoder_layers": LAYERS, "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS,
            "encoder_ffn_dim": FFN_DIM, "decoder_ffn_dim": FFN_DIM, "max_position_embeddings": POSITIONS,
            "pad_token_id": pad, "eos_token_id": 0, "decoder_start_token_id": pad, "activation_function": "swish",
            "scale_embedding": True, "share_encoder_decoder_embeddings": True, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("opus-mt-en-pt")
    src_pieces = _train(folder / "src", SOURCE)
    tgt_pieces = _train(folder / "tgt", TARGET)
    (folder / "src.model").rename(folder / "source.spm")
    (folder / "tgt.model").rename(folder / "target.spm")
    pieces = ["</s>", "<unk>"] + sorted({p for p in src_pieces + tgt_pieces if p not in ("<unk>", "</s>")})
    vocab = {p: i for i, p in enumerate(pieces)}
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(json.dumps({"source_lang": "en", "target_lang": "pt"}))
    (folder / "config.json").write_text(json.dumps(_config(len(vocab))))
    safetensors_numpy.save_file(_random_weights(len(vocab)), str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def oracle(hf_folder) -> "Oracle":
    return Oracle(safetensors_numpy.load_file(str(hf_folder / "model.safetensors")),
                  json.loads((hf_folder / "config.json").read_text()))


@pytest.fixture(scope="module")
def converted(hf_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted-float")
    fields = marian_hf.convert(hf_folder, out, progress=lambda m: None, quantize=False)
    assert fields["source_lang"] == "en" and fields["target_lang"] == "pt"
    assert json.loads((out / "marian.json").read_text())["decoder"] == "transformer"
    return out


# ----------------------------------------------------------------------------------------- the oracle


def _positions(count: int, dim: int) -> np.ndarray:
    """transformers' MarianSinusoidalPositionalEmbedding: sin of the even angles, then cos of the odd ones."""
    j = np.arange(dim)
    angle = np.arange(count)[:, None] / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    return np.concatenate([np.sin(angle[:, 0::2]), np.cos(angle[:, 1::2])], axis=1)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Oracle:
    """MarianMTModel's forward pass in float64 numpy, one sentence at a time, no cache."""

    def __init__(self, weights: dict[str, np.ndarray], config: dict):
        self.w = {k.removeprefix("model."): v.astype(np.float64) for k, v in weights.items()}
        self.cfg = config
        self.pos = _positions(config["max_position_embeddings"], config["d_model"])

    def _linear(self, prefix: str, x: np.ndarray) -> np.ndarray:
        return x @ self.w[f"{prefix}.weight"].T + self.w[f"{prefix}.bias"]

    def _norm(self, prefix: str, x: np.ndarray) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * self.w[f"{prefix}.weight"] + self.w[f"{prefix}.bias"]

    def _attention(self, prefix: str, x: np.ndarray, memory: np.ndarray, causal: bool) -> np.ndarray:
        heads = self.cfg["encoder_attention_heads"]

        def split(a):  # [T, D] -> [H, T, dh]
            return a.reshape(a.shape[0], heads, -1).transpose(1, 0, 2)

        q = split(self._linear(f"{prefix}.q_proj", x))
        k, v = split(self._linear(f"{prefix}.k_proj", memory)), split(self._linear(f"{prefix}.v_proj", memory))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        if causal:
            scores = scores + np.triu(np.full(scores.shape[1:], -np.inf), 1)
        out = (_softmax(scores) @ v).transpose(1, 0, 2).reshape(x.shape)
        return self._linear(f"{prefix}.out_proj", out)

    def _ffn(self, prefix: str, x: np.ndarray) -> np.ndarray:
        h = self._linear(f"{prefix}.fc1", x)
        return self._linear(f"{prefix}.fc2", h / (1 + np.exp(-h)))  # swish

    def _embed(self, ids: list[int]) -> np.ndarray:
        return self.w["shared.weight"][ids] * np.sqrt(self.cfg["d_model"]) + self.pos[: len(ids)]

    def encode(self, ids: list[int]) -> np.ndarray:
        x = self._embed(ids)
        for i in range(self.cfg["encoder_layers"]):
            p = f"encoder.layers.{i}"
            x = self._norm(f"{p}.self_attn_layer_norm", x + self._attention(f"{p}.self_attn", x, x, False))
            x = self._norm(f"{p}.final_layer_norm", x + self._ffn(p, x))
        return x

    def logits(self, prefix: list[int], memory: np.ndarray) -> np.ndarray:
        """Logits at every position of the decoder prefix."""
        y = self._embed(prefix)
        for i in range(self.cfg["decoder_layers"]):
            p = f"decoder.layers.{i}"
            y = self._norm(f"{p}.self_attn_layer_norm", y + self._attention(f"{p}.self_attn", y, y, True))
            y = self._norm(f"{p}.encoder_attn_layer_norm", y + self._attention(f"{p}.encoder_attn", y, memory, False))
            y = self._norm(f"{p}.final_layer_norm", y + self._ffn(p, y))
        return y @ self.w["shared.weight"].T + self.w["final_logits_bias"].reshape(-1)

    def greedy(self, ids: list[int], max_new: int) -> tuple[list[int], float]:
        """Greedy tokens (pad never chosen, EOS ends and is left out) and the smallest best-vs-runner-up margin."""
        memory, prefix, margin = self.encode(ids), [self.cfg["decoder_start_token_id"]], np.inf
        for _ in range(max_new):
            scores = self.logits(prefix, memory)[-1]
            scores[self.cfg["pad_token_id"]] = -np.inf
            second, best = np.sort(scores)[-2:]
            margin = min(margin, best - second)
            token = int(scores.argmax())
            if token == self.cfg["eos_token_id"]:
                break
            prefix.append(token)
        return prefix[1:], float(margin)


# ----------------------------------------------------------------------------------------- tests


def _hf_ids(hf_folder: Path, text: str) -> list[int]:
    vocab = json.loads((hf_folder / "vocab.json").read_text())
    proc = spm.SentencePieceProcessor(model_file=str(hf_folder / "source.spm"))
    return [vocab.get(p, vocab["<unk>"]) for p in proc.encode(text, out_type=str)] + [vocab["</s>"]]


def test_onnx_encoder_and_first_logits_match_the_oracle(hf_folder, oracle, converted):
    import onnxruntime as ort

    ids = _hf_ids(hf_folder, "the cat runs in the park")
    tokens = np.array([ids], np.int64)
    enc = ort.InferenceSession(str(converted / "encoder.onnx"), providers=["CPUExecutionProvider"])
    enc_out, mask, cross_k, cross_v = enc.run(None, {"tokens": tokens, "lengths": np.array([len(ids)], np.int64)})
    ref_enc = oracle.encode(ids)
    np.testing.assert_allclose(enc_out[0], ref_enc, atol=1e-4, rtol=1e-4)
    start = oracle.cfg["decoder_start_token_id"]
    ref_logits = oracle.logits([start], ref_enc)
    dec = ort.InferenceSession(str(converted / "decoder.onnx"), providers=["CPUExecutionProvider"])
    out = ort.InferenceSession(str(converted / "output.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((LAYERS, 1, HEADS, 0, DIM // HEADS), np.float32)
    hidden, k, _v = dec.run(None, {"tokens": np.array([start], np.int64), "step": np.array([0], np.int64),
                                   "past_k": empty, "past_v": empty, "cross_k": cross_k, "cross_v": cross_v,
                                   "src_mask": mask})
    assert k.shape == (LAYERS, 1, HEADS, 1, DIM // HEADS)
    np.testing.assert_allclose(out.run(None, {"hidden": hidden})[0], ref_logits, atol=1e-3, rtol=1e-3)


def test_greedy_tokens_equal_the_oracle(hf_folder, oracle, converted):
    """Four sentences decoded as one padded batch through the KV-cache decoder: the oracle's tokens exactly."""
    translator = Translator.load(converted)
    texts = ["the cat runs in the park", "thank you for the coffee", "where is the dog", "we sit on the mat"]
    sources = [translator.encode(t) for t in texts]
    assert sources == [_hf_ids(hf_folder, t) for t in texts]
    ours = translator.translate_ids(sources, beam_size=1, max_new_tokens=MAX_NEW)
    for src, got in zip(sources, ours):
        expected, margin = oracle.greedy(src, MAX_NEW)
        assert margin > MARGIN, f"the random model is too close to a tie ({margin:.2g}); change its seed"
        assert got == expected
    assert any(len(out) > 1 for out in ours)
    assert all(isinstance(s, str) for s in translator.translate(texts, beam_size=3))


def test_int8_import_quantizes_and_translates(hf_folder, tmp_path):
    import onnx

    fields = marian_hf.convert(hf_folder, tmp_path, progress=lambda m: None, quantize=True)
    assert "int8" in fields["quantization"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "decoder.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, ops
    translator = Translator.load(tmp_path)
    assert (translator.source_lang, translator.target_lang) == ("en", "pt")
    assert len(translator.translate(["the cat sits on the mat", ""])) == 2


@pytest.mark.parametrize("remove, message", [
    ("config.json", "missing config.json"),
    ("vocab.json", "missing vocab.json"),
    ("model.safetensors", "missing model.safetensors or pytorch_model.bin"),
])
def test_check_source_names_what_is_missing(hf_folder, tmp_path, remove, message):
    for p in hf_folder.iterdir():
        if p.name != remove:
            (tmp_path / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ModelError, match=message):
        marian_hf.check_source(tmp_path)


def test_check_source_rejects_other_model_types(hf_folder, tmp_path):
    for p in hf_folder.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "t5"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="model_type is 't5', expected 'marian'"):
        marian_hf.check_source(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"activation_function": "tanh"}, "activation_function 'tanh' is not supported"),
    ({"normalize_before": True}, "pre-norm Marian variants are not supported"),
    ({"decoder_attention_heads": 2}, "different encoder/decoder head counts"),
])
def test_convert_refuses_what_the_graphs_cannot_express(hf_folder, tmp_path, change, message):
    src = tmp_path / "opus-mt-en-pt"
    src.mkdir()
    for p in hf_folder.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    (src / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), **change}))
    with pytest.raises(ModelError, match=message):
        marian_hf.convert(src, tmp_path / "out", progress=lambda m: None, quantize=False)
