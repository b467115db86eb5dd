"""The speaker encoder's input features in numpy: librosa's power mel spectrogram as resemblyzer computes it.

`librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)`: a 400-point periodic Hann
STFT, centred (200 zeros either side, librosa's default `pad_mode="constant"`), power 2, Slaney mel filters
with Slaney area normalisation. Not a log mel. No librosa at run time; tests/test_speakers_model.py checks this
against the same computation in transformers' numpy audio utilities (which match librosa's to 1e-7).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from appliance.asr.features import mel_filters

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
WINDOW_FRAMES = 160  # the encoder's window: 1.6 s of frames
NORM_TARGET_DBFS = -30.0  # resemblyzer raises quiet audio to this level (never lowers loud audio)
INT16_MAX = 2 ** 15 - 1


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)


def n_frames(samples: int) -> int:
    """Frames of a centred STFT of `samples` samples."""
    return 1 + samples // HOP


def power_mel(audio: np.ndarray) -> np.ndarray:
    """[frames, 40] float32 power mel spectrogram of 16 kHz mono audio."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    frames = n_frames(len(audio))
    x = np.pad(audio, N_FFT // 2, mode="constant")
    idx = np.arange(frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    spec = np.fft.rfft(x[idx] * _hann(), axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    return (power @ mel_filters(N_MELS, SAMPLE_RATE, N_FFT).T).astype(np.float32)


def normalise_volume(audio: np.ndarray, target_dbfs: float = NORM_TARGET_DBFS) -> np.ndarray:
    """Raise quiet audio to `target_dbfs` RMS, as resemblyzer's `normalize_volume(..., increase_only=True)`."""
    rms = float(np.sqrt(np.mean((audio.astype(np.float64) * INT16_MAX) ** 2))) if len(audio) else 0.0
    if rms <= 0.0:
        return audio
    change_db = target_dbfs - 20 * np.log10(rms / INT16_MAX)
    if change_db < 0:
        return audio
    return (audio * 10 ** (change_db / 20)).astype(np.float32)


def window_starts(samples: int, rate_hz: float = 1.3, min_coverage: float = 0.75) -> list[int]:
    """Frame index of each encoder window over an utterance, as resemblyzer's `compute_partial_slices`:
    a window every 1/rate seconds, the last kept only if the audio covers `min_coverage` of it (always one)."""
    step = int(np.round(SAMPLE_RATE / rate_hz / HOP))
    total = int(np.ceil((samples + 1) / HOP))
    starts = list(range(0, max(1, total - WINDOW_FRAMES + step + 1), step))
    coverage = (samples - starts[-1] * HOP) / (WINDOW_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


WINDOW_SAMPLES = WINDOW_FRAMES * HOP


def window_mels(audio: np.ndarray, starts: list[int]) -> np.ndarray:
    """[len(starts), 160, 40] encoder input: each 1.6 s window (from frame `start`) zero-padded at the end of the
    audio and volume-normalised on its own, so a window's embedding never changes as the utterance grows."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    out = np.empty((len(starts), WINDOW_FRAMES, N_MELS), np.float32)
    for i, start in enumerate(starts):
        piece = audio[start * HOP:start * HOP + WINDOW_SAMPLES]
        if len(piece) < WINDOW_SAMPLES:
            piece = np.pad(piece, (0, WINDOW_SAMPLES - len(piece)))
        out[i] = power_mel(normalise_volume(piece))[:WINDOW_FRAMES]
    return out
