"""The context across utterances: what Whisper is told before it hears an utterance, and when that is forgotten.

Each decode is conditioned on the text already finalised in the same turn and language (Whisper's previous-text
prompt), preceded by the room's glossary terms said in that language. The memory is reset on a language change, a
long silence, a rejected final, or `reset()` (a speaker change, say). The last final's audio and text are kept as
left audio context for a short utterance right after it (see the recognizer stage's decoder). Recognizer thread only.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from appliance.pipeline.utterance import SR

log = logging.getLogger(__name__)

CONTEXT_MAX_CHARS = 300  # previous text given to Whisper: about the last two sentences
CONTEXT_RESET_SILENCE_S = 8.0  # a silence this long starts a new context (a new topic, a new speaker)
LEFT_CONTEXT_MAX_S = 8.0  # left audio context: the previous final's audio, when it is at most this long ...
LEFT_CONTEXT_GAP_S = 2.0  # ... and ended at most this long before the utterance (asr.left_context_s) ...
LEFT_CONTEXT_MAX_UTT_S = 2.0  # ... for an utterance of at most this much audio: a short one (often the rest of a
# sentence Whisper closed with a full stop at a pause) is where Whisper lacks context; a longer one carries its own.
# Measured on the accuracy bench's English part, six pause layouts fed as fast as possible: WER 12.2 % -> 9.2 % (all
# utterances: 9.2 %, at 15 % more decoding); in real time on three: 12.2 % -> 9.6 %, final latency p50 unchanged
TERMS_PROMPT_MAX_CHARS = 150  # glossary terms of the language put before the previous text in the prompt (whole terms)


class PromptContext:
    """The prompt memory. `prompt(start, lang)` before a decode, `remember(...)` after a final, `reset(reason)`.

    Levers (the accuracy bench measures each): `max_chars` (0: no previous-text prompt), `left_gap_s` (0: no left
    audio context), `left_max_utt_s`; `prompt_terms(lang)` gives the glossary's terms said in a language."""

    def __init__(self, *, prompt_terms: Callable[[str], list[str]] | None = None,
                 left_gap_s: float = LEFT_CONTEXT_GAP_S):
        self.max_chars = CONTEXT_MAX_CHARS
        self.prompt_terms = prompt_terms
        self.left_gap_s = left_gap_s
        self.left_max_utt_s = LEFT_CONTEXT_MAX_UTT_S
        self._texts: list[str] = []  # finalised texts of the current context
        self._lang: str | None = None
        self._end = 0.0  # audio time where the context's last final ended
        self._left: tuple[np.ndarray, str] | None = None  # the context's last final: (its audio, its text)

    def reset(self, reason: str) -> None:
        """Forget the previous text: the next decode starts without context."""
        if self._texts:
            log.debug("context reset (%s)", reason)
        self._texts, self._lang, self._left = [], None, None

    def prompt(self, start: float, lang: str, reset: bool = True) -> str | None:
        """The previous text to condition a decode of the utterance starting at audio time `start` in `lang` on,
        after the reset rules (`reset=False`: none in another language, but the context is kept: the decode may
        not become a final in that language)."""
        if self._lang is not None and self._lang != lang:
            if not reset:
                return None
            self.reset(f"language {self._lang} -> {lang}")
        elif self._texts and start - self._end > CONTEXT_RESET_SILENCE_S:
            self.reset(f"{start - self._end:.1f} s of silence")
        return (" ".join(self._texts)[-self.max_chars:] or None) if self.max_chars > 0 else None

    def remember(self, lang: str, text: str, audio: np.ndarray, end: float) -> None:
        """A final in `lang` (its text and audio, ending at audio time `end`) joins the context."""
        if self._lang is not None and self._lang != lang:  # (a final whose decode kept the context)
            self.reset(f"language {self._lang} -> {lang}")
        self._left = (audio, text) if len(audio) <= LEFT_CONTEXT_MAX_S * SR and text else None
        self._texts.append(text)
        self._lang, self._end = lang, end
        while len(self._texts) > 1 and sum(len(t) + 1 for t in self._texts[1:]) >= self.max_chars:
            self._texts.pop(0)

    def terms(self, lang: str) -> str:
        """The glossary terms said in `lang`, as "term, term." within TERMS_PROMPT_MAX_CHARS ('' when none)."""
        terms: list[str] = []
        for term in self.prompt_terms(lang) if self.prompt_terms else ():
            if sum(len(t) + 2 for t in terms) + len(term) + 1 > TERMS_PROMPT_MAX_CHARS:
                break
            terms.append(term)
        return ", ".join(terms) + "." if terms else ""

    def with_terms(self, lang: str, text: str | None) -> str | None:
        """The whole prompt: the terms of `lang`, then `text` (None when both are empty)."""
        return " ".join(x for x in (self.terms(lang), text) if x) or None

    def left(self, start: float, samples: int, context: str | None) -> tuple[np.ndarray, str, str | None] | None:
        """Left audio context for an utterance starting at audio time `start` with `samples` of audio, whose prompt
        is `context`: (the last final's audio, its text, the context before that text), or None when there is none:
        no final kept, the setting off, another context, too long a pause since, or too long an utterance."""
        if (self._left is None or self.left_gap_s <= 0 or not context
                or not 0 <= start - self._end <= self.left_gap_s or samples > self.left_max_utt_s * SR):
            return None
        left_audio, left_text = self._left
        before = context[:-len(left_text)].strip() if context.endswith(left_text) else context
        return left_audio, left_text, before
