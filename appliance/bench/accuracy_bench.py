"""Accuracy benchmark: long-form audio in several voices and languages with natural pauses (some inside sentences),
captioned by the streaming pipeline in simulated real time and transcribed offline by the same model (Whisper's 30 s
input, windows that end at a pause, each conditioned on the previous text, as faster-whisper does) and by ctranslate2
when installed.

Two parts, built fresh from espeak-ng voices and pytest-audioeval's recordings (the bench corpus):
- english: the parallel English sentences (appliance/bench/sentences.py) in five espeak-ng voices and the English
  recordings; every other sentence is split at a word with a 0.3-1.0 s pause inside it. Built in three pause layouts
  (ENGLISH_SEEDS: the same sentences and voices, other pauses; `--quick`: the start of the first). Streaming vs
  offline WER over all of them (and per layout), chrF of the Portuguese captions against the reference translations.
- mixed: English, Spanish, German and Portuguese espeak-ng sentences and the Spanish, Portuguese, French and Italian
  recordings, interleaved. Language-ID accuracy and sentences lost (no final in the right language).
Pauses between sentences: 0.3-1.5 s (seeded, the same audio every run).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from appliance.asr.whisper import MAX_PROMPT_TOKENS
from appliance.bench.corpus import ESPEAK_SENTENCES, build_corpus, clip_path, speak
from appliance.bench.pipeline_bench import _r, pct, wer
from appliance.bench.sentences import EN, PT

log = logging.getLogger(__name__)

SR = 16000
SEED = 8
ENGLISH_SEEDS = (SEED, 1, 2)  # the English part is streamed in three pause layouts (the same sentences and voices):
# one layout's WER swings by points (one utterance held open or cut at a pause more or less changes several words)
ENGLISH_SENTENCES = 14  # of sentences.py: about a minute of speech
VOICES = ("en-us", "en-gb", "en-gb-scotland+f3", "en-029", "en-gb-x-rp+f2")
PAUSE_BETWEEN_S = (0.3, 1.5)
PAUSE_INSIDE_S = (0.3, 1.0)
RECORDED_EN = ("audioeval-en-hello_world", "audioeval-en-quick_brown_fox")
RECORDED_OTHER = ("audioeval-es-pangrama", "audioeval-pt-contagem", "audioeval-fr-pangrama", "audioeval-it-pangrama",
                  "audioeval-es-conteo", "audioeval-pt-pangrama")
BENCH_LANGUAGES = ("en", "es", "pt", "de", "fr", "it")  # the languages of the bench audio (its room's spoken list)
OVERLAP_MARGIN_S = 0.3  # a final belongs to a reference sentence when its middle falls inside it (with this margin)


@dataclass(frozen=True)
class Ref:
    lang: str
    text: str
    start: float
    end: float
    pt: str | None = None  # reference Portuguese translation (English sentences from sentences.py)
    en: str | None = None  # reference English translation (other languages)


def _trim(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng, self.parts, self.refs, self.samples = rng, [], [], 0

    def pause(self, bounds: tuple[float, float]) -> None:
        n = int(self.rng.uniform(*bounds) * SR)
        self.parts.append((self.rng.standard_normal(n) * 1e-4).astype(np.float32))  # a quiet room
        self.samples += n

    def add(self, pieces: list[np.ndarray], ref: Ref) -> None:
        start = self.samples / SR
        for i, piece in enumerate(pieces):
            if i:
                self.pause(PAUSE_INSIDE_S)
            self.parts.append(piece.astype(np.float32))
            self.samples += len(piece)
        self.refs.append(Ref(ref.lang, ref.text, start, self.samples / SR, ref.pt, ref.en))
        self.pause(PAUSE_BETWEEN_S)

    def audio(self) -> np.ndarray:
        return np.concatenate(self.parts)


def _spoken(voice: str, text: str, split: bool) -> list[np.ndarray]:
    if not split:
        return [_trim(speak(voice, text))]
    words = text.split()
    cut = len(words) // 2
    return [_trim(speak(voice, " ".join(words[:cut]))), _trim(speak(voice, " ".join(words[cut:])))]


def build_english(rng: np.random.Generator) -> tuple[np.ndarray, list[Ref]]:
    from appliance.audio import load_audio

    b = _Builder(rng)
    b.pause(PAUSE_BETWEEN_S)
    recorded = {c.name: c for c in build_corpus() if c.name in RECORDED_EN}
    for i, (en, pt) in enumerate(list(zip(EN, PT))[:ENGLISH_SENTENCES]):
        b.add(_spoken(VOICES[i % len(VOICES)], en, split=i % 2 == 1), Ref("en", en, 0, 0, pt=pt))
        if i % 7 == 3 and recorded:
            clip = recorded.pop(sorted(recorded)[0])
            b.add([_trim(load_audio(clip_path(clip)))], Ref("en", clip.text, 0, 0))
    return b.audio(), b.refs


def build_mixed(rng: np.random.Generator) -> tuple[np.ndarray, list[Ref]]:
    from appliance.audio import load_audio

    b = _Builder(rng)
    b.pause(PAUSE_BETWEEN_S)
    recorded = [c for c in build_corpus() if c.name in RECORDED_OTHER]
    spoken = [(lang, voice, text, en) for lang, voice, text, en in ESPEAK_SENTENCES]
    items: list[tuple[str, object]] = [("espeak", s) for s in spoken] + [("recorded", c) for c in recorded]
    for k in rng.permutation(len(items)):
        kind, item = items[int(k)]
        if kind == "espeak":
            lang, voice, text, en = item
            b.add([_trim(speak(voice, text))], Ref(lang, text, 0, 0, en=en))
        else:
            b.add([_trim(load_audio(clip_path(item)))], Ref(item.lang, item.text, 0, 0))
    return b.audio(), b.refs


# ---- streaming -----------------------------------------------------------------------------------------------
def stream(cfg, engines, audio: np.ndarray, *, realtime: bool = True, tweak=None):
    """Caption `audio` with the pipeline; returns (events, stats). `tweak(pipeline)` may change levers first."""
    from appliance.runner import make_pipeline, run_audio

    events, lock = [], threading.Lock()

    def sink(ev):
        with lock:
            events.append(ev)

    pipeline = make_pipeline(cfg, engines, sink, realtime=realtime)
    if tweak is not None:
        tweak(pipeline)
    run_audio(pipeline, audio, realtime=realtime)
    if pipeline.errors:
        raise RuntimeError(f"pipeline errors: {pipeline.errors}")
    return events, pipeline.stats


def source_finals(events) -> list:
    return [e for e in events if e.final and e.text and e.lang == e.source_lang]


def _within(ev, ref: Ref) -> bool:
    mid = (ev.start + ev.end) / 2
    return ref.start - OVERLAP_MARGIN_S <= mid <= ref.end + OVERLAP_MARGIN_S


def sentence_languages(events, refs: list[Ref]) -> list[set[str]]:
    """For each reference sentence: the source languages of the finals that cover it."""
    finals = source_finals(events)
    return [{e.source_lang for e in finals if _within(e, r) or (e.start <= r.start and e.end >= r.end)} for r in refs]


def joined(events, lang: str) -> str:
    return " ".join(e.text for e in sorted((e for e in events if e.final and e.text and e.lang == lang),
                                           key=lambda e: e.start))


# ---- offline baselines -----------------------------------------------------------------------------------------
def offline_windows(audio: np.ndarray, window_s: float = 30.0, search_s: float = 5.0) -> list[tuple[int, int]]:
    """(start, end) samples of consecutive windows of at most `window_s`, each but the last cut at the quietest
    0.1 s of its last `search_s`: at a pause, as faster-whisper's timestamps let it seek to the end of the last
    whole segment (a blind cut at 30 s splits the word there)."""
    window, frame = int(window_s * SR), SR // 10
    cuts, start = [], 0
    while len(audio) - start > window:
        end = start + window
        lo = max(start + frame, end - int(search_s * SR))
        energy = [float(np.mean(audio[i:i + frame] ** 2)) for i in range(lo, end - frame + 1, frame // 2)]
        cut = lo + int(np.argmin(energy)) * (frame // 2) + frame // 2
        cuts.append((start, cut))
        start = cut
    return cuts + [(start, len(audio))]


def offline_text(model, audio: np.ndarray, language: str | None = None) -> str:
    """The same model over the whole file: windows of at most 30 s cut at pauses (offline_windows), each
    decoded in Whisper's full 30 s input and conditioned on the text before it."""
    texts: list[str] = []
    for start, end in offline_windows(audio):
        texts.append(model.transcribe(audio[start:end], language=language, pad_seconds=30.0,
                                      prompt=" ".join(texts) or None).text.strip())
    return " ".join(t for t in texts if t)


