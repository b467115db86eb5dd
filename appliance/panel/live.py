"""The Live page: the running daemon's health, counters and latencies (the page refreshes them from /api/status),
and a new password for the embedded broker's display user."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for

from appliance.panel.context import context
from appliance.panel.pages import PanelBlueprint

bp = PanelBlueprint("live", __name__)


@bp.page("/live", "Live")
def page():
    ctx = context()
    return render_template("live.html", s=ctx.status.snapshot(), can_rotate=ctx.rotate_display_password is not None)


@bp.route("/display-password", methods=["POST"])
def rotate_display_password():
    rotate = context().rotate_display_password
    if rotate is None:
        return render_template("error.html", code=409, message="this appliance uses an external broker: change the "
                                                               "display user's password there"), 409
    user = rotate()
    flash(f"New password for {user}: displays reload their connection details and reconnect.", "ok")
    return redirect(url_for("live.page"), code=303)
