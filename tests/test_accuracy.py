"""Accuracy features on real models: the room's languages, context across pauses, fragments kept open, the
translation guard. Audio comes from espeak-ng and pytest-audioeval's recordings (the bench corpus)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from appliance.audio import load_audio
from appliance.bench.corpus import build_corpus, clip_path, speak
from appliance.bench.pipeline_bench import wer
from appliance.config import Config
from appliance.engines import load_engines
from appliance.runner import make_pipeline, run_audio

SR = 16000


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


@pytest.fixture(scope="module")
def cfg():
    c = Config()
    c.languages.targets = ["en", "pt"]
    c.accelerator.threads = 2
    return c


@pytest.fixture(scope="module")
def engines(cfg, built_model, models_dir):
    for name in ("whisper-base", "silero-vad", "bergamot-en-pt", "bergamot-pt-en"):
        built_model(name)
    return load_engines(cfg, models_dir)


def run(cfg, engines, audio, *, partials=False):
    events, lock = [], threading.Lock()

    def sink(ev):
        with lock:
            events.append(ev)

    pipeline = make_pipeline(cfg, engines, sink, realtime=False, partials=partials)
    run_audio(pipeline, audio, realtime=False)
    assert not pipeline.errors
    return events, pipeline


def with_spoken(cfg, spoken):
    c = cfg.model_copy(deep=True)
    c.languages.spoken = spoken
    return c


# ---- the room's languages ---------------------------------------------------------------------------------------
def test_spoken_list_keeps_english_english(cfg, engines, corpus):
    """On its first second Whisper base rates this English sentence Latvian/Slovene before English; with the room's
    languages set, only English or Portuguese can be chosen, and the sentence is captioned in English."""
    clip = next(c for c in corpus if c.name == "espeak-en-1")
    audio = load_audio(clip_path(clip))
    early = engines.asr.detect_language(audio[: int(1.5 * SR)])
    assert early[0][0] != "en"  # the unconstrained choice on the same audio is wrong
    events, _ = run(with_spoken(cfg, ["en", "pt"]), engines, audio, partials=True)
    assert {e.source_lang for e in events if e.text} == {"en"}
    assert wer(clip.text, " ".join(e.text for e in events if e.final and e.lang == "en"), "en") <= 0.25


def test_spoken_list_never_gives_another_language(cfg, engines, corpus):
    """Portuguese speech in a room declared English/Spanish is captioned as one of those, never as Portuguese."""
    clip = next(c for c in corpus if c.name == "audioeval-pt-contagem")
    events, _ = run(with_spoken(cfg, ["en", "es"]), engines, load_audio(clip_path(clip)))
    assert {e.source_lang for e in events if e.final and e.text} <= {"en", "es"}


def test_one_spoken_language_partials_start_without_detection(cfg, engines):
    audio = speak("en-us", "Please keep your questions until the end of the presentation.")
    events, pipeline = run(with_spoken(cfg, ["en"]), engines, audio, partials=True)
    partials = [e for e in events if not e.final and e.lang == "en"]
    assert partials, "expected partials"
    first = partials[0]
    assert first.end - first.start < 1.0  # the first partial covers under a second of audio: no wait for a lock
