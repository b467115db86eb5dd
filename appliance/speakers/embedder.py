"""Speaker embeddings with the GE2E encoder on onnxruntime: one L2-normalised 256-d vector per stretch of speech.

Long utterances are cut into 1.6 s windows (resemblyzer's `embed_utterance`): each window is embedded in one
batch and the utterance embedding is the normalised mean of the windows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from appliance.speakers import features

log = logging.getLogger(__name__)

ONNX_FILE = "encoder.onnx"
CONFIG_FILE = "speaker.json"
EMBEDDING_DIM = 256


def _normalised(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


class SpeakerEmbedder:
    """`embed(audio)` -> (256,) float32, unit length. Safe to call from several threads (onnxruntime sessions are)."""

    def __init__(self, model_dir: str | Path, providers=("cpu",), threads: int = 1):
        from appliance.providers import open_session

        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        expected = {"sample_rate": features.SAMPLE_RATE, "n_fft": features.N_FFT, "hop_length": features.HOP,
                    "n_mels": features.N_MELS, "window_frames": features.WINDOW_FRAMES}
        wrong = {k: cfg.get(k) for k, v in expected.items() if cfg.get(k) != v}
        if wrong:
            raise ValueError(f"{model_dir / CONFIG_FILE}: features {wrong} differ from this appliance's {expected}")
        self.session = open_session(model_dir / ONNX_FILE, providers, threads)
        self.model_dir = model_dir
        self.embed(np.zeros(features.SAMPLE_RATE, np.float32))  # warm up at load, not on the first caption

    def embed_windows(self, audio: np.ndarray, starts: list[int]) -> np.ndarray:
        """[len(starts), 256]: one embedding per 1.6 s window of the utterance, starting at these frames."""
        if not starts:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        return self.session.run(None, {"mels": features.window_mels(audio, starts)})[0]

    def embed(self, audio: np.ndarray) -> np.ndarray:
        """The utterance embedding: the normalised mean of its windows' embeddings."""
        return mean_embedding(self.embed_windows(audio, features.window_starts(len(audio))))


def mean_embedding(window_embeddings) -> np.ndarray:
    return _normalised(np.mean(np.asarray(list(window_embeddings), np.float32), axis=0))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
