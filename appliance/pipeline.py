"""The speech pipeline: audio chunks -> voice activity -> streaming recognition -> translation -> caption events.

Threads and bounded queues; each worker owns its state (no locks on stream state):
  capture thread  --audio queue (bounded, drops oldest with a counter)-->  recognizer thread
  recognizer      --caption queue (partials dropped when full, finals never)-->  translator thread
  translator      --> sink(CaptionEvent)   (the publisher, a collector, a printer...)
The recognizer skips partials when it falls behind (audio backlog) and never skips a final.
A worker that raises is restarted in place (a final being made is decoded or translated once more), up to
STAGE_RESTARTS in STAGE_RESTART_WINDOW_S; past that it stays dead and `dead_stages()` tells the watchdog.
Everything kept is bounded (latency Windows, the error deque, per-utterance maps pruned at each final).
Accuracy (docs/accuracy.md): the language is chosen among the room's spoken languages with the previous turn as
prior; decodes are conditioned on the text finalised before (reset on a language change, a long silence, a
rejected final); a pause inside an unfinished sentence holds the utterance open; a final's translation is checked
by the reverse model and withheld (source text published, marked untranslated) when nothing agrees.
An optional `speakers` object (appliance.speakers.SpeakerTracker) names the speaker of partials and finals on
the recognizer thread; captions go on without it.
This module imports no MQTT and no Flask.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from appliance import guards
from appliance.asr import language as lid
from appliance.asr.endpoint import finished
from appliance.asr.stable import StablePrefix
from appliance.asr.whisper import Aborted
from appliance.captions import layout
from appliance.events import CaptionEvent
from appliance.routes import Route, find_route
from appliance.translate.stage import SourceCaption, TranslationStage

log = logging.getLogger(__name__)

SR = 16000
AUDIO_QUEUE_SECONDS = 30.0  # capture keeps this much audio waiting before dropping the oldest
BEHIND_SECONDS = 1.0  # audio backlog above which partials are skipped
MIN_PARTIAL_AUDIO_S = 0.6  # no partial before this much speech
CUT_SEARCH_S = 4.0  # when a segment reaches max length, cut at the quietest point of its last seconds
END_PROBE_S = 0.03  # silence after speech before the end-of-speech probe decodes (and a partial in progress aborts):
# the first silent VAD window. Measured on the accuracy bench (English, real time): 0.1 s -> 0.03 s and the abort
# took the final latency p50 from 0.54 to 0.41 s, the same WER
HIDDEN_PROBE_S = 0.1  # ... when the probe's language is not the partials': silence before it decodes (not shown)
SPEECH_QUEUE_CHUNKS = 64  # voice activity -> recognizer: chunks waiting (backpressure to the audio queue beyond)
PARTIAL_DUTY = 2.0  # in real time, at least this many seconds of audio per second spent on one partial
LANGUAGE_RETRY_S = 0.5  # until the turn's language is locked, it is detected again after this much new speech
# (not the partial interval: a detection is an encoder run without a decode, and the first partial waits for it)
FALLBACK_BEAM = 4  # beam used when a greedy final fails Whisper's thresholds
STATS_WINDOW = 2000  # latency samples kept per series (counts and sums stay exact)
ERRORS_KEPT = 20  # worker error messages kept
STAGE_RESTARTS = 5  # a worker that fails this often ...
STAGE_RESTART_WINDOW_S = 60.0  # ... within this window stays dead: health reports it and the watchdog stops
STOP_TIMEOUT_S = 120.0  # stop() gives up waiting for the workers after this long


def _put_dropping_oldest(q: queue.Queue, item) -> None:
    """Put without blocking: a full queue loses its oldest item."""
    while True:
        try:
            q.put_nowait(item)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass


def _put_with_timeout(q: queue.Queue, item, timeout_s: float) -> bool:
    """Put, waiting at most `timeout_s` (a dead consumer must not hang its producer)."""
    try:
        q.put(item, timeout=timeout_s)
        return True
    except queue.Full:
        log.error("queue full for %.0f s: its consumer is stuck or dead", timeout_s)
        return False
# Context across segments: each decode is conditioned on the text already finalised in the same turn and language
# (Whisper's previous-text prompt). Reset on a language change, a long silence, a rejected final, or reset_context().
CONTEXT_MAX_CHARS = 300  # previous text given to Whisper: about the last two sentences
CONTEXT_RESET_SILENCE_S = 8.0  # a silence this long starts a new context (a new topic, a new speaker)
FINAL_PAD_S: float | None = 2.0  # silence after the audio in the encoder input of finals (a longer window than the
# model's 1 s: fewer wrong last words)
PARTIAL_PAD_S: float | None = None  # ... of partials (None: the model's 1 s). Partials decoded with the final's
# window, so that the last one could be the final, were measured on the accuracy bench and cost more than they save:
# RTF 0.50 -> 0.66, partials skipped behind real time, final latency p50 0.55 -> 0.70 s
SPEAKER_CHECK_S = 1.0  # speech after a held pause before the voices either side are compared (speaker turns on)
LEFT_CONTEXT_MAX_S = 8.0  # left audio context: the previous final's audio, when it is at most this long ...
LEFT_CONTEXT_GAP_S = 2.0  # ... and ended at most this long before the utterance (asr.left_context_s) ...
LEFT_CONTEXT_MAX_UTT_S = 2.0  # ... for an utterance of at most this much audio: a short one (often the rest of a
# sentence Whisper closed with a full stop at a pause) is where Whisper lacks context; a longer one carries its own.
# Measured on the accuracy bench's English part, six pause layouts fed as fast as possible: WER 12.2 % -> 9.2 % (all
# utterances: 9.2 %, at 15 % more decoding); in real time on three: 12.2 % -> 9.6 %, final latency p50 unchanged
LEFT_CONTEXT_SILENCE_S = 0.3  # the pause put between them (the VAD keeps no audio of the real one)
TERMS_PROMPT_MAX_CHARS = 150  # glossary terms of the language put before the previous text in the prompt (whole terms)


def _rejection(result, utt: _Utterance) -> str | None:
    """Why `result` (a decode of `utt`) must not become a caption, or None (guards.asr_rejection)."""
    return guards.asr_rejection(result.text, avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
                                duration_s=utt.seconds)


TRAILING_SILENCE = int(0.2 * SR)  # of the VAD's hangover, keep this much silence after speech for the final decode
_STOP = object()


class Window:
    """The last `maxlen` samples of a series (iterable like a list) plus the exact count and sum of all of them."""

    def __init__(self, values: Iterable[float] = (), maxlen: int = STATS_WINDOW):
        self._recent: deque = deque(maxlen=maxlen)
        self.count = 0
        self.total = 0.0
        for v in values:
            self.append(v)

    def append(self, value: float) -> None:
        self._recent.append(value)
        self.count += 1
        self.total += value

    def __iter__(self):
        return iter(list(self._recent))

    def __len__(self) -> int:
        return len(self._recent)

    def __repr__(self) -> str:
        return f"Window(count={self.count}, recent={list(self._recent)[-5:]})"


@dataclass
class Stats:
    """Counters and latencies the status page and the benchmark read (written by the workers only)."""

    audio_s: float = 0.0
    busy_s: float = 0.0
    partials_busy_s: float = 0.0  # of busy_s: partials while speech goes on (aborted ones and language detections
    # too; not the end-of-speech probe)
    partials: int = 0
    partials_skipped: int = 0
    partials_aborted: int = 0  # partial decodes stopped because speech paused (the end-of-speech probe went first)
    finals: int = 0
    finals_from_probe: int = 0  # finals whose decode was done by the end-of-speech probe (or at the pause)
    pauses_held: int = 0  # pauses inside a sentence that kept the utterance open (speech resumed)
    rejected: int = 0
    mt_rejected: int = 0
    mt_withheld: int = 0  # final translations withheld (no candidate agreed with the source): source text published
    mt_reranked: int = 0  # final translations where the reverse model chose another beam candidate
    language_changes: int = 0  # finals whose language, decided on the whole utterance, differed from the partials'
    prompt_echoes: int = 0  # decodes that only repeated the previous text (decoded again without it)
    audio_dropped_chunks: int = 0
    behind: bool = False
    final_latency_s: Window = field(default_factory=Window)
    first_partial_s: Window = field(default_factory=Window)
    mt_ms: Window = field(default_factory=Window)
    translated_extra_by_source: dict[str, Window] = field(default_factory=dict)  # source lang -> delays
    restarts: int = 0  # worker restarts after an exception

    def translated(self, source_lang: str, extra_s: float) -> None:
        """A final's translation went out `extra_s` after its source final."""
        self.translated_extra_by_source.setdefault(source_lang, Window()).append(extra_s)

    @property
    def translated_extra_s(self) -> list[float]:
        """Source final -> its translations out, every source language."""
        return [v for values in self.translated_extra_by_source.values() for v in values]

    @property
    def rtf(self) -> float:
        return self.busy_s / self.audio_s if self.audio_s else 0.0


