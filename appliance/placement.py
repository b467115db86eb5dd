"""Where a model session runs: the execution provider of each node (onnxruntime's record of the graph's assignment)
and of each profiled microsecond (its profiler, over the last warm-up run), reduced to one small report per session.

A provider that lacks an operator hands that node back to the CPU, with a copy each way; `report` logs a warning when
more than FALLBACK_LIMIT of a model's time (or, unprofiled, of its nodes) runs on another provider than its own.
The reductions (`nodes_by_provider`, `time_by_provider`, `fallback_warning`) are pure and tested with tables.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
FALLBACK_LIMIT = 0.10  # share of a model's time (or nodes) off its provider that deserves a warning
RECORD_KEY = "session.record_ep_graph_assignment_info"  # the session option that keeps the assignment


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Placement:
    model: str  # "whisper-base/encoder.onnx"
    provider: str  # the session's own (first) provider
    nodes: dict[str, int] = field(default_factory=dict)  # provider -> nodes of the partitioned graph
    time_us: dict[str, int] = field(default_factory=dict)  # provider -> µs of the profiled run; {}: not profiled

    @property
    def node_share(self) -> float | None:
        """Share of the graph's nodes on the session's provider (None: onnxruntime kept no record)."""
        return _share(self.nodes.get(self.provider, 0), sum(self.nodes.values()))

    @property
    def time_share(self) -> float | None:
        """Share of the profiled time spent on the session's provider (None: not profiled)."""
        return _share(self.time_us.get(self.provider, 0), sum(self.time_us.values()))

    def to_dict(self) -> dict:
        rounded = lambda x: None if x is None else round(x, 3)
        return {"model": self.model, "provider": self.provider, "nodes": sum(self.nodes.values()),
                "node_share": rounded(self.node_share), "time_share": rounded(self.time_share),
                "nodes_by_provider": dict(self.nodes), "time_us_by_provider": dict(self.time_us)}

    def summary(self) -> str:
        """`OpenVINOExecutionProvider: 433 of 433 nodes (100 %), 98 % of the time`."""
        pct = lambda x: "?" if x is None else f"{100 * x:.0f} %"
        total = sum(self.nodes.values())
        text = f"{self.provider}: {self.nodes.get(self.provider, 0)} of {total} nodes ({pct(self.node_share)})"
        return text + (f", {pct(self.time_share)} of the time" if self.time_us else "")


def nodes_by_provider(subgraphs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """[(provider, nodes in one assigned subgraph), ...] -> {provider: nodes}."""
    found: Counter = Counter()
    for provider, n in subgraphs:
        found[provider] += int(n)
    return dict(found)


def time_by_provider(events: list[dict]) -> dict[str, int]:
    """onnxruntime profile events -> {provider: µs of its nodes} within the last `model_run` (the earlier runs of a
    warm-up include compiling for a new shape, which is not what the model costs while it runs)."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        return {}
    last = max(runs, key=lambda e: e.get("ts", 0))
    start, end = last.get("ts", 0), last.get("ts", 0) + last.get("dur", 0)
    found: Counter = Counter()
    for e in events:
        provider = (e.get("args") or {}).get("provider")
        if e.get("cat") == "Node" and provider and start <= e.get("ts", 0) <= end:
            found[provider] += int(e.get("dur", 0))
    return dict(found)


def fallback_warning(p: Placement, limit: float = FALLBACK_LIMIT) -> str | None:
    """The warning when more than `limit` of the model's time (nodes when unprofiled) is off its provider."""
    share, what = (p.time_share, "time") if p.time_us else (p.node_share, "nodes")
    if share is None or 1 - share <= limit:
        return None
    others = sorted(((n, prov) for prov, n in (p.time_us if p.time_us else p.nodes).items() if prov != p.provider),
                    reverse=True)
    where = others[0][1] if others else CPU
    return (f"{p.model}: {100 * (1 - share):.0f} % of its {what} runs on {where}, not {p.provider} (more than "
            f"{100 * limit:.0f} %); a model variant for {p.provider} may run faster")


def _assignment(sess) -> dict[str, int]:
    getter = getattr(sess, "get_provider_graph_assignment_info", None)  # onnxruntime >= 1.24
    if getter is None or sess.get_session_options().get_session_config_entry(RECORD_KEY) != "1":
        return {}
    return nodes_by_provider((g.ep_name, len(g.get_nodes())) for g in getter())


def _profiled_time(sess) -> dict[str, int]:
    """Ends the session's profiling (when it was on) and reduces its file, which is then removed."""
    if not sess.get_session_options().enable_profiling:
        return {}
    path = sess.end_profiling()
    if not path:  # ended before
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return time_by_provider(json.load(f))
    except (OSError, ValueError) as exc:
        log.warning("reading the profile %s failed: %s", path, exc)
        return {}
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


def report(sess, model: str) -> Placement:
    """The placement of an open session (after its warm-up, which the profile covers when profiling is on); logs a
    warning when too much falls back to another provider."""
    p = Placement(model, sess.get_providers()[0], _assignment(sess), _profiled_time(sess))
    warning = fallback_warning(p)
    if warning:
        log.warning("%s", warning)
    else:
        log.info("%s placement: %s", model, p.summary())
    return p
