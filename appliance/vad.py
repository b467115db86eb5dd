"""Streaming voice activity detection: silero VAD (v5/v6 ONNX) on onnxruntime, and a speech segmenter on top.

`SileroVad` keeps the model's recurrent state and its 64-sample context across calls, so audio can arrive in
chunks of any size. `SpeechSegmenter` turns per-window speech probabilities into segment events
(start / continue / end) with audio timestamps, using the `vad` section of the config.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import numpy as np

from appliance.events import SpeechSegment

log = logging.getLogger(__name__)

SR = 16000
WINDOW = 512  # samples per model call at 16 kHz (32 ms), fixed by the v5/v6 model
CONTEXT = 64  # samples of the previous window the model sees in front of each window
MODEL_FILE = "silero_vad.onnx"
NEG_MARGIN = 0.15  # speech ends when the probability falls below threshold - NEG_MARGIN (hysteresis)


class SileroVad:
    """Speech probability per 512-sample window; state and context carry over between calls."""

    def __init__(self, model_dir: str | Path):
        from appliance.providers import open_session

        path = Path(model_dir) / MODEL_FILE
        self.session = open_session(path, ("cpu",), threads=1)
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(f"{path} is not a silero VAD v5/v6 model: inputs {sorted(names)}, expected input, "
                             "state, sr (run `appliance models build silero-vad`)")
        self._sr = np.array(SR, dtype=np.int64)
        self._pending = np.zeros(0, np.float32)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def window(self, samples: np.ndarray) -> float:
        """Speech probability of exactly one 512-sample window (16 kHz float32)."""
        if len(samples) != WINDOW:
            raise ValueError(f"silero VAD takes windows of {WINDOW} samples at 16 kHz, not {len(samples)}")
        x = np.concatenate([self._context, samples.astype(np.float32, copy=False)])[None, :]
        prob, self._state = self.session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[0, -CONTEXT:].copy()
        return float(prob.reshape(-1)[0])

    def windows(self, samples: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Split `samples` (plus what was left over last time) into windows; [(window, probability)]."""
        buf = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        n = len(buf) // WINDOW
        self._pending = buf[n * WINDOW:].copy()
        return [(w, self.window(w)) for w in (buf[i * WINDOW:(i + 1) * WINDOW] for i in range(n))]


