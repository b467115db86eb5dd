"""appliance.status.Status: the live state the daemon writes and the panel reads.

The pipeline attached here is a holder of the real pipeline Stats plus errors and backlog_s; the real
Pipeline is exercised with models in the pipeline and daemon tests.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from appliance import status as status_mod
from appliance.pipeline import Stats  # the real counters the recognizer writes
from appliance.status import Status, percentile


def holder(backlog=0.0, errors=()):
    return SimpleNamespace(stats=Stats(), errors=list(errors), backlog_s=lambda: backlog)


@pytest.mark.parametrize("values,q,expected", [
    ([], 50, None), ([3.0], 95, 3.0), ([1, 2, 3, 4], 50, 2), ([1, 2, 3, 4], 95, 4),
    (list(range(1, 101)), 95, 95), (list(range(1, 101)), 50, 50), ([5, 1, 3], 0, 1),
])
def test_percentile(values, q, expected):
    assert percentile(values, q) == expected


def test_captions_bounded_per_language_and_partial_replaced_by_its_final():
    s = Status(captions_per_language=3)
    for i in range(5):
        s.add_caption({"id": f"u{i}", "lang": "en", "final": True, "text": f"final {i}"})
    s.add_caption({"id": "u5", "lang": "en", "final": False, "text": "partial"})
    s.add_caption(SimpleNamespace(id="u5", lang="pt", final=True, text="olá", source_lang="en"))
    snap = s.snapshot()
    assert [c["text"] for c in snap["captions"]["en"]["finals"]] == ["final 2", "final 3", "final 4"]
    assert snap["captions"]["en"]["partial"]["text"] == "partial"
    s.add_caption({"id": "u5", "lang": "en", "final": True, "text": "done"})
    snap = s.snapshot()
    assert snap["captions"]["en"]["partial"] is None
    assert snap["captions"]["pt"]["finals"][0]["source_lang"] == "en"
    assert snap["caption_counts"] == {"en/final": 6, "en/partial": 1, "pt/final": 1}


def test_input_level_from_samples_in_dbfs_and_goes_stale(monkeypatch):
    s = Status()
    assert s.input_level()["level"] is None
    t = np.arange(16000) / 16000
    s.set_input_level((0.5 * np.sin(2 * math.pi * 440 * t)).astype(np.float32))
    lvl = s.input_level()
    assert lvl["rms_dbfs"] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.1)  # -9.0 dBFS
    assert lvl["peak_dbfs"] == pytest.approx(-6.0, abs=0.1)
    assert 0.8 < lvl["level"] < 0.9
    s.set_input_level(np.zeros(512, np.float32))
    assert s.input_level()["level"] == 0.0
    monkeypatch.setattr(status_mod, "LEVEL_STALE_S", 0.0)
    time.sleep(0.01)
    assert s.input_level()["level"] is None


def test_latency_percentiles_per_stage_from_the_pipeline_and_recorded():
    s = Status()
    p = holder()
    p.stats.final_latency_s = [0.5, 0.7, 0.9, 1.1, 3.0]
    p.stats.mt_ms = [20.0, 40.0]
    s.pipeline = p
    for v in (0.01, 0.02, 0.03):
        s.record_latency("publish", v)
    lat = s.latencies()
    assert lat["final"] == {"p50": 0.9, "p95": 3.0, "count": 5, "sum": pytest.approx(6.2)}
    assert lat["translation"]["p95"] == pytest.approx(0.04)
    assert lat["publish"]["p50"] == 0.02 and lat["publish"]["count"] == 3
    assert "first_partial" not in lat


def test_health_needs_a_pipeline_without_errors_that_keeps_up(monkeypatch):
    s = Status()
    assert s.health() == (False, ["pipeline not running"])
    s.pipeline = holder()
    assert s.health() == (True, [])
    s.pipeline = holder(errors=["recognizer: boom"])
    assert s.health()[1] == ["pipeline error: recognizer: boom"]
    s.pipeline = holder(backlog=9.0)
    assert s.health()[0]  # behind, but progress was recent
    s.last_progress -= status_mod.STALL_S + 1
    ok, problems = s.health()
    assert not ok and "stalled" in problems[0]
    s.pipeline.stats.audio_s = 12.0
    s.tick()  # the recognizer moved: healthy again
    assert s.health() == (True, [])


def test_summary_and_messages():
    s = Status()
    s.pipeline = holder()
    s.pipeline.stats.audio_s, s.pipeline.stats.busy_s, s.pipeline.stats.finals = 10.0, 2.5, 4
    s.pipeline.stats.partials_skipped = 2
    s.set_broker_state("connected")
    s.set_mic_state("open", "USB mic")
    s.warn("captions in 'de' are off")
    s.warn("captions in 'de' are off")
    s.error("capture: device\nlost")
    line = s.summary()
    assert line == "RTF 0.25, 4 finals, broker connected, mic open, 2 partials skipped, 2 warnings"
    msgs = s.snapshot()["messages"]
    assert [(m["level"], m["text"], m["count"]) for m in msgs] == [
        ("warning", "captions in 'de' are off", 2), ("error", "capture: device lost", 1)]
    assert s.snapshot()["microphone"]["detail"] == "USB mic"
    s.pipeline.stats.partials_aborted = 3
    assert s.counters()["partials_aborted"] == 3


def test_concurrent_writers_lose_nothing():
    s = Status(captions_per_language=2)

    def writer(n):
        for i in range(500):
            s.add_caption({"id": f"{n}-{i}", "lang": "en", "final": i % 2 == 0, "text": "x"})
            s.set_input_level(0.1)
            s.record_latency("publish", 0.001)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for _ in range(50):
        s.snapshot()
    for t in threads:
        t.join()
    snap = s.snapshot()
    assert snap["caption_counts"] == {"en/final": 1000, "en/partial": 1000}
    assert snap["latency"]["publish"]["count"] == 2000
    assert len(snap["captions"]["en"]["finals"]) == 2
