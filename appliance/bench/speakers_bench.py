"""Speaker-turn benchmark: multi-speaker meetings from distinct voices, clustered online by the speaker tracker.

Voices: espeak-ng variants (synthetic, told apart by timbre only) and pytest-audioeval's recordings (one voice
per language folder; Spanish and Portuguese share one). Each meeting is a seeded random sequence of turns of
1-8 s, with short turns ("Yes, I agree.") and voices returning. Each turn is fed to the tracker as one utterance,
with partial looks at the pipeline's default cadence (every 1 s after the first), so `extra_final_latency` is what
a final waits for its speaker. Reported: the Rand index over all pairs of finals, speaker-change precision /
recall / F1 between consecutive finals, speakers found against the true number, ms per utterance and peak RSS with
the recognition and translation models of the default room loaded beside the speaker model.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.bench.corpus import AUDIOEVAL, speak
from appliance.bench.pipeline_bench import peak_rss_mb, pct
from appliance.config import AsrConfig
from appliance.modelstore.sources import ensure_package
from appliance.pipeline import MIN_PARTIAL_AUDIO_S

SR = 16000
FIRST_PARTIAL_S = MIN_PARTIAL_AUDIO_S  # the pipeline's first partial ...
PARTIAL_STEP_S = AsrConfig().partial_interval_s  # ... and its default cadence after it
# the four of 16 espeak-ng variants the encoder tells apart best (most variants differ only in pitch and sound
# alike to it: centroid similarities of 0.8 to 0.97)
ESPEAK_VOICES = ("en+iven3", "en+Alicia", "en+klatt", "en+anika")
AUDIOEVAL_VOICES = {"rec-en": ("en",), "rec-es-pt": ("es", "pt"), "rec-fr": ("fr",), "rec-it": ("it",)}
LONG_SENTENCES = (
    "Good morning everyone, and welcome to the quarterly planning meeting.",
    "The budget for next year will be presented by the finance team after the break.",
    "Please keep your questions until the end of the presentation, we have little time.",
    "We expect the new office to open in the spring, if the permits arrive on time.",
    "I would like to thank the delegation for the detailed report they sent last week.",
    "The committee will vote on the proposal tomorrow morning.",
    "Our results for the last quarter were better than we expected.",
)
SHORT_SENTENCES = ("Yes, I agree.", "Thank you.", "Exactly.", "No objection.")


@dataclass(frozen=True)
class Turn:
    voice: str
    audio: np.ndarray


def _voice_bank(rng: np.random.Generator, progress) -> dict[str, list[np.ndarray]]:
    """voice -> its clips (long and short), 16 kHz mono float32 without leading / trailing silence."""
    from appliance.audio import load_audio

    bank: dict[str, list[np.ndarray]] = {}
    progress(f"bench speakers: {len(ESPEAK_VOICES)} espeak-ng voices")
    for voice in ESPEAK_VOICES:
        bank[f"espeak-{voice}"] = [_trim(speak(voice, s)) for s in LONG_SENTENCES + SHORT_SENTENCES]
    root = ensure_package(AUDIOEVAL, progress) / "pytest_audioeval" / "samples" / "audio"
    for name, langs in AUDIOEVAL_VOICES.items():
        clips = [_trim(load_audio(p)) for lang in langs for p in sorted((root / lang).glob("*.wav"))]
        # short turns: the first 1.2 s of each recording
        bank[name] = clips + [c[: int(1.2 * SR)] for c in clips[:2]]
    return bank


def _trim(audio: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > floor)
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio


def make_meeting(bank: dict[str, list[np.ndarray]], rng: np.random.Generator, *, voices: int, turns: int) -> list[Turn]:
    """A meeting of `turns` turns among `voices` voices drawn from the bank; consecutive turns change voice
    most of the time, every voice speaks at least twice (voices return)."""
    names = list(rng.choice(sorted(bank), size=voices, replace=False))
    order = names + names  # every voice twice ...
    order += list(rng.choice(names, size=max(0, turns - len(order))))  # ... and then at random
    rng.shuffle(order)
    out = []
    for voice in order:
        clips = bank[voice]
        out.append(Turn(voice, clips[int(rng.integers(len(clips)))]))
    return out


def rand_index(truth: list[str], found: list[str]) -> float:
    pairs = list(itertools.combinations(range(len(truth)), 2))
    agree = sum((truth[i] == truth[j]) == (found[i] == found[j]) for i, j in pairs)
    return agree / len(pairs) if pairs else 1.0


def change_scores(truth: list[str], found: list[str]) -> dict[str, float]:
    """Precision / recall / F1 of 'the speaker changed here' between consecutive finals."""
    true_c = [truth[i] != truth[i - 1] for i in range(1, len(truth))]
    found_c = [found[i] != found[i - 1] for i in range(1, len(found))]
    tp = sum(t and f for t, f in zip(true_c, found_c))
    precision = tp / sum(found_c) if sum(found_c) else 1.0
    recall = tp / sum(true_c) if sum(true_c) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def run_meeting(tracker, meeting: list[Turn]) -> tuple[list[str], list[float], list[float]]:
    """Feed each turn as the pipeline would (partial looks, then the final); labels, ms per utterance, final ms."""
    labels, per_utt_ms, final_ms = [], [], []
    for n, turn in enumerate(meeting):
        utt_id = f"u{n}"
        t0 = time.perf_counter()
        step = int(PARTIAL_STEP_S * SR)
        for end in range(int(FIRST_PARTIAL_S * SR), len(turn.audio), step):
            tracker.partial(utt_id, turn.audio[:end])
        t1 = time.perf_counter()
        label = tracker.final(utt_id, turn.audio, "en")
        t2 = time.perf_counter()
        labels.append(label["id"] if label else "?")
        per_utt_ms.append((t2 - t0) * 1000)
        final_ms.append((t2 - t1) * 1000)
    return labels, per_utt_ms, final_ms


def _load_room_models(models: Path) -> None:
    """Recognition, both translation directions, the VAD: loaded and run once, for the RSS of a real room."""
    from appliance.config import Config
    from appliance.engines import load_engines

    cfg = Config()
    cfg.languages.targets = ["en", "pt"]
    engines = load_engines(cfg, models)
    audio = speak("en-us", LONG_SENTENCES[0])
    engines.asr.transcribe(audio, language="en", task="transcribe", beam_size=1)
    for translator in engines.translators.values():
        translator.translate(["Good morning everyone."], beam_size=1)
    return engines


class _CountingEmbedder:
    """The real embedder, counting the windows it runs and the time they take."""

    def __init__(self, *args, **kwargs):
        from appliance.speakers import SpeakerEmbedder

        self._inner = SpeakerEmbedder(*args, **kwargs)
        self.windows, self.seconds = 0, 0.0

    def embed_windows(self, audio, starts):
        t0 = time.perf_counter()
        out = self._inner.embed_windows(audio, starts)
        self.windows += len(starts)
        self.seconds += time.perf_counter() - t0
        return out

    def embed(self, audio):
        from appliance.speakers.embedder import mean_embedding
        from appliance.speakers.features import window_starts

        return mean_embedding(self.embed_windows(audio, window_starts(len(audio))))


def run(models: Path, *, quick: bool = False, threshold: float | None = None, progress=print) -> dict:
    from appliance.config import SpeakersConfig
    from appliance.speakers import MODEL_NAME, SpeakerTracker

    threshold = SpeakersConfig().threshold if threshold is None else threshold
    rng = np.random.default_rng(11)
    bank = _voice_bank(rng, progress)
    engines = None if quick else _load_room_models(models)
    embedder = _CountingEmbedder(models / MODEL_NAME, threads=1)
    meetings = [make_meeting(bank, rng, voices=v, turns=t) for v, t in ([(5, 16)] if quick else [(4, 16), (5, 20), (6, 24)])]
    rows, all_utt, all_final = [], [], []
    for i, meeting in enumerate(meetings, 1):
        tracker = SpeakerTracker(embedder, threshold=threshold)
        truth = [t.voice for t in meeting]
        found, per_utt, final_ms = run_meeting(tracker, meeting)
        change = change_scores(truth, found)
        rows.append({"meeting": i, "turns": len(meeting), "speakers_true": len(set(truth)),
                     "speakers_found": len(set(found)), "rand_index": rand_index(truth, found),
                     "change_precision": change["precision"], "change_recall": change["recall"],
                     "change_f1": change["f1"], "seconds": sum(len(t.audio) for t in meeting) / SR})
        all_utt += per_utt
        all_final += final_ms
        progress(f"meeting {i}: {rows[-1]}")
    del engines
    worst = max(rows, key=lambda r: abs(r["speakers_found"] - r["speakers_true"]))
    return {
        "meetings": rows,
        "rand_index": statistics.mean(r["rand_index"] for r in rows),
        "change_precision": statistics.mean(r["change_precision"] for r in rows),
        "change_recall": statistics.mean(r["change_recall"] for r in rows),
        "change_f1": statistics.mean(r["change_f1"] for r in rows),
        # the meeting whose count is furthest off (the target: within 1 in every meeting)
        "speakers_found": worst["speakers_found"],
        "speakers_true": worst["speakers_true"],
        "speakers_within_1": all(abs(r["speakers_found"] - r["speakers_true"]) <= 1 for r in rows),
        "ms_per_utterance": statistics.mean(all_utt),
        "extra_final_latency_p50_ms": pct(all_final, 50),
        "extra_final_latency_p95_ms": pct(all_final, 95),
        # the load-independent cost: encoder windows run per utterance (partials and final), and the time of one
        "windows_per_utterance": embedder.windows / len(all_utt),
        "ms_per_window": embedder.seconds * 1000 / max(1, embedder.windows),
        "threshold": threshold,
        "peak_rss_mb": peak_rss_mb(),
        "rss_includes": "speaker model only (--quick)" if quick else "whisper-base, en<->pt translation, VAD, speaker model",
    }
