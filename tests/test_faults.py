"""Fault injection on the real daemon (real broker, models, processes): every fault loses no final, the daemon
recovers on its own, and /healthz (or the log) shows what happened. The harness polls /healthz anonymously, so
it sees each problem's category ("queue", "config", "broker disconnected"), never its detail. The figures are written by
`appliance bench faults` (README); this suite runs the same faults on shorter speech.

The disk-full fault mounts a 1 MB tmpfs for the queue, so the suite runs as root (as CI does)."""

from __future__ import annotations

import os

import pytest

from appliance.bench import faults, report

OUTAGE_S = 5.0


@pytest.fixture(scope="module")
def setup(built_model, models_dir, tmp_path_factory):
    for name in ("whisper-base", "silero-vad", "bergamot-en-pt"):
        built_model(name)
    assert os.geteuid() == 0, "the disk-full fault mounts a tmpfs: run the suite as root (CI does)"
    return faults.prepare(models_dir, tmp_path_factory.mktemp("faults"), faults.FAULTS, outage_s=OUTAGE_S)


@pytest.fixture(scope="module")
def expected(setup):
    counts = faults.baseline(setup)
    assert counts.get("en", 0) >= 3 and counts.get("pt", 0) >= 3, counts
    return counts


RESULTS: list = []


@pytest.mark.parametrize("name", faults.FAULTS)
def test_fault_loses_no_final_and_recovers(setup, expected, name, artifacts):
    result = faults.run_fault(setup, name, expected)
    RESULTS.append(result.row())
    (artifacts / "faults.md").write_text(report.table(RESULTS, faults.COLUMNS) + "\n")
    assert result.finals_lost == 0, result
    assert result.recover_s is not None, result  # healthy and connected again before the run ended
    showed = "; ".join(result.status_showed)
    if name in ("recognizer", "translator"):
        assert result.note.startswith("stage restarted"), result
    elif name == "disk_full":
        assert result.note == "", result  # finals were produced while the disk was full ...
        assert "queue" in result.status_showed, result  # ... and health named the queue (anonymous /healthz: no detail)
    elif name == "config_corrupt":
        assert "config" in result.status_showed, result
    else:  # the broker went away and came back
        assert "broker" in showed, result
