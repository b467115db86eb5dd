"""A bounded on-disk queue of final captions the broker has not acknowledged yet (SQLite, WAL).

Rows are kept in publish order (by `seq`) until `ack()`; they survive a crash or restart of the daemon and
are sent again, oldest first, on the next connection. When the queue is full the oldest row is dropped,
with an error in the log and a counter, so an unreachable broker cannot fill the disk.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_ROWS = 20000  # about two days of finals in two languages


class Spool:
    def __init__(self, path: str | Path, *, max_rows: int = DEFAULT_MAX_ROWS):
        self.path = Path(path)
        self.max_rows = max_rows
        self.dropped = 0
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
            self._db.execute("INSERT OR REPLACE INTO finals (seq, topic, payload) VALUES (?, ?, ?)", (seq, topic, payload))
            self._count += 1
            if self._count > self.max_rows:
                over = self._count - self.max_rows
                self._db.execute("DELETE FROM finals WHERE seq IN (SELECT seq FROM finals ORDER BY seq LIMIT ?)", (over,))
                self._count -= over
                self.dropped += over
                log.error("queue of unsent finals is full (%d): dropped the oldest %d; is the broker reachable?",
                          self.max_rows, over)

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` rows with a sequence number above `seq`, oldest first."""
        with self._lock:
            return self._db.execute("SELECT seq, topic, payload FROM finals WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (seq, limit)).fetchall()

    def ack(self, seq: int) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM finals WHERE seq = ?", (seq,))
            self._count -= cur.rowcount

    def max_seq(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM finals").fetchone()[0]

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        with self._lock:
            self._db.close()
