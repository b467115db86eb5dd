"""Speaker turns with the real speaker model on real recordings: online clustering, partial labels, the store per
room (persisted, corrupt file set aside), names, enrolment errors, per-speaker language, and the pipeline hook."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from appliance.audio import load_audio
from appliance.bench.corpus import AUDIOEVAL
from appliance.modelstore.sources import ensure_package
from appliance.speakers import MODEL_NAME, EnrolmentError, SpeakerEmbedder, SpeakerTracker, check_enrolment
from appliance.speakers.store import load, store_path

SR = 16000


@pytest.fixture(scope="module")
def embedder(built_model):
    return SpeakerEmbedder(built_model(MODEL_NAME), threads=1)


@pytest.fixture(scope="module")
def voices():
    """Recorded voices (pytest-audioeval): lang -> [counting, other, pangram-or-fox] recordings."""
    root = ensure_package(AUDIOEVAL) / "pytest_audioeval" / "samples" / "audio"
    return {lang: [load_audio(p) for p in sorted((root / lang).glob("*.wav"))] for lang in ("en", "fr", "it")}


def _long(v):
    return [a for a in v if len(a) >= 2 * SR]


def test_online_clustering_tells_voices_apart_and_recognises_them_again(embedder, voices):
    tracker = SpeakerTracker(embedder, threshold=0.7)
    en, fr, it = (_long(voices[k]) for k in ("en", "fr", "it"))
    order = [("en", en[0]), ("fr", fr[0]), ("it", it[0]), ("en", en[1]), ("fr", fr[1]), ("it", it[1])]
    labels = [tracker.final(f"u{i}", audio, lang)["id"] for i, (lang, audio) in enumerate(order)]
    assert labels[:3] == ["S1", "S2", "S3"]
    assert labels[3:] == labels[:3]  # each voice returns to its own speaker
    assert tracker.language_prior("S2") == "fr" and tracker.language_prior("S9") is None


def test_partials_name_the_speaker_the_final_confirms(embedder, voices):
    tracker = SpeakerTracker(embedder, threshold=0.7)
    en, fr = _long(voices["en"]), _long(voices["fr"])
    tracker.final("a", en[0], "en")
    audio = fr[0]
    assert tracker.partial("b", audio[: int(0.4 * SR)]) is None  # too little speech yet
    assert tracker.partial("b", audio[: int(0.8 * SR)]) is None  # no known voice: no new id on so little speech
    early = tracker.partial("b", audio[: int(1.2 * SR)])
    assert early == {"id": "S2", "name": None}  # a new voice: the id its final will get
    assert tracker.final("b", audio, "fr") == early
    again = en[1]
    assert tracker.partial("c", again[: int(1.7 * SR)])["id"] == "S1"


def test_store_persists_names_and_centroids_per_room(embedder, voices, tmp_path):
    path = store_path(tmp_path, "room1")
    tracker = SpeakerTracker(embedder, threshold=0.7, path=path)
    en, fr = _long(voices["en"]), _long(voices["fr"])
    tracker.final("a", en[0], "en")
    tracker.final("b", fr[0], "fr")
    tracker.rename("S1", "Chair")
    tracker.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = SpeakerTracker(embedder, threshold=0.7, path=path)
    assert [s["name"] for s in again.speakers()] == ["Chair", None]
    assert again.final("c", en[1], "en") == {"id": "S1", "name": "Chair"}
    assert not store_path(tmp_path, "room2").exists()
    again.forget_all()
    assert SpeakerTracker(embedder, path=path).speakers() == []
    # forgetting starts the room afresh: the next voice is S1 again
    assert again.final("d", fr[1], "fr")["id"] == "S1"


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": 1, "speakers": [{"id": "S1", "centroid": [1, 2]}]}),
                                     json.dumps({"version": 99, "speakers": []}), "\xff\xfe"])
def test_a_corrupt_store_is_set_aside_with_a_log_line(tmp_path, caplog, content):
    path = store_path(tmp_path, "room1")
    path.write_text(content, encoding="latin-1")
    with caplog.at_level(logging.WARNING, logger="appliance.speakers.store"):
        clusterer = load(path, 0.7)
    assert clusterer.speakers == []
    assert not path.exists()
    aside = list(tmp_path.glob("speakers-room1.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text(encoding="latin-1") == content
    assert "set aside" in caplog.text


def test_rename_checks_its_input(embedder, voices):
    tracker = SpeakerTracker(embedder)
    tracker.final("a", _long(voices["en"])[0])
    with pytest.raises(KeyError, match="S7"):
        tracker.rename("S7", "Chair")
    with pytest.raises(ValueError, match="60 characters"):
        tracker.rename("S1", "x" * 61)
    tracker.rename("S1", "  ")
    assert tracker.speakers()[0]["name"] is None


def test_enrolment_names_a_voice_that_is_then_recognised(embedder, voices):
    tracker = SpeakerTracker(embedder, threshold=0.7)
    it = voices["it"]
    enrolment = np.concatenate([a for a in it[:2]])
    assert tracker.enrol("Delegate of Italy", enrolment) == {"id": "S1", "name": "Delegate of Italy"}
    assert tracker.final("u", it[2], "it") == {"id": "S1", "name": "Delegate of Italy"}
    assert tracker.speakers()[0]["enrolled"] is True


def test_enrolment_rejects_silence_and_short_recordings(embedder):
    tracker = SpeakerTracker(embedder)
    silence = (np.random.default_rng(0).standard_normal(5 * SR) * 1e-5).astype(np.float32)
    with pytest.raises(EnrolmentError, match="silent or too quiet"):
        tracker.enrol("Chair", silence)
    with pytest.raises(EnrolmentError, match="at least 3 s"):
        check_enrolment(np.ones(SR, np.float32) * 0.1)
    with pytest.raises(EnrolmentError, match="name"):
        tracker.enrol(" ", np.ones(4 * SR, np.float32) * 0.1)
    assert tracker.speakers() == []


def test_speaker_changed_at_a_pause(embedder, voices):
    tracker = SpeakerTracker(embedder, threshold=0.7)
    en, fr = _long(voices["en"]), _long(voices["fr"])
    assert tracker.speaker_changed(en[0], fr[0])
    assert not tracker.speaker_changed(en[0], en[1])
    assert not tracker.speaker_changed(en[0][: SR // 2], fr[0])  # too little speech to tell


def test_a_failing_model_turns_speaker_turns_off_with_one_warning(embedder, voices):
    warnings = []
    tracker = SpeakerTracker(embedder, warn=warnings.append)
    en = _long(voices["en"])
    assert tracker.final("a", en[0], "en") == {"id": "S1", "name": None}
    tracker.embedder = SpeakerEmbedder.__new__(SpeakerEmbedder)  # a session-less embedder: every call fails
    assert tracker.partial("b", en[1][: SR]) is None
    assert tracker.final("b", en[1], "en") is None
    assert len(warnings) == 1 and "speaker turns are off" in warnings[0]
