"""Exports of a stored meeting: SRT, WebVTT, minutes text, JSON lines. Pure functions over stored finals.

Subtitle cues follow the caption layout (captions.wrap: lines of at most 42 characters, at most 2 lines a cue);
a long final becomes several cues sharing its time span by characters; every cue lasts at least 1 s and none
overlaps the next. The SRT/WebVTT text itself comes from subtitles.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

from appliance import subtitles
from appliance.archive.store import ArchiveStore, Meeting, StoredFinal
from appliance.captions import LINE_WIDTH, MAX_LINES, wrap

__all__ = ["FORMATS", "Cue", "cues", "minutes", "jsonl", "export", "speaker_name", "MIN_CUE_S"]

FORMATS = {"srt": "application/x-subrip", "vtt": "text/vtt", "txt": "text/plain", "jsonl": "application/x-ndjson"}
MIN_CUE_S = 1.0  # shortest cue on screen
STAMP_EVERY_S = 300.0  # minutes text: a time stamp at the first paragraph after this long
PARAGRAPH_PAUSE_S = 5.0  # minutes text without speaker labels: a pause this long starts a new paragraph


@dataclass(frozen=True)
class Cue:
    """One subtitle cue; the shape subtitles.to_srt / to_vtt read. Times in seconds from the meeting start."""

    lang: str
    text: str
    lines: list[str]
    start: float
    end: float
    final: bool = True


def _split(final: StoredFinal, t0: float) -> list[Cue]:
    """A final as cues of at most MAX_LINES lines, its time span shared by characters."""
    lines = wrap(final.text, LINE_WIDTH)
    groups = [lines[i:i + MAX_LINES] for i in range(0, len(lines), MAX_LINES)]
    total = sum(len(" ".join(g)) for g in groups) or 1
    start, span = final.start - t0, max(0.0, final.end - final.start)
    out = []
    for g in groups:
        text = " ".join(g)
        end = start + span * len(text) / total
        out.append(Cue(final.lang, text, g, start, end))
        start = end
    return out


def cues(finals: Sequence[StoredFinal], t0: float) -> list[Cue]:
    """Subtitle cues for finals in time order: split to the layout, each >= MIN_CUE_S, never overlapping."""
    out: list[Cue] = []
    prev_end = 0.0
    for final in finals:
        for cue in _split(final, t0):
            start = max(cue.start, prev_end, 0.0)
            end = max(cue.end, start + MIN_CUE_S)
            out.append(Cue(cue.lang, cue.text, cue.lines, round(start, 3), round(end, 3)))
            prev_end = round(end, 3)
    return out


def speaker_name(speaker: Any) -> str:
    """A printable speaker label from whatever the speaker issue stores (a name, or an object with one)."""
    if speaker is None or speaker == "":
        return ""
    if isinstance(speaker, dict):
        for key in ("name", "label", "id"):
            if speaker.get(key) not in (None, ""):
                return str(speaker[key])
        return ""
    return str(speaker)


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _header(meeting: Meeting, lang: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(meeting.started))
    state = "running" if meeting.running else f"{meeting.duration_s / 60:.0f} min"
    return f"Meeting {meeting.id}, {when} ({state}), language: {lang}\n"


def minutes(meeting: Meeting, finals: Sequence[StoredFinal], lang: str) -> str:
    """Readable minutes: one paragraph per speaker turn, a [hh:mm:ss] stamp every few minutes."""
    parts = [_header(meeting, lang)]
    paragraph: list[str] = []
    last_stamp: float | None = None
    prev_speaker, prev_end = None, None
    for f in finals:
        speaker = speaker_name(f.speaker)
        new_turn = (prev_end is None or (speaker and speaker != prev_speaker)
                    or (not speaker and f.start - prev_end >= PARAGRAPH_PAUSE_S))
        if new_turn:
            if paragraph:
                parts.append(" ".join(paragraph) + "\n")
            paragraph = []
            at = f.start - meeting.started
            if last_stamp is None or at - last_stamp >= STAMP_EVERY_S:
                paragraph.append(f"[{_clock(at)}]")
                last_stamp = at
            if speaker:
                paragraph.append(f"{speaker}:")
        paragraph.append(f.text.strip())
        prev_speaker, prev_end = speaker or prev_speaker, f.end
    if paragraph:
        parts.append(" ".join(paragraph) + "\n")
    return "\n".join(parts)


def jsonl(meeting: Meeting, finals: Sequence[StoredFinal]) -> str:
    rows = []
    for f in finals:
        rows.append(json.dumps({"meeting": meeting.id, "id": f.utt_id, "lang": f.lang, "source_lang": f.source_lang,
                                "text": f.text, "start": round(f.start - meeting.started, 3),
                                "end": round(f.end - meeting.started, 3), "time": round(f.start, 3), "rev": f.rev,
                                "speaker": f.speaker}, ensure_ascii=False))
    return "".join(r + "\n" for r in rows)


def export(store: ArchiveStore, ref: int | str, lang: str, fmt: str) -> tuple[Meeting, str]:
    """(meeting, text) of meeting `ref` ("latest" or an id) in `lang` as `fmt`; a running meeting gives what is so far."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    meeting = store.meeting(ref)
    finals = store.finals(meeting.id, lang)
    if fmt == "srt":
        return meeting, subtitles.to_srt(cues(finals, meeting.started), lang)
    if fmt == "vtt":
        return meeting, subtitles.to_vtt(cues(finals, meeting.started), lang)
    if fmt == "txt":
        return meeting, minutes(meeting, finals, lang)
    return meeting, jsonl(meeting, finals)


def file_name(meeting: Meeting, lang: str, fmt: str) -> str:
    day = time.strftime("%Y%m%d-%H%M", time.localtime(meeting.started))
    return f"meeting-{meeting.id}-{day}-{lang}.{fmt}"
