"""The speaker stage: the pipeline's questions to the room's speaker tracker (appliance.speakers.SpeakerTracker).

Who speaks in a partial, in a final (which also updates the room's speakers); forget an utterance withdrawn; the
speaker's last language (the language prior); did the voice change across a pause (the segmenter's question).
Speaker turns are optional: without a tracker every answer is "unknown", and a tracker that fails is turned off
with a warning, costing the speaker features only, never the captions. Recognizer thread only.
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

log = logging.getLogger(__name__)


class SpeakerStage:
    """`tracker`: the SpeakerTracker, or None (speaker turns off); `warnings`: where a failure is reported."""

    def __init__(self, tracker=None, warnings: deque | None = None):
        self.tracker = tracker
        self.warnings = warnings if warnings is not None else deque(maxlen=20)

    @property
    def on(self) -> bool:
        return self.tracker is not None

    def partial(self, utt_id: str, audio: np.ndarray) -> dict | None:
        """The speaker of an utterance so far ({"id", "name"}), or None while unknown."""
        return self._ask("partial", utt_id, audio)

    def final(self, utt_id: str, audio: np.ndarray, lang: str) -> dict | None:
        """The speaker of a final in `lang`; the room's speakers learn from it."""
        return self._ask("final", utt_id, audio, lang)

    def discard(self, utt_id: str) -> None:
        """An utterance was withdrawn (rejected, or renamed for another language): forget what it said."""
        self._ask("discard", utt_id)

    def language_of(self, speaker_id: str) -> str | None:
        """The language of that speaker's last final, or None."""
        return self._ask("language_prior", speaker_id)

    def changed(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Did the voice change across a pause (speech before it, speech after it)? False without speaker turns."""
        return bool(self._ask("speaker_changed", before, after))

    def _ask(self, method: str, *args):
        """self.tracker.<method>(*args), or None without speaker turns."""
        if self.tracker is None:
            return None
        try:
            return getattr(self.tracker, method)(*args)
        except Exception as exc:  # a warning, not a pipeline error: the captions are fine
            log.exception("speaker turns failed (%s); captions go on without speakers", method)
            self.warnings.append(f"speakers: {exc}")
            self.tracker = None
            return None
