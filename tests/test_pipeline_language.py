"""The language decision on plain data: given language probabilities in, the lock for partials and the final's
settled language out, with the previous turn's or the speaker's own language as prior.

The pure choice is tested in test_language.py; the same decisions on real models and speech in test_accuracy.py
(a Spanish turn after English ones, settled at the final) and test_features_together.py (the speaker's prior)."""

from __future__ import annotations

import pytest

from appliance.asr import language as lid
from appliance.pipeline.language import LanguageDecision
from appliance.pipeline.utterance import SR, Utterance


def utterance(seconds: float, language: str | None = None, speaker: str | None = None) -> Utterance:
    utt = Utterance(id="u1", start=0.0, onset_wall=0.0, language=language)
    utt.samples = int(seconds * SR)
    utt.speaker = {"id": speaker, "name": None} if speaker else None
    return utt


def given(*probs):
    asked = []

    def probabilities():
        asked.append(1)
        return list(probs)

    probabilities.asked = asked
    return probabilities


def never():
    raise AssertionError("no detection was needed")


def test_one_candidate_is_known_before_anyone_speaks():
    decision = LanguageDecision(["pt"])
    assert decision.fixed == "pt"  # (the segmenter gives it to every utterance)
    assert decision.settle(utterance(2.0, "pt"), 2 * SR, never) == "pt"
    assert LanguageDecision(["en", "pt"]).fixed is None
    with pytest.raises(ValueError):
        LanguageDecision([])


def test_the_candidates_are_the_rooms_spoken_languages_the_model_knows():
    model = ["en", "pt", "es", "fr"]
    assert LanguageDecision.for_room(model, "auto", ["pt", "en", "xx"]).candidates == ["pt", "en"]
    assert LanguageDecision.for_room(model, "auto", []).candidates == model
    assert LanguageDecision.for_room(model, "es", ["pt", "en"]).fixed == "es"  # a set source language
    with pytest.raises(ValueError, match="spoken languages"):
        LanguageDecision.for_room(["en"], "auto", ["pt"])


def test_no_detection_before_enough_speech():
    decision = LanguageDecision(["en", "pt"])
    assert not decision.ready(utterance(lid.detect_min_s(2) - 0.1))
    assert decision.ready(utterance(lid.detect_min_s(2)))
    assert decision.ready(utterance(0.1, language="en"))  # locked: nothing to wait for


def test_the_lock_waits_for_a_confident_choice_or_enough_speech():
    decision = LanguageDecision(["en", "pt"])
    utt = utterance(1.0)
    assert decision.lock(utt, SR, given(("en", 0.6), ("pt", 0.4))) is None and utt.language is None
    utt.samples = int(lid.NARROW_LOCK_MAX_S * SR)  # more speech, still not confident: the likelier one locks
    assert decision.lock(utt, utt.samples, given(("en", 0.6), ("pt", 0.4))) == "en"
    assert utt.language == "en" and utt.detected == (utt.samples, "en")
    assert decision.lock(utt, utt.samples, never) == "en"  # locked for the turn: not detected again
    confident = utterance(0.6)
    assert decision.lock(confident, int(0.6 * SR), given(("pt", 0.95), ("en", 0.05))) == "pt"


def test_only_the_rooms_languages_can_be_chosen():
    decision = LanguageDecision(["en", "pt"])
    utt = utterance(1.0)
    # Latin is the likeliest but not spoken in the room: among the two, English has 0.2 / 0.3 = 0.67 (no lock yet)
    assert decision.lock(utt, SR, given(("la", 0.7), ("en", 0.2), ("pt", 0.1))) is None
    utt.samples = int(lid.NARROW_LOCK_MAX_S * SR)
    assert decision.lock(utt, utt.samples, given(("la", 0.7), ("en", 0.2), ("pt", 0.1))) == "en"


def test_the_previous_turns_language_is_kept_unless_another_is_clearly_likelier():
    decision = LanguageDecision(["en", "pt"])
    decision.last = "en"
    assert decision.default_prior(None) == lid.sticky_prior("en")
    assert decision.lock(utterance(2.0), 2 * SR, given(("pt", 0.6), ("en", 0.4))) == "en"
    assert decision.lock(utterance(2.0), 2 * SR, given(("pt", 0.97), ("en", 0.03))) == "pt"


def test_the_speakers_own_language_is_the_prior_when_the_speaker_is_known():
    decision = LanguageDecision(["en", "pt"], speaker_language={"S1": "pt"}.get)
    decision.last = "en"  # the previous turn was English, by someone else
    assert decision.default_prior("S1") == lid.sticky_prior("pt")
    assert decision.default_prior("S9") == lid.sticky_prior("en")  # a speaker with no final yet: the turn's
    assert decision.lock(utterance(2.0, speaker="S1"), 2 * SR, given(("en", 0.7), ("pt", 0.3))) == "pt"
    assert decision.lock(utterance(2.0), 2 * SR, given(("en", 0.7), ("pt", 0.3))) == "en"


def test_a_replaced_prior_is_the_one_used():
    decision = LanguageDecision(["en", "pt"])
    seen = []
    decision.prior = lambda speaker_id: seen.append(speaker_id) or {"pt": 100.0}
    assert decision.lock(utterance(2.0, speaker="S2"), 2 * SR, given(("en", 0.9), ("pt", 0.1))) == "pt"
    assert seen == ["S2"]


def test_the_final_settles_on_the_whole_keeping_the_partials_language_unless_clearly_another():
    decision = LanguageDecision(["en", "es"])
    utt = utterance(3.0, language="en")
    assert decision.settle(utt, 3 * SR, given(("es", 0.6), ("en", 0.4))) == "en"  # hysteresis toward the partials'
    utt.samples = 4 * SR
    assert decision.settle(utt, 4 * SR, given(("es", 0.97), ("en", 0.03))) == "es"  # the whole clearly says Spanish
    assert utt.language == "en" and utt.detected == (4 * SR, "es")  # changing the utterance is the recognizer's


def test_a_decision_on_the_same_audio_is_reused():
    decision = LanguageDecision(["en", "es"])
    utt = utterance(2.0)
    probs = given(("es", 0.95), ("en", 0.05))
    assert decision.settle(utt, 2 * SR, probs) == "es" and len(probs.asked) == 1
    assert decision.settle(utt, 2 * SR, never) == "es"  # the same audio
    # more audio, but the decision covered every spoken sample (the end-of-speech probe's): reused
    assert decision.settle(utt, 2 * SR + 3200, never, speech_samples=2 * SR) == "es"
    probs = given(("en", 0.9), ("es", 0.1))
    assert decision.settle(utt, 3 * SR, probs, speech_samples=3 * SR) == "en" and len(probs.asked) == 1


def test_without_a_lock_the_final_uses_the_turns_prior():
    decision = LanguageDecision(["en", "pt"], speaker_language={"S1": "pt"}.get)
    decision.last = "en"
    assert decision.settle(utterance(1.0), SR, given(("pt", 0.6), ("en", 0.4))) == "en"
    assert decision.settle(utterance(1.0, speaker="S1"), SR, given(("en", 0.6), ("pt", 0.4))) == "pt"
