"""`appliance bench speakers`: the scoring functions on known cases, and a quick end-to-end run that reports every
agreed key (values are measured and printed, never asserted as timings)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from appliance.bench.speakers_bench import change_scores, make_meeting, rand_index

KEYS = {"rand_index", "change_f1", "change_precision", "change_recall", "speakers_found", "speakers_true",
        "ms_per_utterance", "extra_final_latency_p50_ms", "peak_rss_mb"}


@pytest.mark.parametrize("truth, found, expected", [
    (list("AABB"), list("xxyy"), 1.0),  # labels are arbitrary: only same / different matters
    (list("AABB"), list("xxxx"), 2 / 6),
    (list("ABAB"), list("xyzw"), 4 / 6),
    (list("A"), list("x"), 1.0),
])
def test_rand_index(truth, found, expected):
    assert rand_index(truth, found) == pytest.approx(expected)


def test_change_scores():
    truth, found = list("AABBA"), list("xxyzz")  # true changes at 2 and 4; found at 2 and 3
    assert change_scores(truth, found) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert change_scores(list("AB"), list("xy"))["f1"] == 1.0


def test_meetings_bring_every_voice_back():
    bank = {v: [np.full(16000, i, np.float32)] for i, v in enumerate("ABCDEFGH")}
    meeting = make_meeting(bank, np.random.default_rng(0), voices=5, turns=16)
    voices = [t.voice for t in meeting]
    assert len(meeting) == 16 and len(set(voices)) == 5
    assert all(voices.count(v) >= 2 for v in set(voices))


def test_bench_speakers_quick_json(appliance_cmd, built_model, models_dir):
    built_model("speaker-ge2e")
    proc = subprocess.run(appliance_cmd + ["--models-dir", str(models_dir), "bench", "speakers", "--quick", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert KEYS <= set(data)
    assert 0 <= data["rand_index"] <= 1 and 0 <= data["change_f1"] <= 1
    assert data["speakers_true"] == 5 and data["speakers_found"] >= 1
    assert len(data["meetings"]) == 1 and data["meetings"][0]["turns"] == 16
