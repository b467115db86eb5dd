"""Translation routes: how to reach each target language from a source language with the installed models.

Pure functions over the available direct pairs, so they are testable without models. A route is
a list of hops; a hop is (source, target, engine) where engine is "mt" (an installed translation
model) or "whisper" (Whisper's own translate task, any language to English, done during recognition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

PIVOT = "en"


@dataclass(frozen=True)
class Hop:
    source: str
    target: str
    engine: str  # "mt" | "whisper"


Route = tuple[Hop, ...]


def find_route(source: str, target: str, pairs: Iterable[tuple[str, str]], *, whisper_to_english: bool = True) -> Route | None:
    """The shortest route source -> target: direct model, else pivot through English, else None.

    `pairs` are the installed (source, target) translation models. With `whisper_to_english`, any
    language reaches English through Whisper's translate task when no direct model exists.
    """
    if source == target:
        return ()
    pairs = set(pairs)
    if (source, target) in pairs:
        return (Hop(source, target, "mt"),)
    to_en: Hop | None = None
    if source == PIVOT:
        to_en = None
    elif (source, PIVOT) in pairs:
        to_en = Hop(source, PIVOT, "mt")
    elif whisper_to_english:
        to_en = Hop(source, PIVOT, "whisper")
    if target == PIVOT:
        return (to_en,) if to_en else None
    if (PIVOT, target) not in pairs:
        return None
    first = () if source == PIVOT else ((to_en,) if to_en else None)
    if first is None:
        return None
    return first + (Hop(PIVOT, target, "mt"),)


def describe(route: Route | None) -> str:
    """'pt → en (whisper) → de (mt)' for the panel; 'no route' when None; 'as spoken' when empty."""
    if route is None:
        return "no route"
    if not route:
        return "as spoken"
    parts = [route[0].source] + [f"{h.target} ({h.engine})" for h in route]
    return " → ".join(parts)


def reachable(sources: Iterable[str], pairs: Iterable[tuple[str, str]], *, whisper_to_english: bool = True) -> set[str]:
    """Every target language reachable from at least one of `sources`."""
    pairs = set(pairs)
    langs = {t for _, t in pairs} | {s for s, _ in pairs} | set(sources)
    if whisper_to_english:
        langs.add(PIVOT)
    return {t for t in langs for s in sources if find_route(s, t, pairs, whisper_to_english=whisper_to_english) is not None}
