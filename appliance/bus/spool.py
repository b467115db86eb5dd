"""A bounded on-disk queue of final captions the broker has not acknowledged yet (SQLite, WAL).

Rows are kept in publish order (by `seq`) until `ack()`; they survive a crash or restart of the daemon and
are sent again, oldest first, on the next connection. When the queue is full the oldest row is dropped,
with an error in the log and a counter, so an unreachable broker cannot fill the disk.

When the disk refuses a write (full, read-only, I/O error), rows are held in memory instead (bounded by
MEMORY_ROWS, oldest dropped with a counter) and moved to disk at the next write that succeeds; `disk_error`
says why while it lasts. Readers see disk and memory rows as one queue.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 20000  # about two days of finals in two languages
MEMORY_ROWS = 2000  # rows held in memory while the disk refuses writes (about an hour of finals in two languages)


class Spool:
    def __init__(self, path: str | Path, *, max_rows: int = DEFAULT_MAX_ROWS):
        self.path = Path(path)
        self.max_rows = max_rows
        self.dropped = 0
        self.disk_error = ""  # why the last write to disk failed, until one succeeds
        self._memory: dict[int, tuple[str, bytes]] = {}  # seq -> row, while the disk refuses writes
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a daemon crash
            self._db.execute("CREATE TABLE IF NOT EXISTS finals (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)")
            self._count = self._db.execute("SELECT COUNT(*) FROM finals").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"{self.path}: cannot open the queue of unsent finals ({exc}); "
                             "check that state_dir exists and is writable by the appliance") from None

    def put(self, seq: int, topic: str, payload: bytes) -> None:
        with self._lock:
            if self._memory:
                self._move_to_disk()
            try:
                self._insert(seq, topic, payload)
            except (sqlite3.Error, OSError) as exc:
                self._hold(seq, topic, payload, exc)

    def _insert(self, seq: int, topic: str, payload: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO finals (seq, topic, payload) VALUES (?, ?, ?)", (seq, topic, payload))
        self._count += 1
        if self.disk_error:
            log.info("queue of unsent finals: writing to %s works again", self.path)
            self.disk_error = ""
        if self._count > self.max_rows:
            over = self._count - self.max_rows
            self._db.execute("DELETE FROM finals WHERE seq IN (SELECT seq FROM finals ORDER BY seq LIMIT ?)", (over,))
            self._count -= over
            self.dropped += over
            log.error("queue of unsent finals is full (%d): dropped the oldest %d; is the broker reachable?",
                      self.max_rows, over)

    def _hold(self, seq: int, topic: str, payload: bytes, exc: Exception) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if reason != self.disk_error:
            log.error("queue of unsent finals: cannot write to %s (%s); holding finals in memory (up to %d)",
                      self.path, reason, MEMORY_ROWS)
        self.disk_error = reason
        self._memory[seq] = (topic, payload)
        while len(self._memory) > MEMORY_ROWS:
            del self._memory[min(self._memory)]
            self.dropped += 1
            log.error("queue of unsent finals: memory full as well; dropped the oldest final")

    def _move_to_disk(self) -> None:
        for seq in sorted(self._memory):
            topic, payload = self._memory[seq]
            try:
                self._insert(seq, topic, payload)
            except (sqlite3.Error, OSError):
                return
            del self._memory[seq]

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` rows with a sequence number above `seq`, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload FROM finals WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()
            if self._memory:
                rows += [(s, t, p) for s, (t, p) in self._memory.items() if s > seq]
                rows = sorted(rows)[:limit]
            return rows

    def ack(self, seq: int) -> None:
        with self._lock:
            if self._memory.pop(seq, None) is not None:
                return
            try:
                cur = self._db.execute("DELETE FROM finals WHERE seq = ?", (seq,))
                self._count -= cur.rowcount
            except (sqlite3.Error, OSError) as exc:  # stays queued: sent once more later (displays drop repeats)
                log.warning("queue of unsent finals: cannot remove an acknowledged final (%s)", exc)

    def max_seq(self) -> int:
        with self._lock:
            disk = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM finals").fetchone()[0]
            return max([disk, *self._memory])

    @property
    def held_in_memory(self) -> int:
        return len(self._memory)

    def __len__(self) -> int:
        with self._lock:
            return self._count + len(self._memory)

    def close(self) -> None:
        with self._lock:
            if self._memory:
                self._move_to_disk()
            if self._memory:
                log.error("queue of unsent finals: %d final(s) held in memory could not be written to %s (%s) and "
                          "are lost at exit", len(self._memory), self.path, self.disk_error)
            self._db.close()
