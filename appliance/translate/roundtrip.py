"""Translations that do not invent: n-best reranking with the reverse-direction model, and a guard that withholds.

The small Bergamot models sometimes answer a sentence with fluent boilerplate from their training data ("Thank
you all for coming." -> "Obrigado por enviar uma edição.", "thank you for sending an edition"). Translated back
with the reverse model, such a candidate does not resemble the source ("Thank you for your kind words."), while
a faithful one does. So each final is translated with a beam; the best candidate is translated back (greedy);
when its round trip is poor, every candidate is translated back with a beam, and the candidates are reranked by
their best round trip's agreement (chrF against the source) plus the forward score. Taking the best of the
reverse model's n-best matters: the reverse model invents too ("Thank you all for coming this evening." comes
back greedily as "Obrigado por enviar uma edição.", while its beam also holds the faithful sentence). When no candidate agrees with the source, nothing is shown as a
translation: the caller publishes the source text marked untranslated.

Thresholds, chrF 0-100 between the source and the best back-translation (measured on
appliance/bench/sentences.py, 35 sentence pairs, both directions, judged by `agreement` as the guard judges a
candidate): the reference translations score 52.7-100 (lowest: "The river flows through the centre of the town."
-> "O rio atravessa o centro da cidade." -> "The river runs through the city centre."); the known boilerplate for
thank-you sentences ("Obrigado por enviar uma edição.", "... uma viagem para casa.") scores 26.8-40.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from appliance.guards import chrf

log = logging.getLogger(__name__)

ROUNDTRIP_ACCEPT = 60.0  # the best candidate's round trip at least this good: accept it without reranking
ROUNDTRIP_MIN = 45.0  # no candidate's round trip this good: withhold the translation
FORWARD_WEIGHT = 0.5  # rerank score = chrF / 100 + FORWARD_WEIGHT * forward log-probability per token
NBEST_MAX = 4  # candidates translated back when reranking


@dataclass(frozen=True)
class Checked:
    text: str  # the translation to show ('' when withheld)
    withheld: bool
    roundtrip_chrf: float  # of the chosen candidate (the best one when withheld)
    reranked: bool = False  # a candidate other than the beam's best was chosen
    back: str = ""  # the chosen candidate translated back (for the log)


def pick(source: str, candidates: Sequence[tuple[str, float]], backs: Sequence[Sequence[str]]) -> tuple[int, float]:
    """(index, chrF) of the candidate whose best round trip (among `backs[i]`, its back-translations) agrees best
    with `source`, the forward score breaking near-ties. Pure."""
    scored = []
    for i, ((_, score), options) in enumerate(zip(candidates, backs)):
        agreement = max((chrf(back, source) for back in options), default=0.0)
        scored.append((agreement / 100 + FORWARD_WEIGHT * score, agreement, -i))
    _, agreement, index = max(scored)
    return -index, agreement


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
        backs = [self._backs(c) for c, _ in candidates]
        backs[0].insert(0, first_back)
        index, agreement = pick(text, candidates, backs)
        best_back = max(backs[index], key=lambda b: chrf(b, text))
        return self._verdict(text, candidates[index][0], agreement, best_back, reranked=index != 0)

    def _backs(self, candidate: str) -> list[str]:
        return [b for b, _ in self.reverse.translate_nbest(candidate, NBEST_MAX)]

    def agreement(self, source: str, translation: str) -> tuple[float, str]:
        """(chrF, back-translation) of the best round trip of one given translation, as the guard judges it."""
        back = self.reverse.translate([translation])[0]
        if chrf(back, source) >= ROUNDTRIP_ACCEPT:
            return chrf(back, source), back
        best = max([back] + self._backs(translation), key=lambda b: chrf(b, source))
        return chrf(best, source), best

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