@dataclass
class _Utterance:
    id: str
    start: float  # audio time of the first sample
    onset_wall: float  # wall time when speech onset was captured
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    language: str | None = None
    decoded_at: int = 0  # sample count at the last partial decode
    stable: StablePrefix = field(default_factory=StablePrefix)
    first_partial_done: bool = False
    last: object | None = None  # the last partial's transcription ...
    last_samples: int = 0  # ... and how many samples it covered
    last_lang: str | None = None  # ... and its language
    final_decoded: tuple | None = None  # ((samples, language), transcription) of the last _final_decode
    speaker: dict | None = None  # {"id", "name"} once known
    probed: bool = False  # ... and whether it was the end-of-speech probe (decoded as a final would be)
    gap_s: float = 0.0  # silence left out between the parts of an utterance held open across pauses
    resumes: _Held | None = None  # speech after a held pause, until its voice is compared with the held one's
    detected: tuple[int, str] | None = None  # (samples, language): the last whole-utterance language decision

    @property
    def end(self) -> float:
        """Audio time just after the last sample (pauses left out of the audio included)."""
        return self.start + self.seconds + self.gap_s

    def audio(self) -> np.ndarray:
        if len(self.chunks) > 1:
            self.chunks = [np.concatenate(self.chunks)]
        return self.chunks[0] if self.chunks else np.zeros(0, np.float32)

    @property
    def seconds(self) -> float:
        return self.samples / SR


@dataclass
class _Held:
    """An utterance whose speech paused mid-sentence: it becomes final if the pause grows long, or continues."""

    utt: _Utterance
    speech_end: float  # audio time of the last speech
    speech_end_wall: float
    speech_samples: int


@dataclass(frozen=True)
class _Speech:
    """Voice activity -> recognizer hand-over, one per captured chunk: the VAD's events and its state after them."""

    events: list
    wall: float  # when the chunk was captured
    samples: int  # the chunk's length
    trailing_silence_s: float  # silence at the end of an open segment (speech may be ending)
    in_onset: bool  # speech may be starting


