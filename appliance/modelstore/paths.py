"""Where models live and where build sources are cached."""

from __future__ import annotations

import os
from pathlib import Path

_PROJECT_MODELS = Path(__file__).resolve().parents[2] / "models"
SYSTEM_MODELS = Path("/var/lib/appliance/models")


def models_dir(configured: str | None = None) -> Path:
    """Config value, else $APPLIANCE_MODELS_DIR, else the project's models/ (a checkout), else /var/lib/appliance/models."""
    if configured:
        return Path(configured)
    if env := os.environ.get("APPLIANCE_MODELS_DIR"):
        return Path(env)
    if (_PROJECT_MODELS / "README.md").is_file():
        return _PROJECT_MODELS
    return SYSTEM_MODELS


def cache_dir() -> Path:
    """$APPLIANCE_CACHE, else $XDG_CACHE_HOME/appliance, else ~/.cache/appliance."""
    if env := os.environ.get("APPLIANCE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "appliance"
