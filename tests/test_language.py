"""Choosing an utterance's language (pure): the spoken list, the previous turn's prior, when to lock."""

from __future__ import annotations

import pytest

from appliance.asr import language as lid

LATIN_FIRST = [("la", 0.45), ("en", 0.30), ("cy", 0.15), ("pt", 0.10)]


@pytest.mark.parametrize("probs, allowed, prior, expected", [
    (LATIN_FIRST, (), None, "la"),  # no list, no history: the detector's favourite
    (LATIN_FIRST, ("en", "pt"), None, "en"),  # only the room's languages can be chosen
    (LATIN_FIRST, ("pt",), None, "pt"),
    (LATIN_FIRST, (), lid.sticky_prior("en"), "en"),  # hysteresis: 0.45 is not clearly more than 0.30
    ([("pt", 0.95), ("en", 0.03)], (), lid.sticky_prior("en"), "pt"),  # a clear change of language goes through
    ([("es", 0.5), ("pt", 0.4)], ("en", "es", "pt"), {"pt": 2.0}, "pt"),  # a per-speaker prior weighs in
])
def test_choose(probs, allowed, prior, expected):
    assert lid.choose(probs, allowed=allowed, prior=prior).language == expected


def test_probability_is_renormalised_over_the_candidates():
    choice = lid.choose(LATIN_FIRST, allowed=("en", "pt"))
    assert choice.probability == pytest.approx(0.30 / 0.40)


def test_no_known_candidate_is_a_clear_error():
    with pytest.raises(ValueError, match="spoken languages"):
        lid.choose(LATIN_FIRST, allowed=("xx",))


def test_candidates():
    assert lid.candidates(["en", "pt", "es"], []) == ["en", "pt", "es"]
    assert lid.candidates(["en", "pt", "es"], ["pt", "en"]) == ["pt", "en"]


@pytest.mark.parametrize("p, seconds, n, final, locked", [
    (0.2, 0.1, 1, False, True),  # one candidate: nothing to detect
    (0.85, 1.0, 99, False, True),
    (0.7, 1.0, 99, False, False),
    (0.7, 3.0, 99, False, True),  # enough speech: take the most likely
    (0.7, 2.0, 2, False, True),  # narrow choice locks sooner
    (0.7, 1.0, 2, False, False),
    (0.3, 0.5, 99, True, True),  # always at the final
])
def test_should_lock(p, seconds, n, final, locked):
    assert lid.should_lock(lid.Choice("en", p), seconds, n, final=final) is locked


def test_detection_starts_with_the_first_partial():
    """The lock is provisional (the final decides on the whole utterance), so no room waits past 0.6 s of speech."""
    from appliance.pipeline import MIN_PARTIAL_AUDIO_S

    assert lid.detect_min_s(2) <= MIN_PARTIAL_AUDIO_S and lid.detect_min_s(99) <= MIN_PARTIAL_AUDIO_S
