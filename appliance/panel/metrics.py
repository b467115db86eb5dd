"""Prometheus text exposition (format 0.0.4) of the live status; no client library needed."""

from __future__ import annotations

from appliance import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _esc(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v) -> str:
    if v is None:
        return "NaN"
    if isinstance(v, bool):
        return "1" if v else "0"
    return repr(float(v)) if isinstance(v, float) else str(v)


class _Out:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict, object]], suffix_samples=()):
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{self._labels(labels)} {_num(value)}")
        for sample_name, labels, value in suffix_samples:
            self.lines.append(f"{sample_name}{self._labels(labels)} {_num(value)}")

    @staticmethod
    def _labels(labels: dict) -> str:
        if not labels:
            return ""
        return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


def render(snapshot: dict) -> str:
    o = _Out()
    p = snapshot["pipeline"]
    o.family("appliance_info", "gauge", "Version of the running appliance.", [({"version": __version__}, 1)])
    o.family("appliance_healthy", "gauge", "1 when the pipeline runs without errors and keeps up.", [({}, snapshot["healthy"])])
    o.family("appliance_uptime_seconds", "gauge", "Seconds since the daemon started.", [({}, snapshot["uptime_s"])])
    o.family("appliance_rtf", "gauge", "Real-time factor of recognition (busy time / audio time).", [({}, p["rtf"])])
    o.family("appliance_audio_seconds_total", "counter", "Seconds of audio the recognizer consumed.", [({}, p["audio_s"])])
    o.family("appliance_behind", "gauge", "1 while recognition is behind real time (partials skipped).", [({}, p["behind"])])
    for key, help_text in (("partials", "Partial captions recognised."), ("finals", "Final captions recognised."),
                           ("partials_skipped", "Partial captions skipped to keep up."),
                           ("partials_aborted", "Partial decodes aborted when speech paused (the end-of-speech "
                                                "decode, which becomes the final, went first)."),
                           ("rejected", "Recognitions rejected by the hallucination guards."),
                           ("mt_rejected", "Translations rejected by the guards."),
                           ("mt_withheld", "Final translations withheld (no candidate agreed with the source; "
                                           "the source text was published marked untranslated)."),
                           ("mt_reranked", "Final translations where the reverse model chose another beam candidate."),
                           ("audio_dropped_chunks", "Audio chunks dropped because the queue was full."),
                           ("restarts", "Pipeline stages restarted after an exception."),
                           ("language_changes", "Finals whose language, decided on the whole utterance, differed from "
                                                "their partials' (the partials were withdrawn)."),
                           ("prompt_echoes", "Decodes that only repeated the previous text (decoded again without "
                                             "it).")):
        o.family(f"appliance_{key}_total", "counter", help_text, [({}, p[key])])
    samples, extra = [], []
    for stage, s in sorted(snapshot["latency"].items()):
        for q, key in (("0.5", "p50"), ("0.95", "p95")):
            samples.append(({"stage": stage, "quantile": q}, s[key]))
        extra.append(("appliance_stage_latency_seconds_sum", {"stage": stage}, s["sum"]))
        extra.append(("appliance_stage_latency_seconds_count", {"stage": stage}, s["count"]))
    o.family("appliance_stage_latency_seconds", "summary", "Latency per pipeline stage (quantiles over recent samples).",
             samples, extra)
    caps = []
    for key, n in snapshot["caption_counts"].items():
        lang, kind = key.split("/", 1)
        caps.append(({"lang": lang, "kind": kind}, n))
    o.family("appliance_captions_total", "counter", "Caption events emitted, per language and kind.", caps)
    o.family("appliance_broker_connected", "gauge", "1 while connected to the MQTT broker.",
             [({"state": snapshot["broker"]["state"]}, snapshot["broker"]["state"] == "connected")])
    o.family("appliance_microphone_state", "gauge", "Current microphone state (label) = 1.",
             [({"state": snapshot["microphone"]["state"]}, 1)])
    o.family("appliance_input_level_dbfs", "gauge", "RMS input level of the last audio chunk (NaN when none).",
             [({}, snapshot["input"]["rms_dbfs"])])
    o.family("appliance_messages", "gauge", "Warnings and errors currently listed in the panel.",
             [({"level": lvl}, sum(1 for m in snapshot["messages"] if m["level"] == lvl)) for lvl in ("warning", "error")])
    return "\n".join(o.lines) + "\n"
