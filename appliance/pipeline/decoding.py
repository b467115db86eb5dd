"""One decode of an utterance's audio, as the recognizer stage asks for it: Whisper with the context's prompt, the
left audio context, what the prompt echoed dropped, and Whisper's fallback to a beam for a doubtful final.

- The prompt: the glossary's terms of the language, then the previous text (appliance/pipeline/context.py). A decode
  that only repeats the previous text is done again without it; sentences it copied from the prompt are dropped.
- Left audio context: for a short utterance right after a final of the same context, the final's audio goes first
  (a pause between) and its text is forced as the start of Whisper's output, so the words at the start of the
  utterance are heard after what led to them, as in an offline transcript.
- Fallback: a greedy final that fails Whisper's thresholds (repetitive or unlikely) is decoded again with a beam,
  without the prompt (it may be what misled), and the better of the two is kept.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from appliance import guards
from appliance.pipeline.context import PromptContext
from appliance.pipeline.utterance import SR, Utterance

log = logging.getLogger(__name__)

FALLBACK_BEAM = 4  # beam used when a greedy final fails Whisper's thresholds
LEFT_CONTEXT_SILENCE_S = 0.3  # the pause put between the left context and the utterance (the VAD keeps no audio of
# the real one)


def rejection(result, utt: Utterance) -> str | None:
    """Why `result` (a decode of `utt`) must not become a caption, or None (guards.asr_rejection)."""
    return guards.asr_rejection(result.text, avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
                                duration_s=utt.seconds)


class Decoder:
    """`decode(...)` an utterance's audio with its context; `falls_back` / `fallback` for finals.
    `beam_size`: the configured beam (the fallback is tried only when it is narrower than FALLBACK_BEAM)."""

    def __init__(self, asr, context: PromptContext, stats, beam_size: int = 1):
        self.asr = asr
        self.context = context
        self.stats = stats  # prompt_echoes
        self.beam_size = beam_size

    def decode(self, utt: Utterance, audio: np.ndarray, lang: str, beam_size: int, pad_s: float | None,
               left: bool = False, reset_context: bool = True):
        """Transcribe `utt`'s audio conditioned on the glossary's terms and the context, without the sentences
        Whisper copied from the context (a sentence that is only a term is kept: it may well have been said).
        `left`: with left audio context when there is one (see _decode_after_left); `reset_context=False`: a decode
        in another language than the context's is made without it, and the context is kept."""
        context = self.context.prompt(utt.start, lang, reset_context)
        if left and (result := self._decode_after_left(utt, audio, lang, beam_size, pad_s, context)) is not None:
            return result
        result = self.asr.transcribe(audio, language=lang, task="transcribe", beam_size=beam_size,
                                     prompt=self.context.with_terms(lang, context), pad_seconds=pad_s)
        if context:
            text = guards.strip_prompt_echo(result.text, context)
            if not text and result.text.strip():  # it only repeated the previous text: decode again without it
                self.stats.prompt_echoes += 1
                log.debug("utterance %s: the decode only echoed the prompt (%r); decoding without it", utt.id,
                          result.text)
                return self.asr.transcribe(audio, language=lang, task="transcribe", beam_size=beam_size,
                                           prompt=self.context.terms(lang) or None, pad_seconds=pad_s)
            if text != result.text.strip():
                log.debug("utterance %s: dropped what the prompt echoed: %r -> %r", utt.id, result.text, text)
                result = replace(result, text=text)
        return result

    def _decode_after_left(self, utt: Utterance, audio: np.ndarray, lang: str, beam_size: int, pad_s: float | None,
                           context: str | None):
        """The decode after the left audio context (the context's `left`), or None when there is none, or Whisper
        heard nothing after the known text, or what it heard would be rejected (the caller decodes without it)."""
        left = self.context.left(utt.start, len(audio), context)
        if left is None:
            return None
        left_audio, left_text, before = left
        joined = np.concatenate([left_audio, np.zeros(int(LEFT_CONTEXT_SILENCE_S * SR), np.float32), audio])
        result = self.asr.transcribe(joined, language=lang, task="transcribe", beam_size=beam_size,
                                     prompt=self.context.with_terms(lang, before), pad_seconds=pad_s, prefix=left_text)
        text = guards.strip_prompt_echo(result.text, context)
        if not text:
            return None
        result = replace(result, text=text, duration_s=len(audio) / SR)
        if reason := rejection(result, utt):  # e.g. a wrong last word of the previous final made Whisper
            # transcribe its audio again after it
            log.debug("utterance %s: left context gave a text the guard rejects (%s): %r; decoding without it",
                      utt.id, reason, text)
            return None
        return result

    def falls_back(self, result) -> bool:
        """Whisper's thresholds doubt this decode and a wider beam than the one it had would be tried."""
        return self.beam_size < FALLBACK_BEAM and (
            result.compression_ratio > guards.COMPRESSION_RATIO_MAX
            or (result.avg_logprob < guards.LOGPROB_MIN and result.no_speech_prob < guards.NO_SPEECH_MIN))

    def fallback(self, utt: Utterance, audio: np.ndarray, lang: str, result, pad_s: float | None):
        """`result` (a final's decode) or, when it falls back, the beam's decode if that is likelier or less
        repetitive."""
        if not self.falls_back(result):
            return result
        retry = self.asr.transcribe(audio, language=lang, task="transcribe", beam_size=FALLBACK_BEAM,
                                    pad_seconds=pad_s)  # without the prompt: it may be what misled
        log.info("utterance %s: fallback to beam %d (logprob %.2f -> %.2f, compression %.2f -> %.2f)", utt.id,
                 FALLBACK_BEAM, result.avg_logprob, retry.avg_logprob, result.compression_ratio,
                 retry.compression_ratio)
        if retry.avg_logprob >= result.avg_logprob or retry.compression_ratio < result.compression_ratio:
            return retry
        return result
