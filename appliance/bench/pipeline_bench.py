"""Pipeline benchmark: the whole pipeline in simulated real time over the corpus; latency, RTF, WER, false captions."""

from __future__ import annotations

import functools
import logging
import re
import resource
import statistics
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from appliance.bench.corpus import Clip, build_corpus, clip_path
from appliance.config import Config
from appliance.engines import load_engines
from appliance.pipeline import Pipeline, SR
from appliance.runner import make_pipeline, run_audio

log = logging.getLogger(__name__)


# number words -> digits before scoring, so "one two three" and "1-2-3" agree (Whisper writes either)
NUMBER_WORDS = {
    "en": "zero one two three four five six seven eight nine ten",
    "es": "cero uno dos tres cuatro cinco seis siete ocho nueve diez",
    "pt": "zero um dois três quatro cinco seis sete oito nove dez",
    "fr": "zéro un deux trois quatre cinq six sept huit neuf dix",
    "it": "zero uno due tre quattro cinque sei sette otto nove dieci",
    "de": "null eins zwei drei vier fünf sechs sieben acht neun zehn",
}


def _number_table(lang: str | None) -> dict[str, str]:
    return {w: str(i) for i, w in enumerate(NUMBER_WORDS.get(lang or "", "").split())}


def _digits(text: str, lang: str | None) -> str:
    table = _number_table(lang)
    return " ".join(table.get(w, w) for w in text.split())


@functools.lru_cache(maxsize=1)
def _english_normaliser():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def scoring_text(text: str, lang: str | None) -> str:
    """`text` as WER compares it. English: OpenAI Whisper's English text normaliser (the whisper-normalizer
    package), as Whisper's paper and faster-whisper's benchmarks score: numbers as digits ("eleven" and "11"
    agree), spellings and contractions standardised, punctuation and fillers dropped. Counting ("one two three" /
    "1, 2, 3") is turned into digits before it and number words up to ten after it, so counting compares word by
    word. Other languages: lower case without punctuation, number words up to ten as digits."""
    from appliance.guards import normalise

    if lang == "en":  # the normaliser joins counting into one number ("one two three" -> "123") and writes a
        # lone 1 as "one": counting becomes digits before it, number words after it
        return _digits(" ".join(_english_normaliser()(_counting_as_digits(text)).split()), lang)
    return _digits(normalise(text), lang)


_EN_NUMBER = "|".join(sorted(_number_table("en"), key=len, reverse=True))
_EN_COUNTING = re.compile(rf"(?<![\w-])(?:{_EN_NUMBER})(?:[\s,]+(?:{_EN_NUMBER}))+(?![\w-])", re.IGNORECASE)


def _counting_as_digits(text: str) -> str:
    """English `text` with each run of two or more number words up to ten ("one, two, three") as digits. A single
    number word is left to Whisper's normaliser, which reads compounds ("twenty-one", "one hundred and one")."""
    table = _number_table("en")
    return _EN_COUNTING.sub(lambda m: " ".join(table[w.lower()] for w in re.findall(r"[^\W\d_]+", m.group(0))), text)


def wer(reference: str, hypothesis: str, lang: str | None = None) -> float:
    import jiwer

    ref, hyp = scoring_text(reference, lang), scoring_text(hypothesis, lang)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp or "<empty>"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


@dataclass
class ClipResult:
    clip: Clip
    finals: dict[str, str] = field(default_factory=dict)  # lang -> joined final text
    detected: str | None = None
    stats: object = None


def _run_clip(cfg: Config, engines, clip: Clip, realtime: bool) -> ClipResult:
    from appliance.audio import load_audio

    events, lock = [], threading.Lock()

    def sink(ev):
        with lock:
            events.append(ev)

    pipeline: Pipeline = make_pipeline(cfg, engines, sink, realtime=realtime)
    run_audio(pipeline, load_audio(clip_path(clip)), realtime=realtime)
    res = ClipResult(clip, stats=pipeline.stats)
    for ev in events:
        if ev.final and ev.text:
            res.finals[ev.lang] = (res.finals.get(ev.lang, "") + " " + ev.text).strip()
            if ev.lang == ev.source_lang:
                res.detected = ev.source_lang
    return res


def run(cfg: Config, models, *, quick: bool = False, progress=lambda m: None) -> dict:
    clips = build_corpus(progress)
    if quick:
        clips = [c for c in clips if c.kind == "speech"][:6] + [c for c in clips if c.kind == "nonspeech"][:1]
    t0 = time.monotonic()
    engines = load_engines(cfg, models)
    load_s = time.monotonic() - t0
    speech = [c for c in clips if c.kind == "speech"]
    results: list[ClipResult] = []
    for i, clip in enumerate(speech, 1):
        progress(f"pipeline bench: {clip.name} ({i}/{len(speech)}, {clip.seconds:.1f} s, real time)")
        results.append(_run_clip(cfg, engines, clip, realtime=True))
    nonspeech_captions = 0
    nonspeech_s = 0.0
    for clip in (c for c in clips if c.kind == "nonspeech"):
        progress(f"pipeline bench: {clip.name} ({clip.seconds:.0f} s, as fast as possible)")
        r = _run_clip(cfg, engines, clip, realtime=False)
        nonspeech_captions += r.stats.finals
        nonspeech_s += clip.seconds

    def gather(attr):
        return [v for r in results for v in getattr(r.stats, attr)]

    by_lang: dict[str, list[float]] = {}
    lang_ok: dict[str, list[bool]] = {}
    for r in results:
        lang = r.clip.lang
        by_lang.setdefault(lang, []).append(wer(r.clip.text, r.finals.get(lang, ""), lang))
        lang_ok.setdefault(lang, []).append(r.detected == lang)
    busy = sum(r.stats.busy_s for r in results)
    audio = sum(r.stats.audio_s for r in results)
    return {
        "model": cfg.asr.model,
        "providers": engines.providers,
        "source": cfg.languages.source,
        "targets": cfg.languages.targets,
        "clips": len(results),
        "speech_s": round(sum(c.seconds for c in speech), 1),
        "rtf": round(busy / audio, 4) if audio else None,
        "final_latency_p50_s": _r(pct(gather("final_latency_s"), 50)),
        "final_latency_p95_s": _r(pct(gather("final_latency_s"), 95)),
        "first_partial_p50_s": _r(pct(gather("first_partial_s"), 50)),
        "translated_final_extra_p50_s": _r(pct(gather("translated_extra_s"), 50)),
        "translated_final_extra_p50_s_by_source": {
            k: _r(pct([v for r in results for v in r.stats.translated_extra_by_source.get(k, [])], 50))
            for k in sorted({k for r in results for k in r.stats.translated_extra_by_source})},
        "mt_ms_median": _r(statistics.median(gather("mt_ms")) if gather("mt_ms") else None, 2),
        "wer_en": _r(statistics.mean(by_lang["en"]) if "en" in by_lang else None),
        "wer_by_lang": {k: _r(statistics.mean(v)) for k, v in sorted(by_lang.items())},
        "language_id_accuracy": {k: _r(sum(v) / len(v)) for k, v in sorted(lang_ok.items())},
        "captions_on_nonspeech": nonspeech_captions,
        "nonspeech_s": nonspeech_s,
        "partials_skipped": sum(r.stats.partials_skipped for r in results),
        "finals_from_probe": f"{sum(r.stats.finals_from_probe for r in results)}/{sum(r.stats.finals for r in results)}",
        "load_s": _r(load_s, 2),
        "peak_rss_mb": _r(peak_rss_mb(), 1),
    }


def _r(v, nd: int = 3):
    return None if v is None else round(float(v), nd)
