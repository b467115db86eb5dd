"""The segmenter: voice-activity events in, utterance boundaries out.

The VAD (appliance.vad) ends a speech segment at every pause longer than its hangover; an utterance is what
recognition should hear as one piece. So, on the recognizer thread, chunk by chunk:
- a VAD "start" opens an utterance and its speech is added to it; the recognizer stage is told of every step
  (`speech`, then `probe` once the chunk's events are in), and decides what to decode;
- a VAD "end" is a pause. With sentence holding on (`sentence_pause_s` > 0) the recognizer decodes the utterance at
  the pause as its final would be, and the utterance stays open when that text does not finish a sentence
  (asr/endpoint.py's `finished`, the held-pause rule). It becomes final once the pause reaches `sentence_pause_s`,
  or continues when speech resumes; with speaker turns on, only when the voice after the pause is the same voice
  (SPEAKER_CHECK_S of it compared), else it ends at its pause and the new speech is an utterance of its own;
- an utterance that reaches `max_segment_s` is cut at the quietest point of its last seconds, the rest going on.
`finalising` names the utterance whose final is being made, so that a restart after a failure can make it again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from appliance.asr.endpoint import finished
from appliance.pipeline.utterance import MIN_FINAL_AUDIO_S, SR, Held, Utterance

log = logging.getLogger(__name__)

CUT_SEARCH_S = 4.0  # when a segment reaches max length, cut at the quietest point of its last seconds
SPEAKER_CHECK_S = 1.0  # speech after a held pause before the voices either side are compared (speaker turns on)
TRAILING_SILENCE = int(0.2 * SR)  # of the VAD's hangover, keep this much silence after speech for the final decode


@dataclass(frozen=True)
class Speech:
    """Voice activity -> recognizer hand-over, one per captured chunk: the VAD's events and its state after them."""

    events: list
    wall: float  # when the chunk was captured
    samples: int  # the chunk's length
    trailing_silence_s: float  # silence at the end of an open segment (speech may be ending)
    in_onset: bool  # speech may be starting


class Recognizing(Protocol):
    """What the segmenter asks of the recognizer stage (appliance/pipeline/recognizer.py)."""

    def speech(self, utt: Utterance, wall: float) -> None: ...

    def probe(self, utt: Utterance, wall: float, trailing_silence_s: float) -> None: ...

    def at_pause(self, utt: Utterance, speech_samples: int, speech_end_wall: float) -> str: ...

    def final(self, utt: Utterance, speech_end_wall: float, speech_samples: int | None = None) -> None: ...


class VoiceCheck(Protocol):
    """What the segmenter asks of the speaker stage (appliance/pipeline/speaker_stage.py)."""

    on: bool

    def changed(self, before: np.ndarray, after: np.ndarray) -> bool: ...


