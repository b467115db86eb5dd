"""Placement: which execution provider runs each node and each profiled microsecond of a model session. The
reductions get tables; the report is read from real sessions of the built models on the CPU provider here, and on
OpenVINO in its own venv (tests/accel/test_openvino.py)."""

from __future__ import annotations

import logging

import pytest

from appliance import placement
from appliance.placement import CPU, Placement, fallback_warning, nodes_by_provider, time_by_provider
from appliance.providers import open_session

OV = "OpenVINOExecutionProvider"


def _run(ts, dur):
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def _node(ts, dur, provider):
    return {"cat": "Node", "name": f"n{ts}_kernel_time", "ts": ts, "dur": dur, "args": {"provider": provider}}


@pytest.mark.parametrize("events, expected", [
    ([], {}),
    ([_node(5, 10, CPU)], {}),  # no run: nothing to attribute
    ([_run(0, 100), _node(5, 10, CPU), _node(20, 30, CPU)], {CPU: 40}),
    ([_run(0, 100), _node(5, 60, OV), _node(70, 20, CPU)], {OV: 60, CPU: 20}),
    # only the last run counts: the first one compiled for its shapes
    ([_run(0, 1000), _node(5, 900, OV), _run(2000, 100), _node(2005, 50, OV), _node(2060, 30, CPU)],
     {OV: 50, CPU: 30}),
    ([_run(0, 100), {"cat": "Node", "ts": 5, "dur": 9, "args": {}}, _node(6, 3, OV)], {OV: 3}),  # no provider: fence
])
def test_time_by_provider(events, expected):
    assert time_by_provider(events) == expected


@pytest.mark.parametrize("subgraphs, expected", [
    ([], {}),
    ([(CPU, 1)] * 3, {CPU: 3}),
    ([(OV, 400), (CPU, 1), (CPU, 2), (OV, 30)], {OV: 430, CPU: 3}),
])
def test_nodes_by_provider(subgraphs, expected):
    assert nodes_by_provider(subgraphs) == expected


@pytest.mark.parametrize("p, warns", [
    (Placement("m", CPU, {CPU: 10}, {CPU: 100}), False),
    (Placement("m", OV, {OV: 10}, {OV: 100}), False),
    (Placement("m", OV, {OV: 50, CPU: 50}, {OV: 91, CPU: 9}), False),  # many nodes, little time: fine
    (Placement("m", OV, {OV: 99, CPU: 1}, {OV: 89, CPU: 11}), True),  # few nodes, much time
    (Placement("m", OV, {OV: 89, CPU: 11}), True),  # unprofiled: the nodes decide
    (Placement("m", OV, {OV: 90, CPU: 10}), False),
    (Placement("m", OV), False),  # nothing known
])
def test_fallback_warning(p, warns):
    text = fallback_warning(p)
    assert (text is not None) == warns
    if warns:
        assert "m: " in text and CPU in text and OV in text


def test_placement_shares_and_dict():
    p = Placement("whisper-base/encoder.onnx", OV, {OV: 430, CPU: 3}, {OV: 900, CPU: 100})
    assert p.node_share == pytest.approx(430 / 433) and p.time_share == pytest.approx(0.9)
    d = p.to_dict()
    assert (d["nodes"], d["node_share"], d["time_share"]) == (433, 0.993, 0.9)
    assert p.summary() == f"{OV}: 430 of 433 nodes (99 %), 90 % of the time"
    assert Placement("x", CPU).to_dict()["node_share"] is None


def test_report_of_real_cpu_sessions(built_model, caplog):
    """Every node of every graph on the CPU provider; a profiled session gives its time and stops profiling."""
    import numpy as np

    folder = built_model("silero-vad")
    plain = placement.report(open_session(folder / "silero_vad.onnx", ["cpu"], threads=1), "silero-vad")
    assert plain.provider == CPU and plain.node_share == 1.0 and sum(plain.nodes.values()) > 20 and not plain.time_us
    sess = open_session(folder / "silero_vad.onnx", ["cpu"], threads=1, profile=True)
    feeds = {"input": np.zeros((1, 576), np.float32), "state": np.zeros((2, 1, 128), np.float32),
             "sr": np.array(16000, np.int64)}
    for _ in range(2):
        sess.run(None, feeds)
    with caplog.at_level(logging.INFO, logger="appliance.placement"):
        profiled = placement.report(sess, "silero-vad")
    assert profiled.time_share == 1.0 and profiled.time_us[CPU] > 0 and "100 % of the time" in caplog.text
    assert not sess.get_session_options().enable_profiling or placement._profiled_time(sess) == {}  # ended


def test_whisper_and_translator_load_report_their_graphs(built_model):
    from appliance.asr import WhisperModel
    from appliance.translate import Translator

    asr = WhisperModel.load(built_model("whisper-tiny.en"), ["cpu"], threads=1, profile=True)
    mt = Translator.load(built_model("bergamot-en-pt"), ["cpu"], threads=1)
    assert [p.model for p in asr.placement] == ["whisper-tiny.en/encoder.onnx", "whisper-tiny.en/decoder.onnx"]
    assert all(p.provider == CPU and p.node_share == 1.0 and p.time_share == 1.0 for p in asr.placement)
    assert [p.model for p in mt.placement][:2] == ["bergamot-en-pt/encoder.onnx", "bergamot-en-pt/decoder.onnx"]
    assert all(p.node_share == 1.0 and not p.time_us for p in mt.placement)  # the CPU alone: not profiled
