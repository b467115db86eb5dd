"""The Live page: the running daemon's health, counters and latencies (the page refreshes them from /api/status),
a new password for the embedded broker's display user, and a new meeting code (also from the Archive page)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from appliance.panel.context import context
from appliance.panel.pages import PanelBlueprint

bp = PanelBlueprint("live", __name__)


@bp.page("/live", "Live")
def page():
    ctx = context()
    return render_template("live.html", s=ctx.status.snapshot(), can_rotate=ctx.rotate_display_password is not None,
                           can_new_code=ctx.new_meeting_code is not None)


@bp.route("/meeting-code", methods=["POST"])
def new_meeting_code():
    """A new meeting code now: phones holding the old one are refused; the room display shows the new one."""
    new = context().new_meeting_code
    back = url_for("archive.page") if request.form.get("back") == "archive" else url_for("live.page")
    if new is None:
        flash("No meeting code here: the daemon is not running.", "error")
    else:
        flash(f"New meeting code: {new()}. The room display shows it within 15 s; the old one no longer works.", "ok")
    return redirect(back, code=303)


@bp.route("/display-password", methods=["POST"])
def rotate_display_password():
    rotate = context().rotate_display_password
    if rotate is None:
        return render_template("error.html", code=409, message="this appliance uses an external broker: change the "
                                                               "display user's password there"), 409
    user = rotate()
    flash(f"New password for {user}: displays reload their connection details and reconnect.", "ok")
    return redirect(url_for("live.page"), code=303)
