"""OpenVINO for real: run in the openvino flavour's venv by scripts/test-openvino (the main suite does not collect
tests/accel). Every model's graphs open on OpenVINOExecutionProvider and the placement report says so; one pipeline
run of the bundled sample captions it with every model there. Placement and words are asserted, never a timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance import flavours, placement
from appliance.modelstore.catalog import BY_NAME
from appliance.providers import available_providers, open_session

OV = "OpenVINOExecutionProvider"
PREFER = ["openvino", "cpu"]
MIN_SHARE = 0.9  # the target: at least 90 % of every graph's nodes on the provider
SAMPLE = Path(__file__).resolve().parents[2] / "appliance" / "data" / "sample-en.flac"

if flavours.installed_flavour(flavours.installed_packages()) != "openvino":
    pytest.exit("tests/accel/test_openvino.py runs in the openvino flavour's venv: scripts/test-openvino", returncode=4)


def _on_openvino(p: placement.Placement) -> None:
    assert p.provider == OV, p
    assert p.node_share is not None and p.node_share >= MIN_SHARE, p.summary()
    if p.time_us:
        assert p.time_share >= MIN_SHARE, p.summary()


def test_the_flavour_is_installed_alone_and_offers_openvino():
    assert flavours.check("openvino") is None
    assert available_providers()[0] == OV


@pytest.mark.parametrize("name", ["whisper-base", "whisper-tiny.en", "whisper-base.openvino"])
def test_whisper_graphs_run_on_openvino(built_model, models_dir, name):
    """The CPU's int8 build and the OpenVINO variant (scripts/test-openvino builds it) both run there whole."""
    from appliance.asr import WhisperModel

    folder = built_model(name) if name in BY_NAME else models_dir / name
    model = WhisperModel.load(folder, PREFER, threads=1)
    assert [p.model for p in model.placement] == [f"{name}/encoder.onnx", f"{name}/decoder.onnx"]
    for p in model.placement:
        _on_openvino(p)
        assert p.time_us, "an accelerator's warm-up is profiled"


def test_translation_and_speaker_graphs_run_on_openvino(built_model):
    from appliance.speakers import smoke_test as speaker_smoke
    from appliance.translate import Translator

    translator = Translator.load(built_model("bergamot-en-pt"), PREFER, threads=1)
    assert len(translator.placement) >= 2
    for p in translator.placement + speaker_smoke(built_model("speaker-ge2e"), PREFER):
        _on_openvino(p)


def test_the_vad_falls_back_to_the_cpu_and_the_report_says_so(built_model):
    """Silero's If branches have outputs of dynamic rank, which OpenVINO's CPU plugin refuses: open_session goes on
    to the CPU, and the report names the CPU (the VAD is pinned there in the pipeline anyway)."""
    sess = open_session(built_model("silero-vad") / "silero_vad.onnx", PREFER, threads=1)
    p = placement.report(sess, "silero-vad/silero_vad.onnx")
    assert p.provider == "CPUExecutionProvider" and p.node_share == 1.0


def test_models_verify_prints_the_placement(built_model, models_dir):
    for name in ("whisper-tiny.en", "bergamot-en-pt"):
        built_model(name)
    out = subprocess.run([sys.executable, "-m", "appliance", "--models-dir", str(models_dir), "models", "verify",
                          "whisper-tiny.en", "bergamot-en-pt", "--providers", "openvino,cpu"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    lines = [l for l in out.stdout.splitlines() if "encoder.onnx" in l or "decoder.onnx" in l]
    assert len(lines) == 4 and all(f"{OV}: " in l and "of the time" in l for l in lines), out.stdout


def test_models_are_not_built_with_another_flavour(tmp_path):
    from appliance.modelstore.build import build
    from appliance.modelstore.manifest import ModelError

    with pytest.raises(ModelError, match="cpu flavour"):
        build(["silero-vad"], tmp_path)


def test_a_pipeline_run_of_the_sample_on_openvino(built_model, models_dir):
    """The bundled sample through the daemon's pipeline (VAD, Whisper, translation) with the accelerator config the
    issue asks for: the engines open the speech model's OpenVINO variant, every model they load reports OpenVINO,
    and the captions say what the sample says."""
    from appliance.bench.pipeline_bench import wer
    from appliance.config import Config
    from appliance.engines import load_engines
    from appliance.runner import caption_file

    for name in ("whisper-base", "silero-vad", "bergamot-en-pt", "bergamot-pt-en"):
        built_model(name)
    cfg = Config(languages={"source": "en", "targets": ["pt"]}, accelerator={"providers": PREFER, "threads": 2},
                 speakers={"enabled": False})
    engines = load_engines(cfg, models_dir)
    report = engines.placement()
    assert {r["model"].split("/")[0] for r in report} >= {"whisper-base.openvino", "bergamot-en-pt"}
    for r in report:
        assert r["provider"] == OV and r["node_share"] >= MIN_SHARE and r["time_share"] >= MIN_SHARE, r
    events = []
    pipeline = caption_file(cfg, engines, SAMPLE, events.append, realtime=False, partials=False)
    assert not pipeline.errors
    english = " ".join(e.text for e in events if e.final and e.lang == "en")
    portuguese = [e.text for e in events if e.final and e.lang == "pt" and e.text]
    reference = SAMPLE.with_suffix(".txt").read_text()
    assert wer(reference, english, "en") < 0.25, english
    assert portuguese
