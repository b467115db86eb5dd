"""Normalise audio at the boundary: any sample format, rate and channel count -> 16 kHz mono float32 (soxr)."""

from __future__ import annotations

import numpy as np

from appliance.audio.base import SR


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) -> (frames,) float32, channels averaged. Samples outside [-1, 1] are
    clipped and NaN / infinite ones (a damaged float file) become silence, so the models never see them."""
    x = np.asarray(samples, dtype=np.float32)
    x = x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x.reshape(-1)
    if x.size and not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(x, -1.0, 1.0)


def pcm16_to_float(data: bytes, channels: int) -> np.ndarray:
    """Interleaved signed 16-bit PCM bytes -> mono float32 in [-1, 1]."""
    x = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return to_mono(x.reshape(-1, channels)) if channels > 1 else x


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Whole-signal resampling of mono float32 audio to 16 kHz."""
    if rate == SR:
        return np.asarray(samples, np.float32)
    import soxr

    return soxr.resample(samples, rate, SR, quality="HQ").astype(np.float32, copy=False)


class StreamResampler:
    """Chunk-by-chunk resampling to 16 kHz that keeps the filter state between chunks (no clicks at joins)."""

    def __init__(self, rate: int):
        self.rate = int(rate)
        self._stream = None
        if self.rate != SR:
            import soxr

            self._stream = soxr.ResampleStream(self.rate, SR, 1, dtype="float32", quality="HQ")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return np.asarray(samples, np.float32)
        return self._stream.resample_chunk(np.asarray(samples, np.float32), last=last)
