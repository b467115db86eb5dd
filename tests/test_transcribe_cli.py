"""`appliance transcribe`: the same pipeline over a file, as JSON lines or subtitles; bad input is a clear error."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from appliance.bench.corpus import speak, write_wav


@pytest.fixture(scope="module")
def models(built_model, models_dir):
    for name in ("whisper-base", "silero-vad", "bergamot-en-pt", "bergamot-pt-en", "speaker-ge2e"):
        built_model(name)
    return models_dir


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "speech.wav"
    a = speak("en-us", "Good morning everyone.")
    b = speak("en-us", "The museum is closed on Mondays.")
    write_wav(path, np.concatenate([a, np.zeros(16000, np.float32), b]))
    return path


def transcribe(appliance_cmd, models, *args):
    return subprocess.run(appliance_cmd + ["--models-dir", str(models), "transcribe", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_jsonl_has_every_field_and_both_languages(appliance_cmd, models, speech):
    proc = transcribe(appliance_cmd, models, speech, "--source", "en", "--targets", "pt")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {"id", "rev", "final", "lang", "source_lang", "text", "lines", "start", "end", "emitted", "latency"} <= set(events[0])
    finals = [e for e in events if e["final"]]
    assert {e["lang"] for e in finals} == {"en", "pt"}
    en = [e for e in finals if e["lang"] == "en"]
    assert len(en) == 2 and "museum" in en[1]["text"].lower()
    assert en[0]["end"] < en[1]["start"]  # audio timestamps of two utterances
    assert all(e["source_lang"] == "en" for e in finals)


def test_srt_per_language(appliance_cmd, models, speech):
    proc = transcribe(appliance_cmd, models, speech, "--targets", "pt", "--format", "srt")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("==> pt <==\n1\n00:00:0") and "\n==> en <==\n1\n" in out
    assert "-->" in out and "museu" in out.lower()


def test_vtt_and_text_name_the_speakers(appliance_cmd, models, tmp_path):
    from appliance.audio import load_audio
    from appliance.bench.corpus import AUDIOEVAL
    from appliance.modelstore.sources import ensure_package

    root = ensure_package(AUDIOEVAL) / "pytest_audioeval" / "samples" / "audio" / "en"
    pause = np.zeros(16000, np.float32)
    path = tmp_path / "two-voices.wav"
    write_wav(path, np.concatenate([load_audio(root / "quick_brown_fox.wav"), pause,
                                    speak("en+klatt", "The budget for next year is ready for approval."), pause]))
    vtt = transcribe(appliance_cmd, models, path, "--source", "en", "--targets", "en", "--format", "vtt")
    assert vtt.returncode == 0, vtt.stderr
    cues = [line for line in vtt.stdout.splitlines() if line.startswith("<v ")]
    assert [c.split(">")[0] for c in cues] == ["<v S1", "<v S2"], vtt.stdout
    text = transcribe(appliance_cmd, models, path, "--source", "en", "--targets", "en", "--format", "text")
    assert [line.split(":")[0] for line in text.stdout.splitlines()] == ["S1", "S2"], text.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--source", "e1"], "'auto' or a language code"),
        (["--source", "tlh"], "not supported by the speech model"),
        (["--source", "en", "--targets", "fr"], "no route to 'fr' from en"),
        (["--model", "whisper-huge"], "asr model 'whisper-huge' is not installed"),
    ],
)
def test_bad_languages_and_models_are_clear_errors(appliance_cmd, models, speech, args, words):
    proc = transcribe(appliance_cmd, models, speech, *args)
    assert proc.returncode == 2
    assert words in proc.stderr and "Traceback" not in proc.stderr


def test_unreadable_audio_is_a_clear_error(appliance_cmd, models, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    proc = transcribe(appliance_cmd, models, bad)
    assert proc.returncode == 2 and "notes.wav" in proc.stderr and "Traceback" not in proc.stderr
    proc = transcribe(appliance_cmd, models, tmp_path / "missing.flac")
    assert proc.returncode == 2 and "missing.flac" in proc.stderr
