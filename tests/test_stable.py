"""Stable-prefix policy for streaming partials (pure): table-driven cases and a property over random streams."""

import random

import pytest

from appliance.asr.stable import StablePrefix, normalise


def feed(hyps: list[str]) -> list[tuple[str, str]]:
    sp = StablePrefix()
    out = []
    for h in hyps:
        stable, tail = sp.update(h.split())
        out.append((" ".join(stable), " ".join(tail)))
    return out


CASES = [
    ("one hypothesis: nothing is stable yet",
     ["good morning"], [("", "good morning")]),
    ("two passes agree on the whole text",
     ["good morning", "good morning"], [("", "good morning"), ("good morning", "")]),
    ("agreement on a prefix only",
     ["good morning every", "good morning everyone"],
     [("", "good morning every"), ("good morning", "everyone")]),
    ("the stable prefix grows with the utterance",
     ["good", "good morning", "good morning everyone", "good morning everyone let's",
      "good morning everyone let's begin"],
     [("", "good"), ("good", "morning"), ("good morning", "everyone"), ("good morning everyone", "let's"),
      ("good morning everyone let's", "begin")]),
    ("case and punctuation do not break agreement; the newer form is kept",
     ["Good morning everyone", "good morning, everyone."],
     [("", "Good morning everyone"), ("good morning, everyone.", "")]),
    ("a later hypothesis that disagrees with the stable prefix only changes the tail",
     ["the cat sat", "the cat sat on", "a dog sat on the mat"],
     [("", "the cat sat"), ("the cat sat", "on"), ("the cat sat on", "the mat")]),
    ("a hypothesis that drops a leading word is re-aligned on the stable words",
     ["so good morning all", "so good morning all of", "good morning all of you"],
     [("", "so good morning all"), ("so good morning all", "of"), ("so good morning all of", "you")]),
    ("a hypothesis that adds a leading word is re-aligned too",
     ["morning everyone", "morning everyone", "good morning everyone today", "good morning everyone today"],
     [("", "morning everyone"), ("morning everyone", ""), ("morning everyone", "today"),
      ("morning everyone today", "")]),
    ("a shorter hypothesis keeps the stable words",
     ["one two three", "one two three", "one"], [("", "one two three"), ("one two three", ""), ("one two three", "")]),
    ("empty hypotheses", ["", "", "hello", "hello"], [("", ""), ("", ""), ("", "hello"), ("hello", "")]),
]


@pytest.mark.parametrize("name,hyps,expected", CASES, ids=[c[0] for c in CASES])
def test_stable_prefix(name, hyps, expected):
    assert feed(hyps) == expected


def test_reset_and_properties():
    sp = StablePrefix()
    sp.update(["a", "b"])
    sp.update(["a", "b", "c"])
    assert sp.stable == ["a", "b"] and sp.tail == ["c"]
    sp.reset()
    assert sp.stable == [] and sp.tail == [] and sp.update(["x"]) == ([], ["x"])


@pytest.mark.parametrize("word,norm", [("Hello,", "hello"), ("¿Qué?", "qué"), ("...", "..."), ("don't", "don't"),
                                       ("«Olá»", "olá")])
def test_normalise(word, norm):
    assert normalise(word) == norm


def test_no_stable_word_is_ever_revised_over_random_streams():
    rng = random.Random(20261129)
    vocab = ["the", "a", "cat", "dog", "sat", "on", "mat", "The", "cat,", "mat."]
    for _ in range(500):
        truth = [rng.choice(vocab) for _ in range(rng.randint(1, 15))]
        sp = StablePrefix()
        shown_stable: list[str] = []
        for step in range(rng.randint(1, 25)):
            n = rng.randint(0, len(truth))
            hyp = list(truth[:n])
            for _ in range(rng.randint(0, 3)):  # recognition noise: substitutions, deletions, insertions
                op, i = rng.choice("sdi"), rng.randint(0, max(0, len(hyp) - 1))
                if op == "s" and hyp:
                    hyp[i] = rng.choice(vocab)
                elif op == "d" and hyp:
                    del hyp[i]
                else:
                    hyp.insert(i, rng.choice(vocab))
            stable, tail = sp.update(hyp)
            assert stable[:len(shown_stable)] == shown_stable, "a stable word was revised"
            assert len(stable) >= len(shown_stable)
            shown_stable = stable
            assert sp.stable == stable and sp.tail == tail
