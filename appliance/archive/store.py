"""The archive database: meetings and the finals said in them, one SQLite file under the state folder.

Times are Unix seconds (wall clock). A final is kept once per (meeting, utterance id, language): a later
revision replaces an earlier one. `speaker` is stored as JSON text when the event carries one.
This module only reads and writes the database; the writer thread (writer.py) decides when.

Forgetting is real: foreign keys cascade, `secure_delete` zeroes what is deleted, and after each delete the freed
pages are given back and the WAL is truncated, so a deleted sentence is no longer anywhere in the files. The file
and the state folder are the appliance user's only (0600 / 0700). Readers (panel, audience, CLI) open it read-only
and never run the integrity check; the writer runs it when it opens the file and after a failed write.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

__all__ = ["ArchiveStore", "ArchiveError", "Meeting", "StoredFinal", "open_store", "open_read_only", "DB_NAME",
           "is_disk_full", "make_private"]

DB_NAME = "archive.db"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meetings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    ended REAL,
    last_activity REAL NOT NULL,
    how TEXT NOT NULL DEFAULT 'auto'
);
CREATE TABLE IF NOT EXISTS finals (
    meeting_id INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    utt_id TEXT NOT NULL,
    lang TEXT NOT NULL,
    source_lang TEXT NOT NULL,
    text TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    rev INTEGER NOT NULL,
    speaker TEXT,
    emitted REAL NOT NULL,
    UNIQUE (meeting_id, utt_id, lang)
);
CREATE INDEX IF NOT EXISTS finals_by_meeting ON finals (meeting_id, lang, start);
"""


class ArchiveError(ValueError):
    """An archive request that cannot be served (unknown meeting or language); the message lists what exists."""


@dataclass(frozen=True)
class Meeting:
    id: int
    started: float
    ended: float | None  # None while the meeting runs
    last_activity: float
    languages: tuple[str, ...]
    finals: int

    @property
    def running(self) -> bool:
        return self.ended is None

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.ended if self.ended is not None else self.last_activity) - self.started)

    def to_dict(self) -> dict:
        return {"id": self.id, "started": self.started, "ended": self.ended, "duration_s": round(self.duration_s, 1),
                "languages": list(self.languages), "finals": self.finals, "running": self.running}


@dataclass(frozen=True)
class StoredFinal:
    """One final as stored; the shape subtitles.py and captions.py read (final, lang, text, lines, start, end)."""

    utt_id: str
    lang: str
    source_lang: str
    text: str
    start: float  # Unix seconds
    end: float
    rev: int
    speaker: Any  # decoded JSON, or None
    emitted: float
    final: bool = True

    @property
    def lines(self) -> list[str]:
        return []


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "disk is full" in str(exc) or getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL)


