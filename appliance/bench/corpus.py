"""The benchmark corpus, built on first use into the cache: espeak-ng speech in several languages,
pytest-audioeval's recorded samples with their reference texts, and non-speech (silence, noise, music).

Every clip is a 16 kHz mono float32 WAV with its reference text (empty for non-speech).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from appliance.modelstore.paths import cache_dir
from appliance.modelstore.sources import Package, ensure_package

SR = 16000
AUDIOEVAL = Package("pytest-audioeval", "0.1.3")
AUDIOEVAL_LANGS = ("en", "es", "pt", "fr", "it")
CORPUS_VERSION = "1"

# Sentences spoken by espeak-ng: (lang, espeak voice, text, English reference for translation checks)
ESPEAK_SENTENCES = (
    ("en", "en-us", "Good morning everyone, and welcome to the quarterly planning meeting.", None),
    ("en", "en-us", "The budget for next year will be presented by the finance team.", None),
    ("en", "en-us", "Please keep your questions until the end of the presentation.", None),
    ("en", "en-us", "We expect the new office to open in the spring.", None),
    ("en", "en-gb", "Thank you all for coming today, the agenda is on the screen.", None),
    ("es", "es", "Buenos días a todos, gracias por venir a la reunión.", "Good morning everyone, thank you for coming to the meeting."),
    ("es", "es", "El presupuesto del próximo año está listo para su aprobación.", "Next year's budget is ready for approval."),
    ("de", "de", "Guten Morgen, wir beginnen jetzt mit der Sitzung.", "Good morning, we are now starting the meeting."),
    ("de", "de", "Die Ergebnisse des letzten Quartals waren sehr gut.", "The results of the last quarter were very good."),
    ("pt", "pt-br", "Bom dia a todos, vamos começar a reunião agora.", "Good morning everyone, let's start the meeting now."),
    ("pt", "pt-br", "O orçamento do próximo ano será apresentado pela equipe financeira.", "Next year's budget will be presented by the finance team."),
)
NONSPEECH_SECONDS = {"silence": 180, "noise": 180, "music": 240}  # 10 minutes in all


@dataclass(frozen=True)
class Clip:
    name: str
    kind: str  # speech | nonspeech
    lang: str | None
    text: str
    path: str
    seconds: float
    source: str  # espeak-ng | pytest-audioeval | numpy


def write_wav(path: Path, samples: np.ndarray, sr: int = SR) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())


def _read_any(path: Path) -> np.ndarray:
    from appliance.audio import load_audio  # resampling lives at the audio boundary

    return load_audio(path)


def speak(voice: str, text: str) -> np.ndarray:
    """`text` spoken by espeak-ng, 16 kHz mono float32, with half a second of silence either side."""
    if not shutil.which("espeak-ng"):
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng (scripts/setup does it)")
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", tmp.name, text], check=True, capture_output=True)
        audio = _read_any(Path(tmp.name))
    pad = np.zeros(int(0.5 * SR), np.float32)
    return np.concatenate([pad, audio, pad])


def _espeak(voice: str, text: str, out: Path) -> None:
    write_wav(out, speak(voice, text))


def _music(seconds: int, rng: np.random.Generator) -> np.ndarray:
    """Chords with changing notes, a bass line and percussive noise bursts at 120 bpm."""
    t = np.arange(int(seconds * SR)) / SR
    out = np.zeros_like(t, dtype=np.float64)
    beat = 0.5
    roots = [220.0, 246.9, 196.0, 174.6]
    for i in range(int(seconds / (4 * beat))):
        a, b = int(i * 4 * beat * SR), int((i + 1) * 4 * beat * SR)
        seg = t[a:b] - t[a]
        root = roots[i % len(roots)]
        for ratio in (1.0, 1.26, 1.5, 2.0):
            out[a:b] += 0.08 * np.sin(2 * np.pi * root * ratio * seg) * np.exp(-seg * 0.6)
        out[a:b] += 0.12 * np.sin(2 * np.pi * root / 2 * seg)
    for k in range(int(seconds / beat)):
        a = int(k * beat * SR)
        n = min(int(0.08 * SR), len(out) - a)
        out[a:a + n] += 0.3 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.015 * SR))
    return (out / np.max(np.abs(out)) * 0.6).astype(np.float32)


def _nonspeech(kind: str, seconds: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "silence":
        return (rng.standard_normal(seconds * SR) * 1e-4).astype(np.float32)  # a quiet room, not digital zero
    if kind == "noise":
        white = rng.standard_normal(seconds * SR)
        pink = np.cumsum(white) * 0.02
        pink -= np.convolve(pink, np.ones(801) / 801, mode="same")  # remove drift
        return (0.1 * white / 3 + 0.5 * pink / np.max(np.abs(pink))).astype(np.float32) * 0.5
    return _music(seconds, rng)


def corpus_dir() -> Path:
    return cache_dir() / "bench-corpus" / CORPUS_VERSION


def build_corpus(progress=lambda m: None) -> list[Clip]:
    """Build (first time) and list the corpus."""
    folder = corpus_dir()
    index = folder / "index.json"
    if index.is_file():
        return [Clip(**c) for c in json.loads(index.read_text())]
    tmp = Path(tempfile.mkdtemp(prefix=".corpus-", dir=folder.parent if folder.parent.exists() else None))
    folder.parent.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    progress("bench corpus: speaking sentences with espeak-ng")
    for i, (lang, voice, text, _) in enumerate(ESPEAK_SENTENCES):
        path = tmp / f"espeak-{lang}-{i}.wav"
        _espeak(voice, text, path)
        clips.append(Clip(path.stem, "speech", lang, text, path.name, _seconds(path), "espeak-ng"))
    progress(f"bench corpus: recorded samples from {AUDIOEVAL.pin}")
    root = ensure_package(AUDIOEVAL, progress) / "pytest_audioeval" / "samples" / "audio"
    for lang in AUDIOEVAL_LANGS:
        for wav in sorted((root / lang).glob("*.wav")):
            path = tmp / f"audioeval-{lang}-{wav.stem}.wav"
            audio = _read_any(wav)
            pad = np.zeros(int(0.5 * SR), np.float32)
            write_wav(path, np.concatenate([pad, audio, pad]))
            text = wav.with_suffix(".txt").read_text(encoding="utf-8").strip()
            clips.append(Clip(path.stem, "speech", lang, text, path.name, _seconds(path), "pytest-audioeval"))
    progress("bench corpus: 10 minutes of silence, noise and music")
    rng = np.random.default_rng(7)
    for kind, seconds in NONSPEECH_SECONDS.items():
        path = tmp / f"nonspeech-{kind}.wav"
        write_wav(path, _nonspeech(kind, seconds, rng))
        clips.append(Clip(path.stem, "nonspeech", None, "", path.name, float(seconds), "numpy"))
    (tmp / "index.json").write_text(json.dumps([asdict(c) for c in clips], indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return clips


def clip_path(clip: Clip) -> Path:
    return corpus_dir() / clip.path


def _seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()