class SpeechSegmenter:
    """Feed 16 kHz float32 audio to `process`; get SpeechSegment events with audio timestamps.

    A segment starts when speech (probability >= threshold) lasts at least `min_speech_ms`; it carries
    `preroll_ms` of the audio before the onset. It ends after `hangover_ms` below threshold - 0.15; the "end"
    event carries that trailing audio, its `speech_end` is where the last speech window ended.
    Shorter bursts are dropped (they stay available as pre-roll).
    """

    def __init__(self, vad: SileroVad, *, threshold: float = 0.5, min_speech_ms: int = 250, hangover_ms: int = 400,
                 preroll_ms: int = 200):
        if not 0 < threshold < 1:
            raise ValueError(f"VAD threshold must be between 0 and 1, not {threshold}")
        self.vad = vad
        self.threshold = threshold
        self.neg_threshold = max(threshold - NEG_MARGIN, 0.01)
        self.min_speech = _windows(min_speech_ms)
        self.hangover = max(1, _windows(hangover_ms))
        self._preroll: deque[np.ndarray] = deque(maxlen=_windows(preroll_ms) or None)
        self._preroll_on = preroll_ms > 0
        self.reset_stream()

    def reset_stream(self) -> None:
        """Forget everything (a new stream starts at audio time 0)."""
        self.vad.reset()
        self._preroll.clear()
        self._pos = 0  # samples processed (whole windows)
        self._state = "idle"  # idle | onset | speech
        self._held: list[np.ndarray] = []  # onset windows, or silence windows inside speech
        self._speech_run = 0  # speech windows in the onset
        self._silence_run = 0
        self._seg_start = 0.0
        self._speech_end = 0.0

    @property
    def in_speech(self) -> bool:
        return self._state == "speech"

    @property
    def in_onset(self) -> bool:
        """Speech may be starting (not yet long enough to open a segment)."""
        return self._state == "onset"

    @property
    def trailing_silence_s(self) -> float:
        """Seconds of silence held at the end of an open segment (0 when speech is going on or no segment is open)."""
        return self._silence_run * WINDOW / SR if self._state == "speech" else 0.0

    def process(self, samples: np.ndarray) -> list[SpeechSegment]:
        events: list[SpeechSegment] = []
        out: list[np.ndarray] = []  # speech audio sent as one "continue" event (at the end of this call)
        out_end = 0.0
        for win, prob in self.vad.windows(samples):
            t0 = self._pos / SR
            self._pos += WINDOW
            t1 = self._pos / SR
            if self._state == "idle":
                if prob >= self.threshold:
                    self._state, self._held, self._speech_run, self._silence_run = "onset", [win], 1, 0
                    self._seg_start = t0 - sum(len(w) for w in self._preroll) / SR
                    self._speech_end = t1
                    self._maybe_start(events)
                else:
                    self._keep_preroll(win)
            elif self._state == "onset":
                self._held.append(win)
                if prob >= self.neg_threshold:
                    self._speech_run += 1
                    self._silence_run = 0
                    self._speech_end = t1
                    self._maybe_start(events)
                else:
                    self._silence_run += 1
                    if self._silence_run >= self.hangover:  # too short a burst: back to idle
                        for w in self._held:
                            self._keep_preroll(w)
                        self._state, self._held = "idle", []
            elif prob >= self.neg_threshold:  # speech continues (held silence was a pause inside it)
                out.extend(self._held)
                out.append(win)
                out_end = t1
                self._held, self._silence_run, self._speech_end = [], 0, t1
            else:
                self._held.append(win)
                self._silence_run += 1
                if self._silence_run >= self.hangover:
                    if out:
                        events.append(SpeechSegment("continue", np.concatenate(out), self._seg_start, out_end))
                        out = []
                    events.append(SpeechSegment("end", np.concatenate(self._held), self._seg_start, t1,
                                                speech_end=self._speech_end))
                    self._state, self._held, self._silence_run = "idle", [], 0
                    self._preroll.clear()
        if out:
            events.append(SpeechSegment("continue", np.concatenate(out), self._seg_start, out_end))
        return events

    def flush(self) -> list[SpeechSegment]:
        """End an open segment (end of stream); returns the "end" event, or nothing."""
        if self._state != "speech":
            self._state, self._held = "idle", []
            return []
        held = np.concatenate(self._held) if self._held else np.zeros(0, np.float32)
        self._state, self._held, self._silence_run = "idle", [], 0
        return [SpeechSegment("end", held, self._seg_start, self._pos / SR, speech_end=self._speech_end)]

    def _maybe_start(self, events: list[SpeechSegment]) -> None:
        if self._speech_run < max(1, self.min_speech):
            return
        audio = np.concatenate([*self._preroll, *self._held])
        onset = self._seg_start + sum(len(w) for w in self._preroll) / SR
        events.append(SpeechSegment("start", audio, self._seg_start, self._pos / SR, onset=onset))
        self._state, self._held, self._silence_run = "speech", [], 0
        self._preroll.clear()

    def _keep_preroll(self, win: np.ndarray) -> None:
        if self._preroll_on:
            self._preroll.append(win)


def _windows(ms: int) -> int:
    return int(round(ms * SR / 1000 / WINDOW))


def make_segmenter(model_dir: str | Path, cfg=None) -> SpeechSegmenter:
    """A SpeechSegmenter on the silero model in `model_dir`, tuned by an appliance.config.VadConfig (or defaults)."""
    from appliance.config import VadConfig

    cfg = cfg or VadConfig()
    return SpeechSegmenter(SileroVad(model_dir), threshold=cfg.threshold, min_speech_ms=cfg.min_speech_ms,
                           hangover_ms=cfg.hangover_ms, preroll_ms=cfg.preroll_ms)


def smoke_test(model_dir: str | Path, providers=("cpu",)) -> list:
    """One tiny inference (used by `appliance models verify`); raises when the model does not behave. Returns the
    session's placement: the CPU always (the VAD is pinned there: one small call every 32 ms)."""
    from appliance import placement

    vad = SileroVad(model_dir)
    probs = [p for _, p in vad.windows(np.zeros(SR // 2, np.float32))]
    if len(probs) != SR // 2 // WINDOW or not all(0.0 <= p <= 1.0 for p in probs):
        raise RuntimeError(f"silero VAD in {model_dir} returned unexpected probabilities: {probs[:4]}")
    if max(probs) >= 0.5:
        raise RuntimeError(f"silero VAD in {model_dir} calls silence speech (p={max(probs):.2f})")
    return [placement.report(vad.session, f"{Path(model_dir).name}/{MODEL_FILE}")]
