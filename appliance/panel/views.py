"""HTML pages: first-run set-up, login, logout, password, and the four settings pages (room & languages, microphone,
broker, models & accelerator), each a section of the config file shown as a form and saved whole."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, session, url_for

from appliance.config import Config
from appliance.panel import facts
from appliance.panel.auth import new_csrf_token, password_problem, same_setup_code
from appliance.panel.context import context
from appliance.panel.fields import get_path, parse, set_path, spec
from appliance.panel.pages import PanelBlueprint, current, section, settings_page, specs

bp = PanelBlueprint("views", __name__)

ROOM_FIELDS = section("room")
MIC_FIELDS = section("audio", skip=("device",))
VAD_FIELDS = section("vad")
BROKER_FIELDS = ["broker.mode", "broker.host", "broker.port", "broker.ws_port", "broker.tls", "broker.ca_file",
                 "broker.cert_file", "broker.key_file", "broker.username"]
BROKER_MORE = [k for k in section("broker", skip=("password",)) if k not in BROKER_FIELDS]
ASR_FIELDS = section("asr", skip=("model",)) + section("translation")
ACCEL_FIELDS = section("accelerator")


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
        cfg = Config.model_validate(current()[0])
    langs = facts.languages(cfg, context().models_dir)
    listed = {t["code"] for t in langs["targets"]}
    other = [t for t in get_path(data, "languages.targets", []) if t not in listed]
    return {"langs": langs, "source_spec": spec("languages.source", get_path(data, "languages.source")),
            "targets_spec": spec("languages.targets"), "targets_other": ", ".join(other),
            "spoken_spec": spec("languages.spoken", get_path(data, "languages.spoken", [])),
            "selected_targets": get_path(data, "languages.targets", [])}


@bp.page("/", "Room & languages", methods=["GET", "POST"])
def room():
    return settings_page("room.html", ROOM_FIELDS, _room_custom, _room_extra)


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
    devices, note = facts.devices(context().device_lister)
    return {"devices": devices, "devices_note": note,
            "device_spec": spec("audio.device", get_path(data, "audio.device")), "vad_specs": specs(VAD_FIELDS, data)}


@bp.page("/microphone", "Microphone", methods=["GET", "POST"])
def microphone():
    return settings_page("microphone.html", MIC_FIELDS, _mic_custom, _mic_extra)


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
    return {"more_specs": specs(BROKER_MORE, data), "password_spec": spec("broker.password"),
            "password_set": bool(get_path(data, "broker.password"))}


@bp.page("/broker", "Broker", methods=["GET", "POST"])
def broker():
    return settings_page("broker.html", BROKER_FIELDS, _broker_custom, _broker_extra)


# ---- models & accelerator --------------------------------------------------------------------------------------
def _models_custom(form, data: dict) -> None:
    set_path(data, "asr.model", (form.get("asr.model") or "").strip())
    for k in ACCEL_FIELDS:
        set_path(data, k, parse(spec(k), form))


def _models_extra(data: dict) -> dict:
    ctx = context()
    available, prov_note = facts.providers()
    snapshot = ctx.status.snapshot()
    return {"models": facts.models(ctx.models_dir), "asr_models": facts.asr_models(ctx.models_dir),
            "asr_spec": spec("asr.model", get_path(data, "asr.model")), "accel_specs": specs(ACCEL_FIELDS, data),
            "available_providers": available, "providers_note": prov_note, "models_dir": str(ctx.models_dir),
            "active_providers": snapshot["providers"], "placement": snapshot.get("placement", []),
            "flavour": facts.flavour()}


@bp.page("/models", "Models & accelerator", methods=["GET", "POST"])
def models():
    return settings_page("models.html", ASR_FIELDS, _models_custom, _models_extra)


# ---- admin: first run, login, logout, password -----------------------------------------------------------------
def _log_in() -> None:
    context().sessions.revoke(session.get("sid"))
    session.clear()
    session["user"] = "admin"
    session["sid"] = context().sessions.open()
    session["epoch"] = context().admin.epoch
    session["csrf"] = new_csrf_token()
    session.permanent = True


def _safe_next(target: str | None) -> str:
    """A path on this panel only, else the panel's home. Browsers drop tabs and newlines from a URL and read "\\"
    as "/", so "/\t/evil.com" would become "//evil.com": any control character, space or backslash is refused."""
    if (target and target.startswith("/") and not target.startswith("//") and target.isascii()
            and not any(ch <= " " or ch in "\\\x7f" for ch in target)):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("views.room")


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    admin = context().admin
    if admin.is_set:
        return redirect(url_for("views.login"), code=303)
    context().ensure_setup_code()
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
    ctx, addr = context(), request.remote_addr or "?"
    wait = ctx.login_limiter.acquire(addr)
    if wait:
        return f"too many wrong set-up codes: try again in {int(wait) + 1} s", 429
    if not same_setup_code(ctx.ensure_setup_code(), request.form.get("setup_code")):
        return "wrong set-up code: it is printed in the appliance log (journalctl -u appliance)", 401
    ctx.login_limiter.reset(addr)
    return "", 200


@bp.route("/login", methods=["GET", "POST"])
def login():
    ctx = context()
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
    context().sessions.revoke(session.get("sid"))  # a copy of the cookie stops working too
    session.clear()
    return redirect(url_for("views.login"), code=303)


@bp.route("/password", methods=["GET", "POST"])
def password():
    ctx = context()
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
                ctx.sessions.revoke_all()
                _log_in()  # other sessions end with the old epoch
                flash("Password changed; other sessions are logged out.", "ok")
                return redirect(url_for("views.room"), code=303)
            code = 400
    return render_template("password.html", error=error), code
