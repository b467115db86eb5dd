"""Panel security pieces: the admin password file, server-side sessions, login rate limiting, set-up codes and
CSRF tokens.

The Host and loopback checks both web servers use live in appliance/hosts.py.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from appliance.private_file import write_private

MIN_PASSWORD = 8
MAX_PASSWORD = 256


class AdminStore:
    """The admin password (hashed) and the session signing key, in one 0600 JSON file.

    `epoch` changes with every password change, which ends every existing session.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data: dict | None = None
        self._fallback_key = secrets.token_hex(32)  # signs sessions before the first password is set

    def _read(self) -> dict | None:
        if self._data is None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{self.path}: unreadable ({exc}); delete it to set a new admin password") from None
            if not isinstance(data, dict) or "password_hash" not in data:
                raise ValueError(f"{self.path}: not an admin file; delete it to set a new admin password")
            self._data = data
        return self._data

    @property
    def is_set(self) -> bool:
        return self._read() is not None

    @property
    def secret_key(self) -> str:
        data = self._read()
        return data["secret_key"] if data else self._fallback_key

    @property
    def epoch(self) -> str | None:
        data = self._read()
        return data["epoch"] if data else None

    def set_password(self, password: str, *, first_run: bool) -> None:
        """Hash and store; `first_run` refuses when a password already exists (two people racing the set-up)."""
        problem = password_problem(password)
        if problem:
            raise ValueError(problem)
        with self._lock:
            current = self._read()
            if first_run and current is not None:
                raise PermissionError("the admin password is already set; log in instead")
            data = {"version": 1, "password_hash": generate_password_hash(password),
                    "secret_key": current["secret_key"] if current else self._fallback_key,
                    "epoch": secrets.token_hex(8), "changed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            write_private(self.path, json.dumps(data, indent=2) + "\n")
            self._data = data

    def check(self, password: str) -> bool:
        data = self._read()
        return bool(data) and check_password_hash(data["password_hash"], password or "")


class SessionTable:
    """The sessions the server still honours: a signed cookie is not enough, its session id must be listed here.

    Logging out removes the id; a password change removes every id (and the admin file's epoch changes too). Kept
    in memory, so a restart of the panel logs everybody out. Ids idle longer than `idle_s` expire (the cookie's
    sliding window); at most `limit` are kept, the least recently used going first.
    """

    def __init__(self, idle_s: float, limit: int = 64, clock=time.monotonic):
        self.idle_s, self.limit, self.clock = idle_s, limit, clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def open(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._seen[sid] = self.clock()
            while len(self._seen) > self.limit:
                del self._seen[min(self._seen, key=self._seen.__getitem__)]
        return sid

    def valid(self, sid: str | None) -> bool:
        """Listed and not idle too long; a valid use restarts its idle time."""
        if not isinstance(sid, str):
            return False
        with self._lock:
            now, seen = self.clock(), self._seen.get(sid)
            if seen is None or now - seen > self.idle_s:
                self._seen.pop(sid, None)
                return False
            self._seen[sid] = now
            return True

    def revoke(self, sid: str | None) -> None:
        with self._lock:
            self._seen.pop(sid, None)  # type: ignore[arg-type]

    def revoke_all(self) -> None:
        with self._lock:
            self._seen.clear()


def password_problem(password: str) -> str | None:
    if len(password or "") < MIN_PASSWORD:
        return f"the password needs at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password may have at most {MAX_PASSWORD} characters"
    return None


class RateLimiter:
    """At most `limit` failures per `window_s` per key (client address); then blocked until the oldest expires.

    `acquire` counts an attempt as failed before the password is checked, in one locked step, so a burst of
    concurrent requests cannot all pass the check before any failure is recorded; `reset` on success.
    """

    def __init__(self, limit: int = 5, window_s: float = 60.0, clock=time.monotonic):
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._fails: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque:
        q = self._fails.setdefault(key, deque())
        while q and now - q[0] >= self.window_s:
            q.popleft()
        return q

    def retry_after(self, key: str) -> float:
        """0 when allowed now, else seconds to wait."""
        with self._lock:
            now = self.clock()
            q = self._prune(key, now)
            if len(q) < self.limit:
                return 0.0
            return max(0.0, self.window_s - (now - q[0]))

    def acquire(self, key: str) -> float:
        """Reserve one attempt: 0 when allowed (the attempt already counts as a failure), else seconds to wait."""
        with self._lock:
            now = self.clock()
            q = self._prune(key, now)
            if len(q) >= self.limit:
                return max(0.001, self.window_s - (now - q[0]))
            q.append(now)
            self._forget_quiet()
            return 0.0

    def _forget_quiet(self) -> None:
        if len(self._fails) > 10000:  # bounded: forget quiet addresses
            for k in [k for k, q in self._fails.items() if not q]:
                del self._fails[k]

    def fail(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            self._prune(key, now).append(now)
            self._forget_quiet()

    def reset(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


SETUP_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a console
SETUP_CODE_CHARS = 10  # 50 bits, and guesses are rate limited


def new_setup_code() -> str:
    """The one-time code the first-run page asks for, printed to the console/journal: XXXXX-XXXXX."""
    raw = "".join(secrets.choice(SETUP_CODE_ALPHABET) for _ in range(SETUP_CODE_CHARS))
    return f"{raw[:5]}-{raw[5:]}"


def same_setup_code(expected: str | None, given: str | None) -> bool:
    norm = lambda c: (c or "").strip().upper().replace("-", "").replace(" ", "")  # noqa: E731
    return bool(expected) and hmac.compare_digest(norm(expected), norm(given))


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
