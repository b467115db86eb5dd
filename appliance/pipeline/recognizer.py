"""The recognizer stage: when to decode an utterance and what becomes of each decode (partials, the probe, finals).

- Partials while speech goes on: greedy, at the configured cadence, stretched in real time so that they use at most
  1/PARTIAL_DUTY of the recognizer's time, and skipped when recognition is behind; none until the turn's language
  is locked. Each shows the words the stable-prefix policy keeps, then goes to translation.
- The end-of-speech probe: as soon as speech pauses, the utterance is decoded as the final would be (its window,
  beam and left audio context). If the pause is the end, the final reuses it and costs no decoding after the VAD's
  hangover; a partial in progress is aborted for it in real time.
- The final: the language settled on the whole utterance (partials shown in another language are withdrawn and the
  utterance goes on under a new id), the probe's decode reused when it covered every spoken sample and is not
  doubtful, else a decode with Whisper's fallback; a rejected final withdraws what was shown and resets the context.
Output: caption events in the source language (`emit`) and source captions for the translator (`forward`).
Recognizer thread only, except `speech_pausing` (voice-activity thread).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable

import numpy as np

from appliance.asr.stable import StablePrefix
from appliance.asr.whisper import Aborted
from appliance.pipeline.context import PromptContext
from appliance.pipeline.decoding import Decoder, rejection
from appliance.pipeline.language import LanguageDecision
from appliance.pipeline.speaker_stage import SpeakerStage
from appliance.pipeline.utterance import MIN_FINAL_AUDIO_S, SR, Utterance
from appliance.routes import Route
from appliance.translate.stage import SourceCaption

log = logging.getLogger(__name__)

BEHIND_SECONDS = 1.0  # audio backlog above which partials are skipped
MIN_PARTIAL_AUDIO_S = 0.6  # no partial before this much speech
END_PROBE_S = 0.03  # silence after speech before the end-of-speech probe decodes (and a partial in progress aborts):
# the first silent VAD window. Measured on the accuracy bench (English, real time): 0.1 s -> 0.03 s and the abort
# took the final latency p50 from 0.54 to 0.41 s, the same WER
HIDDEN_PROBE_S = 0.1  # ... when the probe's language is not the partials': silence before it decodes (not shown)
PARTIAL_DUTY = 2.0  # in real time, at least this many seconds of audio per second spent on one partial
LANGUAGE_RETRY_S = 0.5  # until the turn's language is locked, it is detected again after this much new speech
# (not the partial interval: a detection is an encoder run without a decode, and the first partial waits for it)
FINAL_PAD_S: float | None = 2.0  # silence after the audio in the encoder input of finals (a longer window than the
# model's 1 s: fewer wrong last words)
PARTIAL_PAD_S: float | None = None  # ... of partials (None: the model's 1 s). Partials decoded with the final's
# window, so that the last one could be the final, were measured on the accuracy bench and cost more than they save:
# RTF 0.50 -> 0.66, partials skipped behind real time, final latency p50 0.55 -> 0.70 s


class RecognizerStage:
    """Driven by the segmenter: `speech` (more speech), `probe` (after each chunk), `at_pause`, `final`.

    `emit(utt_id, final, lang, source_lang, text, start, end, latency, stable=, speaker=)` writes a caption event;
    `forward(SourceCaption)` hands a caption to the translator; `routes(source)` are the translation routes;
    `backlog_s()` is the audio waiting for recognition; `new_id()` names an utterance that changes language."""

    def __init__(self, asr, *, decoder: Decoder, language: LanguageDecision, context: PromptContext,
                 speakers: SpeakerStage, stats, emit: Callable[..., None], forward: Callable[[SourceCaption], None],
                 routes: Callable[[str], dict[str, Route | None]], backlog_s: Callable[[], float],
                 new_id: Callable[[], str], beam_size: int = 1, partial_interval_s: float = 1.0, partials: bool = True,
                 skip_when_behind: bool = True):
        self.asr = asr
        self.decoder = decoder
        self.language = language
        self.context = context  # (the decoder's): a final joins it, a rejected final resets it
        self.speakers = speakers
        self.stats = stats
        self.emit = emit
        self.forward = forward
        self.routes = routes
        self.backlog_s = backlog_s
        self.new_id = new_id
        self.beam_size = beam_size
        self.partial_interval = int(partial_interval_s * SR)
        self.partials = partials
        self.skip_when_behind = skip_when_behind
        self.partial_pad_s, self.final_pad_s = PARTIAL_PAD_S, FINAL_PAD_S  # levers (the accuracy bench's)
        # real time: a partial in progress when speech pauses is aborted, so that the end-of-speech probe (which
        # becomes the final) starts at once instead of after it
        self.abort_partials = skip_when_behind and callable(getattr(asr, "abort", None))
        self._last_partial_s = 0.0  # how long the last partial decode took

    # ---- when to decode ---------------------------------------------------------------------------------------
    def speech(self, utt: Utterance, wall: float) -> None:
        """More speech in the open utterance (captured at `wall`): a partial when one is due."""
        if not (self.partials and utt.seconds >= MIN_PARTIAL_AUDIO_S
                and (utt.samples - utt.decoded_at >= self._partial_gap(utt) or utt.decoded_at == 0)):
            return  # (the first attempt does not wait for the cadence: its partial tells people they are heard)
        if self.skip_when_behind and self.backlog_s() > BEHIND_SECONDS:
            self.stats.partials_skipped += 1
            utt.decoded_at = utt.samples
            if not self.stats.behind:
                log.warning("recognition is behind real time (%.1f s backlog): skipping partials", self.backlog_s())
            self.stats.behind = True
        else:
            self.stats.behind = False
            t0 = time.perf_counter()
            self.partial(utt, wall)
            self.stats.partials_busy_s += time.perf_counter() - t0

    def probe(self, utt: Utterance, wall: float, trailing_silence_s: float) -> None:
        """After each chunk: if speech just paused, decode what we have now, as the final would (its window, left
        audio context and beam). If the pause turns out to be the end (after the VAD's hangover), this decode is the
        final and the final costs no decoding time; if speech resumes, it was a partial."""
        if (utt.resumes is not None or not self.partials or utt.last_samples >= utt.samples
                or utt.seconds < MIN_PARTIAL_AUDIO_S or utt.language is None or trailing_silence_s < END_PROBE_S
                or (self.skip_when_behind and self.backlog_s() > BEHIND_SECONDS)):
            return
        self.partial(utt, wall, probe=True, trailing_silence_s=trailing_silence_s)

    def speech_pausing(self, trailing_silence_s: float) -> None:
        """Voice-activity thread, ahead of the recognizer: speech has paused this long. A partial in progress is
        aborted then, so that the end-of-speech probe starts at once (real time only)."""
        if self.abort_partials and trailing_silence_s >= END_PROBE_S and self.asr.abort():
            log.debug("speech paused: partial decode aborted for the end-of-speech probe")

    def _partial_gap(self, utt: Utterance) -> int:
        """Samples of new audio before the next partial: the configured cadence, stretched in real time so that
        partials use at most 1/PARTIAL_DUTY of the recognizer's time (finals and translation keep the rest); at
        most LANGUAGE_RETRY_S while the turn's language is not locked."""
        gap = self.partial_interval
        if self.skip_when_behind:
            gap = max(gap, int(PARTIAL_DUTY * self._last_partial_s * SR))
        return gap if utt.language is not None else min(gap, int(LANGUAGE_RETRY_S * SR))

    def _abortable(self, partial: bool):
        """The voice-activity stage may abort what runs in this block (real time, partials only)."""
        return self.asr.abortable() if partial and self.abort_partials else contextlib.nullcontext()

    def _probs(self, audio: np.ndarray, pad_s: float | None):
        """Language detection sharing the encoding of a decode with `pad_s`."""
        return lambda: self.asr.detect_language(audio, pad_seconds=pad_s)

    # ---- partials and the probe ---------------------------------------------------------------------------------
    def partial(self, utt: Utterance, wall: float, probe: bool = False, trailing_silence_s: float = 0.0) -> None:
        """Decode a partial (greedy, abortable) or the end-of-speech probe (as the final would) and show it."""
        audio = utt.audio()
        if not self.language.ready(utt):
            return
        utt.decoded_at = utt.samples
        utt.speaker = self.speakers.partial(utt.id, audio) or utt.speaker  # before the language: the speaker's own
        # is the prior
        try:
            with self._abortable(not probe):
                lang = self.language.lock(utt, len(audio), self._probs(audio, self.partial_pad_s))
                if lang is None:
                    return  # no partials until the language is known: a caption never changes language mid-sentence
                whole = self.language.settle(utt, len(audio), self._probs(audio, self.final_pad_s)) if probe else lang
                if whole != lang:
                    # the whole audio so far says another language: changing it is the final's to do (a probe may
                    # come at a dip inside speech), so this decode is not shown; the final reuses the decision and
                    # the decode when no more speech comes. A decode nobody sees waits for a longer silence
                    # (the decision is kept meanwhile: the audio has not grown)
                    if trailing_silence_s < HIDDEN_PROBE_S:
                        return
                    result = self.decoder.decode(utt, audio, whole, self.beam_size, self.final_pad_s, left=True,
                                                 reset_context=False)
                    utt.last, utt.last_samples, utt.probed, utt.last_lang = result, len(audio), True, whole
                    return
                t0 = time.perf_counter()
                result = self.decoder.decode(utt, audio, lang, self.beam_size if probe else 1,
                                             self.final_pad_s if probe else self.partial_pad_s, left=probe)
        except Aborted:
            self.stats.partials_aborted += 1
            return
        utt.probed = probe
        asr_s = time.perf_counter() - t0
        self._last_partial_s = asr_s
        utt.last, utt.last_samples, utt.last_lang = result, len(audio), lang
        if rejection(result, utt):
            return
        stable, tail = utt.stable.update(result.text.split())
        end = utt.end
        self.emit(utt.id, False, lang, lang, " ".join(stable + tail), utt.start, end, {"asr": asr_s},
                  stable=" ".join(stable), speaker=utt.speaker)
        self.stats.partials += 1
        if not utt.first_partial_done:
            utt.first_partial_done = True
            self.stats.first_partial_s.append(time.monotonic() - utt.onset_wall)
        self.forward(SourceCaption(utt.id, False, lang, " ".join(stable), utt.start, end, None, wall, asr_s,
                                   speaker=utt.speaker))

    # ---- finals -------------------------------------------------------------------------------------------------
    def at_pause(self, utt: Utterance, speech_samples: int, speech_end_wall: float) -> str:
        """Speech paused (the VAD ended its segment): decode the utterance as its final would be, kept for the final
        to reuse; the text tells the segmenter whether the sentence is finished."""
        audio = utt.audio()
        lang = self._settle(utt, audio, speech_samples, speech_end_wall)
        result = self._final_decode(utt, lang, speech_samples)
        utt.last, utt.last_samples, utt.probed, utt.last_lang = result, len(audio), True, lang  # the final reuses it
        return result.text

    def final(self, utt: Utterance, speech_end_wall: float, speech_samples: int | None = None) -> None:
        """Make `utt`'s final (its speech ended at `speech_end_wall`; `speech_samples`: how much of its audio is
        speech, None when unknown) and hand it to the translator."""
        audio = utt.audio()
        if len(audio) < SR * MIN_FINAL_AUDIO_S:
            return
        lang = self._settle(utt, audio, speech_samples, speech_end_wall)
        t0 = time.perf_counter()
        result = self._final_decode(utt, lang, speech_samples)
        if reason := rejection(result, utt):
            self.stats.rejected += 1
            self.context.reset("rejected final")
            log.info("utterance %s rejected (%s): %r", utt.id, reason, result.text)
            self._withdraw(utt, lang, speech_end_wall)
            return
        asr_s = time.perf_counter() - t0
        if result is utt.last:
            self.stats.finals_from_probe += 1  # (a rejected final is not a final: not counted)
        self.language.last = lang
        end = utt.end
        text = result.text.strip()  # the whole utterance's decode: it may correct words partials showed as stable
        self.context.remember(lang, text, audio, end)
        utt.speaker = self.speakers.final(utt.id, audio, lang) or utt.speaker
        self.emit(utt.id, True, lang, lang, text, utt.start, end, {"asr": asr_s}, speaker=utt.speaker)
        self.stats.finals += 1
        self.stats.final_latency_s.append(time.monotonic() - speech_end_wall)
        log.debug("utterance %s final %.2f s after its speech ended (decode %.2f s%s, %.1f s of audio)", utt.id,
                  time.monotonic() - speech_end_wall, asr_s, ", the probe's" if result is utt.last else "", utt.seconds)
        emitted = time.monotonic()
        english = None  # after the source final is out: Whisper's translate task for routes that need English
        if lang != "en" and any(r and r[0].engine == "whisper" for r in self.routes(lang).values()):
            english = self.asr.transcribe(audio, language=lang, task="translate", beam_size=self.beam_size).text.strip()
        self.forward(SourceCaption(utt.id, True, lang, text, utt.start, end, english, speech_end_wall, asr_s, emitted,
                                   utt.speaker))

    def _final_decode(self, utt: Utterance, lang: str, speech_samples: int | None):
        """The final's transcription: the end-of-speech probe's when it covered every spoken sample, else a decode
        (with Whisper's fallback to a beam when the result is repetitive or unlikely)."""
        audio = utt.audio()
        if utt.final_decoded is not None and utt.final_decoded[0] == (len(audio), lang):
            return utt.final_decoded[1]  # decoded so at a pause already (with the fallback): the same audio
        last = utt.last
        if (last is not None and speech_samples is not None
                and utt.last_samples >= speech_samples and utt.probed and utt.last_lang == lang
                and not self.decoder.falls_back(last) and not rejection(last, utt)):
            return last  # a doubtful greedy probe is not reused: the whole audio is decoded again (with the fallback)
        result = self.decoder.decode(utt, audio, lang, self.beam_size, self.final_pad_s, left=True)
        result = self.decoder.fallback(utt, audio, lang, result, self.final_pad_s)
        utt.final_decoded = ((len(audio), lang), result)
        return result

    def _settle(self, utt: Utterance, audio: np.ndarray, speech_samples: int | None, speech_end_wall: float) -> str:
        """The final's language. When it is not the one the partials were shown in, those partials (and their
        translations) are withdrawn and the utterance goes on under a new id, so that no display keeps a caption in
        the wrong language and no caption changes language under the same id."""
        lang = self.language.settle(utt, len(audio), self._probs(audio, self.final_pad_s), speech_samples)
        if utt.language is not None and lang != utt.language:
            old = utt.id
            self._withdraw(utt, utt.language, speech_end_wall)
            utt.id = self.new_id()
            utt.stable = StablePrefix()
            if utt.last_lang != lang:  # (a probe may have decoded it in the new language already)
                utt.last, utt.last_samples, utt.probed = None, 0, False
            self.stats.language_changes += 1
            log.info("utterance %s: the whole utterance is %s, not %s: partials withdrawn, final as %s", old, lang,
                     utt.language, utt.id)
        utt.language = lang
        return lang

    def _withdraw(self, utt: Utterance, lang: str, speech_end_wall: float) -> None:
        """Retract what was shown of `utt` in `lang` (an empty final), and its translations (translator thread)."""
        self.speakers.discard(utt.id)
        if utt.first_partial_done:
            self.emit(utt.id, True, lang, lang, "", utt.start, utt.end, {})
            self.forward(SourceCaption(utt.id, True, lang, "", utt.start, utt.end, None, speech_end_wall, 0.0))
