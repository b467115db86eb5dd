"""Whisper's log-mel spectrogram in numpy: 400-point Hann STFT, hop 160, Slaney mel filters, log10, (x + 4) / 4.

Identical to openai-whisper's `log_mel_spectrogram` for the frames it returns; `frames` lets the caller ask for
only the audio it has (the encoder takes any length) instead of Whisper's fixed 30 s.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
CHUNK_FRAMES = 3000  # 30 s


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    mels = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80, sr: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] Slaney-style mel filterbank with Slaney area normalisation (librosa's default)."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(hz)
    ramps = hz[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz[2:n_mels + 2] - hz[:n_mels]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann, as torch.hann_window


def n_frames(samples: int) -> int:
    """Mel frames Whisper computes for `samples` of audio (its STFT drops the last frame)."""
    return samples // HOP


def log_mel(audio: np.ndarray, n_mels: int = 80, frames: int | None = None) -> np.ndarray:
    """[n_mels, frames] float32. `frames` defaults to the audio's own length; frames past the audio are silence,
    exactly as if Whisper had padded the audio with zeros."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if frames is None:
        frames = max(1, n_frames(len(audio)))
    need = frames * HOP + N_FFT  # zeros after the audio, so the end reflection sees silence as Whisper's does
    x = np.zeros(max(need, len(audio)), dtype=np.float32)
    x[:len(audio)] = audio
    x = np.pad(x, N_FFT // 2, mode="reflect")
    # frames that start past the audio (the padding the encoder input asks for) see only zeros: no STFT for them
    heard = min(frames, -(-(len(audio) + N_FFT // 2) // HOP))
    idx = np.arange(heard)[:, None] * HOP + np.arange(N_FFT)[None, :]
    spec = np.fft.rfft(x[idx] * _window(), axis=-1)
    power = np.zeros((frames, N_FFT // 2 + 1), dtype=np.float32)  # [frames, 201]
    power[:heard] = spec.real ** 2 + spec.imag ** 2
    mel = mel_filters(n_mels) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
