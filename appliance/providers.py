"""Execution providers: a pure choice from what onnxruntime offers, then session opening with CPU fallback.

The choice is a pure function (`choose_providers`) so it is testable without hardware;
`open_session` is the only place that creates an onnxruntime session for the appliance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

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
    "cpu": CPU,
}


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
    import onnxruntime as ort

    return list(ort.get_available_providers())


@dataclass(frozen=True)
class SessionInfo:
    path: str
    providers: tuple[str, ...]


def session_options(threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


def open_session(path: str | Path, preferred: Iterable[str] = ("cpu",), threads: int = 0):
    """Open an onnxruntime session on the first preferred provider that works; fall back to CPU.

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
            sess = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=candidates)
        except Exception as exc:  # provider failed to initialise: try the next one
            if provider == CPU:
                raise
            log.warning("provider %s failed for %s (%s); trying the next", provider, path.name, exc)
            continue
        log.info("opened %s on %s", path.name, sess.get_providers()[0])
        return sess
    raise RuntimeError(f"no execution provider could open {path}")  # unreachable: CPU raises above
