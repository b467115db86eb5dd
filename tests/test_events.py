"""Event types: frozen, and caption events serialise to the bus's JSON shape."""

import dataclasses
import json

import numpy as np
import pytest

from appliance.events import AudioChunk, CaptionEvent, SpeechSegment


def caption(**kw):
    base = dict(id="u1", rev=2, final=False, lang="pt", source_lang="en", text="Bom dia a todos.",
                lines=["Bom dia a todos."], start=0.5, end=2.25, emitted=1795925012.3, latency={"asr": 0.2, "mt": 0.05})
    base.update(kw)
    return CaptionEvent(**base)


def test_caption_event_to_dict_and_json():
    ev = caption()
    d = ev.to_dict()
    assert d == {"id": "u1", "rev": 2, "final": False, "lang": "pt", "source_lang": "en", "text": "Bom dia a todos.",
                 "lines": ["Bom dia a todos."], "start": 0.5, "end": 2.25, "emitted": 1795925012.3,
                 "latency": {"asr": 0.2, "mt": 0.05}, "stable": "", "speaker": None}
    assert json.loads(ev.to_json()) == d
    named = caption(speaker={"id": "S2", "name": "Chair"})
    assert json.loads(named.to_json())["speaker"] == {"id": "S2", "name": "Chair"}
    named.to_dict()["speaker"]["name"] = "x"
    assert named.speaker["name"] == "Chair"
    assert "ã" in caption(text="Não").to_json()  # UTF-8, not \u escapes
    assert json.loads(caption(latency={"mt": float("nan")}).to_json())["latency"] == {"mt": None}


def test_caption_event_is_frozen_and_to_dict_is_a_copy():
    ev = caption()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.text = "x"
    d = ev.to_dict()
    d["lines"].append("y")
    d["latency"]["x"] = 1
    assert ev.lines == ["Bom dia a todos."] and "x" not in ev.latency


def test_bus_schema_accepts_caption_events():
    from appliance.bus.schema import caption_message

    msg = caption_message(caption(final=True, rev=3), 7)
    assert msg["id"] == "u1" and msg["rev"] == 3 and msg["final"] is True and msg["lang"] == "pt"


def test_audio_chunk_and_segment():
    chunk = AudioChunk(np.zeros(512, np.float32), 12.5)
    assert chunk.seconds == pytest.approx(0.032)
    seg = SpeechSegment("end", np.zeros(0, np.float32), 1.0, 2.0, speech_end=1.6)
    assert (seg.kind, seg.start, seg.end, seg.speech_end) == ("end", 1.0, 2.0, 1.6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chunk.t = 0.0


@pytest.mark.parametrize("speaker, shown", [
    ({"id": "S1", "name": None}, {"id": "S1", "name": None}),
    ({"id": "S3", "name": "Chair"}, {"id": "S3", "name": "Chair"}),
    ({"id": "S3", "name": "  "}, {"id": "S3", "name": None}),
    ({"id": 3, "name": "Chair"}, None),
    ("S1", None),
    (None, None),
])
def test_displays_read_the_speaker_or_none(speaker, shown):
    from appliance.bus.schema import caption_message, encode, parse_caption

    msg = caption_message(caption(final=True), 7)
    msg["speaker"] = speaker
    assert parse_caption(encode(msg))["speaker"] == shown
