"""Model variants per execution provider: the graphs a provider runs best, derived from a model's float32 build and
kept beside the model as a folder of their own (`whisper-base.openvino`), with their manifest and hashes.

OpenVINO turns the CPU build's dynamically quantized weights back into float32 (docs/performance.md: 2.4x slower,
2.9x the memory); from weight-only int8, each MatMul weight stored as int8 behind a DequantizeLinear (per output
channel, symmetric), it keeps the weights int8 and runs as fast as the CPU build on the CPU provider. The runtime opens
the variant of the provider its sessions will open on (`for_provider`), and the model itself otherwise.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from appliance.modelstore import manifest as mf
from appliance.modelstore.build import BuildResult, Progress, _install, build_key, build_one, is_current
from appliance.modelstore.catalog import BY_NAME

SUFFIX = {"OpenVINOExecutionProvider": "openvino"}  # provider -> the variant it runs
# Whisper only: Bergamot's graphs are bound by one call per token on OpenVINO (4-5x slower), not by their weights
KINDS = ("asr",)


def weight_only_int8(model) -> int:
    """Store every 2-D float32 MatMul weight of `model` (an onnx ModelProto, changed in place) as int8 with one scale
    per output column, and every 2-D float32 Gather table (the token embedding) with one scale per row, behind a
    DequantizeLinear (opset >= 13). Returns how many weights it quantized."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, done = [], {}
    for node in model.graph.node:
        slot, axis = {"MatMul": (1, 1), "Gather": (0, 0)}.get(node.op_type, (None, None))
        w = node.input[slot] if slot is not None and len(node.input) == 2 else None
        if w in inits and len(inits[w].dims) == 2 and inits[w].data_type == 1 and w not in done:
            weight = numpy_helper.to_array(inits[w]).astype(np.float32)
            scale = (np.maximum(np.abs(weight).max(axis=1 - axis), 1e-12) / 127.0).astype(np.float32)
            shaped = scale[None, :] if axis == 1 else scale[:, None]
            q = np.clip(np.round(weight / shaped), -127, 127).astype(np.int8)
            model.graph.initializer.remove(inits[w])
            model.graph.initializer.extend([numpy_helper.from_array(q, f"{w}_int8"),
                                            numpy_helper.from_array(scale, f"{w}_scale"),
                                            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{w}_zero")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{w}_int8", f"{w}_scale", f"{w}_zero"], [f"{w}_dq"],
                                          axis=axis, name=f"{w}_DequantizeLinear"))
            done[w] = f"{w}_dq"
        if w in done:
            node.input[slot] = done[w]
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(done)


def variant_name(name: str, provider: str) -> str | None:
    suffix = SUFFIX.get(provider)
    return f"{name}.{suffix}" if suffix else None


def for_provider(models: Path, name: str, preferred: Iterable[str]) -> Path:
    """The folder to load model `name` from for sessions that prefer `preferred`: the variant of the provider they
    will open on when it is built there, else the model's own folder."""
    from appliance.providers import available_providers, choose_providers

    variant = variant_name(name, choose_providers(preferred, available_providers())[0])
    if variant and (models / variant / mf.MANIFEST).is_file():
        return models / variant
    return models / name


def _key(name: str, variant: str) -> str:
    spec = BY_NAME[name]
    base = build_key([p.pin for p in spec.packages], spec.converter, quantize=False)
    code = inspect.getsource(weight_only_int8)
    return hashlib.sha256(f"{base}|{variant}|{code}".encode()).hexdigest()[:20]


def build_variant(name: str, variant: str, models: Path, *, force: bool = False,
                  progress: Progress = print) -> BuildResult:
    """Build `<name>.<variant>` beside the model from its float32 build (restored from the build cache when there)."""
    started = time.monotonic()
    if variant not in SUFFIX.values():
        raise mf.ModelError(f"unknown variant '{variant}'; variants: {', '.join(SUFFIX.values())}")
    if name not in BY_NAME or BY_NAME[name].kind not in KINDS:
        raise mf.ModelError(f"no {variant} variant of '{name}': variants are built for "
                            f"{', '.join(n for n, s in BY_NAME.items() if s.kind in KINDS)}")
    dest, key = models / f"{name}.{variant}", _key(name, variant)
    if not force and is_current(dest, key):
        progress(f"{dest.name}: up to date ({dest})")
        return BuildResult(dest.name, "skipped", time.monotonic() - started, dest)
    models.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=models))
    try:
        build_one(BY_NAME[name], work / "float32", quantize=False, progress=progress)
        out = work / "out"
        shutil.copytree(work / "float32" / name, out, ignore=shutil.ignore_patterns(mf.MANIFEST, "*.onnx"))
        out.chmod(0o755)
        counts = [_quantize(path, out / path.name) for path in sorted((work / "float32" / name).glob("*.onnx"))]
        base = mf.read(work / "float32" / name)
        base.name, base.build_key, base.variant_of, base.variant = dest.name, key, name, variant
        base.quantization = (f"weight-only int8 for {variant}: {sum(counts)} MatMul weights int8 behind "
                             "DequantizeLinear (per output channel), activations float32")
        base.files, base.sizes = mf.hash_folder(out)
        mf.write(base, out)
        _install(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    progress(f"{dest.name}: built in {seconds:.1f} s -> {dest}")
    return BuildResult(dest.name, "built", seconds, dest)


def _quantize(src: Path, dst: Path) -> int:
    import onnx

    model = onnx.load(str(src))
    n = weight_only_int8(model)
    onnx.save(model, str(dst))
    return n
