"""Who is speaking: the one object the pipeline, the panel and the benchmark talk to.

The pipeline's recognizer thread calls `partial()` while an utterance grows and `final()` when it ends; the
panel calls `rename()`, `enrol()`, `forget_all()` and `speakers()`. A lock keeps the two apart. Each call
returns the caption event's `speaker` object ({"id": "S1", "name": null}) or None while unknown.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.speakers import features, store
from appliance.speakers.cluster import Clusterer
from appliance.speakers.embedder import SpeakerEmbedder, cosine, mean_embedding

log = logging.getLogger(__name__)

SR = 16000
PARTIAL_MIN_S = 0.6  # a partial names its speaker once this much speech is in (then again at each new window)
SECOND_LOOK_S = 1.1  # before the first whole window, look again once this much speech is in
REUSE_COVERAGE = 0.7  # a final shorter than one window reuses the partial's look if that saw this share of it
MIN_OPEN_S = 1.5  # a shorter final moves no centroid and opens a speaker only far from all (too little voice)
CHANGE_MIN_S = 1.0  # speaker_changed() needs this much speech on each side of the pause
CHANGE_CONTEXT_S = 3.0  # ... and looks at most this far either side
SAVE_DELAY_S = 2.0  # a final's change reaches the disk this much later (renames and enrolments at once)
MAX_OPEN = 32  # utterances tracked at once (older ones, which never got a final, are forgotten)
ENROL_MIN_S = 3.0  # enrolment needs this much speech
ENROL_MIN_RMS_DBFS = -50.0  # quieter than this is silence


class EnrolmentError(ValueError):
    """An enrolment recording that cannot make a voice print; the message says what to do."""


@dataclass
class _Open:
    """An utterance in progress: its windows embedded so far (start frame -> embedding) and its current label."""

    windows: dict[int, np.ndarray] = field(default_factory=dict)
    label: dict | None = None
    padded: tuple[int, np.ndarray] | None = None  # a look at audio shorter than one window: (samples, embedding)


@dataclass
class SpeakerTracker:
    embedder: SpeakerEmbedder
    threshold: float = 0.7
    path: Path | None = None  # the store; None keeps speakers in memory only
    warn: Callable[[str], None] | None = None  # told once when the speaker model fails (the daemon's status)
    clusterer: Clusterer = field(init=False)

    def __post_init__(self):
        self.clusterer = store.load(self.path, self.threshold) if self.path else Clusterer(self.threshold)
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        self._timer: threading.Timer | None = None
        self.failed = False

    # ---- pipeline ---------------------------------------------------------------------------------------
    def _guarded(method):
        """A failing speaker model turns speaker turns off (told once through `warn`); captions never wait on it."""

        def run(self, *args, **kwargs):
            if self.failed:
                return None
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                self.failed = True
                message = f"speaker turns are off: the speaker model failed ({exc}); captions go on without speakers"
                log.exception("%s", message)
                if self.warn:
                    self.warn(message)
                return None

        run.__doc__ = method.__doc__
        return run

    @_guarded
    def partial(self, utt_id: str, audio: np.ndarray) -> dict | None:
        """The likely speaker of a growing utterance (changes no centroid); None until PARTIAL_MIN_S of speech.

        Each whole 1.6 s window is embedded once, as it completes; before the first one, the audio so far is
        looked at (padded) at PARTIAL_MIN_S and again at SECOND_LOOK_S. The final then usually needs no inference."""
        state = self._open.get(utt_id)
        if state is None:
            while len(self._open) >= MAX_OPEN:
                self._open.pop(next(iter(self._open)))
            state = self._open[utt_id] = _Open()
        new = self._embed_new(state, audio, final=False)
        look = not state.windows and len(audio) >= PARTIAL_MIN_S * SR and (
            state.padded is None or (state.padded[0] < SECOND_LOOK_S * SR <= len(audio)))
        if new or look:
            if state.windows:
                emb = mean_embedding(state.windows.values())
            else:  # shorter than one window: a padded look, reused by the final if the audio grew little
                emb = self.embedder.embed(audio)
                state.padded = (len(audio), emb)
            with self._lock:
                sp = self.clusterer.match(emb)
                # a voice not heard before: the id the final will give it, once SECOND_LOOK_S of it is in (a padded
                # look at less often misses a known voice, and a wrong new id on a partial is worse than none yet)
                new = {"id": f"S{self.clusterer.next_number}", "name": None} if len(audio) >= SECOND_LOOK_S * SR else None
                state.label = sp.label() if sp else new
        return state.label

    @_guarded
    def final(self, utt_id: str, audio: np.ndarray, language: str | None = None) -> dict | None:
        """The speaker of a finished utterance: joins a known speaker (moving its centroid) or opens a new one."""
        state = self._open.pop(utt_id, None) or _Open()
        if len(audio) < SR * 0.3:
            return None
        if state.windows:  # the partials' whole windows hold the voice: the final waits for no inference
            emb = mean_embedding(state.windows.values())
        elif state.padded is not None and state.padded[0] >= REUSE_COVERAGE * len(audio):
            emb = state.padded[1]
        else:
            self._embed_new(state, audio, final=True)
            emb = mean_embedding(state.windows.values())
        with self._lock:
            sp = self.clusterer.assign(emb, short=len(audio) / SR < MIN_OPEN_S)
            if language:
                sp.language = language
            label = sp.label()
        self._save_soon()
        return label

    def discard(self, utt_id: str) -> None:
        """Forget an utterance that ended without a final (rejected, too short)."""
        self._open.pop(utt_id, None)

    def _embed_new(self, state: _Open, audio: np.ndarray, *, final: bool) -> int:
        """Embed the windows not embedded yet: whole ones while the utterance grows, all of them at its end."""
        starts = features.window_starts(len(audio))
        if not final:
            starts = [s for s in starts if s * features.HOP + features.WINDOW_SAMPLES <= len(audio)]
        todo = [s for s in starts if s not in state.windows]
        for start, emb in zip(todo, self.embedder.embed_windows(audio, todo)):
            state.windows[start] = emb
        return len(todo)

    def language_prior(self, speaker_id: str | None) -> str | None:
        """The language of this speaker's last final (the prior for their next turn), or None."""
        with self._lock:
            sp = self.clusterer.by_id(speaker_id) if speaker_id else None
            return sp.language if sp else None

    def speaker_changed(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Did the voice change across a pause? `before` / `after`: the speech either side of it. The integrator
        calls this at a pause inside a long utterance and ends the utterance there when it returns True."""
        n = int(CHANGE_CONTEXT_S * SR)
        if min(len(before), len(after)) < CHANGE_MIN_S * SR:
            return False
        return cosine(self.embedder.embed(before[-n:]), self.embedder.embed(after[:n])) < self.threshold

    # ---- panel ------------------------------------------------------------------------------------------
    def speakers(self) -> list[dict]:
        with self._lock:
            return [{"id": s.id, "name": s.name, "utterances": s.count, "language": s.language,
                     "enrolled": s.enrolled} for s in self.clusterer.speakers]

    def rename(self, speaker_id: str, name: str | None) -> None:
        name = (name or "").strip() or None
        if name is not None and len(name) > 60:
            raise ValueError("a speaker name has at most 60 characters")
        with self._lock:
            sp = self.clusterer.by_id(speaker_id)
            if sp is None:
                raise KeyError(f"no speaker {speaker_id}")
            sp.name = name
            self._save()

    def enrol(self, name: str, audio: np.ndarray) -> dict:
        """A named speaker from a few seconds of their voice; joins the matching known speaker if there is one."""
        name = (name or "").strip()
        if not name:
            raise EnrolmentError("give the speaker a name")
        check_enrolment(audio)
        emb = self.embedder.embed(audio)
        with self._lock:
            sp = self.clusterer.match(emb) or self.clusterer.new_speaker(emb)
            if sp.count > 1 or sp.enrolled:
                sp.absorb(emb)
            sp.name, sp.enrolled = name, True
            self._save()
            return sp.label()

    def forget_all(self) -> None:
        with self._lock:
            self.clusterer = Clusterer(self.threshold)  # utterances in progress keep their label until their final
            self._save()

    def close(self) -> None:
        """Write any pending change now (the daemon calls this on stop)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with self._lock:
                self._save()

    def _save_soon(self) -> None:
        """Finals save the store from a timer thread, so that no final waits for the disk."""
        if self.path is None or self._timer is not None:
            return
        self._timer = threading.Timer(SAVE_DELAY_S, self._save_later)
        self._timer.daemon = True
        self._timer.start()

    def _save_later(self) -> None:
        with self._lock:
            self._timer = None
            self._save()

    def _save(self) -> None:
        """Write the store (the caller holds the lock)."""
        if self.path is None:
            return
        try:
            store.save(self.path, self.clusterer)
        except OSError as exc:  # speaker turns go on in memory; the next save tries again
            log.warning("could not save speakers to %s: %s", self.path, exc)


def check_enrolment(audio: np.ndarray) -> None:
    """Raise EnrolmentError for a recording too short or too quiet to enrol."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    seconds = len(audio) / SR
    if seconds < ENROL_MIN_S:
        raise EnrolmentError(f"the recording is {seconds:.1f} s long; record at least {ENROL_MIN_S:.0f} s of speech")
    frame = SR // 10
    rms = np.sqrt(np.mean(audio[: len(audio) // frame * frame].reshape(-1, frame).astype(np.float64) ** 2, axis=1))
    voiced_s = float(np.sum(20 * np.log10(np.maximum(rms, 1e-10)) > ENROL_MIN_RMS_DBFS)) / 10
    if voiced_s < ENROL_MIN_S:
        raise EnrolmentError(f"the recording is silent or too quiet ({voiced_s:.1f} s above {ENROL_MIN_RMS_DBFS:.0f} dBFS);"
                             f" check the microphone and speak for at least {ENROL_MIN_S:.0f} s")
