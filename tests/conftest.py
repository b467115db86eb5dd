"""Shared fixtures. Models are the real built ones: `scripts/test` builds them; a missing one is built here, never skipped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    from appliance.modelstore.paths import models_dir as default_models_dir

    return default_models_dir()


@pytest.fixture(scope="session")
def built_model(models_dir):
    """built_model("whisper-base") -> folder of the verified built model (built now if missing)."""
    from appliance.modelstore.build import build

    def get(name: str) -> Path:
        build([name], models_dir, progress=lambda m: print(m, file=sys.stderr))
        return models_dir / name

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
