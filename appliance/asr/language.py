"""Choosing an utterance's language from Whisper's language probabilities (pure; no model).

Three inputs decide it:
- the room's spoken languages (`languages.spoken`): only those can be chosen;
- a prior: how much more likely each language is before listening (the previous turn's language, or later a
  per-speaker prior from speaker turns). The detector's probabilities are multiplied by it, so a language other
  than the prior's favourite wins only when it is clearly more probable (hysteresis);
- how narrow the choice is: with one candidate there is nothing to detect, with a few the language locks sooner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

# Another language must be this many times more probable than the previous turn's to take over: a switch needs
# the detector to be confident (e.g. 0.9 against 0.1), while an English sentence that Whisper rates 'la' 0.5 /
# 'en' 0.3 stays English.
SWITCH_RATIO = 8.0
LOCK_PROB = 0.8  # lock the turn's language as soon as the choice is this confident ...
LOCK_MAX_S = 3.0  # ... or once this much speech is in (most likely language)
NARROW_CHOICE = 3  # with at most this many candidates the choice is narrow:
NARROW_LOCK_PROB = 0.9  # ... lock at this confidence (among the candidates only, so higher)
NARROW_LOCK_MAX_S = 2.0  # ... or after this much speech
DETECT_MIN_S = 0.6  # first detection once this much speech is in (wide choice; provisional, the final decides again)
NARROW_DETECT_MIN_S = 0.6  # ... narrow choice: as soon as a partial may be decoded


@dataclass(frozen=True)
class Choice:
    language: str
    probability: float  # after restriction to the candidates and the prior, renormalised


def sticky_prior(previous: str | None, ratio: float = SWITCH_RATIO) -> dict[str, float]:
    """The prior that keeps the previous turn's language unless another is `ratio` times more probable."""
    return {previous: ratio} if previous else {}


def choose(probs: Sequence[tuple[str, float]], *, allowed: Sequence[str] = (),
           prior: Mapping[str, float] | None = None) -> Choice:
    """The most likely language among `allowed` (every language when empty) once weighted by `prior`
    (language -> weight, 1.0 when absent). Raises ValueError when no allowed language is in `probs`."""
    allow = set(allowed)
    weights = prior or {}
    scored = [(code, p * weights.get(code, 1.0)) for code, p in probs if not allow or code in allow]
    if not scored:
        raise ValueError(f"none of the spoken languages {sorted(allow)} is known to the speech model")
    total = sum(s for _, s in scored)
    code, score = max(scored, key=lambda cs: cs[1])
    return Choice(code, score / total if total > 0 else 1.0 / len(scored))


def candidates(model_languages: Sequence[str], spoken: Sequence[str]) -> list[str]:
    """The languages an utterance may be in: the spoken list (those the model knows), else all the model's."""
    known = set(model_languages)
    return [c for c in spoken if c in known] if spoken else list(model_languages)


def fixed(n_candidates: int) -> bool:
    """One candidate: nothing to detect, the language is known before anyone speaks."""
    return n_candidates == 1


def detect_min_s(n_candidates: int) -> float:
    """Speech needed before the first detection."""
    return NARROW_DETECT_MIN_S if n_candidates <= NARROW_CHOICE else DETECT_MIN_S


def should_lock(choice: Choice, seconds: float, n_candidates: int, *, final: bool = False) -> bool:
    """Lock the turn's language now? Sooner when the choice is narrow; always at the final."""
    if final or fixed(n_candidates):
        return True
    if n_candidates <= NARROW_CHOICE:
        return choice.probability >= NARROW_LOCK_PROB or seconds >= NARROW_LOCK_MAX_S
    return choice.probability >= LOCK_PROB or seconds >= LOCK_MAX_S
