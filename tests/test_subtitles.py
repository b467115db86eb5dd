from dataclasses import dataclass, field

from appliance.subtitles import to_srt, to_text, to_vtt


@dataclass
class Ev:
    final: bool
    lang: str
    text: str
    start: float
    end: float
    lines: list = field(default_factory=list)


EVENTS = [
    Ev(False, "en", "Good", 0.5, 1.0),
    Ev(True, "en", "Good morning everyone.", 0.5, 2.25, ["Good morning everyone."]),
    Ev(True, "pt", "Bom dia a todos.", 0.5, 2.25, ["Bom dia a todos."]),
    Ev(True, "en", "Let us begin.", 3661.0, 3662.5, ["Let us begin."]),
]


def test_srt():
    assert to_srt(EVENTS, "en") == (
        "1\n00:00:00,500 --> 00:00:02,250\nGood morning everyone.\n\n"
        "2\n01:01:01,000 --> 01:01:02,500\nLet us begin.\n"
    )


def test_vtt_and_text():
    assert to_vtt(EVENTS, "pt") == "WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nBom dia a todos.\n"
    assert to_text(EVENTS, "en") == "Good morning everyone.\nLet us begin.\n"
