"""Subtitle files from final caption events: SRT, WebVTT and plain text, one language at a time."""

from __future__ import annotations

from typing import Iterable, Protocol


class _Final(Protocol):
    final: bool
    lang: str
    text: str
    lines: list[str]
    start: float
    end: float


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def finals(events: Iterable[_Final], lang: str) -> list[_Final]:
    return [e for e in events if e.final and e.lang == lang and e.text.strip()]


def to_srt(events: Iterable[_Final], lang: str) -> str:
    blocks = []
    for i, e in enumerate(finals(events, lang), 1):
        blocks.append(f"{i}\n{_stamp(e.start, ',')} --> {_stamp(e.end, ',')}\n" + "\n".join(e.lines or [e.text]) + "\n")
    return "\n".join(blocks)


def to_vtt(events: Iterable[_Final], lang: str) -> str:
    blocks = ["WEBVTT\n"]
    for e in finals(events, lang):
        blocks.append(f"{_stamp(e.start, '.')} --> {_stamp(e.end, '.')}\n" + "\n".join(e.lines or [e.text]) + "\n")
    return "\n".join(blocks)


def to_text(events: Iterable[_Final], lang: str) -> str:
    return "".join(e.text.strip() + "\n" for e in finals(events, lang))
