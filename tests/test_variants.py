"""Model variants per provider: the weight-only int8 transform on a small graph of its own, and the OpenVINO variant
of a real Whisper model built beside it, verified by its manifest, and chosen only where that provider runs (here,
with the CPU alone, never; tests/accel/test_openvino.py opens it on OpenVINO)."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.modelstore import manifest as mf
from appliance.modelstore import variants


def _graph():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    w3 = rng.standard_normal((2, 4, 4)).astype(np.float32)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("MatMul", ["x", "w"], ["b"]),
             helper.make_node("MatMul", ["a", "w3"], ["c"]), helper.make_node("MatMul", ["a", "y"], ["d"]),
             helper.make_node("Gather", ["table", "ids"], ["e"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
                     helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3]),
                     helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in
         (("b", [2, 4]), ("c", [2, 2, 4]), ("d", [2, 3]), ("e", [3, 4]))],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w3, "w3"), numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_weight_only_int8_quantizes_each_2d_weight_and_table_once_and_stays_close():
    import onnx

    model = _graph()
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32),
             "y": np.ones((4, 3), np.float32), "ids": np.array([0, 9, 3], np.int64)}
    before = _run(model, feeds)
    assert variants.weight_only_int8(model) == 2  # w (used twice) and the table: w3 is 3-D, y is an input
    onnx.checker.check_model(model)
    dq = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert set(dq) == {"w_int8", "table_int8"}
    assert [a.i for a in dq["w_int8"].attribute] == [1] and [a.i for a in dq["table_int8"].attribute] == [0]
    weights = {i.name: i for i in model.graph.initializer}
    assert weights["w_int8"].data_type == weights["table_int8"].data_type == onnx.TensorProto.INT8
    assert "w" not in weights and "table" not in weights and list(weights["table_scale"].dims) == [10]
    for b, a in zip(before, _run(model, feeds)):
        assert np.allclose(a, b, atol=0.05 * np.abs(b).max())


def test_openvino_variant_of_a_whisper_model(tmp_path, built_model):
    from appliance.modelstore.verify import verify_one
    from appliance.panel.facts import asr_models

    built_model("whisper-tiny.en")
    models = tmp_path / "models"
    result = variants.build_variant("whisper-tiny.en", "openvino", models, progress=lambda m: None)
    folder = models / "whisper-tiny.en.openvino"
    assert result.action == "built" and result.folder == folder
    m = mf.read(folder)
    assert (m.name, m.kind, m.variant_of, m.variant) == \
        ("whisper-tiny.en.openvino", "asr", "whisper-tiny.en", "openvino")
    assert "weight-only int8" in m.quantization and {"encoder.onnx", "decoder.onnx", "whisper.json"} <= set(m.files)
    assert not mf.check_files(folder, m)
    assert variants.build_variant("whisper-tiny.en", "openvino", models, progress=lambda m: None).action == "skipped"
    report = verify_one(folder)  # hashes, then a smoke run (on the CPU here: float32 speed, same words)
    assert report.ok, report.problems
    assert asr_models(models) == []  # a variant is not a speech model to choose; the provider chooses it
    assert variants.for_provider(models, "whisper-tiny.en", ["openvino", "cpu"]) == models / "whisper-tiny.en"
    with pytest.raises(mf.ModelError, match="no openvino variant of 'bergamot-en-pt'"):
        variants.build_variant("bergamot-en-pt", "openvino", models)
    with pytest.raises(mf.ModelError, match="unknown variant"):
        variants.build_variant("whisper-tiny.en", "tensorrt", models)


@pytest.mark.parametrize("provider, expected", [
    ("OpenVINOExecutionProvider", "whisper-base.openvino"), ("CPUExecutionProvider", None),
    ("CUDAExecutionProvider", None),
])
def test_variant_name(provider, expected):
    assert variants.variant_name("whisper-base", provider) == expected
