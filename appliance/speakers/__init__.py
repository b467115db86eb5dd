"""Speaker turns: who is speaking, from an on-device GE2E speaker encoder, clustered online per room."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.speakers.embedder import SpeakerEmbedder, cosine
from appliance.speakers.tracker import EnrolmentError, SpeakerTracker, check_enrolment

__all__ = ["SpeakerEmbedder", "SpeakerTracker", "EnrolmentError", "check_enrolment", "cosine", "smoke_test",
           "MODEL_NAME"]

MODEL_NAME = "speaker-ge2e"


def smoke_test(model_dir: str | Path, providers=("cpu",)) -> list:
    """One tiny inference (used by `appliance models verify`); raises when the model does not behave. Returns the
    session's placement."""
    from appliance import placement
    from appliance.speakers.embedder import ONNX_FILE

    embedder = SpeakerEmbedder(model_dir, providers)
    emb = embedder.embed(np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1)
    if emb.shape != (256,) or not np.isfinite(emb).all() or abs(float(np.linalg.norm(emb)) - 1.0) > 1e-3:
        raise RuntimeError(f"speaker encoder in {model_dir} returned an unexpected embedding (shape {emb.shape})")
    return [placement.report(embedder.session, f"{Path(model_dir).name}/{ONNX_FILE}")]
