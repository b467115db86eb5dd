"""HTML pages: first-run set-up, login, the four settings pages and the live page."""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from appliance.config import Config, ConfigError
from appliance.panel import facts
from appliance.panel.auth import new_csrf_token, password_problem, same_setup_code
from appliance.panel.fields import get_path, parse, set_path, spec
from appliance.panel.saving import load_current, save

bp = Blueprint("views", __name__)

PAGES = [("views.room", "Room & languages"), ("views.microphone", "Microphone"), ("views.broker", "Broker"),
         ("views.models", "Models & accelerator"), ("speakers.page", "Speakers"), ("views.live", "Live")]
PAGES += [("archive.page", "Archive"), ("glossary.page", "Glossary")]  # archive_views.py, glossary_views.py


def _section(name: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Every field of a config section, so fields added to config.py appear on their page without edits here."""
    return [f"{name}.{f}" for f in Config.model_fields[name].annotation.model_fields if f not in skip]


ROOM_FIELDS = _section("room")
MIC_FIELDS = _section("audio", skip=("device",))
VAD_FIELDS = _section("vad")
BROKER_FIELDS = ["broker.mode", "broker.host", "broker.port", "broker.ws_port", "broker.tls", "broker.ca_file",
                 "broker.cert_file", "broker.key_file", "broker.username"]
BROKER_MORE = [k for k in _section("broker", skip=("password",)) if k not in BROKER_FIELDS]
ASR_FIELDS = _section("asr", skip=("model",)) + _section("translation")
ACCEL_FIELDS = _section("accelerator")


def _ctx():
    from appliance.panel.app import context

    return context()


def _current() -> tuple[dict, str]:
    """(config data, load error); defaults are shown (read only) when the file does not validate."""
    try:
        return load_current(_ctx()).model_dump(mode="json"), ""
    except ConfigError as exc:
        return Config().model_dump(mode="json"), str(exc)


def _specs(keys: list[str], data: dict) -> list:
    return [spec(k, get_path(data, k)) for k in keys]


def _settings_page(template: str, keys: list[str], custom: Callable[[Any, dict], None] | None,
                   extra: Callable[[dict], dict]):
    """GET renders the page; POST applies the generic fields + `custom(form, data)`, validates, saves."""
    data, load_error = _current()
    error, status = "", 200
    if request.method == "POST":
        form = request.form

        def build(current: dict) -> dict:
            for k in keys:
                set_path(current, k, parse(spec(k), form))
            if custom:
                custom(form, current)
            return current

        result = save(_ctx(), build)
        if result.ok:
            flash("Saved." if result.changed else "Nothing changed.", "ok")
            return redirect(request.path, code=303)
        error, status = result.error, 400
        data = result.attempted or data
    return render_template(template, data=data, specs={s.key: s for s in _specs(keys, data)}, error=error,
                           error_prefix="Not saved.", load_error=load_error, **extra(data)), status


# ---- room & languages ------------------------------------------------------------------------------------------
def _room_custom(form, data: dict) -> None:
    set_path(data, "languages.source", (form.get("languages.source") or "auto").strip())
    targets = [t for t in form.getlist("languages.targets") if t.strip()]
    targets += [t for t in (form.get("languages.targets_other") or "").replace(",", " ").split() if t]
    set_path(data, "languages.targets", targets)
    set_path(data, "languages.spoken", parse(spec("languages.spoken"), form))


def _room_extra(data: dict) -> dict:
    try:
        cfg = Config.model_validate(data)
    except Exception:  # the attempted data did not validate: show choices for the saved config
        cfg = Config.model_validate(_current()[0])
    langs = facts.languages(cfg, _ctx().models_dir)
    listed = {t["code"] for t in langs["targets"]}
    other = [t for t in get_path(data, "languages.targets", []) if t not in listed]
    return {"langs": langs, "source_spec": spec("languages.source", get_path(data, "languages.source")),
            "targets_spec": spec("languages.targets"), "targets_other": ", ".join(other),
            "spoken_spec": spec("languages.spoken", get_path(data, "languages.spoken", [])),
            "selected_targets": get_path(data, "languages.targets", [])}


@bp.route("/", methods=["GET", "POST"])
def room():
    return _settings_page("room.html", ROOM_FIELDS, _room_custom, _room_extra)


# ---- microphone ------------------------------------------------------------------------------------------------
def _mic_custom(form, data: dict) -> None:
    raw = (form.get("audio.device_other") or "").strip() or (form.get("audio.device") or "").strip()
    value: Any = None
    if raw:
        value = int(raw) if raw.isdigit() else raw
    set_path(data, "audio.device", value)
    for k in VAD_FIELDS:
        set_path(data, k, parse(spec(k), form))


def _mic_extra(data: dict) -> dict:
    devices, note = facts.devices(_ctx().device_lister)
    return {"devices": devices, "devices_note": note, "device_spec": spec("audio.device", get_path(data, "audio.device")),
            "vad_specs": _specs(VAD_FIELDS, data)}


@bp.route("/microphone", methods=["GET", "POST"])
def microphone():
    return _settings_page("microphone.html", MIC_FIELDS, _mic_custom, _mic_extra)


# ---- broker ----------------------------------------------------------------------------------------------------
def _broker_custom(form, data: dict) -> None:
    for k in BROKER_MORE:
        set_path(data, k, parse(spec(k), form))
    if form.get("broker.password_clear"):
        set_path(data, "broker.password", None)
    elif form.get("broker.password"):
        set_path(data, "broker.password", form["broker.password"])
    # else: unchanged (the browser never receives the current password)


def _broker_extra(data: dict) -> dict:
    return {"more_specs": _specs(BROKER_MORE, data), "password_spec": spec("broker.password"),
            "password_set": bool(get_path(data, "broker.password"))}


@bp.route("/broker", methods=["GET", "POST"])
def broker():
    return _settings_page("broker.html", BROKER_FIELDS, _broker_custom, _broker_extra)


# ---- models & accelerator --------------------------------------------------------------------------------------
def _models_custom(form, data: dict) -> None:
    set_path(data, "asr.model", (form.get("asr.model") or "").strip())
    for k in ACCEL_FIELDS:
        set_path(data, k, parse(spec(k), form))


def _models_extra(data: dict) -> dict:
    ctx = _ctx()
    available, prov_note = facts.providers()
    return {"models": facts.models(ctx.models_dir), "asr_models": facts.asr_models(ctx.models_dir),
            "asr_spec": spec("asr.model", get_path(data, "asr.model")), "accel_specs": _specs(ACCEL_FIELDS, data),
            "available_providers": available, "providers_note": prov_note, "models_dir": str(ctx.models_dir),
            "active_providers": ctx.status.snapshot()["providers"]}


@bp.route("/models", methods=["GET", "POST"])
def models():
    return _settings_page("models.html", ASR_FIELDS, _models_custom, _models_extra)


# ---- live ------------------------------------------------------------------------------------------------------
@bp.route("/live")
def live():
    ctx = _ctx()
    return render_template("live.html", s=ctx.status.snapshot(), can_rotate=ctx.rotate_display_password is not None)


@bp.route("/display-password", methods=["POST"])
def rotate_display_password():
    rotate = _ctx().rotate_display_password
    if rotate is None:
        return render_template("error.html", code=409, message="this appliance uses an external broker: change the "
                                                               "display user's password there"), 409
    user = rotate()
    flash(f"New password for {user}: displays reload their connection details and reconnect.", "ok")
    return redirect(url_for("views.live"), code=303)


# ---- admin: first run, login, logout, password -----------------------------------------------------------------
def _log_in() -> None:
    session.clear()
    session["user"] = "admin"
    session["epoch"] = _ctx().admin.epoch
    session["csrf"] = new_csrf_token()
    session.permanent = True


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("views.room")


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    admin = _ctx().admin
    if admin.is_set:
        return redirect(url_for("views.login"), code=303)
    _ctx().ensure_setup_code()
    error, code = "", 200
    if request.method == "POST":
        pw, again = request.form.get("password", ""), request.form.get("confirm", "")
        error = password_problem(pw) or ("the two passwords differ" if pw != again else "")
        error, code = _check_setup_code(error)
        if not error:
            try:
                admin.set_password(pw, first_run=True)
            except PermissionError as exc:
                return render_template("error.html", code=409, message=str(exc)), 409
            _log_in()
            flash("Admin password set. You are logged in.", "ok")
            return redirect(url_for("views.room"), code=303)
    return render_template("setup.html", error=error), code


def _check_setup_code(error: str) -> tuple[str, int]:
    """The one-time code from the console/journal; wrong codes count against the address like failed logins."""
    if error:
        return error, 400
    ctx, addr = _ctx(), request.remote_addr or "?"
    wait = ctx.login_limiter.acquire(addr)
    if wait:
        return f"too many wrong set-up codes: try again in {int(wait) + 1} s", 429
    if not same_setup_code(ctx.ensure_setup_code(), request.form.get("setup_code")):
        return "wrong set-up code: it is printed in the appliance log (journalctl -u appliance)", 401
    ctx.login_limiter.reset(addr)
    return "", 200


@bp.route("/login", methods=["GET", "POST"])
def login():
    ctx = _ctx()
    if not ctx.admin.is_set:
        return redirect(url_for("views.setup"), code=303)
    error, code, headers = "", 200, {}
    if request.method == "POST":
        addr = request.remote_addr or "?"
        wait = ctx.login_limiter.acquire(addr)  # counted before the check: concurrent bursts cannot slip through
        if wait:
            error, code = f"too many failed logins: try again in {int(wait) + 1} s", 429
            headers["Retry-After"] = str(int(wait) + 1)
        elif ctx.admin.check(request.form.get("password", "")):
            ctx.login_limiter.reset(addr)
            _log_in()
            return redirect(_safe_next(request.form.get("next")), code=303)
        else:
            error, code = "wrong password", 401
    return render_template("login.html", error=error, next=request.values.get("next", "")), code, headers


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("views.login"), code=303)


@bp.route("/password", methods=["GET", "POST"])
def password():
    ctx = _ctx()
    error, code = "", 200
    if request.method == "POST":
        addr = request.remote_addr or "?"
        pw, again = request.form.get("password", ""), request.form.get("confirm", "")
        if ctx.login_limiter.acquire(addr):
            error, code = "too many failed attempts: wait a minute", 429
        elif not ctx.admin.check(request.form.get("current", "")):
            error, code = "the current password is wrong", 401
        else:
            ctx.login_limiter.reset(addr)
            error = password_problem(pw) or ("the two passwords differ" if pw != again else "")
            if not error:
                ctx.admin.set_password(pw, first_run=False)
                _log_in()  # other sessions end with the old epoch
                flash("Password changed; other sessions are logged out.", "ok")
                return redirect(url_for("views.room"), code=303)
            code = 400
    return render_template("password.html", error=error), code
