"""The audio source interface: iterate 16 kHz mono float32 chunks (AudioChunk), then close()."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

from appliance.events import AudioChunk

SR = 16000  # every source delivers this rate, mono, float32 in [-1, 1]


class AudioError(Exception):
    """An audio file or device cannot be used; the message says which and what to do."""


class AudioSource(ABC):
    """Iterate to get AudioChunk objects until the source ends or `close()` is called (from any thread)."""

    @abstractmethod
    def __iter__(self) -> Iterator[AudioChunk]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
