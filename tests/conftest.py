"""Shared fixtures. Models are the real built ones: `scripts/test` builds them; a missing one is built here, never skipped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
# Which numerics the model tests run on: the shipped int8 builds, or the float32 reference builds
# (`APPLIANCE_TEST_NUMERICS=float32 scripts/test`), whose borderline decisions differ as another CPU's do.
NUMERICS = os.environ.get("APPLIANCE_TEST_NUMERICS", "int8")
if NUMERICS not in ("int8", "float32"):
    raise pytest.UsageError(f"APPLIANCE_TEST_NUMERICS={NUMERICS!r}: choose int8 or float32")


def pytest_configure(config):
    if NUMERICS == "float32":  # a models folder of their own, seen by the daemons the tests start too
        from appliance.modelstore.paths import cache_dir

        os.environ.setdefault("APPLIANCE_MODELS_DIR", str(cache_dir() / "models-float32"))


def pytest_report_header(config):
    from appliance.modelstore.paths import models_dir

    return f"models: {NUMERICS} builds in {models_dir()}"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    from appliance.modelstore.paths import models_dir as default_models_dir

    return default_models_dir()


@pytest.fixture(scope="session")
def built_model(models_dir):
    """built_model("whisper-base") -> folder of the verified built model (built now if missing). In another onnxruntime
    flavour's venv (scripts/test-openvino) the models are those .venv built: checked, never built there."""
    from appliance import flavours
    from appliance.modelstore import manifest as mf
    from appliance.modelstore.build import build

    builds = flavours.installed_flavour(flavours.installed_packages()) in ("cpu", "qnn")

    def get(name: str) -> Path:
        folder = models_dir / name
        if builds:
            build([name], models_dir, quantize=NUMERICS == "int8", progress=lambda m: print(m, file=sys.stderr))
        elif not (folder / mf.MANIFEST).is_file() or mf.check_files(folder, mf.read(folder)):
            pytest.fail(f"{folder} is not built: run scripts/setup --test (the cpu flavour builds the models) first")
        return folder

    return get


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def appliance_cmd():
    """The installed `appliance` command as a subprocess argv prefix."""
    return [sys.executable, "-m", "appliance"]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
