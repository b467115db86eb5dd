"""Guards against invented text: Whisper's silence hallucinations, repetition loops, bad translations.

Pure functions over text and decoder statistics; every rejection returns a reason for the log.
"""

from __future__ import annotations

import re
import zlib

# Whisper's known outputs on silence or noise (lower-case, punctuation stripped), from its training subtitles.
SILENCE_HALLUCINATIONS = frozenset({
    "thank you", "thank you very much", "thanks for watching", "thank you for watching", "thanks for listening",
    "please subscribe", "subscribe to my channel", "like and subscribe", "bye", "you", "so", "okay",
    "subtitles by the amaraorg community", "subtitles by", "transcription by castingwords", "music", "applause",
    "obrigado", "obrigada", "gracias", "merci", "danke", "sous-titrage st 501", "untertitel im auftrag des zdf",
    "amaraorg", "www", "ok",
})
HALLUCINATION_PREFIXES = ("subtitles by", "sous-titres", "untertitel", "legendas pela", "subtítulos por", "transcribed by")

# Whisper's own fallback thresholds (openai/whisper transcribe.py)
COMPRESSION_RATIO_MAX = 2.4
LOGPROB_MIN = -1.0
NO_SPEECH_MIN = 0.6

_APOSTROPHE = re.compile(r"['’`]")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, apostrophes dropped, other punctuation as spaces: "Quick-brown fox's" -> "quick brown foxs"."""
    return " ".join(_PUNCT.sub(" ", _APOSTROPHE.sub("", text.lower())).split())


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(1, len(zlib.compress(data)))


def repeated_ngram(words: list[str], n: int = 3, times: int = 3) -> bool:
    """True when some n-gram occurs `times` times in a row (a decoding loop)."""
    for size in range(1, n + 1):
        for i in range(0, max(0, len(words) - size * times + 1)):
            gram = words[i:i + size]
            if all(words[i + k * size:i + (k + 1) * size] == gram for k in range(1, times)):
                if size > 1 or times >= 4 or len(gram[0]) > 2:
                    return True
    return False


def asr_rejection(text: str, *, avg_logprob: float, no_speech_prob: float, duration_s: float) -> str | None:
    """Why a recognised text must not become a caption, or None when it may."""
    norm = normalise(text)
    if not norm:
        return "empty"
    if no_speech_prob > NO_SPEECH_MIN and avg_logprob < LOGPROB_MIN:
        return f"no speech (p={no_speech_prob:.2f}, logprob={avg_logprob:.2f})"
    if norm in SILENCE_HALLUCINATIONS or norm.startswith(HALLUCINATION_PREFIXES):
        if avg_logprob < -0.4 or no_speech_prob > 0.2 or duration_s < 2.0 or norm.startswith(HALLUCINATION_PREFIXES):
            return f"known silence hallucination '{text.strip()}'"
    if compression_ratio(text) > COMPRESSION_RATIO_MAX:
        return f"repetitive (compression ratio {compression_ratio(text):.2f})"
    if repeated_ngram(norm.split()):
        return "repetition loop"
    words_per_s = len(norm.split()) / max(duration_s, 0.3)
    if words_per_s > 7.0 and len(norm.split()) > 4:
        return f"too many words for the audio ({words_per_s:.1f}/s)"
    return None


MT_BOILERPLATE = ("translated by", "tradução de", "legendas", "subtitles", "www.", "http")


def translation_rejection(source: str, output: str) -> str | None:
    """Why a translation must not be shown (length ratio, loops, boilerplate), or None."""
    src, out = source.strip(), output.strip()
    if not out:
        return "empty translation"
    if len(src) >= 12:
        ratio = len(out) / len(src)
        if ratio < 0.3 or ratio > 3.0:
            return f"length ratio {ratio:.2f} outside 0.3-3.0"
    elif len(out) > 40 + 4 * len(src):
        return f"output {len(out)} chars for {len(src)}-char input"
    low = out.lower()
    if any(b in low for b in MT_BOILERPLATE) and not any(b in src.lower() for b in MT_BOILERPLATE):
        return "model boilerplate"
    if repeated_ngram(normalise(out).split()):
        return "repetition loop"
    digits_in, digits_out = re.findall(r"\d+", src), re.findall(r"\d+", out)
    if digits_in and not set(digits_in) & set(digits_out):
        return "numbers of the source are missing"
    return None


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """Character n-gram F-score (Popović 2015, as sacrebleu's chrF: n = 1..6, beta = 2, spaces ignored), 0-100."""
    from collections import Counter

    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        h = Counter(hyp[i:i + n] for i in range(len(hyp) - n + 1))
        r = Counter(ref[i:i + n] for i in range(len(ref) - n + 1))
        if not h or not r:
            continue
        match = sum((h & r).values())
        precisions.append(match / sum(h.values()))
        recalls.append(match / sum(r.values()))
    if not precisions:
        return 100.0 if hyp == ref else 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p == 0 and r == 0:
        return 0.0
    return 100.0 * (1 + beta ** 2) * p * r / (beta ** 2 * p + r)


_SENTENCES = re.compile(r"(?<=[.!?…。！？])\s+")


def strip_prompt_echo(text: str, prompt: str | None) -> str:
    """`text` without the sentences Whisper copied from its previous-text prompt: on a short clip the decoder
    sometimes starts by repeating a sentence of the context ("Hello world. How are you today?" after a prompt that
    ends "... Hello world."). A sentence of two or more words found verbatim (normalised) in the prompt is dropped,
    and so is a sentence repeated right after itself."""
    if not text.strip():
        return text
    known = f" {normalise(prompt)} " if prompt else ""
    kept: list[str] = []
    for sentence in _SENTENCES.split(text.strip()):
        norm = normalise(sentence)
        if len(norm.split()) >= 2 and f" {norm} " in known:
            continue
        if kept and norm and norm == normalise(kept[-1]):
            continue
        kept.append(sentence)
    return " ".join(kept)
