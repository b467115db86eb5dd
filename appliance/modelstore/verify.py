"""Verify installed models: re-hash every file, load each model with onnxruntime on the preferred execution providers
and run one smoke inference, whose placement (provider, share of nodes and of time on it) the report keeps."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from appliance.modelstore import manifest as mf
from appliance.modelstore.catalog import BY_NAME
from appliance.modelstore.manifest import Manifest, ModelError

# kind -> "module:function" taking the model folder and raising on failure
SMOKE_TESTS = {"asr": "appliance.asr:smoke_test", "mt": "appliance.translate:smoke_test", "vad": "appliance.vad:smoke_test",
               "speaker": "appliance.speakers:smoke_test"}


@dataclass
class Report:
    name: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    placement: list = field(default_factory=list)  # placement.Placement of each session the smoke test opened


def installed(models: Path) -> list[Manifest]:
    """Manifests of every readable model under `models` (for listings; does not hash)."""
    found = []
    for folder in sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")) if models.is_dir() else []:
        try:
            found.append(mf.read(folder))
        except ModelError:
            continue
    return found


def _smoke(kind: str) -> Callable[[Path, Sequence[str]], list]:
    module, _, func = SMOKE_TESTS[kind].partition(":")
    return getattr(importlib.import_module(module), func)


def verify_one(folder: Path, *, smoke: bool = True, providers: Sequence[str] = ("cpu",)) -> Report:
    name = folder.name
    if not folder.is_dir():
        hint = f"appliance models build {name}" if name in BY_NAME else f"appliance models import ... --name {name}"
        return Report(name, False, [f"{folder}: not installed; run `{hint}`"])
    try:
        manifest = mf.read(folder)
    except ModelError as exc:
        return Report(name, False, [str(exc)])
    problems = mf.check_files(folder, manifest)
    placed: list = []
    if not problems and smoke:
        if manifest.kind not in SMOKE_TESTS:
            problems.append(f"{folder}: unknown kind '{manifest.kind}' in {mf.MANIFEST}")
        else:
            try:
                placed = list(_smoke(manifest.kind)(folder, tuple(providers)) or [])
            except Exception as exc:  # any failure to load or run is a verification failure
                problems.append(f"{folder}: smoke inference failed: {exc}; {mf.rebuild_hint(name)}")
    return Report(name, not problems, problems, manifest, placed)


def verify(models: Path, names: Iterable[str] | None = None, *, smoke: bool = True,
           providers: Sequence[str] = ("cpu",)) -> list[Report]:
    """Verify the named models, or every built-in model plus every other installed one, on `providers`."""
    names = list(names or [])
    if not names:
        names = list(BY_NAME)
        if models.is_dir():
            names += [p.name for p in sorted(models.iterdir())
                      if p.is_dir() and not p.name.startswith(".") and p.name not in BY_NAME]
    return [verify_one(models / n, smoke=smoke, providers=providers) for n in names]
