"""Small frozen event types that flow one way through the pipeline: audio chunk -> speech segment -> caption event."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

SegmentKind = Literal["start", "continue", "end"]


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """Float32 mono samples at 16 kHz; `t` is time.monotonic() when the first sample was captured (or read)."""

    samples: np.ndarray
    t: float

    @property
    def seconds(self) -> float:
        return len(self.samples) / 16000


@dataclass(frozen=True, eq=False)
class SpeechSegment:
    """One step of a speech segment from the VAD.

    kind: "start" (speech began; `samples` holds the pre-roll and the first speech), "continue" (more speech),
    "end" (speech ended; `samples` holds the trailing silence, the hangover).
    `start` is the audio time (seconds from the start of the stream) of the segment's first sample (pre-roll
    included), `end` the audio time just after this event's last sample.
    """

    kind: SegmentKind
    samples: np.ndarray
    start: float
    end: float
    speech_end: float | None = None  # "end" events: audio time where the last speech window ended
    onset: float | None = None  # "start" events: audio time where the first speech window began (after the pre-roll)


@dataclass(frozen=True)
class CaptionEvent:
    """A caption for one language: partials (final=False) and then the final of one utterance share `id`."""

    id: str
    rev: int
    final: bool
    lang: str
    source_lang: str
    text: str
    lines: list[str] = field(default_factory=list)
    start: float = 0.0  # audio seconds from the start of the stream
    end: float = 0.0
    emitted: float = 0.0  # Unix time the pipeline produced the event
    latency: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    stable: str = ""  # partials: the leading part of `text` that later partials keep (the rest is provisional); the final,
    # decoded on the whole utterance with a longer window, may still correct it
    speaker: dict | None = None  # {"id": "S1", "name": None | "Chair"}: who is speaking, None while unknown or off
    untranslated: bool = False  # `text` is the source text, not a translation: no translation agreed with it

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lines"] = list(self.lines)
        d["latency"] = dict(self.latency)
        d["speaker"] = dict(self.speaker) if self.speaker else None
        if not self.untranslated:
            del d["untranslated"]  # optional on the bus: present only when true
        return d

    def to_json(self) -> str:
        """Compact UTF-8 JSON; a non-finite latency (NaN, inf) becomes null so the text stays valid JSON."""
        d = self.to_dict()
        d["latency"] = {k: v if isinstance(v, (int, float)) and math.isfinite(v) else None
                        for k, v in d["latency"].items()}
        return json.dumps(d, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
