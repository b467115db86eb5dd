"""Subtitle files from final caption events: SRT, WebVTT and plain text, one language at a time.

With speaker turns, each caption names its speaker (the name given in the panel, else the id): a WebVTT voice
span `<v Chair>`, a "Chair: " prefix in SRT and text.
"""

from __future__ import annotations

from typing import Iterable, Protocol


class _Final(Protocol):
    final: bool
    lang: str
    text: str
    lines: list[str]
    start: float
    end: float
    speaker: dict | None


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def speaker_label(e: _Final) -> str | None:
    sp = getattr(e, "speaker", None)
    return (sp.get("name") or sp.get("id")) if sp else None


def _prefixed(e: _Final) -> list[str]:
    lines = list(e.lines or [e.text])
    label = speaker_label(e)
    return [f"{label}: {lines[0]}"] + lines[1:] if label else lines


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def finals(events: Iterable[_Final], lang: str) -> list[_Final]:
    return [e for e in events if e.final and e.lang == lang and e.text.strip()]


def to_srt(events: Iterable[_Final], lang: str) -> str:
    blocks = []
    for i, e in enumerate(finals(events, lang), 1):
        blocks.append(f"{i}\n{_stamp(e.start, ',')} --> {_stamp(e.end, ',')}\n" + "\n".join(_prefixed(e)) + "\n")
    return "\n".join(blocks)


def to_vtt(events: Iterable[_Final], lang: str) -> str:
    blocks = ["WEBVTT\n"]
    for e in finals(events, lang):
        label = speaker_label(e)
        voice = f"<v {_vtt_escape(label)}>" if label else ""
        text = "\n".join(_vtt_escape(x) for x in (e.lines or [e.text]))
        blocks.append(f"{_stamp(e.start, '.')} --> {_stamp(e.end, '.')}\n" + voice + text + "\n")
    return "\n".join(blocks)


def to_text(events: Iterable[_Final], lang: str) -> str:
    return "".join((f"{speaker_label(e)}: " if speaker_label(e) else "") + e.text.strip() + "\n"
                   for e in finals(events, lang))