def ctranslate2_text(model_name: str, audio: np.ndarray, n_mels: int, tokenizer) -> str | None:
    """ctranslate2 (faster-whisper's engine) with the same weights, the same windows as offline_text, each
    conditioned on the text before it."""
    if importlib.util.find_spec("ctranslate2") is None:
        return None
    import ctranslate2

    from appliance.asr import features
    from appliance.bench.model_bench import _ct2_source

    src = _ct2_source(model_name)
    if src is None:
        return None
    ref = ctranslate2.models.Whisper(str(src), device="cpu", compute_type="int8", intra_threads=2)
    s = tokenizer.specials
    texts: list[str] = []
    for start, end in offline_windows(audio):
        mel = features.log_mel(audio[start:end], n_mels, 3000)[None]
        feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))
        lang = ref.detect_language(feats)[0][0][0].strip("<|>") if tokenizer.multilingual else "en"
        prev = tokenizer.encode(" " + " ".join(texts))[-MAX_PROMPT_TOKENS:] if texts else []
        prompt = ([s.sot_prev] + prev if prev else []) + tokenizer.prompt(lang, "transcribe")
        out = ref.generate(feats, [prompt], beam_size=5, max_length=448)
        texts.append(tokenizer.decode(out[0].sequences_ids[0]).strip())
    return " ".join(texts)


