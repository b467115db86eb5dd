"""Record a few seconds from the room microphone for enrolment without opening a second audio stream: the
daemon's capture thread hands every chunk it reads to `MicrophoneTap.feed`, and `record()` collects them."""

from __future__ import annotations

import threading

import numpy as np

SR = 16000
MAX_RECORD_S = 30.0
ARRIVAL_SLACK_S = 3.0  # audio may arrive this much later than real time before recording gives up


class RecordingError(RuntimeError):
    """No audio could be recorded; the message says what to check."""


class _Take:
    def __init__(self, samples: int):
        self.need = samples
        self.chunks: list[np.ndarray] = []
        self.have = 0
        self.done = threading.Event()


class MicrophoneTap:
    def __init__(self):
        self._lock = threading.Lock()
        self._takes: list[_Take] = []

    def feed(self, samples: np.ndarray) -> None:
        """Called by the capture thread for every chunk (cheap when nobody records)."""
        if not self._takes:
            return
        with self._lock:
            for take in self._takes:
                if take.have < take.need:
                    take.chunks.append(np.array(samples, dtype=np.float32, copy=True))
                    take.have += len(samples)
                    if take.have >= take.need:
                        take.done.set()

    def record(self, seconds: float) -> np.ndarray:
        """`seconds` of the room's audio from now (blocks that long); RecordingError when the capture gives none."""
        if not 0 < seconds <= MAX_RECORD_S:
            raise RecordingError(f"record between 1 and {MAX_RECORD_S:.0f} s, not {seconds:g} s")
        take = _Take(int(seconds * SR))
        with self._lock:
            self._takes.append(take)
        try:
            take.done.wait(seconds + ARRIVAL_SLACK_S)
        finally:
            with self._lock:
                self._takes.remove(take)
        if take.have < take.need:
            raise RecordingError(f"the microphone delivered {take.have / SR:.1f} s of audio in {seconds + ARRIVAL_SLACK_S:.0f} s; "
                                 "check the Microphone page (is it connected and capturing?)")
        return np.concatenate(take.chunks)[: take.need]