class Pipeline:
    """Feed audio with `feed()`; caption events come out of `sink`. `start()` / `stop()` the workers."""

    def __init__(self, *, asr, segmenter, translators: dict[tuple[str, str], object], sink: Callable[[CaptionEvent], None],
                 source_lang: str = "auto", targets: Iterable[str] = (), beam_size: int = 1, mt_beam_size: int = 1,
                 partial_interval_s: float = 1.0, max_segment_s: float = 15.0, partials: bool = True,
                 skip_when_behind: bool = True, speakers=None, spoken: Iterable[str] = (),
                 sentence_pause_s: float = 0.0, left_context_s: float = LEFT_CONTEXT_GAP_S, mt_guard: bool = True,
                 prompt_terms: Callable[[str], list[str]] | None = None):
        self.asr = asr
        self.segmenter = segmenter
        self.translators = dict(translators)
        self.sink = sink
        self.source_lang = source_lang
        self.candidates = lid.candidates(getattr(asr, "languages", ["en"]), list(spoken)) if source_lang == "auto" \
            else [source_lang]
        if not self.candidates:
            raise ValueError(f"none of the spoken languages {list(spoken)} is known to the speech model")
        # speaker id (None: unknown) -> prior over languages; the default: the speaker's last language, else the turn's
        self.language_prior: Callable[[str | None], dict[str, float]] = self._prior
        self._last_lang: str | None = None  # the previous turn's language (the default prior)
        # levers of accuracy against latency (the accuracy bench measures each); defaults are the module's constants
        self.context_max_chars = CONTEXT_MAX_CHARS  # 0: no previous-text prompt
        self.prompt_terms = prompt_terms  # lang -> terms likely said in it (the glossary's), prompted before the context
        self.partial_pad_s, self.final_pad_s = PARTIAL_PAD_S, FINAL_PAD_S
        self._context: list[str] = []  # finalised texts of the current context (see CONTEXT_*)
        self._context_lang: str | None = None
        self._context_end = 0.0  # audio time where the context's last final ended
        self.left_context_gap_s = left_context_s  # 0: no left audio context
        self.left_context_max_utt_s = LEFT_CONTEXT_MAX_UTT_S  # ... and only for utterances at most this long
        self._left: tuple[np.ndarray, str] | None = None  # the context's last final: (its audio, its text)
        self.targets = list(targets)
        self.beam_size = beam_size
        self.partial_interval = int(partial_interval_s * SR)
        self.max_segment = int(max_segment_s * SR)
        self.sentence_pause_s = sentence_pause_s  # a shorter pause keeps an unfinished sentence open (0: never)
        self._held: _Held | None = None
        self.partials = partials
        self.skip_when_behind = skip_when_behind
        self.speakers = speakers  # None: speaker turns off
        self.stats = Stats()
        self._audio_q: queue.Queue = queue.Queue(maxsize=max(8, int(AUDIO_QUEUE_SECONDS * SR / 512)))
        self._speech_q: queue.Queue = queue.Queue(maxsize=SPEECH_QUEUE_CHUNKS)  # voice activity -> recognizer
        self._busy_lock = threading.Lock()  # busy_s is added to by two workers
        # real time: a partial in progress when speech pauses is aborted, so that the end-of-speech probe (which
        # becomes the final) starts at once instead of after it
        self.abort_partials = skip_when_behind and callable(getattr(asr, "abort", None))
        self._trailing_silence_s = 0.0  # the voice-activity state of the chunk the recognizer is at
        self._in_onset = False
        self._caption_q: queue.Queue = queue.Queue(maxsize=64)
        self._ids = itertools.count(1)
        self._id_prefix = f"{int(time.time() * 1000):x}"
        self._revs: dict[tuple[str, str], int] = {}
        self._threads: dict[str, threading.Thread] = {}  # stage name -> its worker
        self._utt: _Utterance | None = None
        self._routes: dict[str, dict[str, Route | None]] = {}
        self.translation = TranslationStage(  # the translator thread's work
            translators=self.translators, routes=self.routes, emit=self._emit,
            shown=lambda utt_id, lang: (utt_id, lang) in self._revs, stats=self.stats, beam_size=mt_beam_size,
            guard=mt_guard)
        self.errors: deque[str] = deque(maxlen=ERRORS_KEPT)
        self.warnings: deque[str] = deque(maxlen=ERRORS_KEPT)  # problems that cost a feature (speaker labels), not captions
        self.failing: dict[str, str] = {}  # stage -> its last error, until that stage next succeeds
        self._restarts: dict[str, deque] = {"voice-activity": deque(), "recognizer": deque(), "translator": deque()}
        self._finalising: _Utterance | None = None  # the utterance being finalised (kept across a restart)
        self._audio_t = 0.0  # audio seconds taken from the queue so far
        self._last_partial_s = 0.0  # how long the last partial decode took

    # ---- wiring ---------------------------------------------------------------------------------------------
    def routes(self, source: str) -> dict[str, Route | None]:
        if source not in self._routes:
            self._routes[source] = {t: find_route(source, t, self.translators.keys(),
                                                  whisper_to_english=self._can_translate_task()) for t in self.targets}
        return self._routes[source]

    def _can_translate_task(self) -> bool:
        return bool(getattr(self.asr, "multilingual", True))

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
            return
        while True:
            try:
                self._audio_q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._audio_q.get_nowait()
                    self.stats.audio_dropped_chunks += 1
                except queue.Empty:
                    pass

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Finish what was fed (the open utterance becomes a final), then stop the workers.

        Always returns within about `timeout` seconds, even with a full queue or a dead worker; False when a
        worker was still running then (logged)."""
        deadline = time.monotonic() + timeout
        taker = self._threads.get("voice-activity")  # the stage that takes audio
        taker_alive = taker is not None and taker.is_alive()
        if not (taker_alive and _put_with_timeout(self._audio_q, _STOP, timeout / 2)):
            _put_dropping_oldest(self._audio_q, _STOP)  # nobody is taking audio: the oldest chunk makes room
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

    # ---- voice activity ---------------------------------------------------------------------------------------
    def _voice_activity(self) -> None:
        """Runs `_detect_speech`; an exception restarts it (the segmenter keeps its state) until the stage has failed
        STAGE_RESTARTS times in a window: then it stays dead for the watchdog and the recognizer is told to stop."""
        while True:
            try:
                self._detect_speech()
                threading.current_thread().stopped = True
                return
            except Exception as exc:
                log.exception("voice activity failed")
                if not self._may_restart("voice-activity", exc):
                    self._hand_over(_STOP)
                    return

    def _detect_speech(self) -> None:
        """Audio -> speech segments, chunk by chunk, ahead of the recognizer: it sees a pause while the recognizer is
        still decoding, and aborts a partial then (see `abort_partials`)."""
        while True:
            item = self._audio_q.get()
            if item is _STOP:
                self._hand_over(_Speech(self.segmenter.flush(), time.monotonic(), 0, 0.0, False))
                self._hand_over(_STOP)
                return
            samples, wall = item
            t0 = time.perf_counter()
            events = self.segmenter.process(samples)
            speech = _Speech(events, wall, len(samples), self.segmenter.trailing_silence_s, self.segmenter.in_onset)
            if self.abort_partials and speech.trailing_silence_s >= END_PROBE_S and self.asr.abort():
                log.debug("speech paused: partial decode aborted for the end-of-speech probe")
            self._add_busy(time.perf_counter() - t0)
            self._hand_over(speech)
            self.failing.pop("voice-activity", None)

    def _hand_over(self, item) -> None:
        """To the recognizer, waiting while it works; when it is dead, the oldest waiting chunk is dropped."""
        while self._threads["recognizer"].is_alive():
            try:
                self._speech_q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        _put_dropping_oldest(self._speech_q, item)

    # ---- recognizer -----------------------------------------------------------------------------------------
    def _recognizer(self) -> None:
        """Runs `_recognize`; an exception restarts it (the open utterance is kept, so its final is not lost)
        until the stage has failed STAGE_RESTARTS times in a window: then it stays dead for the watchdog."""
        while True:
            try:
                self._recognize()
                threading.current_thread().stopped = True
                return
            except Exception as exc:  # a crashed worker must be visible, not silent
                log.exception("recognizer failed")
                if not self._may_restart("recognizer", exc):
                    _put_with_timeout(self._caption_q, _STOP, STOP_TIMEOUT_S)
                    return
                self._retry_final()

    def _retry_final(self) -> None:
        """After a restart: decode again the utterance whose final was being made when the stage failed (once)."""
        utt, self._finalising = self._finalising, None
        if utt is None:
            return
        if self._utt is utt:
            self._utt = None
        try:
            self._finalise(utt, time.monotonic())
        except Exception as exc:
            log.exception("utterance %s: final failed twice; dropped", utt.id)
            self.errors.append(f"recognizer: utterance {utt.id} dropped after two failures: {exc}")

    def _may_restart(self, stage: str, exc: Exception) -> bool:
        message = f"{stage}: {exc}"
        self.errors.append(message)
        self.failing[stage] = message
        times, now = self._restarts[stage], time.monotonic()
        while times and now - times[0] > STAGE_RESTART_WINDOW_S:
            times.popleft()
        if len(times) >= STAGE_RESTARTS:
            log.error("%s failed %d times in %.0f s: left stopped", stage, len(times) + 1, STAGE_RESTART_WINDOW_S)
            return False
        times.append(now)
        self.stats.restarts += 1
        log.warning("%s restarted after: %s", stage, exc)
        return True

    def _recognize(self) -> None:
        while True:
            item = self._speech_q.get()
            if item is _STOP:
                self.end_utterance_at_pause("end of audio")
                if self._utt is not None:
                    self._finalise(self._utt, time.monotonic())
                    self._utt = None
                _put_with_timeout(self._caption_q, _STOP, STOP_TIMEOUT_S)
                return
            t0, wall = time.perf_counter(), item.wall
            self.stats.audio_s += item.samples / SR
            self._audio_t += item.samples / SR
            self._trailing_silence_s, self._in_onset = item.trailing_silence_s, item.in_onset
            for ev in item.events:
                self._on_vad(ev, wall)
            self._probe_end(wall)
            if (self._held is not None and self._utt is None and not self._in_onset
                    and self._audio_t - self._held.speech_end >= self.sentence_pause_s):  # speech resuming: wait for the VAD to confirm it
                self.end_utterance_at_pause("long pause")
            self._add_busy(time.perf_counter() - t0)
            self.failing.pop("recognizer", None)

    def _on_vad(self, ev, wall: float) -> None:
        if ev.kind == "start" and self._held is not None and self.speakers is None:
            self._continue_held(ev.start)  # speech resumed inside a sentence: the same utterance
        elif ev.kind == "start":
            # wall time when speech began: the chunk's capture time minus the audio since the first speech window
            onset = ev.onset if getattr(ev, "onset", None) is not None else ev.start
            onset_wall = wall - max(0.0, self._audio_t - onset)
            self._utt = _Utterance(id=f"{self._id_prefix}-{next(self._ids)}", start=ev.start, onset_wall=onset_wall,
                                   language=self.candidates[0] if lid.fixed(len(self.candidates)) else None)
            if self._held is not None:  # speaker turns on: the same utterance only if the voice is the same
                self._utt.resumes = self._held
        utt = self._utt
        if utt is None:
            return
        samples = ev.samples[:TRAILING_SILENCE] if ev.kind == "end" else ev.samples
        if len(samples):
            utt.chunks.append(samples)
            utt.samples += len(samples)
        if utt.resumes is not None:
            if utt.seconds < SPEAKER_CHECK_S and ev.kind != "end":
                return  # no partials until decided: the speech may yet join the held utterance
            utt = self._resume(utt)
        if ev.kind == "end":
            # wall time when the last speech was captured: the chunk's capture time minus the audio after speech end
            speech_end = ev.speech_end if ev.speech_end is not None else ev.end
            self._utt = None
            self._pause(_Held(utt, speech_end, wall - max(0.0, self._audio_t - speech_end), utt.samples - len(samples)))
        elif utt.samples >= self.max_segment:
            self._cut(utt, wall)
        elif (self.partials and utt.seconds >= MIN_PARTIAL_AUDIO_S
              and (utt.samples - utt.decoded_at >= self._partial_gap(utt) or utt.decoded_at == 0)):
            # (the first attempt does not wait for the cadence: its partial tells people they are heard)
            if self.skip_when_behind and self.backlog_s() > BEHIND_SECONDS:
                self.stats.partials_skipped += 1
                utt.decoded_at = utt.samples
                if not self.stats.behind:
                    log.warning("recognition is behind real time (%.1f s backlog): skipping partials", self.backlog_s())
                self.stats.behind = True
            else:
                self.stats.behind = False
                t0 = time.perf_counter()
                self._partial(utt, wall)
                self.stats.partials_busy_s += time.perf_counter() - t0

    def _pause(self, held: _Held) -> None:
        """Speech ended: a final now if the text ends a sentence (or holding is off), else hold the utterance open."""
        utt = held.utt
        self._finalising = utt  # out of self._utt now: a restart after a failure below makes its final
        if self.sentence_pause_s > 0 and len(utt.audio()) >= SR * 0.2:
            lang = self._settle_language(utt, utt.audio(), held.speech_samples, held.speech_end_wall)
            result = self._final_decode(utt, lang, held.speech_samples)
            utt.last, utt.last_samples, utt.probed, utt.last_lang = result, len(utt.audio()), True, lang  # the final reuses this decode
            if not finished(result.text, self._audio_t - held.speech_end, self.sentence_pause_s):
                log.debug("utterance %s held open at a pause: %r", utt.id, result.text)
                self._held = held
                self._finalising = None  # kept in self._held instead
                return
        self._finalise(utt, held.speech_end_wall, speech_samples=held.speech_samples)

    def _continue_held(self, start: float) -> _Utterance:
        """The held utterance goes on: speech resumed at audio time `start` (before its samples are added)."""
        held, self._held = self._held, None
        self._utt = held.utt
        held.utt.gap_s += max(0.0, start - held.utt.end)
        self.stats.pauses_held += 1
        return held.utt

    def _resume(self, utt: _Utterance) -> _Utterance:
        """Speech after a held pause, SPEAKER_CHECK_S of it in (or all of it): another voice ends the held utterance
        at its pause and this speech is a new utterance; the same voice continues the held utterance with it."""
        held, utt.resumes = utt.resumes, None
        if self.speaker_changed(held.utt.audio()[:held.speech_samples], utt.audio()):
            self.end_utterance_at_pause("speaker change")
            return utt
        joined = self._continue_held(utt.start)
        joined.chunks += utt.chunks
        joined.samples += utt.samples
        return joined

    def end_utterance_at_pause(self, reason: str) -> None:
        """Finalise the utterance held open by a pause now (e.g. the speaker changed); a no-op when none is held.
        Recognizer thread only."""
        held, self._held = self._held, None
        if held is not None:
            log.debug("utterance %s ends at its pause (%s)", held.utt.id, reason)
            self._finalise(held.utt, held.speech_end_wall, speech_samples=held.speech_samples)

    def _probe_end(self, wall: float) -> None:
        """Speech just paused: decode what we have now, as the final would (its window, left audio context and
        beam). If the pause turns out to be the end (after the VAD's hangover), this decode is the final and the final
        costs no decoding time; if speech resumes, it was a partial."""
        utt = self._utt
        if (utt is None or utt.resumes is not None or not self.partials or utt.last_samples >= utt.samples
                or utt.seconds < MIN_PARTIAL_AUDIO_S or utt.language is None
                or self._trailing_silence_s < END_PROBE_S
                or (self.skip_when_behind and self.backlog_s() > BEHIND_SECONDS)):
            return
        self._partial(utt, wall, probe=True)

    def _abortable(self, partial: bool):
        """The voice-activity stage may abort what runs in this block (real time, partials only)."""
        return self.asr.abortable() if partial and self.abort_partials else contextlib.nullcontext()

    def _partial_gap(self, utt: _Utterance) -> int:
        """Samples of new audio before the next partial: the configured cadence, stretched in real time so that
        partials use at most 1/PARTIAL_DUTY of the recognizer's time (finals and translation keep the rest); at
        most LANGUAGE_RETRY_S while the turn's language is not locked."""
        gap = self.partial_interval
        if self.skip_when_behind:
            gap = max(gap, int(PARTIAL_DUTY * self._last_partial_s * SR))
        return gap if utt.language is not None else min(gap, int(LANGUAGE_RETRY_S * SR))

    def _choose_language(self, audio: np.ndarray, pad_s: float | None, prior: dict[str, float]) -> lid.Choice:
        """The most likely candidate for `audio` under `prior`, from the encoding a decode with `pad_s` shares."""
        return lid.choose(self.asr.detect_language(audio, pad_seconds=pad_s), allowed=self.candidates, prior=prior)

    def _lock_language(self, utt: _Utterance, audio: np.ndarray) -> str | None:
        """Detect the turn's language among the candidates, weighted by the prior (`language_prior`: the language
        of the utterance's speaker's last final when the speaker is known, else the previous turn's), and lock it
        once confident."""
        if utt.language is None:
            n = len(self.candidates)
            prior = self.language_prior(utt.speaker["id"] if utt.speaker else None)
            choice = self._choose_language(audio, self.partial_pad_s, prior)  # shared with the partial's decode
            if lid.should_lock(choice, utt.seconds, n):
                utt.language = choice.language
                utt.detected = (len(audio), choice.language)
                log.info("utterance %s: language %s (p=%.2f among %d, %.1f s), locked for the turn", utt.id,
                         choice.language, choice.probability, n, utt.seconds)
        return utt.language

    def _final_language(self, utt: _Utterance, audio: np.ndarray, speech_samples: int | None = None) -> str:
        """The language of the utterance as a whole: detected again on all its audio (the early lock heard a second
        of it), from the encoding the final's decode uses. A decision on at least
        `speech_samples` samples (the end-of-speech probe's) is reused."""
        if lid.fixed(len(self.candidates)):
            return self.candidates[0]
        done = utt.detected
        if done is not None and (done[0] == len(audio) or (speech_samples is not None and done[0] >= speech_samples)):
            return done[1]
        # hysteresis within the turn: the partials' language (itself chosen with the turn's prior) is kept unless the
        # whole utterance clearly says another; with no partial lock, the turn's prior as for the lock
        prior = lid.sticky_prior(utt.language) if utt.language is not None else \
            self.language_prior(utt.speaker["id"] if utt.speaker else None)
        choice = self._choose_language(audio, self.final_pad_s, prior)  # shared with the final's decode
        utt.detected = (len(audio), choice.language)
        return choice.language

    def _settle_language(self, utt: _Utterance, audio: np.ndarray, speech_samples: int | None,
                         speech_end_wall: float) -> str:
        """The final's language. When it is not the one the partials were shown in, those partials (and their
        translations) are withdrawn and the utterance goes on under a new id, so that no display keeps a caption in
        the wrong language and no caption changes language under the same id."""
        lang = self._final_language(utt, audio, speech_samples)
        if utt.language is not None and lang != utt.language:
            old = utt.id
            self._withdraw(utt, utt.language, speech_end_wall)
            utt.id = f"{self._id_prefix}-{next(self._ids)}"
            utt.stable = StablePrefix()
            if utt.last_lang != lang:  # (a probe may have decoded it in the new language already)
                utt.last, utt.last_samples, utt.probed = None, 0, False
            self.stats.language_changes += 1
            log.info("utterance %s: the whole utterance is %s, not %s: partials withdrawn, final as %s", old, lang,
                     utt.language, utt.id)
        elif utt.language is None:
            log.info("utterance %s: language %s at the final (among %d, %.1f s)", utt.id, lang, len(self.candidates),
                     utt.seconds)
        utt.language = lang
        return lang

    def _withdraw(self, utt: _Utterance, lang: str, speech_end_wall: float) -> None:
        """Retract what was shown of `utt` in `lang` (an empty final), and its translations (translator thread)."""
        self._ask_speakers("discard", utt.id)
        if utt.first_partial_done:
            self._emit(utt.id, True, lang, lang, "", utt.start, utt.end, {})
            _put_with_timeout(self._caption_q, SourceCaption(utt.id, True, lang, "", utt.start, utt.end, None,
                                                              speech_end_wall, 0.0), STOP_TIMEOUT_S)

    # ---- context across segments ----------------------------------------------------------------------------------
    def reset_context(self, reason: str) -> None:
        """Forget the previous text: the next decode starts without context (also for other features, e.g. a
        speaker change). Called by the recognizer thread only."""
        if self._context:
            log.debug("context reset (%s)", reason)
        self._context, self._context_lang, self._left = [], None, None

    def _prompt(self, utt: _Utterance, lang: str, reset: bool = True) -> str | None:
        """The previous text to condition `utt`'s decodes on, after the reset rules (`reset=False`: none in another
        language, but the context is kept: the decode may not become a final in that language)."""
        if self._context_lang is not None and self._context_lang != lang:
            if not reset:
                return None
            self.reset_context(f"language {self._context_lang} -> {lang}")
        elif self._context and utt.start - self._context_end > CONTEXT_RESET_SILENCE_S:
            self.reset_context(f"{utt.start - self._context_end:.1f} s of silence")
        return (" ".join(self._context)[-self.context_max_chars:] or None) if self.context_max_chars > 0 else None

    def _remember(self, utt: _Utterance, lang: str, text: str, audio: np.ndarray) -> None:
        if self._context_lang is not None and self._context_lang != lang:  # (a final whose decode kept the context)
            self.reset_context(f"language {self._context_lang} -> {lang}")
        self._left = (audio, text) if len(audio) <= LEFT_CONTEXT_MAX_S * SR and text else None
        self._context.append(text)
        self._context_lang, self._context_end = lang, utt.end
        while len(self._context) > 1 and sum(len(t) + 1 for t in self._context[1:]) >= self.context_max_chars:
            self._context.pop(0)

    def _terms(self, lang: str) -> str:
        """The glossary terms said in `lang`, as "term, term." within TERMS_PROMPT_MAX_CHARS ('' when none)."""
        terms: list[str] = []
        for term in self.prompt_terms(lang) if self.prompt_terms else ():
            if sum(len(t) + 2 for t in terms) + len(term) + 1 > TERMS_PROMPT_MAX_CHARS:
                break
            terms.append(term)
        return ", ".join(terms) + "." if terms else ""

    def _decode(self, utt: _Utterance, audio: np.ndarray, lang: str, beam_size: int, pad_s: float | None,
                left: bool = False, reset_context: bool = True):
        """Transcribe `utt`'s audio conditioned on the glossary's terms and the context, without the sentences
        Whisper copied from the context (a sentence that is only a term is kept: it may well have been said).
        `left`: with left audio context when there is one (see _decode_after_left)."""
        context = self._prompt(utt, lang, reset_context)
        if left and (result := self._decode_after_left(utt, audio, lang, beam_size, pad_s, context)) is not None:
            return result
        prompt = " ".join(x for x in (self._terms(lang), context) if x) or None
        result = self.asr.transcribe(audio, language=lang, task="transcribe", beam_size=beam_size, prompt=prompt,
                                     pad_seconds=pad_s)
        if context:
            text = guards.strip_prompt_echo(result.text, context)
            if not text and result.text.strip():  # it only repeated the previous text: decode again without it
                self.stats.prompt_echoes += 1
                log.debug("utterance %s: the decode only echoed the prompt (%r); decoding without it", utt.id,
                          result.text)
                return self.asr.transcribe(audio, language=lang, task="transcribe", beam_size=beam_size,
                                           prompt=self._terms(lang) or None, pad_seconds=pad_s)
            if text != result.text.strip():
                log.debug("utterance %s: dropped what the prompt echoed: %r -> %r", utt.id, result.text, text)
                result = replace(result, text=text)
        return result

    def _decode_after_left(self, utt: _Utterance, audio: np.ndarray, lang: str, beam_size: int, pad_s: float | None,
                           context: str | None):
        """Left audio context: the previous final's audio (a pause between) before `utt`'s, its text forced as the
        start of Whisper's output, so the words at the start of `utt` are heard after what led to them, as in an
        offline transcript. Only for a short utterance (LEFT_CONTEXT_MAX_UTT_S) right after a final of the same
        context (same language, a short pause); None when there is none, or Whisper heard nothing after the known
        text, or what it heard would be rejected (the caller decodes without it)."""
        if (self._left is None or self.left_context_gap_s <= 0 or not context
                or not 0 <= utt.start - self._context_end <= self.left_context_gap_s
                or len(audio) > self.left_context_max_utt_s * SR):
            return None
        left_audio, left_text = self._left
        before = context[:-len(left_text)].strip() if context.endswith(left_text) else context
        prompt = " ".join(x for x in (self._terms(lang), before) if x) or None
        joined = np.concatenate([left_audio, np.zeros(int(LEFT_CONTEXT_SILENCE_S * SR), np.float32), audio])
        result = self.asr.transcribe(joined, language=lang, task="transcribe", beam_size=beam_size, prompt=prompt,
                                     pad_seconds=pad_s, prefix=left_text)
        text = guards.strip_prompt_echo(result.text, context)
        if not text:
            return None
        result = replace(result, text=text, duration_s=len(audio) / SR)
        if reason := _rejection(result, utt):  # e.g. a wrong last word of the previous final made Whisper
            # transcribe its audio again after it
            log.debug("utterance %s: left context gave a text the guard rejects (%s): %r; decoding without it",
                      utt.id, reason, text)
            return None
        return result

    def _partial(self, utt: _Utterance, wall: float, probe: bool = False) -> None:
        audio = utt.audio()
        if utt.language is None and utt.seconds < lid.detect_min_s(len(self.candidates)):
            return
        utt.decoded_at = utt.samples
        utt.speaker = self._speaker(utt, audio) or utt.speaker  # before the language: the speaker's own is the prior
        try:
            with self._abortable(not probe):
                lang = self._lock_language(utt, audio)
                if lang is None:
                    return  # no partials until the language is known: a caption never changes language mid-sentence
                if probe and (whole := self._final_language(utt, audio)) != lang:
                    # the whole audio so far says another language: changing it is the final's to do (a probe may
                    # come at a dip inside speech), so this decode is not shown; the final reuses the decision and
                    # the decode when no more speech comes. A decode nobody sees waits for a longer silence
                    # (the decision is kept meanwhile: the audio has not grown)
                    if self._trailing_silence_s < HIDDEN_PROBE_S:
                        return
                    result = self._decode(utt, audio, whole, self.beam_size, self.final_pad_s, left=True, reset_context=False)
                    utt.last, utt.last_samples, utt.probed, utt.last_lang = result, len(audio), True, whole
                    return
                t0 = time.perf_counter()
                result = self._decode(utt, audio, lang, self.beam_size if probe else 1,
                                      self.final_pad_s if probe else self.partial_pad_s, left=probe)
        except Aborted:
            self.stats.partials_aborted += 1
            return
        utt.probed = probe
        asr_s = time.perf_counter() - t0
        self._last_partial_s = asr_s
        utt.last, utt.last_samples, utt.last_lang = result, len(audio), lang
        if _rejection(result, utt):
            return
        stable, tail = utt.stable.update(result.text.split())
        text = " ".join(stable + tail)
        end = utt.end
        self._emit(utt.id, False, lang, lang, text, utt.start, end, {"asr": asr_s}, stable=" ".join(stable),
                   speaker=utt.speaker)
        self.stats.partials += 1
        if not utt.first_partial_done:
            utt.first_partial_done = True
            self.stats.first_partial_s.append(time.monotonic() - utt.onset_wall)
        self._to_translator(SourceCaption(utt.id, False, lang, " ".join(stable), utt.start, end, None, wall, asr_s,
                                           speaker=utt.speaker))

    def _falls_back(self, result) -> bool:
        """Whisper's thresholds doubt this decode and a wider beam than the one it had would be tried."""
        return self.beam_size < FALLBACK_BEAM and (
            result.compression_ratio > guards.COMPRESSION_RATIO_MAX
            or (result.avg_logprob < guards.LOGPROB_MIN and result.no_speech_prob < guards.NO_SPEECH_MIN))

    def _final_decode(self, utt: _Utterance, lang: str, speech_samples: int | None):
        """The final's transcription: the end-of-speech probe's when it covered every spoken sample, else a decode
        (with Whisper's fallback to a beam when the result is repetitive or unlikely)."""
        audio = utt.audio()
        if utt.final_decoded is not None and utt.final_decoded[0] == (len(audio), lang):
            return utt.final_decoded[1]  # decoded so at a pause already (with the fallback): the same audio
        last = utt.last
        if (last is not None and speech_samples is not None
                and utt.last_samples >= speech_samples and utt.probed and utt.last_lang == lang
                and not self._falls_back(last) and not _rejection(last, utt)):
            return last  # a doubtful greedy probe is not reused: the whole audio is decoded again (with the fallback)
        result = self._decode(utt, audio, lang, self.beam_size, self.final_pad_s, left=True)
        if self._falls_back(result):
            retry = self.asr.transcribe(audio, language=lang, task="transcribe", beam_size=FALLBACK_BEAM,
                                        pad_seconds=self.final_pad_s)  # without the prompt: it may be what misled
            log.info("utterance %s: fallback to beam %d (logprob %.2f -> %.2f, compression %.2f -> %.2f)", utt.id,
                     FALLBACK_BEAM, result.avg_logprob, retry.avg_logprob, result.compression_ratio, retry.compression_ratio)
            if retry.avg_logprob >= result.avg_logprob or retry.compression_ratio < result.compression_ratio:
                result = retry
        utt.final_decoded = ((len(audio), lang), result)
        return result

    def _finalise(self, utt: _Utterance, speech_end_wall: float, speech_samples: int | None = None) -> None:
        audio = utt.audio()
        if len(audio) < SR * 0.2:
            return
        self._finalising = utt  # a restart after a failure below retries this final
        lang = self._settle_language(utt, audio, speech_samples, speech_end_wall)
        t0 = time.perf_counter()
        result = self._final_decode(utt, lang, speech_samples)
        reason = _rejection(result, utt)
        if reason:
            self.stats.rejected += 1
            self.reset_context("rejected final")
            log.info("utterance %s rejected (%s): %r", utt.id, reason, result.text)
            self._withdraw(utt, lang, speech_end_wall)
            self._finalising = None
            return
        asr_s = time.perf_counter() - t0
        if result is utt.last:
            self.stats.finals_from_probe += 1  # (a rejected final is not a final: not counted)
        self._last_lang = lang
        end = utt.end
        text = result.text.strip()  # the whole utterance's decode: it may correct words partials showed as stable
        self._remember(utt, lang, text, audio)
        utt.speaker = self._speaker(utt, audio, final_lang=lang) or utt.speaker
        self._emit(utt.id, True, lang, lang, text, utt.start, end, {"asr": asr_s}, speaker=utt.speaker)
        self.stats.finals += 1
        self.stats.final_latency_s.append(time.monotonic() - speech_end_wall)
        log.debug("utterance %s final %.2f s after its speech ended (decode %.2f s%s, %.1f s of audio)", utt.id,
                  time.monotonic() - speech_end_wall, asr_s, ", the probe's" if result is utt.last else "", utt.seconds)
        emitted = time.monotonic()
        english = None  # after the source final is out: Whisper's translate task for routes that need English
        if lang != "en" and any(r and r[0].engine == "whisper" for r in self.routes(lang).values()):
            english = self.asr.transcribe(audio, language=lang, task="translate", beam_size=self.beam_size).text.strip()
        self._finalising = None
        self._caption_q.put(SourceCaption(utt.id, True, lang, text, utt.start, end, english, speech_end_wall, asr_s,
                                           emitted, utt.speaker))

    def _cut(self, utt: _Utterance, wall: float) -> None:
        """Force a final on a long monologue, cut at the quietest 100 ms of its last seconds."""
        audio = utt.audio()
        search = audio[-int(CUT_SEARCH_S * SR):]
        frame = SR // 10
        energies = [float(np.mean(search[i:i + frame] ** 2)) for i in range(0, len(search) - frame + 1, frame // 2)]
        cut = len(audio) - len(search) + int(np.argmin(energies)) * (frame // 2) + frame // 2 if energies else len(audio)
        head, rest = audio[:cut], audio[cut:]
        utt.chunks, utt.samples = [head], len(head)
        self._finalise(utt, wall)
        nxt = _Utterance(id=f"{self._id_prefix}-{next(self._ids)}", start=utt.start + utt.gap_s + cut / SR, onset_wall=wall,
                         language=utt.language)
        nxt.chunks, nxt.samples = [rest], len(rest)
        self._utt = nxt

    def _to_translator(self, cap: SourceCaption) -> None:
        try:
            self._caption_q.put_nowait(cap)
        except queue.Full:
            self.stats.partials_skipped += 1  # partial translations are the first thing to go

    # ---- translator -----------------------------------------------------------------------------------------
    def _translator(self) -> None:
        """One caption at a time; an exception restarts the stage and a final is translated again (once), until
        the stage has failed STAGE_RESTARTS times in a window: then it stays dead for the watchdog."""
        while True:
            cap = self._caption_q.get()
            if cap is _STOP:
                threading.current_thread().stopped = True
                return
            for attempt in (1, 2) if cap.final else (1,):
                try:
                    self.translation.translate(cap)
                    self.failing.pop("translator", None)
                    break
                except Exception as exc:
                    log.exception("translation of utterance %s failed (attempt %d)", cap.utt_id, attempt)
                    if not self._may_restart("translator", exc):
                        return
            if cap.final:
                self.translation.retract(cap)

    # ---- speakers -------------------------------------------------------------------------------------------
    def _speaker(self, utt: _Utterance, audio: np.ndarray, final_lang: str | None = None) -> dict | None:
        """The utterance's speaker (final_lang given: the final's, which also updates the room's speakers)."""
        if final_lang is None:
            return self._ask_speakers("partial", utt.id, audio)
        return self._ask_speakers("final", utt.id, audio, final_lang)

    def _ask_speakers(self, method: str, *args):
        """self.speakers.<method>(*args), or None without speaker turns. A failing speaker model costs the speaker
        features only (turned off, with a warning), never the captions."""
        if self.speakers is None:
            return None
        try:
            return getattr(self.speakers, method)(*args)
        except Exception as exc:  # a warning, not a pipeline error: the captions are fine
            log.exception("speaker turns failed (%s); captions go on without speakers", method)
            self.warnings.append(f"speakers: {exc}")
            self.speakers = None
            return None

    def _prior(self, speaker_id: str | None) -> dict[str, float]:
        """The default language prior: the speaker's last language when known, else the previous turn's."""
        own = self._ask_speakers("language_prior", speaker_id) if speaker_id else None
        return lid.sticky_prior(own or self._last_lang)

    def speaker_changed(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Did the voice change across a pause (speech before it, speech after it)? False without speaker turns.
        For the segmentation: end the utterance at the pause when this says so."""
        return bool(self._ask_speakers("speaker_changed", before, after))

    # ---- events ---------------------------------------------------------------------------------------------
    def _emit(self, utt_id: str, final: bool, lang: str, source_lang: str, text: str, start: float, end: float,
              latency: dict, stable: str = "", speaker: dict | None = None, untranslated: bool = False) -> None:
        key = (utt_id, lang)
        rev = self._revs.get(key, 0) + 1
        self._revs[key] = rev
        if final:
            self._revs.pop(key, None)
        self.sink(CaptionEvent(id=utt_id, rev=rev, final=final, lang=lang, source_lang=source_lang, text=text,
                               lines=layout(text), start=round(start, 3), end=round(end, 3), emitted=time.time(),
                               latency={k: round(v, 4) for k, v in latency.items()},
                               stable=text if final else stable, speaker=speaker, untranslated=untranslated))
