"""The speaker stage on plain data: without a tracker every answer is "unknown"; a tracker that fails is turned off
with a warning and the captions go on.

A small scripted tracker stands in for appliance.speakers.SpeakerTracker here; the real one, and a real one that
fails inside a running pipeline, in test_speakers.py and test_speakers_pipeline.py."""

from __future__ import annotations

from collections import deque

import numpy as np

from appliance.pipeline.speaker_stage import SpeakerStage

VOICE = np.zeros(16000, np.float32)


class Tracker:
    def __init__(self, fail: str | None = None):
        self.fail, self.asked = fail, []

    def __getattr__(self, method):
        def answer(*args):
            self.asked.append(method)
            if method == self.fail:
                raise RuntimeError("speaker model exploded")
            return {"partial": {"id": "S1", "name": None}, "final": {"id": "S1", "name": "Chair"},
                    "language_prior": "pt", "speaker_changed": True}.get(method)
        return answer


def test_without_a_tracker_nothing_is_known():
    stage = SpeakerStage()
    assert not stage.on
    assert stage.partial("u1", VOICE) is None and stage.final("u1", VOICE, "en") is None
    assert stage.language_of("S1") is None and stage.changed(VOICE, VOICE) is False
    stage.discard("u1")


def test_the_trackers_answers():
    tracker = Tracker()
    stage = SpeakerStage(tracker)
    assert stage.on and stage.partial("u1", VOICE) == {"id": "S1", "name": None}
    assert stage.final("u1", VOICE, "en")["name"] == "Chair" and stage.language_of("S1") == "pt"
    assert stage.changed(VOICE, VOICE) is True
    stage.discard("u1")
    assert tracker.asked == ["partial", "final", "language_prior", "speaker_changed", "discard"]


def test_a_failing_tracker_is_turned_off_with_a_warning():
    warnings, tracker = deque(), Tracker(fail="final")
    stage = SpeakerStage(tracker, warnings)
    assert stage.partial("u1", VOICE) is not None
    assert stage.final("u1", VOICE, "en") is None
    assert not stage.on and stage.tracker is None and list(warnings) == ["speakers: speaker model exploded"]
    assert stage.partial("u2", VOICE) is None and tracker.asked == ["partial", "final"]  # not asked again
