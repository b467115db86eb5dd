"""Speaker turns in the whole appliance (`appliance run` on a real broker, real models, real audio): captions on
the bus carry the speaker and the room's store is written; without the speaker model, captions go on without
speakers and the log says why."""

from __future__ import annotations

import json
import subprocess

import pytest

from appliance.archive import db_path
from appliance.archive.store import open_read_only
from test_bus_support import Recorder
from test_daemon import ROOM, broker, run_cmd, speech_wav  # noqa: F401 (fixtures)

CAPTION_MODELS = ("whisper-base", "silero-vad", "bergamot-en-pt", "bergamot-pt-en")


@pytest.fixture(scope="module")
def models(built_model, models_dir):
    for name in CAPTION_MODELS + ("speaker-ge2e",):
        built_model(name)
    return models_dir


def _finals(rec, lang):
    return [c for c in rec.captions(f"appliance/{ROOM}/captions/{lang}") if c["final"] and c["text"]]


def test_captions_on_the_bus_carry_the_speaker_and_the_store_is_kept(models, tmp_path, broker, speech_wav):
    rec = Recorder(broker.port, [f"appliance/{ROOM}/#"])
    proc = subprocess.run(run_cmd(models, tmp_path, broker, "--input", str(speech_wav), "--once"),
                          capture_output=True, text=True, timeout=180)
    rec.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    finals = _finals(rec, "en") + _finals(rec, "pt")
    assert finals and all(c["speaker"] == {"id": "S1", "name": None} for c in finals)
    store = json.loads((tmp_path / "state" / f"speakers-{ROOM}.json").read_text())
    assert [s["id"] for s in store["speakers"]] == ["S1"] and store["speakers"][0]["language"] == "en"
    archive = open_read_only(db_path(tmp_path / "state"))  # the meeting record keeps each final's speaker
    try:
        (meeting,) = archive.meetings()
        kept = archive.finals(meeting.id, "en") + archive.finals(meeting.id, "pt")
    finally:
        archive.close()
    assert sorted(f.text for f in kept) == sorted(c["text"] for c in finals)
    assert all(f.speaker == {"id": "S1", "name": None} for f in kept)


def test_without_the_speaker_model_captions_go_on(models, tmp_path, broker, speech_wav):
    partial_models = tmp_path / "models"
    partial_models.mkdir()
    for name in CAPTION_MODELS:
        (partial_models / name).symlink_to(models / name, target_is_directory=True)
    rec = Recorder(broker.port, [f"appliance/{ROOM}/#"])
    proc = subprocess.run(run_cmd(partial_models, tmp_path, broker, "--input", str(speech_wav), "--once"),
                          capture_output=True, text=True, timeout=180)
    rec.stop()
    assert proc.returncode == 0, proc.stderr[-2000:]
    finals = _finals(rec, "en")
    assert finals and all(c.get("speaker") is None for c in finals)
    assert "speaker turns are off" in proc.stderr and "appliance models build speaker-ge2e" in proc.stderr
