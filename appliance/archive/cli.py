"""`appliance archive list|export`: the meeting record from the command line.

The archive is found the way `appliance run` finds its state: the config file (--config, default
/etc/appliance/config.json) gives state_dir, and --state-dir overrides it.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from appliance.archive.export import FORMATS, export
from appliance.archive.store import ArchiveError, open_read_only

__all__ = ["add_parser", "archive_path"]


def archive_path(args) -> Path:
    from appliance import config
    from appliance.archive import db_path

    cfg = config.load(Path(args.config) if args.config else config.DEFAULT_PATH)
    return db_path(args.state_dir or cfg.state_dir)


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {int(seconds % 60):02d} s"


def _open(args):
    """The archive opened read-only (the daemon owns it and may be writing); a damaged one is a clear error."""
    path = archive_path(args)
    try:
        store = open_read_only(path)
        if store is not None:
            store.meetings()  # reads the schema: a damaged or foreign file fails here
    except sqlite3.DatabaseError as exc:
        raise ArchiveError(f"cannot read the archive {path}: {exc}") from None
    if store is None:
        raise ArchiveError(f"no archive at {path}: nothing has been recorded with this state folder")
    return store


def cmd_list(args) -> int:
    store = _open(args)
    try:
        meetings = store.meetings()
    finally:
        store.close()
    if not meetings:
        print(f"no meetings in {store.path}")
        return 0
    print(f"{'id':>5}  {'start':16}  {'duration':>14}  {'finals':>6}  languages")
    for m in meetings:
        start = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.started))
        running = " (running)" if m.running else ""
        print(f"{m.id:>5}  {start:16}  {_duration(m.duration_s):>14}  {m.finals:>6}  {','.join(m.languages)}{running}")
    return 0


def cmd_export(args) -> int:
    store = _open(args)
    try:
        meeting, text = export(store, args.meeting, args.lang, args.format)
    finally:
        store.close()
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.part")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        print(f"meeting {meeting.id} ({args.lang}, {args.format}) written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("archive", help="list recorded meetings and export them as SRT, WebVTT, text or JSON lines")
    asub = p.add_subparsers(dest="archive_cmd", required=True)
    for name, func, text in (("list", cmd_list, "meetings with their id, start, duration and languages"),
                             ("export", cmd_export, "one meeting in one language")):
        q = asub.add_parser(name, help=text)
        q.add_argument("--config", default=None, help="config file (default /etc/appliance/config.json)")
        q.add_argument("--state-dir", default=None, help="state folder holding archive.db (default: from the config)")
        q.set_defaults(func=func)
        if name == "export":
            q.add_argument("meeting", help="meeting id, or 'latest'")
            q.add_argument("--lang", required=True, help="caption language, e.g. en")
            q.add_argument("--format", choices=list(FORMATS), default="srt")
            q.add_argument("--output", "-o", default=None, help="write to this file (default: standard output)")
