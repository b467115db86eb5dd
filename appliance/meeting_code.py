"""The meeting code: a short random code that the room display shows and the audience page asks for.

Only people who can see the room's screen learn it, so only they read the meeting on their phones. A new code is
made at each meeting start (the archive writer says when) and on demand from the panel; the previous one stops
working at once. Codes use letters and digits that are not mistaken for each other when read off a screen.
"""

from __future__ import annotations

import hmac
import secrets
import threading

__all__ = ["MeetingCode", "ALPHABET", "LENGTH"]

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no I, O, 0, 1
LENGTH = 6  # 32**6: about a billion codes, and the display server answers slowly enough to make guessing pointless


class MeetingCode:
    """The current code (thread-safe): read it with `current`, check a visitor's with `matches`, `rotate` it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._code = self._new()

    @staticmethod
    def _new() -> str:
        return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))

    @property
    def current(self) -> str:
        with self._lock:
            return self._code

    def rotate(self, *_ignored) -> str:
        """A new code (the old one is refused from now on); extra arguments (a meeting id) are ignored."""
        code = self._new()
        with self._lock:
            self._code = code
        return code

    def matches(self, given: str | None) -> bool:
        """Whether `given` is the current code (case and spaces forgiven; compared in constant time)."""
        text = "".join((given or "").split()).upper()
        return bool(text) and hmac.compare_digest(text.encode(), self.current.encode())
