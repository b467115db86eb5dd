"""What the appliance is doing right now: a small thread-safe object the daemon writes and the panel reads.

Writers (the daemon, the publisher, the capture loop) call the `set_*` / `add_*` / `warn` methods from
any thread; readers take a `snapshot()` (plain JSON-able dict) or `summary()` (one line for sd_notify).
Everything kept is bounded. The pipeline's own counters are read from `status.pipeline.stats` when the
daemon attaches a pipeline; nothing here reaches into other stages.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable

__all__ = ["Status", "percentile", "STALL_BACKLOG_S", "STALL_S"]

CAPTIONS_PER_LANGUAGE = 5  # finals kept per language for the live page
MAX_MESSAGES = 20  # warnings and errors kept
LATENCY_WINDOW = 500  # samples per stage used for the percentiles
LEVEL_STALE_S = 2.0  # an input level older than this is reported as none (capture stopped)
STALL_BACKLOG_S = 5.0  # recognition with this much audio waiting ...
STALL_S = 20.0  # ... and no progress for this long is stuck
FLOOR_DBFS = -60.0  # input level meter: this maps to 0, 0 dBFS to 1

# stage name -> (attribute of pipeline.stats, factor to seconds)
PIPELINE_STAGES = {
    "first_partial": ("first_partial_s", 1.0),  # speech onset -> first partial caption
    "final": ("final_latency_s", 1.0),  # end of speech -> final caption (source language)
    "translation": ("mt_ms", 1e-3),  # one translation call
    "translated_final": ("translated_extra_s", 1.0),  # source final -> its translation out
}


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    data = sorted(values)
    if not data:
        return None
    rank = max(1, math.ceil(q / 100 * len(data)))
    return data[min(rank, len(data)) - 1]


def _field(event: Any, name: str, default: Any = None) -> Any:
    if isinstance(event, dict):
        return event.get(name, default)
    return getattr(event, name, default)


class Status:
    """Thread-safe live state. Attach the running pipeline with `status.pipeline = p` (or None)."""

    def __init__(self, *, captions_per_language: int = CAPTIONS_PER_LANGUAGE, max_messages: int = MAX_MESSAGES):
        self._lock = threading.Lock()
        self.started = time.time()  # wall clock, for display
        self._t0 = time.monotonic()
        self.last_progress = self._t0  # monotonic time the recognizer last consumed audio (updated by tick())
        self.pipeline = None
        self._last_audio_s = 0.0
        self._broker = {"state": "starting", "detail": "", "since": self.started}
        self._mic = {"state": "starting", "detail": "", "since": self.started}
        self._rms: float | None = None
        self._peak: float | None = None
        self._level_at = 0.0
        self._providers: list[str] = []
        self._placement: list[dict] = []
        self._per_lang = captions_per_language
        self._finals: dict[str, deque] = {}
        self._partials: dict[str, dict] = {}
        self._counts: Counter = Counter()  # (lang, "final"|"partial") -> n
        self._messages: deque = deque(maxlen=max_messages)
        self._latency: dict[str, deque] = {}
        self._latency_totals: dict[str, list[float]] = {}  # stage -> [count, sum]
        self._checks: dict[str, tuple[Callable[[], str | None], bool]] = {}
        self._config: dict = {"state": "loaded", "detail": "", "at": self.started, "overrides": {}}

    # ---- writers --------------------------------------------------------------------------------------------
    def set_broker_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            if state != self._broker["state"] or detail != self._broker["detail"]:
                self._broker = {"state": str(state), "detail": str(detail or ""), "since": time.time()}

    def set_mic_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            if state != self._mic["state"] or detail != self._mic["detail"]:
                self._mic = {"state": str(state), "detail": str(detail or ""), "since": time.time()}

    def set_input_level(self, samples: Any) -> None:
        """A chunk of float samples (-1..1), or an RMS value; feeds the level meter."""
        if isinstance(samples, (int, float)):
            rms = peak = abs(float(samples))
        else:
            import numpy as np

            x = np.asarray(samples, dtype=np.float32)
            if x.size == 0:
                return
            rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
            peak = float(np.max(np.abs(x)))
        with self._lock:
            self._rms, self._peak, self._level_at = rms, peak, time.monotonic()

    def set_providers(self, providers: Iterable[str]) -> None:
        with self._lock:
            self._providers = [str(p) for p in providers]

    def set_placement(self, placement: Iterable[dict]) -> None:
        """Per loaded graph: model, provider, node_share, time_share (Engines.placement())."""
        with self._lock:
            self._placement = [dict(p) for p in placement]

    def add_caption(self, event: Any) -> None:
        """A CaptionEvent (or dict with lang, final, text, id, source_lang)."""
        lang = str(_field(event, "lang", "") or "?")
        final = bool(_field(event, "final", False))
        item = {"id": str(_field(event, "id", "")), "text": str(_field(event, "text", "")),
                "source_lang": _field(event, "source_lang"), "final": final, "at": time.time()}
        with self._lock:
            self._counts[(lang, "final" if final else "partial")] += 1
            if final:
                self._finals.setdefault(lang, deque(maxlen=self._per_lang)).append(item)
                current = self._partials.get(lang)
                if current is not None and current["id"] == item["id"]:
                    del self._partials[lang]
            else:
                self._partials[lang] = item

    def record_latency(self, stage: str, seconds: float) -> None:
        """Latency of a stage the pipeline does not measure itself (e.g. 'publish')."""
        with self._lock:
            self._latency.setdefault(stage, deque(maxlen=LATENCY_WINDOW)).append(float(seconds))
            totals = self._latency_totals.setdefault(stage, [0, 0.0])
            totals[0] += 1
            totals[1] += float(seconds)

    def warn(self, message: str) -> None:
        self._message("warning", message)

    def error(self, message: str) -> None:
        self._message("error", message)

    def _message(self, level: str, message: str) -> None:
        text = " ".join(str(message).split())
        with self._lock:
            if self._messages and self._messages[-1]["text"] == text and self._messages[-1]["level"] == level:
                self._messages[-1]["count"] += 1
                self._messages[-1]["at"] = time.time()
            else:
                self._messages.append({"level": level, "text": text, "at": time.time(), "count": 1})

    def tick(self) -> None:
        """Call about once a second: notes recognizer progress for the stall check."""
        stats = getattr(self.pipeline, "stats", None)
        audio_s = float(getattr(stats, "audio_s", 0.0) or 0.0)
        with self._lock:
            if audio_s != self._last_audio_s:
                self._last_audio_s = audio_s
                self.last_progress = time.monotonic()

    # ---- readers --------------------------------------------------------------------------------------------
    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._t0

    def input_level(self) -> dict:
        """{'level': 0..1 for a meter, 'rms_dbfs', 'peak_dbfs'}; values None when no recent audio."""
        with self._lock:
            rms, peak, at = self._rms, self._peak, self._level_at
        if rms is None or time.monotonic() - at > LEVEL_STALE_S:
            return {"level": None, "rms_dbfs": None, "peak_dbfs": None}
        db = 20 * math.log10(max(rms, 1e-9))
        pdb = 20 * math.log10(max(peak or 0.0, 1e-9))
        level = min(1.0, max(0.0, (db - FLOOR_DBFS) / -FLOOR_DBFS))
        return {"level": round(level, 3), "rms_dbfs": round(max(db, -120.0), 1), "peak_dbfs": round(max(pdb, -120.0), 1)}

    def latencies(self) -> dict[str, dict]:
        """stage -> {'p50', 'p95', 'count', 'sum'} in seconds (percentiles over the last samples)."""
        out: dict[str, dict] = {}
        stats = getattr(self.pipeline, "stats", None)
        if stats is not None:
            for stage, (attr, factor) in PIPELINE_STAGES.items():
                series = getattr(stats, attr, None)
                if series is None:
                    continue
                values = list(series)[-LATENCY_WINDOW:]  # a bounded pipeline Window (or a plain list)
                if values:
                    count = getattr(series, "count", None)
                    exact = isinstance(count, int)  # a Window counts every sample, not only the recent ones
                    out[stage] = self._summ([v * factor for v in values], count if exact else len(values),
                                            (series.total if exact else sum(values)) * factor)
        with self._lock:
            own = {k: (list(v), list(self._latency_totals[k])) for k, v in self._latency.items()}
        for stage, (values, (count, total)) in own.items():
            out[stage] = self._summ(values, int(count), total)
        return out

    @staticmethod
    def _summ(window: list[float], count: int, total: float) -> dict:
        return {"p50": percentile(window, 50), "p95": percentile(window, 95), "count": count, "sum": total}

    def add_check(self, name: str, check: Callable[[], str | None], *, critical: bool = True) -> None:
        """A stage's own health check: returns None when fine, else one line saying what is wrong.
        Checked on every health() call, so a problem clears as soon as the stage works again. A problem of a
        non-critical check is listed but leaves the verdict healthy (a restart would not fix it)."""
        with self._lock:
            self._checks[name] = (check, critical)

    def remove_check(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def set_config_state(self, state: str, detail: str = "", overrides: dict | None = None) -> None:
        """How the last config change went ('applied', 'rolled back', ...) and which keys the command line pins."""
        with self._lock:
            self._config = {"state": str(state), "detail": str(detail or ""), "at": time.time(),
                            "overrides": dict(self._config.get("overrides", {}) if overrides is None else overrides)}

    def config_state(self) -> dict:
        with self._lock:
            return dict(self._config, overrides=dict(self._config["overrides"]))

    def broker_state(self) -> str:
        with self._lock:
            return self._broker["state"]

    def health(self) -> tuple[bool, list[str]]:
        """(healthy, problems): every stage check passes, and the pipeline runs, is not failing and is not stalled
        behind its audio. A problem is reported while it lasts; it clears when the stage works again."""
        with self._lock:
            checks = list(self._checks.items())
        problems, notes = [], []
        for name, (check, critical) in checks:
            try:
                problem = check()
            except Exception as exc:  # a broken check is itself a problem, never a crash of /healthz
                problem = f"health check failed ({type(exc).__name__})"
            if problem:
                (problems if critical else notes).append(f"{name}: {problem}")
        p = self.pipeline
        if p is None:
            return False, problems + ["pipeline not running"] + notes
        dead = p.dead_stages() if callable(getattr(p, "dead_stages", None)) else []
        problems += [f"pipeline stage {name} stopped" for name in dead]
        failing = getattr(p, "failing", None)
        if failing is None:  # a pipeline without per-stage state: its recent errors
            problems += [f"pipeline error: {e}" for e in list(getattr(p, "errors", []) or [])[-3:]]
        else:
            problems += [f"pipeline error: {e}" for e in list(dict(failing).values())]
        backlog = p.backlog_s() if callable(getattr(p, "backlog_s", None)) else 0.0
        idle = time.monotonic() - self.last_progress
        if backlog > STALL_BACKLOG_S and idle > STALL_S:
            problems.append(f"recognition stalled: {backlog:.1f} s of audio waiting, no progress for {idle:.0f} s")
        return not problems, problems + notes

    def counters(self) -> dict:
        stats = getattr(self.pipeline, "stats", None)
        out = {name: int(getattr(stats, name, 0) or 0) for name in
               ("partials", "partials_skipped", "partials_aborted", "finals", "rejected", "mt_rejected", "audio_dropped_chunks",
                "mt_withheld", "mt_reranked", "restarts", "language_changes", "prompt_echoes")}
        out["behind"] = bool(getattr(stats, "behind", False))
        out["audio_s"] = float(getattr(stats, "audio_s", 0.0) or 0.0)
        out["rtf"] = float(getattr(stats, "rtf", 0.0) or 0.0)
        return out

    def snapshot(self) -> dict:
        healthy, problems = self.health()
        with self._lock:
            captions = {lang: {"finals": list(self._finals.get(lang, ())), "partial": self._partials.get(lang)}
                        for lang in sorted(set(self._finals) | set(self._partials))}
            counts = {f"{lang}/{kind}": n for (lang, kind), n in sorted(self._counts.items())}
            broker, mic = dict(self._broker), dict(self._mic)
            messages = [dict(m) for m in self._messages]
            providers = list(self._providers)
            placement = [dict(p) for p in self._placement]
            config = dict(self._config, overrides=dict(self._config["overrides"]))
        return {"started": self.started, "uptime_s": round(self.uptime_s, 1), "healthy": healthy, "problems": problems,
                "pipeline": self.counters(), "latency": self.latencies(), "broker": broker, "microphone": mic,
                "input": self.input_level(), "providers": providers, "placement": placement, "captions": captions, "caption_counts": counts,
                "messages": messages, "config": config}

    def summary(self) -> str:
        """One line for `systemctl status` (sd_notify STATUS=)."""
        c = self.counters()
        with self._lock:
            broker, mic, warnings = self._broker["state"], self._mic["state"], len(self._messages)
        healthy, problems = self.health()
        parts = [f"RTF {c['rtf']:.2f}", f"{c['finals']} finals", f"broker {broker}", f"mic {mic}"]
        if c["partials_skipped"]:
            parts.append(f"{c['partials_skipped']} partials skipped")
        if warnings:
            parts.append(f"{warnings} warnings")
        with self._lock:
            config_state = self._config["state"]
        if config_state == "rolled back":
            parts.append("config rolled back")
        if not healthy:
            parts.append("UNHEALTHY: " + "; ".join(problems))
        return ", ".join(parts)
