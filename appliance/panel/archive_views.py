"""The panel's archive page: meetings recorded, start/stop a meeting, delete one or all, download exports.

Reads the archive file with a read-only SQLite connection of its own (no integrity check per request: the writer
checks at start and after a failed write); meeting start/stop and deletes go through the running Archive's writer
thread (so commands and finals keep their order, and a deleted meeting is ended first). Everything here needs the admin login.
"""

from __future__ import annotations

import sqlite3
import time

from flask import Response, flash, redirect, request, url_for

from appliance.archive.export import FORMATS, export, file_name
from appliance.archive.store import ArchiveError, open_read_only
from appliance.panel.context import context
from appliance.panel.pages import PanelBlueprint, section, settings_page

bp = PanelBlueprint("archive", __name__)


def _archive():
    getter = context().archive
    return getter() if getter else None


def _store():
    """A read-only connection, or None when recording is off or nothing has been recorded yet."""
    archive = _archive()
    if archive is None:
        return None
    return open_read_only(archive.path)


def _page_extra(data: dict) -> dict:
    archive = _archive()
    meetings, problem = [], ""
    if archive is not None:
        try:
            store = _store()
            if store is not None:
                try:
                    meetings = list(reversed(store.meetings()))
                finally:
                    store.close()
        except sqlite3.Error as exc:
            problem = f"the archive cannot be read: {exc}"
    state = archive.state() if archive is not None else None
    return {"archive": state, "meetings": meetings, "problem": problem, "formats": list(FORMATS),
            "clock": lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))}


@bp.page("/archive", "Archive", methods=["GET", "POST"])
def page():
    """The meetings, and the archive.* and audience.* settings (saved like every settings page: validated, atomic, applied)."""
    return settings_page("archive.html", section("archive") + section("audience"), None, _page_extra)


@bp.route("/archive/meeting", methods=["POST"])
def command():
    """action=start (end the running meeting, start a new one) or action=stop."""
    archive = _archive()
    if archive is None:
        flash("Recording is off (archive.enabled).", "error")
        return redirect(url_for("archive.page"), code=303)
    try:
        if request.form.get("action") == "start":
            flash(f"Meeting {archive.start_meeting()} started.", "ok")
        else:
            ended = archive.stop_meeting()
            flash(f"Meeting {ended} stopped." if ended else "No meeting was running.", "ok")
    except (RuntimeError, TimeoutError) as exc:
        flash(str(exc), "error")
    return redirect(url_for("archive.page"), code=303)


@bp.route("/archive/<int:meeting_id>/delete", methods=["POST"])
@bp.route("/archive/delete-all", methods=["POST"])
def delete(meeting_id: int | None = None):
    """Through the writer thread: a running meeting is ended first, so nothing is written under its id again."""
    archive = _archive()
    if archive is None:
        flash("Recording is off (archive.enabled).", "error")
        return redirect(url_for("archive.page"), code=303)
    try:
        if meeting_id is None:
            flash(f"{archive.delete_all()} meetings deleted.", "ok")
        else:
            archive.delete_meeting(meeting_id)
            flash(f"Meeting {meeting_id} deleted.", "ok")
    except (ArchiveError, RuntimeError, TimeoutError, sqlite3.Error) as exc:
        flash(str(exc), "error")
    return redirect(url_for("archive.page"), code=303)


@bp.route("/archive/<ref>/export")
def download(ref: str):
    """?lang=L&format=srt|vtt|txt|jsonl; a running meeting gives what has been said so far."""
    archive = _archive()
    if archive is None:
        return Response("recording is off (archive.enabled)\n", 404, mimetype="text/plain")
    try:
        archive.flush(timeout=2.0)  # a running meeting: include the finals still queued for the disk
    except (RuntimeError, TimeoutError):
        pass  # archiving stopped or slow: export what is on disk
    store = _store()
    if store is None:
        return Response("nothing has been recorded yet\n", 404, mimetype="text/plain")
    fmt = request.args.get("format", "srt")
    try:
        meeting, text = export(store, ref, request.args.get("lang", ""), fmt)
    except ValueError as exc:  # ArchiveError included: the message lists what exists
        return Response(f"{exc}\n", 404 if isinstance(exc, ArchiveError) else 400, mimetype="text/plain")
    finally:
        store.close()
    name = file_name(meeting, request.args["lang"], fmt)
    return Response(text, mimetype=f"{FORMATS[fmt]}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