def quietest_cut(audio: np.ndarray) -> int:
    """Where to cut a long monologue: the middle of its quietest 100 ms among the last CUT_SEARCH_S seconds."""
    search = audio[-int(CUT_SEARCH_S * SR):]
    frame = SR // 10
    energies = [float(np.mean(search[i:i + frame] ** 2)) for i in range(0, len(search) - frame + 1, frame // 2)]
    return len(audio) - len(search) + int(np.argmin(energies)) * (frame // 2) + frame // 2 if energies else len(audio)


class UtteranceSegmenter:
    """Feed `chunk(speech)` for each captured chunk and `end()` at the end of the audio.

    `language`: the utterances' language when known before anyone speaks (one candidate), else None;
    `new_id()`: a new utterance's caption id; `stats`: its `pauses_held` counter."""

    def __init__(self, recognizer: Recognizing, speakers: VoiceCheck, *, new_id: Callable[[], str], stats,
                 language: str | None = None, max_segment_s: float = 15.0, sentence_pause_s: float = 0.0):
        self.recognizer = recognizer
        self.speakers = speakers
        self.new_id = new_id
        self.stats = stats
        self.language = language
        self.max_segment = int(max_segment_s * SR)
        self.sentence_pause_s = sentence_pause_s  # a shorter pause keeps an unfinished sentence open (0: never)
        self.utt: Utterance | None = None  # the open utterance (speech going on)
        self.held: Held | None = None  # the utterance held open at a pause
        self.finalising: Utterance | None = None  # the utterance being finalised (kept across a restart)
        self.audio_t = 0.0  # audio seconds heard so far

    def chunk(self, speech: Speech) -> None:
        """One captured chunk's voice activity: its events, then the end-of-speech probe and the long-pause rule."""
        self.audio_t += speech.samples / SR
        for ev in speech.events:
            self._event(ev, speech.wall)
        if self.utt is not None:
            self.recognizer.probe(self.utt, speech.wall, speech.trailing_silence_s)
        if (self.held is not None and self.utt is None and not speech.in_onset  # speech resuming: wait for the VAD
                and self.audio_t - self.held.speech_end >= self.sentence_pause_s):  # to confirm it
            self.end_utterance_at_pause("long pause")

    def end(self) -> None:
        """The audio ended: every utterance still open becomes final."""
        self.end_utterance_at_pause("end of audio")
        if self.utt is not None:
            self.finalise(self.utt, time.monotonic())
            self.utt = None

    def end_utterance_at_pause(self, reason: str) -> None:
        """Finalise the utterance held open by a pause now (e.g. the speaker changed); a no-op when none is held."""
        held, self.held = self.held, None
        if held is not None:
            log.debug("utterance %s ends at its pause (%s)", held.utt.id, reason)
            self.finalise(held.utt, held.speech_end_wall, held.speech_samples)

    def finalise(self, utt: Utterance, speech_end_wall: float, speech_samples: int | None = None) -> None:
        """The recognizer makes `utt`'s final; `finalising` names it meanwhile (a failure leaves it named)."""
        self.finalising = utt
        self.recognizer.final(utt, speech_end_wall, speech_samples)
        self.finalising = None

    def take_finalising(self) -> Utterance | None:
        """After a failure: the utterance whose final was being made, taken out of the segmenter (None: none)."""
        utt, self.finalising = self.finalising, None
        if utt is not None and self.utt is utt:
            self.utt = None
        return utt

    def _event(self, ev, wall: float) -> None:
        if ev.kind == "start" and self.held is not None and not self.speakers.on:
            self._continue_held(ev.start)  # speech resumed inside a sentence: the same utterance
        elif ev.kind == "start":
            # wall time when speech began: the chunk's capture time minus the audio since the first speech window
            onset = ev.onset if getattr(ev, "onset", None) is not None else ev.start
            self.utt = Utterance(id=self.new_id(), start=ev.start, onset_wall=wall - max(0.0, self.audio_t - onset),
                                 language=self.language)
            if self.held is not None:  # speaker turns on: the same utterance only if the voice is the same
                self.utt.resumes = self.held
        utt = self.utt
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
            self.utt = None
            self._pause(Held(utt, speech_end, wall - max(0.0, self.audio_t - speech_end), utt.samples - len(samples)))
        elif utt.samples >= self.max_segment:
            self._cut(utt, wall)
        else:
            self.recognizer.speech(utt, wall)

    def _pause(self, held: Held) -> None:
        """Speech ended: a final now if the text ends a sentence (or holding is off), else hold the utterance open."""
        utt = held.utt
        self.finalising = utt  # out of self.utt now: a restart after a failure below makes its final
        if self.sentence_pause_s > 0 and len(utt.audio()) >= SR * MIN_FINAL_AUDIO_S:
            text = self.recognizer.at_pause(utt, held.speech_samples, held.speech_end_wall)
            if not finished(text, self.audio_t - held.speech_end, self.sentence_pause_s):
                log.debug("utterance %s held open at a pause: %r", utt.id, text)
                self.held = held
                self.finalising = None  # kept in self.held instead
                return
        self.finalise(utt, held.speech_end_wall, held.speech_samples)

    def _continue_held(self, start: float) -> Utterance:
        """The held utterance goes on: speech resumed at audio time `start` (before its samples are added)."""
        held, self.held = self.held, None
        self.utt = held.utt
        held.utt.gap_s += max(0.0, start - held.utt.end)
        self.stats.pauses_held += 1
        return held.utt

    def _resume(self, utt: Utterance) -> Utterance:
        """Speech after a held pause, SPEAKER_CHECK_S of it in (or all of it): another voice ends the held utterance
        at its pause and this speech is a new utterance; the same voice continues the held utterance with it."""
        held, utt.resumes = utt.resumes, None
        if self.speakers.changed(held.utt.audio()[:held.speech_samples], utt.audio()):
            self.end_utterance_at_pause("speaker change")
            return utt
        joined = self._continue_held(utt.start)
        joined.chunks += utt.chunks
        joined.samples += utt.samples
        return joined

    def _cut(self, utt: Utterance, wall: float) -> None:
        """Force a final on a long monologue, cut at the quietest 100 ms of its last seconds."""
        audio = utt.audio()
        cut = quietest_cut(audio)
        head, rest = audio[:cut], audio[cut:]
        utt.chunks, utt.samples = [head], len(head)
        self.finalise(utt, wall)
        nxt = Utterance(id=self.new_id(), start=utt.start + utt.gap_s + cut / SR, onset_wall=wall,
                        language=utt.language)
        nxt.chunks, nxt.samples = [rest], len(rest)
        self.utt = nxt
