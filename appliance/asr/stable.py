"""Stable-prefix policy for streaming partials (pure; no model).

Each partial re-transcribes the growing utterance. A word becomes *stable* when two consecutive hypotheses agree on
it (after the words already stable); a stable word is never revised. Later hypotheses that disagree with the stable
prefix only change the unstable tail. Words are compared case-folded and without surrounding punctuation, so
"meeting" and "Meeting." agree; the form from the newer hypothesis is kept.
"""

from __future__ import annotations

import string

ALIGN_WINDOW = 3  # how far (in words) the end of the stable prefix is searched for in a new hypothesis
ALIGN_WORDS = 2  # how many of the last stable words must match to re-align a hypothesis

_PUNCT = string.punctuation + "¿¡«»“”‘’…—–"


def normalise(word: str) -> str:
    """Case-folded word without surrounding punctuation (the raw word when nothing else is left)."""
    core = word.strip(_PUNCT).casefold()
    return core or word


def _same(a: list[str], b: list[str]) -> bool:
    return len(a) == len(b) and all(normalise(x) == normalise(y) for x, y in zip(a, b))


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if normalise(x) != normalise(y):
            break
        n += 1
    return n


class StablePrefix:
    """Feed successive word lists of one growing utterance to `update`; it returns (stable_words, unstable_tail)."""

    def __init__(self) -> None:
        self._stable: list[str] = []
        self._tail: list[str] = []

    @property
    def stable(self) -> list[str]:
        return list(self._stable)

    @property
    def tail(self) -> list[str]:
        return list(self._tail)

    def reset(self) -> None:
        self._stable, self._tail = [], []

    def _after_stable(self, words: list[str]) -> list[str]:
        """The part of `words` that follows the stable prefix (re-aligned when the hypothesis shifted a little)."""
        n = len(self._stable)
        if n == 0 or _same(words[:n], self._stable):
            return words[n:]
        m = min(ALIGN_WORDS, n)
        anchor = self._stable[-m:]
        for shift in sorted(range(-ALIGN_WINDOW, ALIGN_WINDOW + 1), key=abs):
            end = n + shift
            if m <= end <= len(words) and _same(words[end - m:end], anchor):
                return words[end:]
        return words[n:]  # no anchor found: align by position

    def update(self, words: list[str]) -> tuple[list[str], list[str]]:
        """Take the newest hypothesis for the whole utterance; return (stable words, unstable tail)."""
        new_tail = self._after_stable(list(words))
        agreed = _common_prefix(self._tail, new_tail)
        self._stable.extend(new_tail[:agreed])
        self._tail = new_tail[agreed:]
        return list(self._stable), list(self._tail)
