"""The utterance: one stretch of speech on its way to a final caption, as the pipeline's parts share it.

The segmenter makes utterances and adds their audio; the language decision, the recognizer stage and the speaker
stage read it and note their decisions on it (language, decodes, speaker). All of this happens on the recognizer
thread: an utterance is never shared between threads.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from appliance.asr.stable import StablePrefix

SR = 16000
MIN_FINAL_AUDIO_S = 0.2  # an utterance with less audio than this makes no final (and is not decoded at a pause)


@dataclass
class Utterance:
    id: str
    start: float  # audio time of the first sample
    onset_wall: float  # wall time when speech onset was captured
    chunks: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    language: str | None = None  # the turn's language once locked (partials are shown in it)
    decoded_at: int = 0  # sample count at the last partial decode
    stable: StablePrefix = field(default_factory=StablePrefix)
    first_partial_done: bool = False
    last: object | None = None  # the last partial's transcription ...
    last_samples: int = 0  # ... and how many samples it covered
    last_lang: str | None = None  # ... and its language
    final_decoded: tuple | None = None  # ((samples, language), transcription) of the last final decode
    speaker: dict | None = None  # {"id", "name"} once known
    probed: bool = False  # ... and whether it was the end-of-speech probe (decoded as a final would be)
    gap_s: float = 0.0  # silence left out between the parts of an utterance held open across pauses
    resumes: Held | None = None  # speech after a held pause, until its voice is compared with the held one's
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
class Held:
    """An utterance whose speech paused mid-sentence: it becomes final if the pause grows long, or continues."""

    utt: Utterance
    speech_end: float  # audio time of the last speech
    speech_end_wall: float
    speech_samples: int


class UtteranceIds:
    """Caption ids unique to one pipeline: its start time in milliseconds (hex), a dash, a count."""

    def __init__(self):
        self._count = itertools.count(1)
        self._prefix = f"{int(time.time() * 1000):x}"

    def __call__(self) -> str:
        return f"{self._prefix}-{next(self._count)}"
