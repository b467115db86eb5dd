"""Whisper importers: the CTranslate2 reader on real weights; the Hugging Face importer on a small random checkpoint
against Whisper's forward pass written here in numpy (the oracle), float32 and int8, with the weights inside or beside
the graphs; safetensors in float32, bfloat16 and shards; clear errors for folders that are not Whisper checkpoints.
(The real models against ctranslate2: tests/test_asr_whisper.py.)"""

from __future__ import annotations

import collections
import json
import math
import shutil

import ml_dtypes
import numpy as np
import onnx
import pytest
import safetensors.numpy

from appliance.modelstore.catalog import BY_NAME
from appliance.modelstore.convert import whisper_ct2, whisper_hf, whisper_onnx
from appliance.modelstore.manifest import ModelError
from appliance.modelstore.sources import ensure_package

CONFIG = {"model_type": "whisper", "vocab_size": 51865, "num_mel_bins": 80, "d_model": 64, "encoder_layers": 2,
          "decoder_layers": 2, "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 128,
          "decoder_ffn_dim": 256, "max_source_positions": 100, "max_target_positions": 64, "pad_token_id": 50257,
          "bos_token_id": 50257, "eos_token_id": 50257, "decoder_start_token_id": 50258}
HEADS, LAYERS, HEAD_DIM = 4, 2, 16
PROMPT = [50258, 50259, 50359, 50363, 440, 1002]
CROSS = [f"cross_{kv}_{i}" for kv in "kv" for i in range(LAYERS)]  # one tensor per layer, keys then values
SELF = [f"self_{kv}_{i}" for kv in "kv" for i in range(LAYERS)]


def ct2_source(name: str):
    spec = BY_NAME[name]
    return spec.prepare([ensure_package(p) for p in spec.packages])


# ---- a random Hugging Face Whisper checkpoint and Whisper's forward pass on it -----------------------------------
def random_checkpoint(seed: int = 0) -> dict[str, np.ndarray]:
    """transformers' names and shapes for CONFIG; no key bias (Whisper has none); weights large enough that the
    nonlinearities matter."""
    rng = np.random.RandomState(seed)
    c = CONFIG
    d, shapes = c["d_model"], {}

    def block(p: str, ffn: int, attentions: tuple[str, ...]) -> None:
        for a in attentions:
            shapes.update({f"{p}.{a}.{n}_proj.weight": (d, d) for n in ("q", "k", "v", "out")})
            shapes.update({f"{p}.{a}.{n}_proj.bias": (d,) for n in ("q", "v", "out")})
            shapes.update({f"{p}.{a}_layer_norm.weight": (d,), f"{p}.{a}_layer_norm.bias": (d,)})
        shapes.update({f"{p}.fc1.weight": (ffn, d), f"{p}.fc1.bias": (ffn,), f"{p}.fc2.weight": (d, ffn),
                       f"{p}.fc2.bias": (d,), f"{p}.final_layer_norm.weight": (d,), f"{p}.final_layer_norm.bias": (d,)})

    shapes.update({"model.encoder.conv1.weight": (d, c["num_mel_bins"], 3), "model.encoder.conv1.bias": (d,),
                   "model.encoder.conv2.weight": (d, d, 3), "model.encoder.conv2.bias": (d,),
                   "model.encoder.embed_positions.weight": (c["max_source_positions"], d),
                   "model.decoder.embed_tokens.weight": (c["vocab_size"], d),
                   "model.decoder.embed_positions.weight": (c["max_target_positions"], d)})
    for side in ("encoder", "decoder"):
        shapes.update({f"model.{side}.layer_norm.weight": (d,), f"model.{side}.layer_norm.bias": (d,)})
    for i in range(c["encoder_layers"]):
        block(f"model.encoder.layers.{i}", c["encoder_ffn_dim"], ("self_attn",))
    for i in range(c["decoder_layers"]):
        block(f"model.decoder.layers.{i}", c["decoder_ffn_dim"], ("self_attn", "encoder_attn"))
    return {name: init(rng, name, shape) for name, shape in sorted(shapes.items())}


