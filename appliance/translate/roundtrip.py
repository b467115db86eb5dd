"""Translations that do not invent: n-best reranking with the reverse-direction model, and a guard that withholds.

The small Bergamot models sometimes answer a sentence with fluent boilerplate from their training data ("Thank
you all for coming." -> "Obrigado por enviar uma edição.", "thank you for sending an edition"). Translated back
with the reverse model, such a candidate does not resemble the source ("Thank you for your kind words."), while
a faithful one does. So each final is translated with a beam; the best candidate is translated back; when its
round trip is poor, the other candidates are translated back too and reranked by round-trip agreement (chrF
against the source) plus the forward score. When no candidate agrees with the source, nothing is shown as a
translation: the caller publishes the source text marked untranslated.

Thresholds, chrF 0-100 between the source and the back-translation (measured on appliance/bench/sentences.py,
35 English sentences with reference Portuguese): the references' own round trips score 49-100 (lowest: "Good
morning, everyone." -> "Good morning to all." 49.2); the known boilerplate scores 25.9 and 36.5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from appliance.guards import chrf

log = logging.getLogger(__name__)

ROUNDTRIP_ACCEPT = 60.0  # the best candidate's round trip at least this good: accept it without reranking
ROUNDTRIP_MIN = 40.0  # no candidate's round trip this good: withhold the translation
FORWARD_WEIGHT = 0.5  # rerank score = chrF / 100 + FORWARD_WEIGHT * forward log-probability per token
NBEST_MAX = 4  # candidates translated back when reranking


@dataclass(frozen=True)
class Checked:
    text: str  # the translation to show ('' when withheld)
    withheld: bool
    roundtrip_chrf: float  # of the chosen candidate (the best one when withheld)
    reranked: bool = False  # a candidate other than the beam's best was chosen
    back: str = ""  # the chosen candidate translated back (for the log)


def pick(source: str, candidates: Sequence[tuple[str, float]], backs: Sequence[str]) -> tuple[int, float]:
    """(index, chrF) of the candidate whose round trip (`backs[i]`) agrees best with `source`, the forward score
    breaking near-ties. Pure."""
    scored = [(chrf(back, source) / 100 + FORWARD_WEIGHT * score, chrf(back, source), i)
              for i, ((_, score), back) in enumerate(zip(candidates, backs))]
    _, agreement, index = max(scored)
    return index, agreement


class RoundTripTranslator:
    """Translate finals with `forward` (beam n-best) checked and reranked by `reverse`."""

    def __init__(self, forward, reverse, beam_size: int = 4):
        self.forward, self.reverse, self.beam_size = forward, reverse, max(2, beam_size)

    def translate(self, text: str) -> Checked:
        candidates = self.forward.translate_nbest(text, self.beam_size)[:NBEST_MAX]
        if not candidates:
            return Checked("", True, 0.0)
        first_back = self.reverse.translate([candidates[0][0]])[0]
        first = chrf(first_back, text)
        if first >= ROUNDTRIP_ACCEPT or len(candidates) == 1:
            return self._verdict(text, candidates[0][0], first, first_back, reranked=False)
        backs = [first_back] + self.reverse.translate([c for c, _ in candidates[1:]])
        index, agreement = pick(text, candidates, backs)
        return self._verdict(text, candidates[index][0], agreement, backs[index], reranked=index != 0)

    @staticmethod
    def _verdict(source: str, text: str, agreement: float, back: str, *, reranked: bool) -> Checked:
        if agreement < ROUNDTRIP_MIN:
            log.info("translation withheld: %r -> %r comes back as %r (chrF %.1f < %.1f)", source, text, back,
                     agreement, ROUNDTRIP_MIN)
            return Checked("", True, agreement, reranked, back)
        if reranked:
            log.info("translation reranked by its round trip: %r -> %r (back: %r, chrF %.1f)", source, text, back,
                     agreement)
        return Checked(text, False, agreement, reranked, back)
