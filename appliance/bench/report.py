"""Print benchmark results as aligned tables (or one JSON object)."""

from __future__ import annotations

import json


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    if isinstance(v, dict):
        return " ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def key_values(data: dict, title: str) -> str:
    rows = [{"metric": k, "value": v} for k, v in data.items() if not isinstance(v, list) or k in ("providers", "targets")]
    return f"{title}\n\n" + table(rows, ["metric", "value"])


def to_json(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False)