def init(rng: np.random.RandomState, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Layer norms near 1 (weights) and 0 (biases), biases small, weights of unit gain (1/sqrt(fan-in)); token
    embeddings of unit size, so that logits (the embedding is the output projection) spread as a real model's."""
    if "embed_tokens" in name:
        return rng.randn(*shape).astype(np.float32)
    if "norm" in name:
        return ((1.0 if name.endswith("weight") else 0.0) + 0.1 * rng.randn(*shape)).astype(np.float32)
    if name.endswith("bias"):
        return (0.1 * rng.randn(*shape)).astype(np.float32)
    return (rng.randn(*shape) / math.sqrt(np.prod(shape[1:]))).astype(np.float32)


def dense(w: dict, p: str, x: np.ndarray) -> np.ndarray:
    return x @ w[f"{p}.weight"].T + w.get(f"{p}.bias", 0.0)


def norm(w: dict, p: str, x: np.ndarray) -> np.ndarray:
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return x * w[f"{p}.weight"] + w[f"{p}.bias"]


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def conv(w: dict, p: str, x: np.ndarray, stride: int) -> np.ndarray:
    """Conv1d, kernel 3, padding 1: x [channels, frames]."""
    xp, t = np.pad(x, ((0, 0), (1, 1))), (x.shape[1] - 1) // stride + 1
    cols = np.stack([xp[:, j:j + stride * (t - 1) + 1:stride] for j in range(3)], axis=-1)
    return np.einsum("ctj,ocj->ot", cols, w[f"{p}.weight"]) + w[f"{p}.bias"][:, None]


def heads(x: np.ndarray) -> np.ndarray:  # [T, d] -> [heads, T, head_dim]
    return x.reshape(len(x), HEADS, -1).transpose(1, 0, 2)


def attention(w: dict, p: str, x: np.ndarray, source: np.ndarray, causal: bool = False) -> np.ndarray:
    q, k, v = (heads(dense(w, f"{p}.{n}_proj", s)) for n, s in (("q", x), ("k", source), ("v", source)))
    s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    if causal:
        s = s + np.triu(np.full(s.shape[1:], -np.inf), 1)
    s = np.exp(s - s.max(-1, keepdims=True))
    out = (s / s.sum(-1, keepdims=True)) @ v
    return dense(w, f"{p}.out_proj", out.transpose(1, 0, 2).reshape(len(x), -1))


def oracle_encode(w: dict, mel: np.ndarray) -> np.ndarray:
    """Whisper's encoder (float64): mel [n_mels, frames] -> [frames/2, d]."""
    x = gelu(conv(w, "model.encoder.conv2", gelu(conv(w, "model.encoder.conv1", mel, 1)), 2)).T
    x = x + w["model.encoder.embed_positions.weight"][:len(x)]
    for i in range(CONFIG["encoder_layers"]):
        p = f"model.encoder.layers.{i}"
        h = norm(w, f"{p}.self_attn_layer_norm", x)
        x = x + attention(w, f"{p}.self_attn", h, h)
        x = x + dense(w, f"{p}.fc2", gelu(dense(w, f"{p}.fc1", norm(w, f"{p}.final_layer_norm", x))))
    return norm(w, "model.encoder.layer_norm", x)


def oracle_logits(w: dict, encoded: np.ndarray, tokens: list[int]) -> np.ndarray:
    """Whisper's decoder (float64) over the whole prompt: logits [n, vocab]; the output projection is the embedding."""
    emb = w["model.decoder.embed_tokens.weight"]
    x = emb[tokens] + w["model.decoder.embed_positions.weight"][:len(tokens)]
    for i in range(CONFIG["decoder_layers"]):
        p = f"model.decoder.layers.{i}"
        h = norm(w, f"{p}.self_attn_layer_norm", x)
        x = x + attention(w, f"{p}.self_attn", h, h, causal=True)
        x = x + attention(w, f"{p}.encoder_attn", norm(w, f"{p}.encoder_attn_layer_norm", x), encoded)
        x = x + dense(w, f"{p}.fc2", gelu(dense(w, f"{p}.fc1", norm(w, f"{p}.final_layer_norm", x))))
    return norm(w, "model.decoder.layer_norm", x) @ emb.T


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """(folder, weights): a random-weight Whisper (2+2 layers, d=64) saved as a Hugging Face checkpoint (float32
    safetensors, written by the safetensors package) with the real tokenizer."""
    folder = tmp_path_factory.mktemp("hf-tiny")
    weights = random_checkpoint()
    safetensors.numpy.save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    shutil.copy2(ct2_source("whisper-base") / "tokenizer.json", folder / "tokenizer.json")
    return folder, weights


@pytest.fixture(scope="session")
def reference(tiny_hf):
    """(mel, the oracle's encoder output, its logits for PROMPT) on the tiny checkpoint."""
    weights = {k: v.astype(np.float64) for k, v in tiny_hf[1].items()}
    mel = np.random.RandomState(1).randn(1, 80, 200).astype(np.float32)
    encoded = oracle_encode(weights, mel[0].astype(np.float64))
    return mel, encoded, oracle_logits(weights, encoded, PROMPT)


def run_graphs(folder, mel: np.ndarray):
    """(cross keys/values by name, run(tokens, cache, logit_at) -> (logits, cache)) on the graphs in `folder`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / "decoder.onnx"), options, providers=["CPUExecutionProvider"])
    assert [o.name for o in enc.get_outputs()] == CROSS
    assert [i.name for i in dec.get_inputs()] == ["tokens", "logit_at", *SELF, *CROSS]
    assert [o.name for o in dec.get_outputs()] == ["logits", *[f"new_{n}" for n in SELF]]
    cross = dict(zip(CROSS, enc.run(CROSS, {"mel": mel})))

    def run(tokens, cache, at):
        feed = {"tokens": np.array([tokens], np.int64), "logit_at": np.array(at, np.int64), **cache, **cross}
        logits, *new = dec.run(None, feed)
        return logits, dict(zip(SELF, new))

    return cross, run


def empty_cache() -> dict[str, np.ndarray]:
    return dict.fromkeys(SELF, np.zeros((1, HEADS, 0, HEAD_DIM), np.float32))


def incremental_logits(run) -> np.ndarray:
    """The prompt's logits: its first 4 tokens at once, then one token at a time through the self-attention cache."""
    logits, cache = run(PROMPT[:4], empty_cache(), range(4))
    steps = [logits[0]]
    for tok in PROMPT[4:]:
        logits, cache = run([tok], cache, [0])
        steps.append(logits[0])
    assert cache["self_v_1"].shape == (1, HEADS, len(PROMPT), HEAD_DIM)
    return np.concatenate(steps)


# ---- tests ---------------------------------------------------------------------------------------------------------
def test_ct2_reader_on_real_tiny_en():
    variables = whisper_ct2.read_model_bin(ct2_source("whisper-tiny.en") / "model.bin")
    dims, state = whisper_ct2.to_state(variables)
    assert (dims.n_mels, dims.n_audio_layer, dims.n_text_layer, dims.n_audio_state) == (80, 4, 4, 384)
    assert dims.n_vocab == 51864
    assert state["encoder.0.attn.q.weight"].shape == (384, 384)
    assert np.all(state["encoder.0.attn.k.bias"] == 0)  # Whisper has no key bias; CTranslate2 stores zeros
    # the output projection is an alias of the token embedding
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert {k: v.shape for k, v in state.items()} == whisper_onnx.shapes(dims)


def test_hf_importer_float32_matches_the_numpy_forward_pass(tiny_hf, reference, tmp_path):
    folder, _ = tiny_hf
    mel, encoded, ref = reference
    fields = whisper_hf.convert(folder, tmp_path, progress=lambda m: None, quantize=False)
    assert fields["architecture"]["n_audio_layer"] == 2 and len(fields["languages"]) == 99 and fields["opset"] == 17
    facts = json.loads((tmp_path / "whisper.json").read_text())
    assert facts["special"]["sot"] == 50258 and facts["is_multilingual"]
    for name in ("encoder.onnx", "decoder.onnx"):
        onnx.checker.check_model(onnx.load(tmp_path / name), full_check=True)

    cross, run = run_graphs(tmp_path, mel)
    assert cross["cross_k_1"].shape == (1, HEADS, 100, HEAD_DIM)
    w = tiny_hf[1]
    for i in range(LAYERS):
        p = f"model.decoder.layers.{i}.encoder_attn"
        np.testing.assert_allclose(cross[f"cross_k_{i}"][0], heads(dense(w, f"{p}.k_proj", encoded)), atol=2e-5)
        np.testing.assert_allclose(cross[f"cross_v_{i}"][0], heads(dense(w, f"{p}.v_proj", encoded)), atol=2e-5)
    # the whole prompt at once, the logits of every position, then of two only; then through the cache
    assert np.abs(ref).max() > 5  # logits of a useful size: the tolerances below are small against them
    logits, _ = run(PROMPT, empty_cache(), range(len(PROMPT)))
    np.testing.assert_allclose(logits[0], ref, atol=1e-4)
    logits, _ = run(PROMPT, empty_cache(), [0, len(PROMPT) - 1])
    assert logits.shape == (1, 2, 51865)
    np.testing.assert_allclose(logits[0], ref[[0, -1]], atol=1e-4)
    np.testing.assert_allclose(incremental_logits(run), ref, atol=1e-4)


def quantized_ops(folder) -> dict[str, collections.Counter]:
    """Per graph: the op types and the element types of its weights (initializers of 2 or more dimensions)."""
    out = {}
    for name in ("encoder", "decoder"):
        graph = onnx.load(folder / f"{name}.onnx").graph
        out[name] = collections.Counter(n.op_type for n in graph.node)
        out[name].update(onnx.TensorProto.DataType.Name(t.data_type) for t in graph.initializer if len(t.dims) >= 2)
    return out


def test_hf_importer_int8_quantizes_every_linear_layer_and_stays_close(tiny_hf, reference, tmp_path):
    """int8: every Linear layer's weight and the tied output projection (MatMul initializers), per channel; the
    convolutions float32, the token embedding float16. Logits stay within a few percent of the float64 oracle's."""
    mel, _, ref = reference
    fields = whisper_hf.convert(tiny_hf[0], tmp_path, progress=lambda m: None, quantize=True)
    assert fields["quantization"] == whisper_onnx.QUANTIZATION
    ops = quantized_ops(tmp_path)
    # encoder: 6 Linear layers per encoder layer, the cross keys and values of each decoder layer; attention in float
    assert ops["encoder"]["MatMulInteger"] == 6 * 2 + 2 * 2 and ops["encoder"]["MatMul"] == 2 * 2
    assert ops["encoder"]["INT8"] == 16 and ops["encoder"]["FLOAT"] == 3  # conv1, conv2, positions
    # decoder: 8 Linear layers per layer and the output projection; the embedding float16
    assert ops["decoder"]["MatMulInteger"] == 8 * 2 + 1 and ops["decoder"]["MatMul"] == 2 * 2 * 2
    assert ops["decoder"]["INT8"] == 17 and ops["decoder"]["FLOAT16"] == 1 and ops["decoder"]["FLOAT"] == 1

    _, run = run_graphs(tmp_path, mel)
    logits = incremental_logits(run)
    scale = np.abs(ref).max()
    assert np.abs(logits - ref).max() < 0.05 * scale, (np.abs(logits - ref).max(), scale)
    assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.999


@pytest.mark.parametrize("quantize", [False, True])
def test_weights_beside_the_graphs_give_the_same_model(tiny_hf, reference, tmp_path, quantize):
    """The large-model path (protobuf's 2 GB limit): weights in <graph>.data files, the same results."""
    folder, _ = tiny_hf
    dims = whisper_hf.dims_from_config(CONFIG)
    weights = whisper_hf.to_state(whisper_hf.read_weights(folder), dims)
    for sub, external in (("inline", False), ("external", True)):
        (tmp_path / sub).mkdir()
        whisper_onnx.export(dims, weights, tmp_path / sub, quantize=quantize, progress=lambda m: None,
                            external_data=external)
    assert sorted(p.name for p in (tmp_path / "external").iterdir()) == [
        "decoder.onnx", "decoder.onnx.data", "encoder.onnx", "encoder.onnx.data"]
    for name in ("encoder.onnx", "decoder.onnx"):  # every weight matrix in the .data file (scales may stay inline)
        graph = onnx.load(tmp_path / "external" / name, load_external_data=False).graph
        assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer if len(t.dims) >= 2)
    mel = reference[0]
    inline, external = (incremental_logits(run_graphs(tmp_path / sub, mel)[1]) for sub in ("inline", "external"))
    np.testing.assert_allclose(external, inline, atol=1e-5)


