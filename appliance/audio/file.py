"""Audio files (WAV, FLAC, and whatever else libsndfile reads): whole-file loading and a paced replay source."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from appliance.audio.base import SR, AudioError, AudioSource
from appliance.audio.convert import StreamResampler, resample, to_mono
from appliance.events import AudioChunk

log = logging.getLogger(__name__)

CHUNK = 512  # samples per chunk at 16 kHz (32 ms, one VAD window)


def _open(path: Path):
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        return sf.SoundFile(str(path))
    except Exception as exc:  # libsndfile's message names the problem (format, truncation...)
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AudioError(f"{path}: cannot read audio ({reason}); use a WAV or FLAC file") from None


def load_audio(path: str | Path) -> np.ndarray:
    """The whole file as 16 kHz mono float32."""
    with _open(Path(path)) as f:
        data = f.read(dtype="float32", always_2d=True)
        rate = f.samplerate
    return resample(to_mono(data), rate)


class FileSource(AudioSource):
    """Replay a file as AudioChunks of 512 samples: at real-time speed (`realtime=True`) or as fast as it is read."""

    def __init__(self, path: str | Path, realtime: bool = True, chunk: int = CHUNK, speed: float = 1.0):
        self.path = Path(path)
        self.realtime = realtime
        self.speed = float(speed)  # realtime replay this many times faster (soak tests compress time)
        self.chunk = int(chunk)
        _open(self.path).close()  # fail now, with a clear message, rather than in the capture thread
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()

    def __iter__(self) -> Iterator[AudioChunk]:
        with _open(self.path) as f:
            resampler = StreamResampler(f.samplerate)
            block = max(1, int(self.chunk * f.samplerate / SR))
            pending = np.zeros(0, np.float32)
            t0 = time.monotonic()
            sent = 0
            while not self._closed.is_set():
                data = f.read(block, dtype="float32", always_2d=True)
                last = len(data) < block
                pending = np.concatenate([pending, resampler(to_mono(data), last=last)])
                while len(pending) >= self.chunk or (last and len(pending)):
                    out, pending = pending[:self.chunk], pending[self.chunk:]
                    if self.realtime and (delay := t0 + (sent + len(out)) / SR / self.speed - time.monotonic()) > 0:
                        if self._closed.wait(delay):
                            return
                    yield AudioChunk(out, t0 + sent / SR / self.speed if self.realtime else time.monotonic())
                    sent += len(out)
                if last:
                    log.info("%s: end of file after %.1f s", self.path.name, sent / SR)
                    return
