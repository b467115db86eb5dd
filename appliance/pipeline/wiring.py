"""The pipeline: the parts wired by threads and bounded queues. Audio in (`feed`), caption events out (`sink`).

Threading model, one thread a line (each owns its parts' state, so there are no locks on stream state; a part is a
plain object called on one thread only):
  capture (feed)   audio -> the audio queue (bounded: drops its oldest chunk when full, counted)
  voice-activity   audio queue -> the VAD (`segmenter`, appliance.vad) -> the speech queue (bounded: waits while the
                   recognizer works)
  recognizer       speech queue -> UtteranceSegmenter -> RecognizerStage (with LanguageDecision, PromptContext,
                   Decoder, SpeakerStage) -> the sink (captions in the source language, and the empty finals that
                   withdraw them) and the caption queue (bounded: partials dropped when full, finals wait)
  translator       caption queue -> TranslationStage -> the sink (translations, and their retractions)
So the sink is called by the recognizer and the translator threads; each (utterance, language) by one of them only,
in order. A sink must take calls from both (the publisher's queue, a collector with a lock).
The voice-activity thread runs ahead of the recognizer: it sees a pause while the recognizer is still decoding and
aborts a partial then (`RecognizerStage.speech_pausing`). The recognizer skips partials when it falls behind (audio
backlog) and never skips a final.
A worker that raises is restarted in place (a final being made is decoded or translated once more), up to a budget
(appliance/pipeline/workers.py); past that it stays dead and `dead_stages()` tells the watchdog. Everything kept is
bounded (latency Windows, the error deque, per-utterance maps pruned at each final).
This module imports no MQTT and no Flask.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Callable, Iterable

import numpy as np

from appliance.captions import layout
from appliance.events import CaptionEvent
from appliance.pipeline.context import LEFT_CONTEXT_GAP_S, PromptContext
from appliance.pipeline.decoding import Decoder
from appliance.pipeline.language import LanguageDecision
from appliance.pipeline.recognizer import RecognizerStage
from appliance.pipeline.segmenting import Speech, UtteranceSegmenter
from appliance.pipeline.speaker_stage import SpeakerStage
from appliance.pipeline.stats import Stats
from appliance.pipeline.utterance import SR, UtteranceIds
from appliance.pipeline.workers import ERRORS_KEPT, StageHealth, put_dropping_oldest, put_with_timeout
from appliance.routes import Route, find_route
from appliance.translate.stage import SourceCaption, TranslationStage

log = logging.getLogger(__name__)

AUDIO_QUEUE_SECONDS = 30.0  # capture keeps this much audio waiting before dropping the oldest
SPEECH_QUEUE_CHUNKS = 64  # voice activity -> recognizer: chunks waiting (backpressure to the audio queue beyond)
CAPTION_QUEUE = 64  # recognizer -> translator: source captions waiting
STOP_TIMEOUT_S = 120.0  # stop() gives up waiting for the workers after this long
_STOP = object()


class Pipeline:
    """Feed audio with `feed()`; caption events come out of `sink`. `start()` / `stop()` the workers.

    The parts: `segmenter` (the VAD), `utterances` (UtteranceSegmenter), `language` (LanguageDecision), `context`
    (PromptContext), `recognizer` (RecognizerStage), `speaker_stage` (SpeakerStage), `translation`
    (TranslationStage); `stats` (Stats), `errors`, `warnings` and `failing` for health."""

    def __init__(self, *, asr, segmenter, translators: dict[tuple[str, str], object],
                 sink: Callable[[CaptionEvent], None],
                 source_lang: str = "auto", targets: Iterable[str] = (), beam_size: int = 1, mt_beam_size: int = 1,
                 partial_interval_s: float = 1.0, max_segment_s: float = 15.0, partials: bool = True,
                 skip_when_behind: bool = True, speakers=None, spoken: Iterable[str] = (),
                 sentence_pause_s: float = 0.0, left_context_s: float = LEFT_CONTEXT_GAP_S, mt_guard: bool = True,
                 prompt_terms: Callable[[str], list[str]] | None = None):
        self.asr = asr
        self.segmenter = segmenter
        self.translators = dict(translators)
        self.sink = sink
        self.targets = list(targets)
        self.stats = Stats()
        self.health = StageHealth(self.stats)
        self.errors, self.failing = self.health.errors, self.health.failing
        self.warnings: deque[str] = deque(maxlen=ERRORS_KEPT)  # problems that cost a feature (speakers), not captions
        self._audio_q: queue.Queue = queue.Queue(maxsize=max(8, int(AUDIO_QUEUE_SECONDS * SR / 512)))
        self._speech_q: queue.Queue = queue.Queue(maxsize=SPEECH_QUEUE_CHUNKS)  # voice activity -> recognizer
        self._caption_q: queue.Queue = queue.Queue(maxsize=CAPTION_QUEUE)  # recognizer -> translator
        self._busy_lock = threading.Lock()  # busy_s is added to by two workers
        self._threads: dict[str, threading.Thread] = {}  # stage name -> its worker
        self._routes: dict[str, dict[str, Route | None]] = {}
        self._revs: dict[tuple[str, str], int] = {}  # (utterance, language) -> the last event's revision
        new_id = UtteranceIds()
        self.speaker_stage = SpeakerStage(speakers, self.warnings)
        self.language = LanguageDecision.for_room(getattr(asr, "languages", ["en"]), source_lang, spoken,
                                                  speaker_language=self.speaker_stage.language_of)
        self.context = PromptContext(prompt_terms=prompt_terms, left_gap_s=left_context_s)
        self.recognizer = RecognizerStage(
            asr, decoder=Decoder(asr, self.context, self.stats, beam_size), language=self.language,
            context=self.context, speakers=self.speaker_stage, stats=self.stats, emit=self._emit,
            forward=self._to_translator, routes=self.routes, backlog_s=self.backlog_s, new_id=new_id,
            beam_size=beam_size, partial_interval_s=partial_interval_s, partials=partials,
            skip_when_behind=skip_when_behind)
        self.utterances = UtteranceSegmenter(self.recognizer, self.speaker_stage, new_id=new_id, stats=self.stats,
                                             language=self.language.fixed, max_segment_s=max_segment_s,
                                             sentence_pause_s=sentence_pause_s)
        self.translation = TranslationStage(  # the translator thread's work
            translators=self.translators, routes=self.routes, emit=self._emit,
            shown=lambda utt_id, lang: (utt_id, lang) in self._revs, stats=self.stats, beam_size=mt_beam_size,
            guard=mt_guard)

    # ---- what other features reach: thin delegates to the parts ---------------------------------------------
    @property
    def speakers(self):
        """The speaker tracker, or None (speaker turns off, or turned off after a failure)."""
        return self.speaker_stage.tracker

    @property
    def language_prior(self) -> Callable[[str | None], dict[str, float]]:
        """speaker id (None: unknown) -> prior over languages (LanguageDecision.prior; replaceable)."""
        return self.language.prior

    @language_prior.setter
    def language_prior(self, prior: Callable[[str | None], dict[str, float]]) -> None:
        self.language.prior = prior

    @property
    def prompt_terms(self) -> Callable[[str], list[str]] | None:
        """lang -> glossary terms likely said in it, prompted before the context (PromptContext.prompt_terms)."""
        return self.context.prompt_terms

    @prompt_terms.setter
    def prompt_terms(self, terms: Callable[[str], list[str]] | None) -> None:
        self.context.prompt_terms = terms

    @property
    def abort_partials(self) -> bool:
        """Real time: a partial in progress is aborted when speech pauses (RecognizerStage.abort_partials)."""
        return self.recognizer.abort_partials

    def reset_context(self, reason: str) -> None:
        """Forget the previous text: the next decode starts without context. Recognizer thread only."""
        self.context.reset(reason)

    def end_utterance_at_pause(self, reason: str) -> None:
        """Finalise the utterance held open by a pause now; a no-op when none is held. Recognizer thread only."""
        self.utterances.end_utterance_at_pause(reason)

    def speaker_changed(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Did the voice change across a pause? False without speaker turns. Recognizer thread only."""
        return self.speaker_stage.changed(before, after)

    def routes(self, source: str) -> dict[str, Route | None]:
        """Every target -> its translation route from `source` (None: none, or the source itself)."""
        if source not in self._routes:
            self._routes[source] = {t: find_route(source, t, self.translators.keys(),
                                                  whisper_to_english=bool(getattr(self.asr, "multilingual", True)))
                                    for t in self.targets}
        return self._routes[source]

    # ---- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        stages = {"voice-activity": self._voice_activity, "recognizer": self._recognizer,
                  "translator": self._translator}
        self._threads = {name: threading.Thread(target=work, name=name, daemon=True) for name, work in stages.items()}
        for t in self._threads.values():
            t.start()

    def feed(self, samples: np.ndarray, wall: float | None = None, *, block: bool = False) -> None:
        """Called by capture: never blocks. When the recognizer is far behind, the oldest audio is dropped and counted.

        `block=True` is for files read faster than real time: wait for room instead of dropping.
        """
        item = (samples, time.monotonic() if wall is None else wall)
        if block:
            self._audio_q.put(item)
        else:
            put_dropping_oldest(self._audio_q, item, dropped=self._audio_dropped)

    def _audio_dropped(self) -> None:
        self.stats.audio_dropped_chunks += 1

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Finish what was fed (the open utterance becomes a final), then stop the workers.

        Always returns within about `timeout` seconds, even with a full queue or a dead worker; False when a
        worker was still running then (logged)."""
        deadline = time.monotonic() + timeout
        taker = self._threads.get("voice-activity")  # the stage that takes audio
        taker_alive = taker is not None and taker.is_alive()
        if not (taker_alive and put_with_timeout(self._audio_q, _STOP, timeout / 2)):
            put_dropping_oldest(self._audio_q, _STOP)  # nobody is taking audio: the oldest chunk makes room
        for t in self._threads.values():
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [name for name, t in self._threads.items() if t.is_alive()]
        if alive:
            log.error("pipeline stop: %s still busy after %.0f s; leaving it behind", ", ".join(alive), timeout)
        return not alive

    def dead_stages(self) -> list[str]:
        """Workers that were started and have exited on their own (not by stop())."""
        return [name for name, t in self._threads.items() if not t.is_alive() and not getattr(t, "stopped", False)]

    def backlog_s(self) -> float:
        return (self._audio_q.qsize() + self._speech_q.qsize()) * 512 / SR

    def _add_busy(self, seconds: float) -> None:
        with self._busy_lock:
            self.stats.busy_s += seconds

    # ---- voice-activity thread ----------------------------------------------------------------------------
    def _voice_activity(self) -> None:
        """When it gives up, the recognizer is told to stop."""
        self.health.run("voice-activity", self._detect_speech, give_up=lambda: self._hand_over(_STOP))

    def _detect_speech(self) -> None:
        """Audio -> speech (the VAD's events), chunk by chunk, ahead of the recognizer."""
        while True:
            item = self._audio_q.get()
            if item is _STOP:
                self._hand_over(Speech(self.segmenter.flush(), time.monotonic(), 0, 0.0, False))
                self._hand_over(_STOP)
                return
            samples, wall = item
            t0 = time.perf_counter()
            events = self.segmenter.process(samples)
            speech = Speech(events, wall, len(samples), self.segmenter.trailing_silence_s, self.segmenter.in_onset)
            self.recognizer.speech_pausing(speech.trailing_silence_s)
            self._add_busy(time.perf_counter() - t0)
            self._hand_over(speech)
            self.health.ok("voice-activity")

    def _hand_over(self, item) -> None:
        """To the recognizer, waiting while it works; when it is dead, the oldest waiting chunk is dropped."""
        while self._threads["recognizer"].is_alive():
            try:
                self._speech_q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        put_dropping_oldest(self._speech_q, item)

    # ---- recognizer thread --------------------------------------------------------------------------------
    def _recognizer(self) -> None:
        """A restart keeps the open utterance (its final is not lost) and makes the final being made again; when
        it gives up, the translator is told to stop."""
        self.health.run("recognizer", self._recognize, after_restart=self._retry_final,
                         give_up=lambda: put_with_timeout(self._caption_q, _STOP, STOP_TIMEOUT_S))

    def _recognize(self) -> None:
        while True:
            item = self._speech_q.get()
            if item is _STOP:
                self.utterances.end()
                put_with_timeout(self._caption_q, _STOP, STOP_TIMEOUT_S)
                return
            t0 = time.perf_counter()
            self.stats.audio_s += item.samples / SR
            self.utterances.chunk(item)
            self._add_busy(time.perf_counter() - t0)
            self.health.ok("recognizer")

    def _retry_final(self) -> None:
        """After a restart: decode again the utterance whose final was being made when the stage failed (once)."""
        utt = self.utterances.take_finalising()
        if utt is None:
            return
        try:
            self.utterances.finalise(utt, time.monotonic())
        except Exception as exc:
            log.exception("utterance %s: final failed twice; dropped", utt.id)
            self.errors.append(f"recognizer: utterance {utt.id} dropped after two failures: {exc}")

    def _to_translator(self, cap: SourceCaption) -> None:
        """Recognizer -> translator. A partial is dropped when the queue is full (counted: partial translations are
        the first thing to go); a final waits for room, a withdrawal (an empty final) at most STOP_TIMEOUT_S."""
        if not cap.final:
            try:
                self._caption_q.put_nowait(cap)
            except queue.Full:
                self.stats.partials_skipped += 1
        elif cap.text:
            self._caption_q.put(cap)
        else:
            put_with_timeout(self._caption_q, cap, STOP_TIMEOUT_S)

    # ---- translator thread ----------------------------------------------------------------------------------
    def _translator(self) -> None:
        """One caption at a time; an exception restarts the stage and a final is translated again (once), until
        the stage has used its restart budget: then it stays dead for the watchdog."""
        while True:
            cap = self._caption_q.get()
            if cap is _STOP:
                threading.current_thread().stopped = True
                return
            for attempt in (1, 2) if cap.final else (1,):
                try:
                    self.translation.translate(cap)
                    self.health.ok("translator")
                    break
                except Exception as exc:
                    log.exception("translation of utterance %s failed (attempt %d)", cap.utt_id, attempt)
                    if not self.health.may_restart("translator", exc):
                        return
            if cap.final:
                self.translation.retract(cap)

    # ---- events (recognizer and translator threads) -----------------------------------------------------
    def _emit(self, utt_id: str, final: bool, lang: str, source_lang: str, text: str, start: float, end: float,
              latency: dict, stable: str = "", speaker: dict | None = None, untranslated: bool = False) -> None:
        """A caption event to the sink, numbered per (utterance, language); a final ends the numbering."""
        key = (utt_id, lang)
        rev = self._revs.get(key, 0) + 1
        self._revs[key] = rev
        if final:
            self._revs.pop(key, None)
        self.sink(CaptionEvent(id=utt_id, rev=rev, final=final, lang=lang, source_lang=source_lang, text=text,
                               lines=layout(text), start=round(start, 3), end=round(end, 3), emitted=time.time(),
                               latency={k: round(v, 4) for k, v in latency.items()},
                               stable=text if final else stable, speaker=speaker, untranslated=untranslated))
