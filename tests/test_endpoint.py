"""When an utterance is finished (pure)."""

import pytest

from appliance.asr.endpoint import ends_sentence, finished


@pytest.mark.parametrize("text, expected", [
    ("The budget for next year.", True), ("Is it ready?", True), ("Yes!", True),
    ("He said \"we should go.\"", True), ("Please turn off.", False),  # too short to end on a full stop alone ("The budget for", False), ("and then...", False), ("and then…", False),
    ("", False), ("Good morning, everyone,", False), ("The budget for.", False), ("Vamos falar sobre a.", False),
    ("Where is it from?", True),
])
def test_ends_sentence(text, expected):
    assert ends_sentence(text) is expected


@pytest.mark.parametrize("text, pause, hold, expected", [
    ("The budget for", 0.3, 1.0, False),  # short pause inside a sentence: keep it open
    ("The budget for", 1.0, 1.0, True),  # long pause: final anyway
    ("The budget is ready for approval.", 0.3, 1.0, True),  # sentence end: final now
    ("The budget for", 0.3, 0.0, True),  # holding off: every pause ends the utterance
])
def test_finished(text, pause, hold, expected):
    assert finished(text, pause, hold) is expected
