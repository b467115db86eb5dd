"""Speaker turns in the running pipeline (real Whisper, VAD, translation and speaker models): every caption of an
utterance, partials and translations included, carries its speaker; a missing speaker model turns speaker turns
off with a warning and captions go on."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.audio import load_audio
from appliance.bench.corpus import AUDIOEVAL, speak
from appliance.modelstore.sources import ensure_package
from appliance.speakers import MODEL_NAME, SpeakerEmbedder, SpeakerTracker
from appliance.speakers.wiring import open_tracker
from test_pipeline import cfg, engines, run  # noqa: F401 (the pipeline tests' fixtures and runner)

SR = 16000


@pytest.fixture(scope="module", autouse=True)
def speaker_model(built_model):
    return built_model(MODEL_NAME)


@pytest.fixture(scope="module")
def meeting():
    """A recorded English voice, a synthetic one, then the recorded voice again, with pauses between turns."""
    root = ensure_package(AUDIOEVAL) / "pytest_audioeval" / "samples" / "audio" / "en"
    pause = np.zeros(SR, np.float32)
    turns = [load_audio(root / "quick_brown_fox.wav"), speak("en+klatt", "The budget for next year is ready for approval."),
             load_audio(root / "counting.wav")]
    return np.concatenate([x for t in turns for x in (t, pause)])


def _run(cfg, engines, audio, speakers):
    return run(cfg, engines, audio, partials=True, speakers=speakers)


def test_captions_carry_the_speaker_of_each_turn(cfg, engines, models_dir, meeting):
    tracker = SpeakerTracker(SpeakerEmbedder(models_dir / MODEL_NAME, threads=1), threshold=cfg.speakers.threshold)
    events, pipeline = _run(cfg, engines, meeting, tracker)
    assert not pipeline.errors
    finals = [e for e in events if e.final and e.lang == e.source_lang]
    assert [f.speaker["id"] for f in finals] == ["S1", "S2", "S1"], [(f.text, f.speaker) for f in finals]
    by_utt = {f.id: f.speaker for f in finals}
    for e in events:  # partials with a speaker and every translation agree with their final
        if e.speaker is not None:
            assert e.speaker == by_utt[e.id], e
    assert any(not e.final and e.speaker for e in events)
    assert {e.lang for e in events if e.final and e.speaker} >= {"en", "pt"}
    assert '"speaker":{"id":"S1","name":null}' in finals[0].to_json()
    assert tracker.language_prior("S1") == "en"


def test_missing_speaker_model_turns_speakers_off_and_captions_go_on(cfg, engines, tmp_path, meeting):
    warnings = []
    c = cfg.model_copy(deep=True)
    c.state_dir = str(tmp_path)
    assert open_tracker(c, tmp_path / "no-models", warnings.append) is None
    assert "speaker turns are off" in warnings[0] and f"appliance models build {MODEL_NAME}" in warnings[0]
    c.speakers.enabled = False
    assert open_tracker(c, tmp_path, warnings.append) is None and len(warnings) == 1
    events, _ = _run(cfg, engines, meeting[: 5 * SR], None)
    assert any(e.final and e.text for e in events) and all(e.speaker is None for e in events)


class _Broken:
    """A speaker object whose model fails at run time (beside the real test above)."""

    def partial(self, utt_id, audio):
        raise RuntimeError("speaker model exploded")

    final = partial


def test_a_failing_speaker_model_costs_the_labels_not_the_captions(cfg, engines, meeting):
    events, pipeline = _run(cfg, engines, meeting[: 5 * SR], _Broken())
    assert any(e.final and e.text for e in events)
    assert not pipeline.errors  # captions are healthy ...
    assert pipeline.speakers is None and any("speaker model exploded" in w for w in pipeline.warnings)
