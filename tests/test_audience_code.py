"""The audience page only for people in the room: the meeting code, on a real archive fed by the real writer."""

from __future__ import annotations

import time

import pytest
from test_archive import final

from appliance.archive import Archive
from appliance.config import AudienceConfig
from appliance.display import audience
from appliance.meeting_code import ALPHABET, LENGTH, MeetingCode


@pytest.fixture
def room(tmp_path):
    code = MeetingCode()
    archive = Archive(tmp_path / "archive.db", on_meeting_start=code.rotate).start()
    settings = {"now": AudienceConfig()}
    client = audience.make_app(lambda: archive.path, code=code, settings=lambda: settings["now"]).test_client()
    yield archive, code, client, settings
    archive.stop()


def _get(client, code, lang="en"):
    return client.get(f"/audience/api/captions?lang={lang}" + (f"&code={code}" if code is not None else ""))


def test_an_anonymous_client_gets_nothing_without_the_code_nor_from_an_ended_meeting(room):
    archive, code, client, _ = room
    archive.put(final(0, "en", "Board minutes, not for the hallway.", at=time.time() - 60))
    archive.flush()
    for wrong in (None, "", "AAAAAA", code.current[:-1]):
        r = _get(client, wrong)
        assert r.status_code == 403 and b"hallway" not in r.data
    archive.stop_meeting()
    r = _get(client, code.current)
    assert r.status_code == 200 and r.get_json() == {"meeting": None, "running": False, "languages": [], "finals": []}


def test_with_the_code_only_the_running_meeting(room):
    archive, code, client, settings = room
    archive.put(final(0, "en", "The first meeting's secret.", at=time.time() - 600))
    archive.flush()
    archive.start_meeting()  # the first meeting ends; a new one starts
    archive.put(final(1, "en", "Said in the second meeting.", at=time.time() - 60))
    archive.flush()
    body = _get(client, code.current.lower()).get_json()  # typed in lower case from a phone
    assert body["running"] and [f["text"] for f in body["finals"]] == ["Said in the second meeting."]
    settings["now"] = AudienceConfig(scrollback="none")
    assert _get(client, code.current).get_json()["finals"] == []
    settings["now"] = AudienceConfig(enabled=False)
    assert _get(client, code.current).status_code == 404 and client.get("/audience/").status_code == 404


def test_an_old_code_is_refused_after_the_next_meeting_starts(room):
    archive, code, client, _ = room
    archive.put(final(0, "en", at=time.time() - 60))
    archive.flush()
    old = code.current
    assert _get(client, old).status_code == 200
    archive.start_meeting()
    assert code.current != old
    assert _get(client, old).status_code == 403 and _get(client, code.current).status_code == 200


def test_codes_are_short_readable_and_new_each_time():
    code = MeetingCode()
    seen = {code.rotate() for _ in range(50)}
    assert len(seen) == 50 and all(len(c) == LENGTH and set(c) <= set(ALPHABET) for c in seen)