def test_safetensors_in_bfloat16_and_float16_shards(tiny_hf, tmp_path):
    """bfloat16 (which safetensors' numpy API cannot read) widened exactly; shards joined through the index."""
    weights = tiny_hf[1]
    names = sorted(weights)
    half = {n: weights[n].astype(ml_dtypes.bfloat16) for n in names[:len(names) // 2]}
    rest = {n: weights[n].astype(np.float16) for n in names[len(names) // 2:]}
    for shard, tensors in (("model-00001-of-00002.safetensors", half), ("model-00002-of-00002.safetensors", rest)):
        safetensors.numpy.save_file(tensors, str(tmp_path / shard), metadata={"format": "pt"})
    index = {"weight_map": {n: f"model-0000{1 + (n in rest)}-of-00002.safetensors" for n in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    read = whisper_hf.read_weights(tmp_path)
    assert sorted(read) == sorted(n.removeprefix("model.") for n in names)
    for n in names:
        want = (half.get(n) if n in half else rest[n]).astype(np.float32)
        got = read[n.removeprefix("model.")]
        assert got.dtype == np.float32 and got.shape == want.shape and np.array_equal(got, want), n


def test_safetensors_of_an_unread_type_or_not_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"x": np.ones(4, np.float32).astype(ml_dtypes.float8_e5m2)}, str(path))
    with pytest.raises(ModelError, match="tensor x has data type F8_E5M2"):
        whisper_hf.read_safetensors(path)
    path.write_bytes(b"\x05")
    with pytest.raises(ModelError, match="is not a safetensors file"):
        whisper_hf.read_safetensors(path)


def test_weights_of_the_wrong_shape_or_name_are_refused(tiny_hf, tmp_path):
    dims = whisper_hf.dims_from_config(CONFIG)
    weights = whisper_hf.to_state(whisper_hf.read_weights(tiny_hf[0]), dims)
    with pytest.raises(ModelError, match=r"decoder.1.fc1.weight has shape \(256, 32\), expected \(256, 64\)"):
        whisper_onnx.export(dims, {**weights, "decoder.1.fc1.weight": np.zeros((256, 32), np.float32)}, tmp_path,
                            quantize=False, progress=lambda m: None)
    weights["ln.beta"] = weights.pop("ln.bias")
    with pytest.raises(ModelError, match=r"missing \['ln.bias'\], unexpected \['ln.beta'\]"):
        whisper_onnx.export(dims, weights, tmp_path, quantize=False, progress=lambda m: None)


def test_a_model_of_the_old_stacked_layout_is_refused_with_how_to_rebuild(built_model, tmp_path):
    """Models built before the per-layer layout (one stacked cache tensor) are not run: a clear error instead."""
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
    head = (6).to_bytes(4, "little") + (11).to_bytes(2, "little") + b"MarianSpec\0"
    (tmp_path / "model.bin").write_bytes(head + bytes(16))
    with pytest.raises(ModelError, match="holds 'MarianSpec'"):
        whisper_ct2.check_source(tmp_path)
