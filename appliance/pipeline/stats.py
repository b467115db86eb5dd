"""The pipeline's counters and latencies, bounded: what the status page and the benchmarks read.

The workers write them (the recognizer thread most, the translator thread the mt_* ones; `busy_s` is added to by
the voice-activity and recognizer threads under the pipeline's lock); readers take a snapshot as they go.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

STATS_WINDOW = 2000  # latency samples kept per series (counts and sums stay exact)


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