# ---- the guard on correct translations ----------------------------------------------------------------------------
def guard_false_rejections(translators) -> dict:
    """How often the round-trip guard would withhold a correct translation: each reference translation of
    sentences.py judged as the guard judges a candidate (its best round trip against the source)."""
    from appliance.translate.roundtrip import ROUNDTRIP_MIN, RoundTripTranslator

    out = {"checked": 0, "rejected": 0, "examples": []}
    for (src_lang, tgt_lang), sources, targets in ((("en", "pt"), EN, PT), (("pt", "en"), PT, EN)):
        forward, reverse = translators.get((src_lang, tgt_lang)), translators.get((tgt_lang, src_lang))
        if forward is None or reverse is None:
            continue
        guard = RoundTripTranslator(forward, reverse)
        for source, target in zip(sources, targets):
            out["checked"] += 1
            agreement, back = guard.agreement(source, target)
            if agreement < ROUNDTRIP_MIN:
                out["rejected"] += 1
                out["examples"].append(f"{src_lang}->{tgt_lang}: {source!r} / {target!r} back {back!r}")
    return out


def translation_cost(translators, beam_size: int = 4) -> dict:
    """Median ms per final sentence (sentences.py, en->pt): greedy alone, against beam n-best with the round-trip
    check (what a final costs with the guard on)."""
    import statistics

    from appliance.translate.roundtrip import RoundTripTranslator

    forward, reverse = translators.get(("en", "pt")), translators.get(("pt", "en"))
    if forward is None or reverse is None:
        return {}
    guard = RoundTripTranslator(forward, reverse, beam_size)
    greedy_ms, guarded_ms = [], []
    for sentence in EN:
        t0 = time.perf_counter()
        forward.translate([sentence])
        greedy_ms.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        guard.translate(sentence)
        guarded_ms.append(1000 * (time.perf_counter() - t0))
    return {"mt_final_ms_greedy": _r(statistics.median(greedy_ms), 1),
            f"mt_final_ms_beam{beam_size}_guarded": _r(statistics.median(guarded_ms), 1)}


