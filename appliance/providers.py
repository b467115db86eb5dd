"""Execution providers: a pure choice from what onnxruntime offers, then session opening with CPU fallback.

The choice is a pure function (`choose_providers`) so it is testable without hardware;
`open_session` is the only place that creates an onnxruntime session for the appliance. Every session keeps the
record of which provider took which node (appliance/placement.py reads it), and one opened with `profile=True`
profiles its runs until `placement.report` reads them: its model's warm-up, then never again.
Plugin providers (onnxruntime-qnn) are registered from their package and opened on their devices.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from appliance.placement import RECORD_KEY

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"

# Short names accepted in config, mapped to onnxruntime's provider names.
ALIASES = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "cpu": CPU,
}


# Providers that come as a plugin package on plain onnxruntime (the qnn flavour): provider -> its package
PLUGINS = {"QNNExecutionProvider": "onnxruntime_qnn"}
_registered: set[str] = set()
_profiles = itertools.count()  # profile files of one process: each session's own name


def canonical(name: str) -> str:
    """`cuda` -> `CUDAExecutionProvider`; full names pass through unchanged."""
    return ALIASES.get(name.strip().lower(), name.strip())


def choose_providers(preferred: Iterable[str], available: Sequence[str]) -> list[str]:
    """Keep the preferred providers onnxruntime offers, in the preferred order, and always end with CPU."""
    chosen: list[str] = []
    for name in map(canonical, preferred):
        if name in available and name not in chosen:
            chosen.append(name)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def available_providers() -> list[str]:
    """What onnxruntime offers, plugin providers whose package is installed included (before the CPU)."""
    import onnxruntime as ort

    found = list(ort.get_available_providers())
    plugins = [p for p, pkg in PLUGINS.items() if p not in found and importlib.util.find_spec(pkg) is not None]
    return plugins + found


def openvino_device(devices: Sequence[str]) -> str:
    """The OpenVINO device for the appliance's models, from those OpenVINO finds: an Intel GPU (the first, which is
    the integrated one), else the CPU. The NPU is left out: it wants static shapes, and the Whisper graphs have
    dynamic ones (audio length, tokens so far)."""
    gpus = sorted(d for d in devices if d.split(".")[0] == "GPU")
    return gpus[0] if gpus else "CPU"


def provider_options(provider: str) -> dict[str, str]:
    """What the appliance tells a provider: OpenVINO its device (it would take the CPU otherwise) and, on a GPU, a
    cache of compiled models (a GPU compiles for seconds; on the CPU device the cache measured no gain)."""
    if provider != "OpenVINOExecutionProvider":
        return {}
    from onnxruntime.capi import _pybind_state

    device = openvino_device(_pybind_state.get_available_openvino_device_ids())
    if device == "CPU":
        return {"device_type": device}
    from appliance.modelstore.paths import cache_dir

    return {"device_type": device, "cache_dir": str(cache_dir() / "openvino")}


def accelerated(preferred: Iterable[str]) -> bool:
    """Whether sessions opened for `preferred` run on another provider than the CPU (and so are worth profiling)."""
    return choose_providers(preferred, available_providers())[0] != CPU


def _plugin_devices(provider: str, ort) -> list:
    """Register a plugin provider's library once; the accelerators (not the CPU) it found to run on."""
    if provider not in _registered:
        package = importlib.import_module(PLUGINS[provider])
        ort.register_execution_provider_library(provider, package.get_library_path())
        _registered.add(provider)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == provider
               and d.device.type != ort.OrtHardwareDeviceType.CPU]  # QNN's CPU back-end is no accelerator
    if not devices:
        raise RuntimeError(f"{provider} found no NPU or GPU on this machine")
    return devices


@dataclass(frozen=True)
class SessionInfo:
    path: str
    providers: tuple[str, ...]


def session_options(threads: int = 0, profile: str | None = None):
    """The appliance's session options; `profile`: profile the runs, into files named from that prefix."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry(RECORD_KEY, "1")  # which provider took which node (placement.report)
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return opts


def _create(ort, path: Path, candidates: list[str], threads: int, profile: bool):
    name = f"appliance-profile-{os.getpid()}-{next(_profiles)}-{path.stem}"
    prefix = os.path.join(tempfile.gettempdir(), name) if profile else None
    opts = session_options(threads, prefix)
    if candidates[0] in PLUGINS:  # a plugin runs on its devices; onnxruntime falls back to the CPU by itself
        opts.add_provider_for_devices(_plugin_devices(candidates[0], ort), {})
        return ort.InferenceSession(str(path), sess_options=opts)
    if candidates[0] == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA and cuDNN from the flavour's registry packages (onnxruntime-gpu[cuda,cudnn])
    providers = [(c, provider_options(c)) for c in candidates if c not in PLUGINS]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def open_session(path: str | Path, preferred: Iterable[str] = ("cpu",), threads: int = 0, *, profile: bool = False):
    """Open an onnxruntime session on the first preferred provider that works; fall back to CPU.

    `profile`: profile its runs until `placement.report(session, ...)` ends it (call that after the warm-up).
    Raises FileNotFoundError naming the file when the model file is missing.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file missing: {path} (run `appliance models build` to rebuild it)")
    chosen = choose_providers(preferred, available_providers())
    for i, provider in enumerate(chosen):
        candidates = chosen[i:]
        try:
            sess = _create(ort, path, candidates, threads, profile)
        except Exception as exc:  # provider failed to initialise: try the next one
            if provider == CPU:
                raise
            log.warning("provider %s failed for %s (%s); trying the next", provider, path.name, exc)
            continue
        first = sess.get_providers()[0]
        device = provider_options(first).get("device_type")
        log.info("opened %s on %s%s", path.name, first, f" (device {device})" if device else "")
        return sess
    raise RuntimeError(f"no execution provider could open {path}")  # unreachable: CPU raises above
