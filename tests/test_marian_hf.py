"""The OPUS-MT / Hugging Face Marian importer, checked against transformers on a tiny model built here.

The model has random weights (no hub access); its sentencepiece models are trained here from a few sentences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_bus_support import require

torch = require("torch", "scripts/setup installs torch==2.13.0 (build extra)")
transformers = require("transformers", "scripts/setup --test installs transformers (test extra)")
spm = require("sentencepiece", "pip install -e . installs sentencepiece")

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


def _train(prefix: Path, lines: list[str]) -> list[str]:
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines * 4), model_prefix=str(prefix), vocab_size=60,
                                   model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1,
                                   unk_id=0, pad_id=-1, hard_vocab_limit=False, minloglevel=2)
    proc = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    return [proc.id_to_piece(i) for i in range(proc.get_piece_size())]


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
    size = len(vocab)
    config = transformers.MarianConfig(
        vocab_size=size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=size - 1, eos_token_id=0, decoder_start_token_id=size - 1, activation_function="swish",
        init_std=0.3, scale_embedding=True, share_encoder_decoder_embeddings=True)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():  # a non-zero output bias, so the converter must carry it
        model.final_logits_bias.copy_(torch.randn_like(model.final_logits_bias) * 0.5)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_model(hf_folder):
    return transformers.MarianMTModel.from_pretrained(hf_folder).eval()


@pytest.fixture(scope="module")
def converted(hf_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted-float")
    fields = marian_hf.convert(hf_folder, out, progress=lambda m: None, quantize=False)
    assert fields["source_lang"] == "en" and fields["target_lang"] == "pt"
    assert json.loads((out / "marian.json").read_text())["decoder"] == "transformer"
    return out


def _hf_ids(hf_folder: Path, text: str) -> list[int]:
    vocab = json.loads((hf_folder / "vocab.json").read_text())
    proc = spm.SentencePieceProcessor(model_file=str(hf_folder / "source.spm"))
    return [vocab.get(p, vocab["<unk>"]) for p in proc.encode(text, out_type=str)] + [vocab["</s>"]]


def test_onnx_encoder_and_first_logits_match_transformers(hf_folder, hf_model, converted):
    import onnxruntime as ort

    ids = _hf_ids(hf_folder, "the cat runs in the park")
    tokens = np.array([ids], np.int64)
    enc = ort.InferenceSession(str(converted / "encoder.onnx"), providers=["CPUExecutionProvider"])
    enc_out, mask, cross_k, cross_v = enc.run(None, {"tokens": tokens, "lengths": np.array([len(ids)], np.int64)})
    with torch.no_grad():
        ref_enc = hf_model.model.encoder(input_ids=torch.tensor(tokens)).last_hidden_state.numpy()
        start = torch.tensor([[hf_model.config.decoder_start_token_id]])
        ref_logits = hf_model(input_ids=torch.tensor(tokens), decoder_input_ids=start).logits[:, -1].numpy()
    np.testing.assert_allclose(enc_out, ref_enc, atol=1e-4, rtol=1e-4)
    dec = ort.InferenceSession(str(converted / "decoder.onnx"), providers=["CPUExecutionProvider"])
    out = ort.InferenceSession(str(converted / "output.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((2, 1, 4, 0, 8), np.float32)
    hidden, k, _v = dec.run(None, {"tokens": np.array([hf_model.config.decoder_start_token_id], np.int64),
                                   "step": np.array([0], np.int64), "past_k": empty, "past_v": empty,
                                   "cross_k": cross_k, "cross_v": cross_v, "src_mask": mask})
    assert k.shape == (2, 1, 4, 1, 8)
    np.testing.assert_allclose(out.run(None, {"hidden": hidden})[0], ref_logits, atol=1e-3, rtol=1e-3)


def test_greedy_tokens_equal_transformers_generate(hf_folder, hf_model, converted):
    translator = Translator.load(converted)
    texts = ["the cat runs in the park", "thank you for the coffee", "where is the dog", "we sit on the mat"]
    sources = [translator.encode(t) for t in texts]
    assert sources == [_hf_ids(hf_folder, t) for t in texts]
    ours = translator.translate_ids(sources, beam_size=1, max_new_tokens=MAX_NEW)
    pad, eos = hf_model.config.pad_token_id, hf_model.config.eos_token_id
    for src, got in zip(sources, ours):
        with torch.no_grad():
            gen = hf_model.generate(torch.tensor([src]), num_beams=1, do_sample=False, max_new_tokens=MAX_NEW,
                                    bad_words_ids=[[pad]], forced_eos_token_id=None)[0].tolist()
        expected = [i for i in gen[1:] if i != pad]
        if expected and expected[-1] == eos:
            expected = expected[:-1]
        assert got == expected
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