# ---- the run -----------------------------------------------------------------------------------------------------
def _chrf(hyp: str, ref: str) -> float | None:
    import sacrebleu

    return float(sacrebleu.corpus_chrf([hyp], [[ref]]).score) if ref else None


def run(cfg, models, *, quick: bool = False, progress=lambda m: None) -> dict:
    from appliance.engines import load_engines

    rng = np.random.default_rng(SEED)
    progress("accuracy bench: building the long-form audio")
    en_parts = [build_english(rng)]
    if quick:  # the start of the first layout; language ID judged on it (no mixed part)
        en_audio, en_refs = en_parts[0]
        keep = int(en_refs[4].end * SR) if len(en_refs) > 4 else len(en_audio)
        en_parts = [(en_audio[:keep + SR // 2], en_refs[:5])]
    else:
        mixed_audio, mixed_refs = build_mixed(rng)
        en_parts += [build_english(np.random.default_rng(seed)) for seed in ENGLISH_SEEDS[1:]]
    engines = load_engines(cfg, models)
    en_runs = []
    for i, (en_audio, _) in enumerate(en_parts):
        progress(f"accuracy bench: streaming {len(en_audio) / SR:.0f} s of English, pause layout {i + 1} of "
                 f"{len(en_parts)} (real time)")
        en_runs.append(stream(cfg, engines, en_audio))
    mixed_stats = None
    lid_events, lid_refs = en_runs[0][0], en_parts[0][1]
    if not quick:
        progress(f"accuracy bench: streaming {len(mixed_audio) / SR:.0f} s in several languages (real time)")
        lid_events, mixed_stats = stream(cfg, engines, mixed_audio)
        lid_refs = mixed_refs
    progress("accuracy bench: offline transcripts")
    en_ref_texts = [" ".join(r.text for r in refs) for _, refs in en_parts]
    streamed = [joined(events, "en") for events, _ in en_runs]
    t0 = time.perf_counter()
    offline = [offline_text(engines.asr, audio, "en") for audio, _ in en_parts]
    offline_s = time.perf_counter() - t0
    ct2 = [ctranslate2_text(cfg.asr.model, audio, engines.asr.n_mels, engines.asr.tokenizer) for audio, _ in en_parts]
    en_ref_text = " ".join(en_ref_texts)
    en_seconds = sum(len(audio) for audio, _ in en_parts) / SR
    wer_streaming = wer(en_ref_text, " ".join(streamed), "en")
    wer_offline = wer(en_ref_text, " ".join(offline), "en")
    langs = sentence_languages(lid_events, lid_refs)
    lid_ok = [r.lang in got and len(got) == 1 for r, got in zip(lid_refs, langs)]
    lost = [r for r, got in zip(lid_refs, langs) if r.lang not in got]
    all_stats = [stats for _, stats in en_runs] + ([mixed_stats] if mixed_stats is not None else [])
    gather = lambda attr: [v for s in all_stats for v in getattr(s, attr)]  # noqa: E731
    audio_s = max(1e-9, sum(s.audio_s for s in all_stats))
    guard = guard_false_rejections(engines.translators)
    pt_refs = " ".join(r.pt for _, refs in en_parts for r in refs if r.pt)
    result = {
        "model": cfg.asr.model,
        "spoken": cfg.languages.spoken,
        "english_audio_s": _r(en_seconds, 1),
        "english_layouts": len(en_parts),
        "mixed_audio_s": _r(len(mixed_audio) / SR, 1) if mixed_stats else 0.0,
        "wer_streaming": _r(wer_streaming),
        "wer_offline": _r(wer_offline),
        "wer_gap": _r(wer_streaming - wer_offline),
        "wer_streaming_by_layout": " ".join(f"{wer(r, h, 'en'):.3f}" for r, h in zip(en_ref_texts, streamed)),
        "wer_offline_by_layout": " ".join(f"{wer(r, h, 'en'):.3f}" for r, h in zip(en_ref_texts, offline)),
        "wer_ctranslate2": (_r(wer(en_ref_text, " ".join(ct2), "en"))  # type: ignore[arg-type]
                            if all(t is not None for t in ct2) else None),
        "lid_accuracy": _r(sum(lid_ok) / len(lid_ok)) if lid_ok else None,
        "sentences": len(lid_refs),
        "sentences_lost": len(lost),
        "chrf": _r(_chrf(" ".join(joined(events, "pt") for events, _ in en_runs), pt_refs), 1),
        "translations_withheld": sum(s.mt_withheld for s in all_stats),
        "translations_reranked": sum(s.mt_reranked for s in all_stats),
        "guard_false_rejections": guard["rejected"],
        "guard_checked": guard["checked"],
        "final_latency_p50_s": _r(pct(gather("final_latency_s"), 50)),
        "final_latency_p95_s": _r(pct(gather("final_latency_s"), 95)),
        "first_partial_p50_s": _r(pct(gather("first_partial_s"), 50)),
        "translated_final_extra_p50_s": _r(pct(gather("translated_extra_s"), 50)),
        "rtf": _r(sum(s.busy_s for s in all_stats) / audio_s),
        "rtf_partials": _r(sum(s.partials_busy_s for s in all_stats) / audio_s),  # of rtf: the partials shown
        "pauses_held": sum(s.pauses_held for s in all_stats),
        "offline_rtf": _r(offline_s / en_seconds),
        **translation_cost(engines.translators, max(2, cfg.translation.beam_size)),
    }
    for r in lost:
        log.info("sentence lost (%s, %.1f-%.1f s): %r", r.lang, r.start, r.end, r.text)
    for example in guard["examples"]:
        log.info("guard false rejection: %s", example)
    return result


# ---- levers: each measured on its own (English part, as fast as possible: WER only) ------------------------------
LEVERS = {  # lever -> {"part.attribute" of the pipeline: value}
    "all levers (default)": {},
    "no sentence hold (every pause ends)": {"utterances.sentence_pause_s": 0.0},
    "no previous-text prompt": {"context.max_chars": 0},
    "final window +1 s (was)": {"recognizer.final_pad_s": 1.0},
    "no left audio context": {"context.left_gap_s": 0.0},
    "left audio context for every utterance": {"context.left_max_utt_s": float("inf")},
    "none (as before)": {"utterances.sentence_pause_s": 0.0, "context.max_chars": 0, "recognizer.final_pad_s": 1.0,
                         "context.left_gap_s": 0.0},
}


def run_levers(cfg, models, *, progress=lambda m: None, seeds: tuple[int, ...] = ENGLISH_SEEDS) -> list[dict]:
    """Each lever on the English part built from each of `seeds` (audio fed as fast as the pipeline takes it):
    WER over all the seeds' words, and per seed."""
    from appliance.engines import load_engines

    parts = [build_english(np.random.default_rng(seed)) for seed in seeds]
    engines = load_engines(cfg, models)
    rows = []
    for name, changes in LEVERS.items():
        progress(f"accuracy levers: {name}")

        def tweak(pipeline, changes=changes):
            for key, value in changes.items():
                part, attribute = key.split(".")
                setattr(getattr(pipeline, part), attribute, value)

        refs, hyps, per_seed, finals, held, busy, audio_s = [], [], [], 0, 0, 0.0, 0.0
        for audio, sentences in parts:
            events, stats = stream(cfg, engines, audio, realtime=False, tweak=tweak)
            reference, hypothesis = " ".join(r.text for r in sentences), joined(events, "en")
            refs.append(reference)
            hyps.append(hypothesis)
            per_seed.append(f"{wer(reference, hypothesis, 'en'):.3f}")
            finals, held = finals + stats.finals, held + stats.pauses_held
            busy, audio_s = busy + stats.busy_s, audio_s + stats.audio_s
        rows.append({"variant": name, "wer_streaming": _r(wer(" ".join(refs), " ".join(hyps), "en")),
                     "wer_by_seed": " ".join(per_seed), "finals": finals, "pauses_held": held,
                     "decode_s_per_audio_s": _r(busy / max(audio_s, 1e-9))})
    return rows
