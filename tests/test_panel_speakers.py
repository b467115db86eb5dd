"""The panel's Speakers page with the real speaker model and tracker: settings, rename, enrol from the microphone
tap (fed real recorded speech, as the capture thread feeds it), clear errors, forget all."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from appliance.audio import load_audio
from appliance.bench.corpus import AUDIOEVAL
from appliance.config import load
from appliance.modelstore.sources import ensure_package
from appliance.speakers import MODEL_NAME, SpeakerEmbedder, SpeakerTracker
from appliance.speakers.recorder import MicrophoneTap, RecordingError
from test_panel_app import Panel

SR = 16000


@pytest.fixture(scope="module")
def embedder(built_model):
    return SpeakerEmbedder(built_model(MODEL_NAME), threads=1)


@pytest.fixture(scope="module")
def italian():
    root = ensure_package(AUDIOEVAL) / "pytest_audioeval" / "samples" / "audio" / "it"
    return [load_audio(p) for p in sorted(root.glob("*.wav"))]


class Capture:
    """Feeds audio into the tap in 32 ms chunks at (faster than) real time, like the daemon's capture loop."""

    def __init__(self, tap: MicrophoneTap, audio: np.ndarray):
        self.tap, self.audio, self.stop = tap, audio, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        i = 0
        while not self.stop.is_set():
            self.tap.feed(self.audio[i:i + 512] if i + 512 <= len(self.audio) else np.zeros(512, np.float32))
            i += 512
            time.sleep(0.004)


@pytest.fixture
def room(tmp_path, embedder):
    tracker = SpeakerTracker(embedder, threshold=0.7, path=tmp_path / "speakers-room1.json")
    tap = MicrophoneTap()
    panel = Panel(tmp_path, speakers=lambda: tracker, record=tap.record).setup_and_login()
    return panel, tracker, tap


def _post(panel, path, **data):
    data["csrf_token"] = panel.token("/speakers")
    return panel.client.post(path, data=data, follow_redirects=True)


def test_page_lists_speakers_and_renames_them(room, italian):
    panel, tracker, _ = room
    page = panel.client.get("/speakers")
    assert page.status_code == 200 and "No speaker heard yet" in page.text and "Speakers" in page.text
    tracker.final("u1", italian[1], "it")
    r = _post(panel, "/speakers/rename", id="S1", name="<b>Chair</b>")
    assert "Renamed S1." in r.text and 'value="&lt;b&gt;Chair&lt;/b&gt;"' in r.text
    assert tracker.speakers()[0]["name"] == "<b>Chair</b>"
    r = _post(panel, "/speakers/rename", id="S9", name="Chair")
    assert "Not renamed: no speaker S9" in r.text


def test_settings_save_to_the_config(room):
    panel, _, _ = room
    form = {"csrf_token": panel.token("/speakers"), "speakers.threshold": "0.8"}  # checkbox unchecked: off
    r = panel.client.post("/speakers", data=form)
    assert r.status_code == 303, r.text
    saved = load(panel.config_path)
    assert saved.speakers.enabled is False and saved.speakers.threshold == 0.8
    bad = panel.client.post("/speakers", data={"csrf_token": panel.token("/speakers"), "speakers.threshold": "2"})
    assert bad.status_code == 400 and "speakers.threshold" in bad.text


def test_enrol_from_the_room_microphone_then_recognise(room, italian):
    panel, tracker, tap = room
    capture = Capture(tap, np.concatenate(italian[1:]))
    try:
        r = _post(panel, "/speakers/enrol", name="Delegate of Italy", seconds="5")
    finally:
        capture.stop.set()
    assert "Enrolled Delegate of Italy as S1." in r.text, re.findall(r'class="flash[^"]*"[^>]*>([^<]*)', r.text)
    assert tracker.final("u", italian[0], "it") == {"id": "S1", "name": "Delegate of Italy"}


def test_enrol_errors_are_clear(room):
    panel, tracker, tap = room
    capture = Capture(tap, np.zeros(10 * SR, np.float32))
    try:
        r = _post(panel, "/speakers/enrol", name="Chair", seconds="4")
    finally:
        capture.stop.set()
    assert "Not enrolled: the recording is silent or too quiet" in r.text
    r = _post(panel, "/speakers/enrol", name="Chair", seconds="1")  # nobody feeds the tap now
    assert "Not enrolled: the microphone delivered 0.0 s of audio" in r.text
    r = _post(panel, "/speakers/enrol", name=" ", seconds="4")
    assert "Not enrolled: give the speaker a name" in r.text
    assert tracker.speakers() == []
    with pytest.raises(RecordingError, match="between 1 and 30"):
        tap.record(0)


def test_forget_all_and_speaker_turns_off(room, italian, tmp_path, embedder):
    panel, tracker, _ = room
    tracker.final("u1", italian[1], "it")
    r = _post(panel, "/speakers/forget")
    assert "Every speaker and voice print of this room is forgotten." in r.text and tracker.speakers() == []
    (tmp_path / "off").mkdir()
    off = Panel(tmp_path / "off", speakers=lambda: None).setup_and_login()
    page = off.client.get("/speakers")
    assert "Speaker turns are off" in page.text and "Enrolment needs speaker turns on" in page.text
    off.status.warn("speaker turns are off: speaker model 'speaker-ge2e' is unusable (missing)")
    assert "speaker model &#39;speaker-ge2e&#39; is unusable" in off.client.get("/speakers").text
