"""A meeting record that forgets when told: real SQLite files, the real writer thread, the panel's real routes."""

from __future__ import annotations

import sqlite3
import stat
import time

import pytest
from test_archive import final
from test_panel_app import Panel

from appliance.archive import Archive, open_store

SECRET = "The merger with Blue Harbour closes on Friday."


def _files(path) -> bytes:
    """The database and its WAL, as `strings` would read them."""
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def _rows(path, meeting_id) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT COUNT(*) FROM meetings WHERE id = ?", (meeting_id,)).fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM finals WHERE meeting_id = ?", (meeting_id,)).fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def panel_and_archive(tmp_path):
    archive = Archive(tmp_path / "state" / "archive.db").start()
    panel = Panel(tmp_path, archive=lambda: archive).setup_and_login()
    yield panel, archive
    archive.stop()


def test_deleting_the_running_meeting_ends_it_leaves_no_row_and_no_byte_of_it(panel_and_archive):
    panel, archive = panel_and_archive
    now = time.time() - 60
    for n in range(20):
        archive.put(final(n, "en", SECRET if n == 3 else None, at=now))
    archive.flush()
    running = archive.state()["meeting"]
    assert running is not None and SECRET.encode() in _files(archive.path)
    r = panel.client.post(f"/archive/{running}/delete", data={"csrf_token": panel.token("/archive")},
                          follow_redirects=True)
    assert f"Meeting {running} deleted." in r.text
    for n in range(20, 23):  # the room goes on talking: a new meeting, never rows under the deleted id
        archive.put(final(n, "en", at=now))
    archive.flush()
    assert _rows(archive.path, running) == (0, 0)
    assert archive.state()["meeting"] not in (None, running)
    assert SECRET.encode() not in _files(archive.path)
    conn = sqlite3.connect(archive.path)
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0  # the space is given back
    conn.close()


def test_delete_all_and_retention_forget_every_byte(tmp_path):
    path = tmp_path / "archive.db"
    archive = Archive(path).start()
    archive.put(final(0, "en", SECRET, at=time.time() - 60))
    archive.flush()
    assert archive.delete_all() == 1
    archive.flush()
    archive.stop()
    assert SECRET.encode() not in _files(path)
    assert open_store(path).meetings() == []


def test_retention_deletes_every_older_row_orphans_included(tmp_path):
    path = tmp_path / "archive.db"
    open_store(path).close()
    old = time.time() - 40 * 86400
    conn = sqlite3.connect(path)  # rows left by an older writer: finals under a deleted id, a meeting never ended
    conn.execute("INSERT INTO meetings (id, started, last_activity) VALUES (7, ?, ?)", (old, old))
    conn.execute("INSERT INTO finals VALUES (99, 's-1', 'en', 'en', ?, ?, ?, 1, NULL, ?)", (SECRET, old, old, old))
    conn.execute("INSERT INTO finals VALUES (7, 's-2', 'en', 'en', 'kept too long', ?, ?, 1, NULL, ?)",
                 (old, old, old))
    conn.commit()
    conn.close()
    Archive(path, retention_days=30).start().stop()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM finals").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM meetings").fetchone()[0] == 0
    conn.close()
    assert SECRET.encode() not in _files(path)


def test_the_archive_and_the_state_folder_are_the_appliance_users_only(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    archive = Archive(state / "archive.db").start()
    archive.put(final(0, "en", at=time.time() - 60))
    archive.flush()
    try:
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for p in state.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name
    finally:
        archive.stop()


def test_panel_reads_never_write_the_file(panel_and_archive):
    panel, archive = panel_and_archive
    archive.put(final(0, "en", at=time.time() - 60))
    archive.flush()
    before = _files(archive.path)
    for _ in range(3):
        assert panel.client.get("/archive").status_code == 200
        assert panel.client.get("/archive/latest/export?lang=en&format=txt").status_code == 200
    assert _files(archive.path) == before