def is_corrupt(exc: BaseException) -> bool:
    """SQLite's own words for a damaged file (not a locked or full one)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text or "corrupt" in text
        or getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB))


class ArchiveStore:
    """One connection to the archive file. Not shared between threads: each thread opens its own."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn

    # ---- writes (the writer thread) -------------------------------------------------------------------------
    def start_meeting(self, at: float, how: str) -> int:
        with self.conn:
            cur = self.conn.execute("INSERT INTO meetings (started, last_activity, how) VALUES (?, ?, ?)", (at, at, how))
        return int(cur.lastrowid)

    def end_meeting(self, meeting_id: int, at: float | None = None) -> None:
        """End a meeting at `at`, or at its last activity."""
        with self.conn:
            self.conn.execute("UPDATE meetings SET ended = COALESCE(?, last_activity) WHERE id = ? AND ended IS NULL",
                              (at, meeting_id))

    def add_finals(self, meeting_id: int, rows: Iterable[tuple]) -> None:
        """rows: (utt_id, lang, source_lang, text, start, end, rev, speaker_json, emitted); an empty text retracts."""
        rows = list(rows)
        keep = [r for r in rows if r[3].strip()]
        gone = [(meeting_id, r[0], r[1]) for r in rows if not r[3].strip()]
        with self.conn:
            self.conn.executemany(
                "INSERT INTO finals (meeting_id, utt_id, lang, source_lang, text, start, end, rev, speaker, emitted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (meeting_id, utt_id, lang) DO UPDATE SET "
                "text = excluded.text, start = excluded.start, end = excluded.end, rev = excluded.rev, "
                "speaker = excluded.speaker, emitted = excluded.emitted, source_lang = excluded.source_lang "
                "WHERE excluded.rev >= finals.rev", [(meeting_id, *r) for r in keep])
            self.conn.executemany("DELETE FROM finals WHERE meeting_id = ? AND utt_id = ? AND lang = ?", gone)
            if rows:
                last = max(r[5] for r in rows)
                self.conn.execute("UPDATE meetings SET last_activity = MAX(last_activity, ?) WHERE id = ?",
                                  (last, meeting_id))

    def open_meeting(self) -> Meeting | None:
        row = self.conn.execute("SELECT id FROM meetings WHERE ended IS NULL ORDER BY id DESC LIMIT 1").fetchone()
        return self.meeting(row[0]) if row else None

    def delete(self, meeting_id: int) -> None:
        """Delete one meeting. The writer ends it first when it runs (Archive.delete_meeting); call it from there."""
        self.meeting(meeting_id)  # unknown id -> ArchiveError
        with self.conn:
            self.conn.execute("DELETE FROM finals WHERE meeting_id = ?", (meeting_id,))
            self.conn.execute("DELETE FROM meetings WHERE id = ?", (meeting_id,))
        self.reclaim()

    def delete_all(self) -> int:
        with self.conn:
            n = self.conn.execute("SELECT COUNT(*) FROM meetings").fetchone()[0]
            self.conn.execute("DELETE FROM finals")
            self.conn.execute("DELETE FROM meetings")
        self.reclaim()
        return int(n)

    def purge(self, older_than: float) -> int:
        """Delete every row older than `older_than` (Unix seconds): meetings whose last activity (or end) is older,
        their finals, finals older than that whatever their meeting, and finals whose meeting is gone. Returns how
        many meetings went."""
        with self.conn:
            n = self.conn.execute("DELETE FROM meetings WHERE COALESCE(ended, last_activity) < ?",
                                  (older_than,)).rowcount
            rows = self.conn.execute("DELETE FROM finals WHERE emitted < ? OR end < ? OR meeting_id NOT IN "
                                     "(SELECT id FROM meetings)", (older_than, older_than)).rowcount
        if n or rows:
            self.reclaim()
        return int(n)

    def reclaim(self) -> None:
        """Give the freed pages back to the file system and empty the WAL (which still holds the deleted text)."""
        self.conn.execute("PRAGMA incremental_vacuum").fetchall()
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def check(self) -> str:
        """SQLite's quick_check: "ok", or what is damaged."""
        return str(self.conn.execute("PRAGMA quick_check").fetchone()[0])

    # ---- reads ----------------------------------------------------------------------------------------------
    def meetings(self) -> list[Meeting]:
        rows = self.conn.execute(
            "SELECT m.id, m.started, m.ended, m.last_activity, "
            "(SELECT group_concat(lang) FROM (SELECT DISTINCT lang FROM finals f WHERE f.meeting_id = m.id ORDER BY lang)), "
            "(SELECT COUNT(*) FROM finals f WHERE f.meeting_id = m.id) FROM meetings m ORDER BY m.id").fetchall()
        return [Meeting(r[0], r[1], r[2], r[3], tuple((r[4] or "").split(",")) if r[4] else (), r[5]) for r in rows]

    def meeting(self, ref: int | str) -> Meeting:
        """A meeting by id, or "latest"; an unknown one raises ArchiveError listing the ids that exist."""
        meetings = self.meetings()
        if not meetings:
            raise ArchiveError(f"the archive {self.path} holds no meetings yet")
        if str(ref).strip().lower() == "latest":
            return meetings[-1]
        try:
            wanted = int(str(ref).strip())
        except ValueError:
            wanted = None
        for m in meetings:
            if m.id == wanted:
                return m
        raise ArchiveError(f"no meeting {ref!r} in the archive; meetings: {', '.join(str(m.id) for m in meetings)} "
                           "(or 'latest')")

    def finals(self, meeting_id: int, lang: str) -> list[StoredFinal]:
        """The finals of one meeting in one language, in time order; an unknown language lists those that exist."""
        m = self.meeting(meeting_id)
        if lang not in m.languages:
            have = ", ".join(m.languages) or "none yet"
            raise ArchiveError(f"meeting {m.id} has no captions in {lang!r}; languages: {have}")
        rows = self.conn.execute(
            "SELECT utt_id, lang, source_lang, text, start, end, rev, speaker, emitted FROM finals "
            "WHERE meeting_id = ? AND lang = ? ORDER BY start, emitted", (m.id, lang)).fetchall()
        return [StoredFinal(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]) if r[7] else None, r[8])
                for r in rows]

    def close(self) -> None:
        self.conn.close()


def make_private(path: Path) -> None:
    """The state folder 0700 and the database file 0600 (created so, never wider, before SQLite opens it)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path.name, path.name + "-wal", path.name + "-shm"):  # SQLite gives its side files the db's mode
        side = path.with_name(name)
        if side.exists():
            os.chmod(side, 0o600)


def _connect(path: Path) -> sqlite3.Connection:
    make_private(path)
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA secure_delete=ON")  # deleted text is overwritten, not left in free pages
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # incremental: deletes can give pages back
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")  # a no-op on a new file; converts an older archive once
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across application crashes, fast commits
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
    except BaseException:
        conn.close()
        raise
    conn.isolation_level = ""  # `with conn:` opens and commits transactions
    return conn


def set_aside(path: Path) -> Path:
    """Move a damaged database (and its WAL files) out of the way; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(aside.with_name(aside.name + suffix))
    path.replace(aside)
    return aside


def open_read_only(path: str | Path) -> ArchiveStore | None:
    """The archive opened read-only (audience pages, displays): None when nothing has been recorded yet."""
    path = Path(path)
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    return ArchiveStore(path, conn)


def open_store(path: str | Path, *, create: bool = True, repair: bool = True) -> ArchiveStore:
    """Open (or create) the archive at `path`. A corrupt file is set aside and a new one started (logged)."""
    path = Path(path)
    if not create and not path.exists():
        raise ArchiveError(f"no archive at {path}: nothing has been recorded with this state folder")
    try:
        return ArchiveStore(path, _connect(path))
    except sqlite3.DatabaseError as exc:
        if not (repair and is_corrupt(exc)):
            raise
        aside = set_aside(path)
        log.error("archive %s is damaged (%s): set aside as %s; a new archive is started", path, exc, aside.name)
        return ArchiveStore(path, _connect(path))
