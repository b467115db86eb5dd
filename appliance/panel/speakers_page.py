"""The Speakers page: speaker-turn settings, the room's known speakers (rename), enrolment from the room
microphone, and forgetting every voice print. The tracker and the microphone tap come from the daemon."""

from __future__ import annotations

from flask import flash, redirect, request, url_for

from appliance.panel.context import context
from appliance.panel.pages import PanelBlueprint, section, settings_page

bp = PanelBlueprint("speakers", __name__)

FIELDS = section("speakers", skip=("model",))
ENROL_DEFAULT_S = 6.0


def _tracker():
    get = context().speakers
    return get() if get else None


def _extra(data: dict) -> dict:
    tracker, ctx = _tracker(), context()
    return {"speakers": tracker.speakers() if tracker else [], "active": tracker is not None,
            "can_record": ctx.record is not None, "enrol_default_s": ENROL_DEFAULT_S,
            "warnings": [m for m in ctx.status.snapshot().get("messages", [])
                         if "speaker" in m.get("text", "").lower()]}


@bp.page("/speakers", "Speakers", methods=["GET", "POST"])
def page():
    return settings_page("speakers.html", FIELDS, None, _extra)


def _back(message: str, category: str = "ok"):
    flash(message, category)
    return redirect(url_for("speakers.page"), code=303)


@bp.route("/speakers/rename", methods=["POST"])
def rename():
    tracker = _tracker()
    if tracker is None:
        return _back("Speaker turns are off: nothing to rename.", "error")
    speaker_id = request.form.get("id", "")
    try:
        tracker.rename(speaker_id, request.form.get("name"))
    except (KeyError, ValueError) as exc:
        return _back(f"Not renamed: {exc.args[0] if exc.args else exc}", "error")
    return _back(f"Renamed {speaker_id}.")


@bp.route("/speakers/forget", methods=["POST"])
def forget():
    tracker = _tracker()
    if tracker is None:
        return _back("Speaker turns are off: no speakers are stored.", "error")
    tracker.forget_all()
    return _back("Every speaker and voice print of this room is forgotten.")


@bp.route("/speakers/enrol", methods=["POST"])
def enrol():
    from appliance.speakers import EnrolmentError
    from appliance.speakers.recorder import RecordingError

    tracker, record = _tracker(), context().record
    if tracker is None or record is None:
        return _back("Enrolment needs speaker turns on and the room microphone capturing.", "error")
    try:
        seconds = float(request.form.get("seconds") or ENROL_DEFAULT_S)
        name = request.form.get("name", "")
        if not name.strip():
            raise EnrolmentError("give the speaker a name")
        label = tracker.enrol(name, record(seconds))
    except ValueError as exc:  # EnrolmentError is a ValueError
        return _back(f"Not enrolled: {exc}", "error")
    except RecordingError as exc:
        return _back(f"Not enrolled: {exc}", "error")
    return _back(f"Enrolled {label['name']} as {label['id']}.")
