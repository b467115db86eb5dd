"""Streaming silero VAD on the real built model (onnxruntime), on real audio from espeak-ng and sox."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from appliance.audio import load_audio
from appliance.config import VadConfig
from appliance.vad import WINDOW, SileroVad, SpeechSegmenter, make_segmenter, smoke_test

SR = 16000
TEXT = "Good morning everyone. Let us begin the weekly meeting. First, the budget report."


@pytest.fixture(scope="module")
def vad_dir(built_model) -> Path:
    return built_model("silero-vad")


def _need(tool: str) -> None:
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed: scripts/setup installs it")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, np.ndarray]:
    _need("espeak-ng")
    _need("sox")
    tmp = tmp_path_factory.mktemp("vad")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(tmp / "speech.wav"), TEXT], check=True)
    chords = []
    for i, notes in enumerate(["C3 E4 G4", "F3 A4 C5", "G3 B4 D5", "A2 C4 E4", "F3 A4 C5", "G3 B4 D5", "C3 G4 C5"]):
        a, b, c = notes.split()
        out = tmp / f"chord{i}.wav"
        subprocess.run(["sox", "-n", "-r", "16000", "-b", "16", "-c", "3", str(out), "synth", "0.6", "pluck", a,
                        "pluck", b, "pluck", c, "remix", "1-3", "norm", "-6"], check=True, capture_output=True)
        chords.append(str(out))
    subprocess.run(["sox", *chords, str(tmp / "music.wav"), "reverb", "30", "repeat", "1"], check=True,
                   capture_output=True)
    rng = np.random.default_rng(7)
    return {"speech": load_audio(tmp / "speech.wav"), "music": load_audio(tmp / "music.wav"),
            "noise": rng.normal(0, 0.1, 6 * SR).astype(np.float32), "silence": np.zeros(6 * SR, np.float32)}


def pad(x: np.ndarray, before: float = 1.0, after: float = 1.5) -> np.ndarray:
    return np.concatenate([np.zeros(int(before * SR), np.float32), x, np.zeros(int(after * SR), np.float32)])


def voiced_bounds(x: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms frame with real signal energy (the true speech boundaries of a clean clip)."""
    frame = SR // 100
    e = np.sqrt(np.mean(x[: len(x) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    on = np.flatnonzero(e > 0.01)
    return on[0] * frame / SR, (on[-1] + 1) * frame / SR


def run(seg: SpeechSegmenter, audio: np.ndarray, chunk: int = 1000) -> list:
    events = []
    for i in range(0, len(audio), chunk):
        events += seg.process(audio[i:i + chunk])
    return events + seg.flush()


def segments(events) -> list[tuple[float, float, float, int]]:
    """[(start, end, speech_end, samples)] per segment, checking the event order start, continue..., end."""
    out, cur = [], None
    for ev in events:
        if ev.kind == "start":
            assert cur is None
            cur = [ev.start, ev.end, None, len(ev.samples)]
        else:
            assert cur is not None and ev.start == cur[0]
            cur[1] = ev.end
            cur[3] += len(ev.samples)
            if ev.kind == "end":
                cur[2] = ev.speech_end
                out.append(tuple(cur))
                cur = None
    assert cur is None
    return out


def test_speech_gives_segments_at_the_real_boundaries(vad_dir, clips):
    audio = pad(clips["speech"])
    t_on, t_off = voiced_bounds(audio)
    cfg = VadConfig(hangover_ms=400, preroll_ms=200, min_speech_ms=250)
    segs = segments(run(make_segmenter(vad_dir, cfg), audio))
    assert segs, "no speech found in clean speech"
    first, last = segs[0], segs[-1]
    assert t_on - 0.2 - 0.1 <= first[0] <= t_on + 0.1  # pre-roll of 200 ms before the onset
    assert abs(last[2] - t_off) <= 0.3  # where speech ended
    assert last[1] == pytest.approx(last[2] + 0.4, abs=0.04)  # the end event carries the 400 ms hangover
    for start, end, _, n in segs:  # the audio handed over is exactly [start, end)
        assert n == round((end - start) * SR)
    covered = sum(end - start for start, end, _, _ in segs)
    assert covered >= 0.9 * (t_off - t_on)


def test_longer_hangover_bridges_the_pauses(vad_dir, clips):
    audio = pad(clips["speech"])
    short = segments(run(make_segmenter(vad_dir, VadConfig(hangover_ms=100)), audio))
    long = segments(run(make_segmenter(vad_dir, VadConfig(hangover_ms=1500)), audio))
    assert len(short) >= 3 > len(long) == 1  # three sentences; pauses between them under 1.5 s


@pytest.mark.parametrize("kind", ["silence", "noise", "music"])
def test_no_segment_without_speech(vad_dir, clips, kind):
    assert run(make_segmenter(vad_dir), clips[kind]) == []


def test_min_speech_drops_short_bursts(vad_dir, clips):
    t_on, _ = voiced_bounds(clips["speech"])
    burst = pad(clips["speech"][int(t_on * SR):int((t_on + 0.2) * SR)], 0.5, 1.0)  # 200 ms of speech
    assert segments(run(make_segmenter(vad_dir, VadConfig(min_speech_ms=0)), burst))
    assert run(make_segmenter(vad_dir, VadConfig(min_speech_ms=1000)), burst) == []


def test_state_is_kept_across_chunks_of_any_size(vad_dir, clips):
    audio = pad(clips["speech"])
    vad = SileroVad(vad_dir)
    whole = [p for _, p in vad.windows(audio)]
    vad.reset()
    pieces = []
    for i in range(0, len(audio), 37):
        pieces += [p for _, p in vad.windows(audio[i:i + 37])]
    assert len(whole) == len(pieces) == len(audio) // WINDOW
    np.testing.assert_allclose(pieces, whole, atol=1e-5)
    fresh = SileroVad(vad_dir)  # without the carried state the probabilities differ (the state matters)
    mid = len(audio) // 2 // WINDOW * WINDOW
    restarted = [p for _, p in fresh.windows(audio[mid:])]
    assert np.max(np.abs(np.array(restarted[:20]) - np.array(whole[mid // WINDOW:mid // WINDOW + 20]))) > 1e-3
    a = segments(run(make_segmenter(vad_dir), audio, chunk=160))
    b = segments(run(make_segmenter(vad_dir), audio, chunk=16000))
    assert a == b


def test_threshold_is_checked(vad_dir):
    with pytest.raises(ValueError, match="threshold"):
        SpeechSegmenter(SileroVad(vad_dir), threshold=1.5)


def test_smoke_test(vad_dir, tmp_path):
    smoke_test(vad_dir)
    with pytest.raises(FileNotFoundError, match="silero_vad.onnx"):
        smoke_test(tmp_path)


def test_bundled_sample_gives_one_segment_per_turn(vad_dir):
    sample = Path(__file__).resolve().parents[1] / "appliance" / "data" / "sample-en.flac"
    turns = (sample.with_suffix(".txt")).read_text(encoding="utf-8").strip().splitlines()
    segs = segments(run(make_segmenter(vad_dir), load_audio(sample)))
    assert len(segs) == len(turns) == 4
