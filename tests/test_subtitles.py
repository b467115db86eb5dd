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


@dataclass
class Said(Ev):
    speaker: dict | None = None


SPOKEN = [
    Said(True, "en", "Good morning everyone.", 0.5, 2.25, ["Good morning everyone."], {"id": "S1", "name": "Chair"}),
    Said(True, "en", "Thank you.", 3.0, 4.0, ["Thank you."], {"id": "S2", "name": None}),
    Said(True, "en", "Next item.", 5.0, 6.0, ["Next item."], None),
    Said(True, "en", "A <b> & c", 7.0, 8.0, ["A <b> & c"], {"id": "S3", "name": "Kenya <delegate>"}),
]


def test_speaker_labels_in_vtt_srt_and_text():
    assert to_vtt(SPOKEN, "en") == (
        "WEBVTT\n\n00:00:00.500 --> 00:00:02.250\n<v Chair>Good morning everyone.\n\n"
        "00:00:03.000 --> 00:00:04.000\n<v S2>Thank you.\n\n"
        "00:00:05.000 --> 00:00:06.000\nNext item.\n\n"
        "00:00:07.000 --> 00:00:08.000\n<v Kenya &lt;delegate&gt;>A &lt;b&gt; &amp; c\n"
    )
    assert to_srt(SPOKEN[:2], "en") == (
        "1\n00:00:00,500 --> 00:00:02,250\nChair: Good morning everyone.\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\nS2: Thank you.\n"
    )
    assert to_text(SPOKEN[:3], "en") == "Chair: Good morning everyone.\nS2: Thank you.\nNext item.\n"
