"""`appliance bench archive`: what recording costs the captions, and how long a 1-hour export takes.

A synthetic 1-hour meeting (a final every MEETING_STEP_S seconds in three languages, sentences from the
translation bench) is fed through the real Archive into a real SQLite file in a temporary folder:
- `put` is all the pipeline's sink does for the archive, so its duration is what recording adds to final
  latency (target p95 <= 5 ms); it is timed while the writer thread commits, the finals arriving in a burst
  (harder than real time, where a final comes every few seconds);
- each export format is then timed for one language of the meeting (target <= 2 s).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from appliance.archive.export import FORMATS, export
from appliance.archive.store import open_store
from appliance.archive.writer import Archive
from appliance.bench.sentences import EN, PT
from appliance.events import CaptionEvent
from appliance.status import percentile

MEETING_S = 3600.0
MEETING_STEP_S = 4.0  # a final every 4 s: continuous speech for an hour
LANGS = ("en", "pt", "es")
TARGET_PUT_P95_MS = 5.0
TARGET_EXPORT_S = 2.0


def _events(t0: float) -> list[CaptionEvent]:
    events = []
    for n in range(int(MEETING_S / MEETING_STEP_S)):
        start = n * MEETING_STEP_S
        for lang in LANGS:
            text = (PT if lang == "pt" else EN)[n % len(EN)] + " " + EN[(n * 7) % len(EN)]
            events.append(CaptionEvent(id=f"bench-{n}", rev=1, final=True, lang=lang, source_lang="en", text=text,
                                       start=start, end=start + MEETING_STEP_S - 0.5,
                                       emitted=t0 + start + MEETING_STEP_S))
    return events


def run(progress=lambda message: None) -> dict:
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as tmp:
        path = Path(tmp) / "archive.db"
        events = _events(time.time() - MEETING_S - 60)
        archive = Archive(path).start()
        progress(f"archive: writing {len(events)} finals (1 h in {len(LANGS)} languages)")
        put_ms = []
        t_all = time.perf_counter()
        for event in events:
            t = time.perf_counter()
            archive.put(event)
            put_ms.append((time.perf_counter() - t) * 1000)
        archive.flush(timeout=120)
        write_s = time.perf_counter() - t_all
        archive.stop()
        store = open_store(path)
        meetings = len(store.meetings())
        exports = {}
        for fmt in FORMATS:
            t = time.perf_counter()
            _, text = export(store, "latest", "pt", fmt)
            exports[fmt] = {"seconds": round(time.perf_counter() - t, 4), "kib": round(len(text.encode()) / 1024, 1)}
            progress(f"archive: export {fmt}: {exports[fmt]['seconds']:.3f} s")
        store.close()
        size_kib = path.stat().st_size / 1024
    return {"finals": len(events), "meetings": meetings, "dropped": archive.dropped, "put_p50_ms": round(percentile(put_ms, 50), 4),
            "put_p95_ms": round(percentile(put_ms, 95), 4), "put_max_ms": round(max(put_ms), 3),
            "put_target_p95_ms": TARGET_PUT_P95_MS, "write_all_s": round(write_s, 3),
            "finals_per_s": round(len(events) / write_s, 1), "db_kib": round(size_kib, 1),
            "export_target_s": TARGET_EXPORT_S, "exports": exports}


def print_report(result: dict) -> None:
    from appliance.bench import report

    flat = {k: v for k, v in result.items() if k != "exports"}
    print(report.key_values(flat, "archive: recording a 1-hour meeting (3 languages)"))
    rows = [{"format": fmt, "seconds": r["seconds"], "KiB": r["kib"], "target_s": result["export_target_s"]}
            for fmt, r in result["exports"].items()]
    print("\nexport of the 1-hour meeting, one language\n\n" + report.table(rows))
