"""Model store: build into place atomically, idempotently; verify catches altered files; bad input is clear."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import NUMERICS

from appliance.modelstore import manifest as mf
from appliance.modelstore.build import build, import_model
from appliance.modelstore.catalog import BY_NAME, CATALOG
from appliance.modelstore.manifest import ModelError
from appliance.modelstore.verify import verify, verify_one


@pytest.fixture
def vad_copy(built_model, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(built_model("silero-vad"), models / "silero-vad")
    return models


def test_catalog_pins_every_source():
    assert {s.name for s in CATALOG} == {"silero-vad", "whisper-base", "whisper-tiny.en", "bergamot-en-pt", "bergamot-pt-en",
                                         "speaker-ge2e"}
    for spec in CATALOG:
        assert spec.packages and all(p.version.count(".") == 2 for p in spec.packages)
        assert spec.licence and spec.provenance


def test_build_writes_manifest_with_hashes(built_model):
    folder = built_model("silero-vad")
    m = mf.read(folder)
    assert m.kind == "vad" and m.source == ["silero-vad==6.2.3"] and m.opset > 0
    assert set(m.files) == {"silero_vad.onnx"}
    assert m.files["silero_vad.onnx"] == mf.sha256_file(folder / "silero_vad.onnx")
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]


def test_build_is_idempotent(vad_copy):
    before = (vad_copy / "silero-vad" / "model.json").stat().st_mtime_ns
    lines = []
    [result] = build(["silero-vad"], vad_copy, quantize=NUMERICS == "int8", progress=lines.append)
    assert result.action == "skipped"
    assert (vad_copy / "silero-vad" / "model.json").stat().st_mtime_ns == before


def test_build_from_scratch_in_clean_cache(tmp_path, isolated_cache):
    models = tmp_path / "m"
    [result] = build(["silero-vad"], models, progress=lambda m: None)
    assert result.action == "built"
    assert verify_one(models / "silero-vad").ok
    # a second models folder is filled from the cache, verified by hash
    [again] = build(["silero-vad"], tmp_path / "m2", progress=lambda m: None)
    assert again.action == "cached" and verify_one(tmp_path / "m2" / "silero-vad").ok


def test_altered_file_is_rebuilt(vad_copy):
    onnx = vad_copy / "silero-vad" / "silero_vad.onnx"
    data = bytearray(onnx.read_bytes())
    data[1000] ^= 0xFF
    onnx.write_bytes(bytes(data))
    [result] = build(["silero-vad"], vad_copy, progress=lambda m: None)
    assert result.action in ("built", "cached")
    assert verify_one(vad_copy / "silero-vad").ok


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_verify_names_the_damaged_file(vad_copy, damage, appliance_cmd):
    onnx = vad_copy / "silero-vad" / "silero_vad.onnx"
    if damage == "truncate":
        onnx.write_bytes(onnx.read_bytes()[:1000])
    elif damage == "alter":
        data = bytearray(onnx.read_bytes())
        data[-10] ^= 0x01
        onnx.write_bytes(bytes(data))
    else:
        onnx.unlink()
    report = verify_one(vad_copy / "silero-vad")
    assert not report.ok
    assert "silero_vad.onnx" in report.problems[0]
    assert "appliance models build --force silero-vad" in report.problems[0]
    proc = subprocess.run(appliance_cmd + ["--models-dir", str(vad_copy), "models", "verify", "silero-vad"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "silero_vad.onnx" in proc.stdout and "FAIL" in proc.stdout


def test_verify_reports_missing_builtins(tmp_path):
    reports = {r.name: r for r in verify(tmp_path, smoke=False)}
    assert set(reports) == set(BY_NAME)
    assert all(not r.ok for r in reports.values())
    assert "appliance models build whisper-base" in reports["whisper-base"].problems[0]


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="unknown model whisper-huge; built-in models: silero-vad"):
        build(["whisper-huge"], tmp_path)


@pytest.mark.parametrize("fmt", ["whisper-hf", "whisper-ct2", "marian-hf", "bergamot"])
def test_import_of_a_folder_that_is_not_a_model_leaves_nothing(tmp_path, fmt, appliance_cmd):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    models = tmp_path / "models"
    proc = subprocess.run(appliance_cmd + ["--models-dir", str(models), "models", "import", fmt, str(junk), "--name", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "appliance: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert str(junk) in proc.stderr
    assert not models.exists() or not list(models.iterdir())


def test_missing_package_version_is_a_clear_error(tmp_path, isolated_cache):
    from appliance.modelstore.sources import Package, ensure_package

    with pytest.raises(ModelError, match=r"cannot install silero-vad==0\.0\.1: .*registry"):
        ensure_package(Package("silero-vad", "0.0.1"))
    assert not [p for p in (isolated_cache / "sources").iterdir() if p.name.startswith(".")]


def test_runtime_imports_neither_torch_nor_ctranslate2():
    code = (
        "import sys, importlib\n"
        "mods = ['appliance.config', 'appliance.providers', 'appliance.modelstore.verify', 'appliance.cli']\n"
        "for extra in ['appliance.asr', 'appliance.translate', 'appliance.vad', 'appliance.pipeline', 'appliance.bus',"
        " 'appliance.daemon', 'appliance.panel', 'appliance.audio', 'appliance.captions', 'appliance.events']:\n"
        "    if importlib.util.find_spec(extra) is not None: mods.append(extra)\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = sorted(n for n in ('torch', 'ctranslate2', 'transformers', 'onnx') if n in sys.modules)\n"
        "print(len(mods), bad)\n"
        "raise SystemExit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_manifest_records_the_build_tools(tmp_path, isolated_cache, monkeypatch):
    """Each manifest names what made its files (python, onnx, onnxruntime, numpy), and those versions are part of the
    build key: a build with other tools is not taken for this one."""
    from appliance.modelstore import build as b

    [result] = build(["silero-vad"], tmp_path / "m", progress=lambda m: None)
    tools = mf.read(result.folder).build_tools
    assert {"python", "numpy", "onnx", "onnxruntime"} <= set(tools) and tools == b.build_tools()
    assert all(tools.values())
    key = b.build_key(["silero-vad==6.2.3"], "silero_vad", True)
    monkeypatch.setattr(b, "build_tools", lambda: {**tools, "onnxruntime": "0.0.1"})
    assert b.build_key(["silero-vad==6.2.3"], "silero_vad", True) != key
    [again] = build(["silero-vad"], tmp_path / "m", progress=lambda m: None)
    assert again.action == "built"  # not skipped, not taken from the cache of the other tools' build
