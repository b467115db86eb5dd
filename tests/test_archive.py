"""The meeting record: real SQLite files, the real writer thread, the real CLI as a subprocess."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from appliance.archive import Archive, ArchiveError, db_path, open_store
from appliance.archive.export import MIN_CUE_S, cues, export
from appliance.events import CaptionEvent

T0 = float(int(time.time()) - 900)  # the first final: 15 min ago (the meetings recorded here still run)


def final(n: int, lang: str = "en", text: str | None = None, *, start: float | None = None, dur: float = 3.0,
          stream: str = "s1", rev: int = 1, speaker=None, final: bool = True, at: float = T0):
    """The n-th utterance of a stream: audio time `start` (default 4 s apart), emitted at `at` + its end."""
    start = 4.0 * n if start is None else start
    ev = CaptionEvent(id=f"{stream}-{n}", rev=rev, final=final, lang=lang, source_lang="en",
                      text=f"Sentence number {n} in {lang}." if text is None else text,
                      start=start, end=start + dur, emitted=at + start + dur)
    if speaker is not None:
        object.__setattr__(ev, "speaker", speaker)  # the speaker issue adds this field to the event
    return ev


@pytest.fixture
def archive(tmp_path):
    a = Archive(tmp_path / "archive.db", gap_s=1800, retention_days=30).start()
    yield a
    a.stop()


def test_finals_are_stored_by_meeting_in_every_language_and_partials_are_not(archive):
    for n in range(3):
        archive.put(final(n, "en", speaker="Ana" if n < 2 else {"name": "Rui", "id": 2}))
        archive.put(final(n, "pt"))
        archive.put(final(n, "en", final=False, text="partial"))
    archive.flush()
    store = open_store(archive.path)
    (m,) = store.meetings()
    assert m.languages == ("en", "pt") and m.finals == 6 and m.running
    en = store.finals(m.id, "en")
    assert [f.text for f in en] == [f"Sentence number {n} in en." for n in range(3)]
    assert [f.speaker for f in en] == ["Ana", "Ana", {"name": "Rui", "id": 2}]
    assert en[0].start == pytest.approx(m.started) and en[1].start - en[0].start == pytest.approx(4.0)
    assert en[0].end - en[0].start == pytest.approx(3.0)


def test_a_later_revision_replaces_the_final_and_an_empty_final_retracts_it(archive):
    archive.put(final(0, text="first try"))
    archive.put(final(0, text="second try", rev=3))
    archive.put(final(0, text="stale", rev=2))
    archive.put(final(1, text="gone soon"))
    archive.put(final(1, text="", rev=2))
    archive.flush()
    store = open_store(archive.path)
    assert [(f.text, f.rev) for f in store.finals(1, "en")] == [("second try", 3)]


def test_a_silence_gap_starts_a_new_meeting_and_a_restarted_pipeline_keeps_wall_time(tmp_path):
    a = Archive(tmp_path / "archive.db", gap_s=600).start()
    a.put(final(0))
    a.put(final(1))
    a.put(final(0, stream="s2", at=T0 + 100))  # pipeline restarted: audio time from 0 again, same meeting
    a.put(final(0, stream="s3", at=T0 + 100 + 601 + 4))  # more than 10 min of silence after the last final
    a.stop()
    store = open_store(a.path)
    first, second = store.meetings()
    assert (first.finals, second.finals) == (3, 1)
    assert first.ended == pytest.approx(T0 + 103) and second.running
    assert [f.start - T0 for f in store.finals(first.id, "en")] == pytest.approx([0, 4, 100])


def test_meetings_start_and_stop_on_command_and_a_new_run_resumes_the_open_one(tmp_path):
    a = Archive(tmp_path / "archive.db").start()
    assert a.stop_meeting() is None  # nothing running yet
    first = a.start_meeting()
    a.put(final(0, at=time.time()))
    second = a.start_meeting()
    assert second == first + 1
    a.put(final(1, at=time.time()))
    assert a.stop_meeting() == second
    a.put(final(2, at=time.time()))  # every final is kept: it starts the next meeting
    a.stop()
    b = Archive(tmp_path / "archive.db").start()
    b.put(final(3, at=time.time()))
    b.stop()
    store = open_store(a.path)
    assert [(m.id, m.finals, m.running) for m in store.meetings()] == [(first, 1, False), (second, 1, False),
                                                                       (second + 1, 2, True)]


def test_retention_deletes_old_meetings_and_delete_removes_one_or_all(tmp_path):
    path = tmp_path / "archive.db"
    store = open_store(path)
    old = store.start_meeting(time.time() - 40 * 86400, "auto")
    store.end_meeting(old, time.time() - 39 * 86400)
    keep = store.start_meeting(time.time() - 86400, "auto")
    store.end_meeting(keep, time.time() - 86000)
    other = store.start_meeting(time.time() - 3600, "auto")
    store.close()
    a = Archive(path, retention_days=30).start()
    a.flush()
    a.stop()
    store = open_store(path)
    assert [m.id for m in store.meetings()] == [keep, other]
    store.delete(keep)
    assert [m.id for m in store.meetings()] == [other]
    with pytest.raises(ArchiveError, match=f"meetings: {other}"):
        store.delete(keep)
    assert store.delete_all() == 1 and store.meetings() == []


def test_a_corrupt_database_is_set_aside_with_a_log_line_and_a_new_one_started(tmp_path, caplog):
    path = tmp_path / "archive.db"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.ERROR, logger="appliance.archive"):
        a = Archive(path).start()
    a.put(final(0))
    a.stop()
    aside = list(tmp_path.glob("archive.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert any("set aside" in r.getMessage() for r in caplog.records)
    assert open_store(path).meetings()[0].finals == 1


def test_a_full_disk_stops_archiving_with_a_warning_and_put_never_blocks(tmp_path):
    warnings = []
    a = Archive(tmp_path / "archive.db", on_warning=warnings.append).start()
    a.put(final(0))
    a.flush()
    conn = a._store.conn  # SQLite's own page limit makes the real SQLITE_FULL error a full disk gives
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for n in range(1, 400):
        a.put(final(n, text="a long sentence that fills pages " * 20))
    with pytest.raises(RuntimeError, match="disk is full"):
        a.flush()
    assert a.state()["problem"].startswith("archive stopped: the disk is full")
    assert any("disk is full" in w for w in warnings)
    t = time.perf_counter()
    a.put(final(500))  # archiving is off: put returns at once
    assert time.perf_counter() - t < 1.0
    a.stop()


def test_a_full_queue_drops_finals_with_a_counter_instead_of_blocking(tmp_path):
    warnings = []
    a = Archive(tmp_path / "archive.db", queue_events=5, on_warning=warnings.append)  # not started: nothing drains
    for n in range(8):
        a.put(final(n))
    assert a.dropped == 3 and "3 finals not recorded" not in " ".join(warnings) and warnings


# ---- export ----------------------------------------------------------------------------------------------------
def _recorded(tmp_path: Path) -> Path:
    a = Archive(tmp_path / "archive.db").start()
    long = ("This is a long final that will certainly need more than two caption lines of forty-two characters "
            "each when it is laid out.")
    events = [final(0, text=long, dur=6.0, speaker="Ana"), final(1, start=6.2, dur=0.3, text="Yes.", speaker="Rui"),
              final(2, start=6.6, dur=0.2, text="Right.", speaker="Rui")]
    events += [final(n, start=60.0 * n, text=f"Minute {n}.", speaker="Ana") for n in range(3, 12)]
    for ev in events:
        a.put(ev)
        a.put(final(int(ev.id.split("-")[1]), "pt", start=ev.start, dur=ev.end - ev.start, text="Olá " + ev.text))
    a.stop()
    return a.path


SRT_CUE = re.compile(r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n((?:.+\n)+)")


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def test_srt_export_follows_the_caption_layout_rules(tmp_path):
    store = open_store(_recorded(tmp_path))
    _, srt = export(store, "latest", "en", "srt")
    blocks = SRT_CUE.findall(srt)
    assert len(blocks) == srt.count(" --> ") and len(blocks) > 12  # the long final became several cues
    prev_end = 0.0
    for b in blocks:
        start, end, lines = _seconds(*b[1:5]), _seconds(*b[5:9]), b[9].rstrip("\n").split("\n")
        assert 1 <= len(lines) <= 2 and all(0 < len(line) <= 42 for line in lines)
        assert end - start >= MIN_CUE_S - 0.0005 and start >= prev_end - 0.0005
        prev_end = end
    words = " ".join(" ".join(b[9].split()) for b in blocks)
    assert words.startswith("This is a long final that will certainly need more")


def test_vtt_txt_and_jsonl_exports(tmp_path):
    store = open_store(_recorded(tmp_path))
    _, vtt = export(store, 1, "pt", "vtt")
    assert vtt.startswith("WEBVTT\n") and "00:00:00.000 --> " in vtt and "Olá Yes." in vtt
    _, txt = export(store, "latest", "en", "txt")
    paragraphs = txt.strip().split("\n\n")
    assert paragraphs[0].startswith("Meeting 1, ") and "language: en" in paragraphs[0]
    assert paragraphs[1].startswith("[00:00:00] Ana: This is a long final")
    assert paragraphs[2] == "Rui: Yes. Right."  # one turn, one paragraph; no stamp within 5 minutes
    assert paragraphs[3].startswith("Ana: Minute 3.") and "[00:05:00] " not in paragraphs[3]
    assert sum(p.startswith("[") for p in paragraphs) == 1  # Ana keeps talking: one paragraph, stamped once
    _, lines = export(store, "latest", "pt", "jsonl")
    rows = [json.loads(line) for line in lines.splitlines()]
    assert rows[1] == {"meeting": 1, "id": "s1-1", "lang": "pt", "source_lang": "en", "text": "Olá Yes.", "start": 6.2,
                       "end": 6.5, "time": pytest.approx(T0 + 6.2), "rev": 1, "speaker": None}


def test_minutes_stamp_every_few_minutes_across_turns(tmp_path):
    a = Archive(tmp_path / "archive.db").start()
    for n in range(20):
        a.put(final(n, start=60.0 * n, text=f"Point {n}.", speaker="Ana" if n % 2 else "Rui"))
    a.stop()
    _, txt = export(open_store(a.path), "latest", "en", "txt")
    assert re.findall(r"\[(\d\d:\d\d:\d\d)\]", txt) == ["00:00:00", "00:05:00", "00:10:00", "00:15:00"]


def test_unknown_meeting_language_or_format_names_what_exists(tmp_path):
    store = open_store(_recorded(tmp_path))
    with pytest.raises(ArchiveError, match=r"no meeting '7' in the archive; meetings: 1 \(or 'latest'\)"):
        export(store, "7", "en", "srt")
    with pytest.raises(ArchiveError, match="meeting 1 has no captions in 'de'; languages: en, pt"):
        export(store, "latest", "de", "srt")
    with pytest.raises(ValueError, match="formats: srt, vtt, txt, jsonl"):
        export(store, "latest", "en", "doc")
    empty = open_store(tmp_path / "empty.db")
    with pytest.raises(ArchiveError, match="holds no meetings yet"):
        export(empty, "latest", "en", "srt")


def test_cues_of_back_to_back_short_finals_never_overlap():
    from appliance.archive.store import StoredFinal

    finals = [StoredFinal(f"s-{i}", "en", "en", "ok", 100 + 0.3 * i, 100 + 0.3 * i + 0.2, 1, None, 0) for i in range(5)]
    out = cues(finals, 100.0)
    assert [c.start for c in out] == [0.0, 1.0, 2.0, 3.0, 4.0] and all(c.end - c.start == 1.0 for c in out)


# ---- command line ----------------------------------------------------------------------------------------------
def test_archive_cli_lists_and_exports_from_the_state_dir_of_the_config(tmp_path, appliance_cmd):
    state = tmp_path / "state"
    state.mkdir()
    _recorded(state)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"state_dir": str(state)}))
    listing = subprocess.run(appliance_cmd + ["archive", "list", "--config", str(cfg)], capture_output=True,
                             text=True, check=True).stdout
    assert re.search(r"^\s+1\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+11 min 03 s\s+24\s+en,pt \(running\)$", listing, re.M), listing
    out = tmp_path / "m.srt"
    subprocess.run(appliance_cmd + ["archive", "export", "latest", "--lang", "pt", "--format", "srt", "--output",
                                    str(out), "--state-dir", str(state)], check=True, capture_output=True)
    assert out.read_text().startswith("1\n00:00:00,000 --> ")
    bad = subprocess.run(appliance_cmd + ["archive", "export", "3", "--lang", "pt", "--state-dir", str(state)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no meeting '3' in the archive; meetings: 1" in bad.stderr
    assert "Traceback" not in bad.stderr
    none = subprocess.run(appliance_cmd + ["archive", "list", "--state-dir", str(tmp_path / "nowhere")],
                          capture_output=True, text=True)
    assert none.returncode == 2 and "no archive at" in none.stderr


# ---- the daemon's sink ------------------------------------------------------------------------------------------
def test_the_daemon_sink_feeds_the_archive(tmp_path):
    from appliance.config import Config
    from appliance.daemon import RunOptions, Supervisor

    cfg = Config(state_dir=str(tmp_path))
    sup = Supervisor(cfg, RunOptions(config_path=None, models_dir=tmp_path))
    sup.recording.start()
    sup.sink(final(0))
    sup.sink(final(0, "pt"))
    sup.recording.stop(10)
    assert open_store(db_path(tmp_path)).meetings()[0].languages == ("en", "pt")
    off = Supervisor(Config(state_dir=str(tmp_path / "off"), archive={"enabled": False}),
                     RunOptions(config_path=None, models_dir=tmp_path))
    off.recording.start()
    off.sink(final(0))
    assert off.archive is None and not (tmp_path / "off").exists()


def test_bench_archive_reports_put_latency_and_export_times(appliance_cmd):
    proc = subprocess.run(appliance_cmd + ["bench", "archive", "--json"], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout)
    assert result["finals"] == 2700 and result["meetings"] == 1 and result["dropped"] == 0
    assert result["put_p50_ms"] <= result["put_p95_ms"] <= result["put_max_ms"]
    assert set(result["exports"]) == {"srt", "vtt", "txt", "jsonl"} and all(e["kib"] > 50 for e in result["exports"].values())
    table = subprocess.run(appliance_cmd + ["bench", "archive"], capture_output=True, text=True, check=True).stdout
    assert "| put_p95_ms " in table and "| srt    |" in table


def test_an_unusable_state_folder_turns_recording_off_with_a_warning(tmp_path):
    (tmp_path / "state").write_text("a file where the state folder should be")
    warnings = []
    a = Archive(tmp_path / "state" / "archive.db", on_warning=warnings.append).start()
    a.put(final(0))
    a.stop()
    assert a.state()["problem"].startswith("archive off: cannot open") and warnings == [a.state()["problem"]]
    with pytest.raises(RuntimeError, match="archive off"):
        a.start_meeting()


def test_archive_cli_reads_without_writing_and_names_a_damaged_file(tmp_path, appliance_cmd):
    state = tmp_path / "state"
    state.mkdir()
    path = _recorded(state)
    before = path.stat().st_mtime_ns
    subprocess.run(appliance_cmd + ["archive", "export", "latest", "--lang", "en", "--state-dir", str(state)],
                   check=True, capture_output=True)
    assert path.stat().st_mtime_ns == before  # read-only (SQLite may add its WAL index files beside it)
    path.write_bytes(b"not a database at all" * 200)
    bad = subprocess.run(appliance_cmd + ["archive", "list", "--state-dir", str(state)], capture_output=True, text=True)
    assert bad.returncode == 2 and f"cannot read the archive {path}" in bad.stderr and "Traceback" not in bad.stderr
    assert path.read_bytes().startswith(b"not a database")  # left for the daemon to set aside


def test_a_meeting_ends_once_the_room_is_silent_longer_than_the_gap(tmp_path):
    now = [time.time()]
    a = Archive(tmp_path / "archive.db", gap_s=600, clock=lambda: now[0]).start()
    a.put(final(0, at=now[0] - 10))
    a.flush()
    assert open_store(a.path).meetings()[0].running
    now[0] += 601
    a.flush()  # the writer wakes (every minute when idle) and sees the silence
    (m,) = open_store(a.path).meetings()
    assert not m.running and m.ended == pytest.approx(m.last_activity) and a.state()["meeting"] is None
    a.stop()
