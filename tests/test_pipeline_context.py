"""The prompt context on plain data: what previous text and glossary terms a decode is given, when that memory is
reset, and when the last final's audio is left audio context.

The same rules on real models and speech: test_accuracy.py (the previous text across a pause, the context reset after
a long silence, left audio context for a short continuation) and test_features_together.py (glossary terms)."""

from __future__ import annotations

import numpy as np

from appliance.pipeline.context import (CONTEXT_MAX_CHARS, CONTEXT_RESET_SILENCE_S, LEFT_CONTEXT_GAP_S,
                                        LEFT_CONTEXT_MAX_S, LEFT_CONTEXT_MAX_UTT_S, TERMS_PROMPT_MAX_CHARS,
                                        PromptContext)
from appliance.pipeline.utterance import SR


def audio(seconds: float) -> np.ndarray:
    return np.full(int(seconds * SR), 0.1, np.float32)


def remembered(*finals: tuple[str, str, float]) -> PromptContext:
    """A context that has heard (language, text, end) finals, each one second of audio."""
    context = PromptContext()
    for lang, text, end in finals:
        context.remember(lang, text, audio(1.0), end)
    return context


def test_a_decode_is_given_the_previous_finals_of_its_language():
    context = remembered(("en", "Good morning.", 1.0), ("en", "The budget is ready.", 3.0))
    assert context.prompt(3.5, "en") == "Good morning. The budget is ready."
    assert PromptContext().prompt(0.0, "en") is None


def test_the_prompt_is_bounded_and_keeps_the_latest_text():
    context = PromptContext()
    for i in range(40):
        context.remember("en", f"Sentence number {i} of the long speech.", audio(1.0), float(i))
    prompt = context.prompt(40.0, "en")
    assert len(prompt) <= CONTEXT_MAX_CHARS and prompt.endswith("Sentence number 39 of the long speech.")
    context.max_chars = 0  # the lever: no previous-text prompt
    assert context.prompt(40.0, "en") is None


def test_another_language_starts_a_new_context():
    context = remembered(("en", "Good morning.", 1.0))
    assert context.prompt(1.5, "pt") is None
    assert context.prompt(1.5, "en") is None  # reset: the English text is forgotten


def test_a_decode_that_may_not_become_a_final_leaves_the_context_as_it_was():
    context = remembered(("en", "Good morning.", 1.0))
    assert context.prompt(1.5, "es", reset=False) is None  # (the probe's hidden decode in another language)
    assert context.prompt(1.5, "en") == "Good morning."


def test_a_final_in_another_language_replaces_the_context():
    context = remembered(("en", "Good morning.", 1.0), ("pt", "Bom dia.", 3.0))
    assert context.prompt(3.5, "pt") == "Bom dia."


def test_a_long_silence_starts_a_new_context():
    context = remembered(("en", "Good morning.", 1.0))
    assert context.prompt(1.0 + CONTEXT_RESET_SILENCE_S - 0.1, "en") == "Good morning."
    assert context.prompt(1.0 + CONTEXT_RESET_SILENCE_S + 0.1, "en") is None
    assert context.prompt(1.0, "en") is None  # forgotten, not only skipped


def test_reset_forgets_the_text_and_the_left_audio():
    context = remembered(("en", "Good morning.", 1.0))
    assert context.left(1.5, SR, "Good morning.") is not None
    context.reset("rejected final")
    assert context.prompt(1.5, "en") is None and context.left(1.5, SR, "Good morning.") is None


def test_glossary_terms_come_first_and_are_bounded_to_whole_terms():
    terms = [f"term number {i}" for i in range(40)]
    context = PromptContext(prompt_terms=lambda lang: terms if lang == "en" else [])
    line = context.terms("en")
    assert len(line) <= TERMS_PROMPT_MAX_CHARS and line.endswith(".")
    kept = line[:-1].split(", ")
    assert kept == terms[:len(kept)] and 5 < len(kept) < len(terms)
    assert context.terms("pt") == "" and PromptContext().terms("en") == ""
    assert context.with_terms("en", "Good morning.") == f"{line} Good morning."
    assert context.with_terms("pt", "Bom dia.") == "Bom dia." and context.with_terms("pt", None) is None


def test_left_audio_context_is_the_last_final_for_a_short_utterance_right_after_it():
    context = PromptContext()
    context.remember("en", "Can you repeat the question?", audio(2.0), 10.0)
    context.remember("en", "See you", audio(1.0), 12.0)
    left_audio, left_text, before = context.left(12.5, SR, "Can you repeat the question? See you")
    assert len(left_audio) == SR and left_text == "See you" and before == "Can you repeat the question?"
    assert context.left(12.0 + LEFT_CONTEXT_GAP_S + 0.1, SR, "See you") is None  # too long a pause since
    assert context.left(11.5, SR, "See you") is None  # starts before the final ended: not after it
    assert context.left(12.5, int(LEFT_CONTEXT_MAX_UTT_S * SR) + 1, "See you") is None  # carries its own context
    assert context.left(12.5, SR, None) is None  # no context (reset, or another language)
    context.left_gap_s = 0.0  # the setting off (asr.left_context_s = 0)
    assert context.left(12.5, SR, "See you") is None


def test_a_long_or_empty_final_is_no_left_audio_context():
    context = PromptContext()
    context.remember("en", "A very long final.", audio(LEFT_CONTEXT_MAX_S + 0.5), 20.0)
    assert context.left(20.5, SR, "A very long final.") is None
    context.remember("en", "", audio(1.0), 21.0)
    assert context.left(21.5, SR, "A very long final.") is None
