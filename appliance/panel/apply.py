"""Hands saved configs to the daemon's callback on one worker thread; the panel shows the progress.

Saves while a change is being applied are coalesced: only the newest waiting config is applied next.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from appliance.config import Config

log = logging.getLogger(__name__)


class Applier:
    def __init__(self, callback: Callable[[Config], Any] | None):
        self.callback = callback
        self._cond = threading.Condition()
        self._pending: Config | None = None
        self._state = {"state": "idle", "message": "", "generation": 0, "at": time.time()}
        self._thread: threading.Thread | None = None

    def submit(self, cfg: Config) -> int:
        with self._cond:
            self._pending = cfg
            self._state = {"state": "applying", "message": "applying…", "generation": self._state["generation"] + 1,
                           "at": time.time()}
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="panel-apply", daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._state["generation"]

    def state(self) -> dict:
        with self._cond:
            return dict(self._state)

    def wait(self, timeout: float = 30.0) -> dict:
        """Until nothing is being applied (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._state["state"] == "applying" and time.monotonic() < deadline:
                self._cond.wait(0.05)
            return dict(self._state)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._pending is None:
                    self._thread = None  # under the lock: the next submit starts a new worker
                    return
                cfg, self._pending = self._pending, None
                generation = self._state["generation"]
            state, message = "applied", "applied"
            if self.callback is not None:
                try:
                    result = self.callback(cfg)
                    if isinstance(result, (list, tuple)):
                        message = f"applied (restarted: {', '.join(map(str, result))})" if result else "applied (nothing to restart)"
                except Exception as exc:  # shown to the user as one line; the trace goes to the log
                    log.exception("applying the saved config failed")
                    state, message = "failed", f"saved, but applying failed: {' '.join(str(exc).split()) or type(exc).__name__}"
            with self._cond:
                if self._pending is None and self._state["generation"] == generation:
                    self._state = {"state": state, "message": message, "generation": generation, "at": time.time()}
                self._cond.notify_all()
