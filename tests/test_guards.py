import pytest

from appliance.guards import asr_rejection, repeated_ngram, translation_rejection


@pytest.mark.parametrize(
    "text, logprob, nosp, dur, rejected",
    [
        ("The meeting will start at ten.", -0.2, 0.01, 2.5, False),
        ("Thank you.", -0.9, 0.3, 1.0, True),
        ("Thank you.", -0.1, 0.01, 1.5, True),  # short clip: Whisper's classic silence output
        ("Thank you all for coming today to this meeting.", -0.2, 0.02, 3.0, False),
        ("Subtitles by the Amara.org community", -0.3, 0.1, 4.0, True),
        ("", -0.1, 0.0, 1.0, True),
        ("Hello hello hello hello hello hello hello hello", -0.3, 0.0, 3.0, True),
        ("we need to we need to we need to we need to", -0.3, 0.0, 4.0, True),
        ("Something quiet", -1.5, 0.8, 1.0, True),
        ("one two three four five six seven eight nine ten", -0.2, 0.0, 0.5, True),
        ("one two three four five six seven eight nine ten", -0.2, 0.0, 4.0, False),
    ],
)
def test_asr_rejection(text, logprob, nosp, dur, rejected):
    assert (asr_rejection(text, avg_logprob=logprob, no_speech_prob=nosp, duration_s=dur) is not None) == rejected


@pytest.mark.parametrize(
    "src, out, rejected",
    [
        ("The meeting starts at ten.", "A reunião começa às dez.", False),
        ("The meeting starts at ten.", "", True),
        ("The meeting starts at ten o'clock today.", "Sim.", True),
        ("Hello", "Olá", False),
        ("We have 25 people here.", "Temos pessoas aqui.", True),
        ("We have 25 people here.", "Temos 25 pessoas aqui.", False),
        ("Good morning everyone.", "Bom dia a todos. Legendas pela comunidade Amara.org", True),
        ("Yes, we agree on this.", "sim sim sim sim sim sim sim sim sim sim", True),
    ],
)
def test_translation_rejection(src, out, rejected):
    assert (translation_rejection(src, out) is not None) == rejected


def test_repeated_ngram():
    assert repeated_ngram("a b c a b c a b c".split())
    assert not repeated_ngram("the cat sat on the mat".split())
    assert not repeated_ngram("no no".split())


def test_chrf_matches_sacrebleu():
    import sacrebleu

    from appliance.guards import chrf

    for hyp, ref in [("Thank you for your kind words.", "Thank you all for coming."), ("a b", "a b"),
                     ("Good day all, and welcome", "Good morning everyone, and welcome"), ("", "abc")]:
        assert chrf(hyp, ref) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score, abs=1e-6), (hyp, ref)


def test_roundtrip_pick_prefers_the_candidate_that_comes_back():
    from appliance.translate.roundtrip import pick

    source = "Thank you all for coming."
    candidates = [("Obrigado por enviar uma edição.", -0.06), ("Obrigado a todos por vir.", -0.52)]
    backs = [["Thank you for your kind words.", "Thank you for your comments."], ["Thank you all for coming."]]
    assert pick(source, candidates, backs) == (1, 100.0)
    assert pick(source, candidates, [["Thank you for your kind words."], []]) == (0, pytest.approx(36.53, abs=0.01))


@pytest.mark.parametrize("text, prompt, expected", [
    ("Hello world. How are you today?", "The quick brown fox. Hello world.", "How are you today?"),
    ("You today? You today?", None, "You today?"),
    ("Hello world.", "Hello world.", ""),  # all echo: nothing new was heard
    ("Yes. Yes, it is.", "Yes.", "Yes. Yes, it is."),  # one-word sentences are too common to call an echo
    ("The budget is ready.", "The budget for next year.", "The budget is ready."),
])
def test_strip_prompt_echo(text, prompt, expected):
    from appliance.guards import strip_prompt_echo

    assert strip_prompt_echo(text, prompt) == expected
