"""The archive writer: a bounded queue owned by one thread, so recording never slows recognition.

  pipeline threads --sink--> Archive.put(event)  (never blocks; drops with a counter when the queue is full)
                             queue (bounded) --> writer thread --> ArchiveStore (SQLite)
  panel --start()/stop()/delete--> the same queue, so commands and finals keep their order.

The writer thread owns the meeting state: a final after a silence gap longer than `gap_s` starts a new
meeting. Deleting the running meeting ends it first (the next final starts a new one), so no row is ever
written under a deleted id. A full disk stops archiving with a warning (captions go on); a damaged database is set aside and
a new one started. Any other exception is caught, logged and reported by `problem()` (the daemon's health shows
it), and the writer goes on with the next batch; `stop()` returns within its timeout even when the writer is hung
or its queue full. Events carry audio times (seconds from the start of their stream); they are turned into
Unix times with an anchor taken from the first final of each stream.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from appliance.archive.store import ArchiveError, ArchiveStore, is_corrupt, is_disk_full, open_store, set_aside

log = logging.getLogger(__name__)

__all__ = ["Archive", "QUEUE_EVENTS", "BATCH_EVENTS"]

QUEUE_EVENTS = 20_000  # finals waiting for the disk (hours of speech in every language) before dropping
BATCH_EVENTS = 500  # finals written in one transaction at most
PURGE_INTERVAL_S = 3600.0  # retention is enforced at start and then this often
IDLE_CHECK_S = 60.0  # an idle writer wakes this often to end a meeting whose room fell silent
MAX_STREAMS = 8  # time anchors kept (one per pipeline run; old ones are finished)
_STOP = object()


@dataclass
class _Command:
    name: str  # "start" | "stop" | "flush" | "delete" | "delete_all"
    done: threading.Event
    result: Any = None
    arg: Any = None


def speaker_json(event: Any) -> str | None:
    """The event's speaker (the speaker issue adds it; any JSON-able value) as JSON text, or None."""
    speaker = getattr(event, "speaker", None) if not isinstance(event, dict) else event.get("speaker")
    if speaker is None:
        return None
    try:
        return json.dumps(speaker, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return json.dumps(str(speaker))


class StreamAnchors:
    """Unix times of a caption's audio span, anchored on the first final of its pipeline stream.

    Utterance ids are "<stream>-<n>" (a new stream each time the pipeline restarts, with audio time from 0).
    """

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._anchors: dict[str, float] = {}  # stream id -> Unix time of its audio time 0

    def wall_times(self, event) -> tuple[float, float]:
        stream = str(event.id).rsplit("-", 1)[0]
        anchor = self._anchors.get(stream)
        if anchor is None:
            anchor = self._anchors[stream] = (event.emitted or self.clock()) - event.end
            while len(self._anchors) > MAX_STREAMS:
                self._anchors.pop(next(iter(self._anchors)))
        return anchor + event.start, anchor + event.end


def _drain(q: queue.Queue, reason: str) -> None:
    """Empty the queue (archiving stopped), answering waiting commands so no caller hangs."""
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return
        if isinstance(item, _Command):
            item.result = RuntimeError(reason)
            item.done.set()
        elif item is _STOP:
            q.put(_STOP)
            return


class Archive:
    """Record finals into the archive at `path`. Call start(), then put(event) from any thread, then stop()."""

    def __init__(self, path: str | Path, *, gap_s: float = 1800.0, retention_days: float = 30.0,
                 on_warning: Callable[[str], None] | None = None, queue_events: int = QUEUE_EVENTS,
                 clock: Callable[[], float] = time.time, on_meeting_start: Callable[[int], Any] | None = None):
        """on_meeting_start(meeting_id) is called on the writer thread as each meeting starts (a new meeting code)."""
        self.path = Path(path)
        self.gap_s = gap_s
        self.retention_s = retention_days * 86400.0
        self.on_warning = on_warning or (lambda message: None)
        self.clock = clock
        self.on_meeting_start = on_meeting_start or (lambda meeting_id: None)
        self._q: queue.Queue = queue.Queue(maxsize=queue_events)
        self._thread: threading.Thread | None = None
        self.dropped = 0  # finals lost because the queue was full (slow disk)
        self.written = 0
        self.stopped_reason = ""  # why archiving stopped (full disk), "" while it works
        self.error = ""  # the last unexpected failure of the writer, "" once a batch is written again
        self._quit = threading.Event()  # stop() gave up waiting: the writer quits at its next step
        # owned by the writer thread
        self._store: ArchiveStore | None = None
        self._meeting: int | None = None
        self._last_activity = 0.0  # Unix end time of the meeting's last final
        self._last_arrival = 0.0  # clock() when the last final was written (finals may arrive late after a backlog)
        self._anchors = StreamAnchors(clock)
        self._next_purge = 0.0

    # ---- any thread -----------------------------------------------------------------------------------------
    def start(self) -> "Archive":
        """Start the writer thread; it opens the file (a large archive's check never delays the daemon's start)."""
        self._quit.clear()
        self._thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self._thread.start()
        log.info("archive: recording finals to %s (new meeting after %.0f min of silence, kept %.0f days)",
                 self.path, self.gap_s / 60, self.retention_s / 86400)
        return self

    def put(self, event: Any) -> None:
        """Queue a final for the disk; partials are ignored. Never blocks."""
        if not getattr(event, "final", False) or self.stopped_reason:
            return
        try:
            self._q.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                self._warn(f"archive: the disk is too slow, {self.dropped} finals not recorded (captions unaffected)")

    def start_meeting(self, timeout: float = 10.0) -> int | None:
        """End the running meeting and start a new one now; returns its id."""
        return self._command("start", timeout)

    def stop_meeting(self, timeout: float = 10.0) -> int | None:
        """End the running meeting; returns its id (None when none ran). The next final starts a new one."""
        return self._command("stop", timeout)

    def delete_meeting(self, meeting_id: int, timeout: float = 10.0) -> None:
        """Delete one meeting (ended first when it runs); an unknown id raises ArchiveError."""
        self._command("delete", timeout, meeting_id)

    def delete_all(self, timeout: float = 30.0) -> int:
        """Delete every meeting (the running one ended first); returns how many."""
        return self._command("delete_all", timeout)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is on disk."""
        self._command("flush", timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued and close the file, within about `timeout` seconds. A writer that cannot finish in
        time (a hung disk; a queue too full to take the stop) is left behind and quits at its next step."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        try:
            self._q.put(_STOP, timeout=timeout / 2)
        except queue.Full:
            self._quit.set()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            self._quit.set()
            log.warning("archive: the writer did not stop within %.0f s; %d queued finals not recorded", timeout,
                        self._q.qsize())
        self._thread = None

    def problem(self) -> str | None:
        """What keeps finals from the record, in one line, or None (shown in the daemon's health)."""
        thread = self._thread
        if thread is not None and not thread.is_alive():
            return f"the archive writer ended unexpectedly{': ' + self.error if self.error else ''}"
        return self.stopped_reason or self.error or None

    def state(self) -> dict:
        return {"path": str(self.path), "recording": not self.stopped_reason and self._thread is not None,
                "meeting": self._meeting, "written": self.written, "dropped": self.dropped,
                "queued": self._q.qsize(), "problem": self.stopped_reason}

    def _command(self, name: str, timeout: float, arg: Any = None):
        if self.stopped_reason:
            raise RuntimeError(self.stopped_reason)
        cmd = _Command(name, threading.Event(), arg=arg)
        self._q.put(cmd, timeout=timeout)
        if not cmd.done.wait(timeout):
            raise TimeoutError(f"archive: the writer did not answer '{name}' within {timeout:.0f} s")
        if isinstance(cmd.result, Exception):
            raise cmd.result
        return cmd.result

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self.on_warning(message)

    # ---- the writer thread ----------------------------------------------------------------------------------
    def _resume(self) -> None:
        """Continue a meeting left running by a previous run (its gap rule still applies)."""
        m = self._store.open_meeting()
        if m is not None:
            self._meeting, self._last_activity = m.id, m.last_activity

    def _open(self) -> bool:
        try:
            self._store = open_store(self.path)
            self._resume()
            return True
        except Exception as exc:  # an unusable state folder costs the record, never captions
            self.stopped_reason = f"archive off: cannot open {self.path}: {exc}"
            self._warn(self.stopped_reason)
            _drain(self._q, self.stopped_reason)
            return False

    def _run(self) -> None:
        try:
            if self._open():
                self._loop()
        except BaseException as exc:  # noqa: BLE001 - the last resort: recorded for problem(), callers answered
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("archive: the writer ended unexpectedly")
            self.stopped_reason = self.stopped_reason or f"archive stopped: {self.error}"
            _drain(self._q, self.stopped_reason)

    def _loop(self) -> None:
        while not self._quit.is_set():
            try:
                item = self._q.get(timeout=IDLE_CHECK_S)
            except queue.Empty:
                item = None
            batch, commands, stop = [], [], False
            while item is not None:
                if item is _STOP:
                    stop = True
                    break
                (commands if isinstance(item, _Command) else batch).append(item)
                if isinstance(item, _Command) or len(batch) >= BATCH_EVENTS:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    item = None
            self._guarded(self._write, batch)
            self._guarded(self._maybe_purge)  # before answering commands: a flush sees the meeting's end
            for cmd in commands:
                cmd.result = self._guarded(self._do, cmd, errors=True)
                cmd.done.set()
            if stop:
                break
        self._close()

    def _close(self) -> None:
        try:
            if self._store is not None:
                self._store.close()
        except Exception:  # noqa: BLE001 - closing is the last step; nothing is left to save
            log.exception("archive: closing the file failed")

    def _guarded(self, fn, *args, errors: bool = False):
        """Run one disk step: a full disk stops archiving; a damaged file is set aside and a new one started."""
        if self._store is None:
            return None
        try:
            return fn(*args)
        except ArchiveError as exc:  # a command's answer (an unknown meeting), not a disk problem
            return exc if errors else None
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc):
                self.stopped_reason = f"archive stopped: the disk is full ({self.path.parent}); captions continue"
                self._warn(self.stopped_reason)
                _drain(self._q, self.stopped_reason)
            elif is_corrupt(exc):
                self._replace_damaged(exc)
            else:
                log.exception("archive write failed")
                self._warn(f"archive: write failed: {exc}")
                self._check_after_error()
            return exc if errors else None
        except Exception as exc:  # noqa: BLE001 - a bug or an odd event costs this step, never the writer
            log.exception("archive: unexpected failure in %s", getattr(fn, "__name__", fn))
            message = f"{type(exc).__name__}: {exc}"
            if message != self.error:
                self._warn(f"archive: unexpected failure: {message}")
            self.error = message
            return exc if errors else None

    def _check_after_error(self) -> None:
        """A write failed for another reason: the integrity check decides whether the file is damaged."""
        try:
            result = self._store.check()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                return  # locked or busy: nothing known about the file
            result = str(exc)
        if result != "ok":
            self._replace_damaged(sqlite3.DatabaseError(f"database disk image is malformed ({result})"))

    def _replace_damaged(self, exc: Exception) -> None:
        try:
            self._store.close()
        except sqlite3.Error:
            pass
        aside = set_aside(self.path)
        log.error("archive %s is damaged (%s): set aside as %s; a new archive is started", self.path, exc, aside.name)
        self.on_warning(f"archive was damaged: set aside as {aside.name}, a new one started")
        self._store = open_store(self.path)
        self._meeting = None

    def _write(self, batch: list) -> None:
        if not batch:
            return
        rows = []
        for event in batch:
            start, end = self._anchors.wall_times(event)
            if self._meeting is None or start - self._last_activity > self.gap_s:
                if self._meeting is not None:
                    self._store.add_finals(self._meeting, rows)
                    rows = []
                    self._store.end_meeting(self._meeting)
                    log.info("archive: meeting %d ended after %.0f min of silence", self._meeting, self.gap_s / 60)
                self._meeting = self._store.start_meeting(start, "auto")
                log.info("archive: meeting %d started", self._meeting)
                self.on_meeting_start(self._meeting)
            self._last_activity = max(self._last_activity, end)
            rows.append((event.id, event.lang, event.source_lang, event.text, start, end, event.rev,
                         speaker_json(event), event.emitted))
        self._store.add_finals(self._meeting, rows)
        self.written += len(batch)
        self.error = ""
        self._last_arrival = self.clock()

    def _do(self, cmd: _Command):
        name = cmd.name
        if name == "flush":
            return None
        if name == "delete":
            return self._delete(cmd.arg)
        if name == "delete_all":
            self._meeting = None
            return self._store.delete_all()
        ended = self._meeting
        if ended is not None:
            self._store.end_meeting(ended, self.clock() if name == "start" else None)
            self._meeting = None
        if name == "start":
            now = self.clock()
            self._meeting = self._store.start_meeting(now, "panel")
            self._last_activity = now
            log.info("archive: meeting %d started from the panel", self._meeting)
            self.on_meeting_start(self._meeting)
            return self._meeting
        log.info("archive: meeting %s stopped from the panel", ended)
        return ended

    def _delete(self, meeting_id: int) -> None:
        if self._meeting == meeting_id:
            self._store.end_meeting(meeting_id, self.clock())
            self._meeting = None
            log.info("archive: meeting %d ended to be deleted", meeting_id)
        self._store.delete(meeting_id)
        log.info("archive: meeting %d deleted from the panel", meeting_id)

    def _maybe_purge(self) -> None:
        now = self.clock()
        if self._meeting is not None and now - max(self._last_activity, self._last_arrival) > self.gap_s:
            self._store.end_meeting(self._meeting)  # a silent room: the meeting is over even before the next final
            log.info("archive: meeting %d ended after %.0f min of silence", self._meeting, self.gap_s / 60)
            self._meeting = None
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        n = self._store.purge(now - self.retention_s)
        if self._meeting is not None and self._store.open_meeting() is None:
            self._meeting = None  # a meeting older than the retention itself (a retention shorter than the gap)
        if n:
            log.info("archive: %d meetings older than %.0f days deleted", n, self.retention_s / 86400)
