"""What the pipeline's worker threads share: bounded puts that never hang, and the restart budget of a stage.

A worker that raises is restarted in place, up to STAGE_RESTARTS in STAGE_RESTART_WINDOW_S; past that it stays dead
and health reports it (a worker thread that ends with `stopped` set ended on request; any other is dead). Its errors
are kept (bounded) for the status page; `failing` names the stages whose last attempt failed, until they next
succeed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)

ERRORS_KEPT = 20  # worker error messages kept
STAGE_RESTARTS = 5  # a worker that fails this often ...
STAGE_RESTART_WINDOW_S = 60.0  # ... within this window stays dead: health reports it and the watchdog stops


def put_dropping_oldest(q: queue.Queue, item, dropped: Callable[[], None] = lambda: None) -> None:
    """Put without blocking: a full queue loses its oldest item (`dropped()` is called for each one lost)."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
                dropped()
            except queue.Empty:
                pass


def put_with_timeout(q: queue.Queue, item, timeout_s: float) -> bool:
    """Put, waiting at most `timeout_s` (a dead consumer must not hang its producer)."""
    try:
        q.put(item, timeout=timeout_s)
        return True
    except queue.Full:
        log.error("queue full for %.0f s: its consumer is stuck or dead", timeout_s)
        return False


class StageHealth:
    """Errors and restarts of the workers. `stats`: the pipeline's Stats (its `restarts` counter)."""

    def __init__(self, stats, *, clock: Callable[[], float] = time.monotonic):
        self.stats = stats
        self.clock = clock
        self.errors: deque[str] = deque(maxlen=ERRORS_KEPT)
        self.failing: dict[str, str] = {}  # stage -> its last error, until that stage next succeeds
        self._restarts: dict[str, deque] = {}  # stage -> when it was restarted, within the window

    def ok(self, stage: str) -> None:
        """The stage did its work: it is not failing (any more)."""
        self.failing.pop(stage, None)

    def may_restart(self, stage: str, exc: Exception) -> bool:
        """The stage raised `exc`: recorded; True when it may restart, False when it has used its budget."""
        message = f"{stage}: {exc}"
        self.errors.append(message)
        self.failing[stage] = message
        times, now = self._restarts.setdefault(stage, deque()), self.clock()
        while times and now - times[0] > STAGE_RESTART_WINDOW_S:
            times.popleft()
        if len(times) >= STAGE_RESTARTS:
            log.error("%s failed %d times in %.0f s: left stopped", stage, len(times) + 1, STAGE_RESTART_WINDOW_S)
            return False
        times.append(now)
        self.stats.restarts += 1
        log.warning("%s restarted after: %s", stage, exc)
        return True

    def run(self, stage: str, work: Callable[[], None], *, give_up: Callable[[], None],
            after_restart: Callable[[], None] = lambda: None) -> None:
        """Run `work` on this thread; an exception restarts it in place (its parts keep their state) until the stage
        has used its budget: then `give_up()`, and the thread ends without `stopped` (dead for the watchdog)."""
        while True:
            try:
                work()
                threading.current_thread().stopped = True
                return
            except Exception as exc:  # a crashed worker must be visible, not silent
                log.exception("%s failed", stage)
                if not self.may_restart(stage, exc):
                    give_up()
                    return
                after_restart()
