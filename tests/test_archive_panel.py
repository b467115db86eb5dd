"""The panel's archive page through Flask's test client, on a real archive fed by the real writer thread."""

from __future__ import annotations

import re
import time

import pytest
from test_archive import final
from test_panel_app import Panel

from appliance.archive import Archive, open_store


@pytest.fixture
def recorded(tmp_path):
    archive = Archive(tmp_path / "state" / "archive.db").start()
    now = time.time() - 120
    for n in range(3):
        archive.put(final(n, "en", at=now))
        archive.put(final(n, "pt", at=now))
    archive.flush()
    panel = Panel(tmp_path, archive=lambda: archive).setup_and_login()
    yield panel, archive
    archive.stop()


def test_the_archive_page_needs_the_login(tmp_path):
    panel = Panel(tmp_path, archive=lambda: None)
    panel.setup_and_login()
    panel.client.post("/logout", data={"csrf_token": panel.token("/")})
    assert panel.client.get("/archive").status_code == 303
    assert panel.client.get("/archive/latest/export?lang=en").status_code == 303


def test_archive_page_lists_meetings_with_downloads_and_a_running_meeting_exports_so_far(recorded):
    panel, archive = recorded
    page = panel.client.get("/archive")
    assert page.status_code == 200 and 'data-meeting="1"' in page.text and "(running)" in page.text
    assert "/archive/1/export?lang=pt&amp;format=srt" in page.text
    archive.put(final(3, "en", at=time.time() - 120))  # queued, not yet flushed: the download includes it
    r = panel.client.get("/archive/latest/export?lang=en&format=srt")
    assert r.status_code == 200 and r.mimetype == "application/x-subrip"
    assert re.match(r'attachment; filename="meeting-1-\d{8}-\d{4}-en.srt"', r.headers["Content-Disposition"])
    assert r.text.count(" --> ") == 4 and "Sentence number 3 in en." in r.text
    txt = panel.client.get("/archive/1/export?lang=pt&format=txt")
    assert txt.status_code == 200 and "Sentence number 0 in pt." in txt.text


def test_unknown_meeting_or_language_in_a_download_lists_what_exists(recorded):
    panel, _ = recorded
    r = panel.client.get("/archive/9/export?lang=en&format=srt")
    assert r.status_code == 404 and "meetings: 1" in r.text
    r = panel.client.get("/archive/1/export?lang=de&format=vtt")
    assert r.status_code == 404 and "languages: en, pt" in r.text
    r = panel.client.get("/archive/1/export?lang=en&format=docx")
    assert r.status_code == 400 and "formats: srt, vtt, txt, jsonl" in r.text


def test_start_stop_and_delete_from_the_panel(recorded):
    panel, archive = recorded
    token = panel.token("/archive")
    assert panel.client.post("/archive/meeting", data={"action": "start"}).status_code == 400  # CSRF
    r = panel.client.post("/archive/meeting", data={"action": "start", "csrf_token": token}, follow_redirects=True)
    assert "Meeting 2 started." in r.text and archive.state()["meeting"] == 2
    r = panel.client.post("/archive/meeting", data={"action": "stop", "csrf_token": token}, follow_redirects=True)
    assert "Meeting 2 stopped." in r.text and archive.state()["meeting"] is None
    r = panel.client.post("/archive/1/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "Meeting 1 deleted." in r.text
    assert [m.id for m in open_store(archive.path).meetings()] == [2]
    r = panel.client.post("/archive/delete-all", data={"csrf_token": token}, follow_redirects=True)
    assert "1 meetings deleted." in r.text and "No meetings recorded yet." in r.text


def test_recording_off_is_said_on_the_page(tmp_path):
    panel = Panel(tmp_path, archive=lambda: None).setup_and_login()
    assert "Recording is off" in panel.client.get("/archive").text
    assert panel.client.get("/archive/latest/export?lang=en").status_code == 404


def test_archive_settings_are_saved_validated_and_applied(recorded):
    panel, _ = recorded
    page = panel.client.get("/archive")
    assert 'name="archive.gap_min"' in page.text and 'name="archive.retention_days"' in page.text
    assert 'name="audience.enabled"' in page.text and 'name="audience.scrollback"' in page.text
    form = {"csrf_token": panel.token("/archive"), "archive.enabled": "on", "archive.gap_min": "45",
            "archive.retention_days": "7", "audience.enabled": "on", "audience.scrollback": "none"}
    r = panel.client.post("/archive", data=form)
    assert r.status_code == 303
    saved = panel.app.extensions["appliance_panel"].config_path.read_text()
    assert '"gap_min": 45.0' in saved and '"retention_days": 7.0' in saved
    assert panel.ctx.applier.wait()["state"] == "applied"  # the daemon is told (it restarts the archive)
    assert panel.saved[-1].archive.gap_min == 45.0 and panel.saved[-1].audience.scrollback == "none"
    bad = panel.client.post("/archive", data={**form, "archive.retention_days": "0"})
    assert bad.status_code == 400 and "archive.retention_days" in bad.text
