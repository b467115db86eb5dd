"""Audio files: reading WAV/FLAC at any rate and channel count as 16 kHz mono, paced replay, clear errors."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from appliance.audio import AudioError, FileSource, load_audio

SR = 16000
DATA = Path(__file__).resolve().parents[1] / "appliance" / "data"


def sine(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * SR / len(x))


@pytest.mark.parametrize("rate,channels,fmt", [(16000, 1, "WAV"), (44100, 2, "WAV"), (48000, 1, "FLAC"),
                                               (22050, 2, "FLAC"), (8000, 1, "WAV")])
def test_any_rate_and_channels_become_16k_mono(tmp_path, rate, channels, fmt):
    path = tmp_path / f"tone.{fmt.lower()}"
    sf.write(path, sine(440, 2.0, rate, channels), rate, format=fmt, subtype="PCM_16")
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 2 * SR) <= 2
    assert peak_hz(x) == pytest.approx(440, abs=2)
    assert np.sqrt(np.mean(x[SR // 4:-SR // 4] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)  # no gain change


def test_sox_made_file_is_read(tmp_path):
    if not shutil.which("sox"):
        pytest.fail("sox is not installed: scripts/setup installs it")
    path = tmp_path / "sweep.wav"
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "24", str(path), "synth", "1.5", "sine", "300-3000"],
                   check=True)
    x = load_audio(path)
    assert abs(len(x) - int(1.5 * SR)) <= 2 and 0.5 < np.max(np.abs(x)) <= 1.0


def test_file_source_matches_whole_file_reading(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, sine(1000, 1.5, 44100, 2), 44100)
    chunks = list(FileSource(path, realtime=False))
    assert all(len(c.samples) == 512 for c in chunks[:-1]) and 0 < len(chunks[-1].samples) <= 512
    streamed = np.concatenate([c.samples for c in chunks])
    whole = load_audio(path)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[1000:n - 1000] - whole[1000:n - 1000])) < 0.01


def test_realtime_replay_is_paced(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, sine(440, 1.0, 16000), 16000)
    t0 = time.monotonic()
    ts = [c.t for c in FileSource(path, realtime=True)]
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed <= 1.5
    assert np.all(np.diff(ts) > 0) and ts[-1] - ts[0] == pytest.approx(1.0 - 512 / SR, abs=0.05)
    t0 = time.monotonic()
    assert len(list(FileSource(path, realtime=False))) == 32
    assert time.monotonic() - t0 < 0.5


def test_close_stops_a_replay(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, sine(440, 5.0, 16000), 16000)
    src = FileSource(path, realtime=True)
    got = 0
    t0 = time.monotonic()
    for chunk in src:
        got += len(chunk.samples)
        if got >= SR // 4:
            src.close()
    assert time.monotonic() - t0 < 1.0 and got < SR


def test_unreadable_files_give_a_clear_error(tmp_path):
    with pytest.raises(AudioError, match=r"audio file not found: .*missing\.wav"):
        load_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("these are meeting notes, not audio\n" * 20)
    with pytest.raises(AudioError, match=r"notes\.wav: cannot read audio \(.+\); use a WAV or FLAC file"):
        load_audio(text)
    with pytest.raises(AudioError, match="cannot read audio"):
        FileSource(text, realtime=False)  # at construction, not later in the capture thread
    truncated = tmp_path / "cut.flac"
    sf.write(truncated, sine(440, 1.0, 16000), 16000, format="FLAC")
    truncated.write_bytes(truncated.read_bytes()[:20])
    with pytest.raises(AudioError, match="cannot read audio"):
        load_audio(truncated)


def test_bundled_sample():
    flac = DATA / "sample-en.flac"
    info = sf.info(flac)
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert 12 <= info.duration <= 25 and flac.stat().st_size < 700_000
    text = (DATA / "sample-en.txt").read_text(encoding="utf-8").split()
    assert len(text) > 30
    x = load_audio(flac)
    frame = SR // 10
    active = np.mean(np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1)) > 0.02)
    assert 0.5 < active < 0.95  # speech with pauses between turns
