"""JSON API: config (GET/PUT/PATCH, login + X-CSRF-Token for writes), status, devices; /healthz and /metrics.

GET /api/config also returns `csrf_token` for scripts. PUT replaces the whole config (missing keys take their
defaults) except write-only secrets, which are kept unless the body names them (null clears). PATCH merges the body
into the current config.
"""

from __future__ import annotations

import json
import time

from flask import Blueprint, abort, jsonify, request, session

from appliance.hosts import is_loopback
from appliance.panel import facts, metrics as prom
from appliance.panel.auth import new_csrf_token
from appliance.panel.context import admin_session, context
from appliance.panel.fields import get_path, set_path
from appliance.panel.saving import SECRET_KEYS, load_current, redact, save, secrets_set
from appliance.config import ConfigError

bp = Blueprint("api", __name__)
_MISSING = object()


def _body() -> dict:
    """The request's JSON object, or a 400 with a message that says what is wrong."""
    ctype = (request.mimetype or "").lower()
    if ctype != "application/json":
        abort(400, description="send the config as JSON with Content-Type: application/json")
    raw = request.get_data(cache=False, as_text=False)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        abort(400, description="the body is not UTF-8 text")
    except json.JSONDecodeError as exc:
        abort(400, description=f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if isinstance(data, dict) and set(data) == {"config"} and isinstance(data["config"], dict):
        data = data["config"]  # accept GET's envelope back
    if not isinstance(data, dict):
        abort(400, description="the body must be a JSON object (the config)")
    return data


def _merge(base: dict, patch: dict) -> dict:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def _config_response(cfg, **extra):
    return jsonify(config=redact(cfg.model_dump(mode="json")), secrets_set=secrets_set(cfg), **extra)


@bp.get("/api/config")
def get_config():
    try:
        cfg = load_current(context())
    except ConfigError as exc:
        return jsonify(error=str(exc)), 500
    if "csrf" not in session:
        session["csrf"] = new_csrf_token()
    # scripts send this back as X-CSRF-Token on writes (same-origin reads only: no CORS headers are ever sent)
    return _config_response(cfg, csrf_token=session["csrf"])


@bp.route("/api/config", methods=["PUT", "PATCH"])
def put_config():
    body = _body()
    replace = request.method == "PUT"

    def build(current: dict) -> dict:
        if not replace:
            return _merge(current, body)
        new = json.loads(json.dumps(body))
        for key in SECRET_KEYS:
            if get_path(body, key, _MISSING) is _MISSING and get_path(current, key) is not None:
                set_path(new, key, get_path(current, key))
        return new

    result = save(context(), build)
    if not result.ok:
        return jsonify(error=result.error), 400
    return _config_response(result.config, changed=result.changed, apply=context().applier.state())


@bp.get("/api/status")
def status():
    ctx = context()
    snap = ctx.status.snapshot()
    snap["apply"] = ctx.applier.state()
    snap["now"] = time.time()
    return jsonify(snap)


@bp.get("/api/devices")
def devices():
    found, note = facts.devices(context().device_lister)
    return jsonify(devices=found, note=note)


def public_problems(problems: list[str]) -> list[str]:
    """'pipeline error: <exception text>' -> 'pipeline error': the part before the first colon, deduplicated."""
    out: list[str] = []
    for p in problems:
        head = str(p).split(":", 1)[0].strip()[:80]
        if head not in out:
            out.append(head)
    return out


@bp.get("/healthz")
def healthz():
    ctx = context()
    healthy, problems = ctx.health()
    if not admin_session():  # anonymous callers get what is wrong, never the exception text (/api/status has it)
        problems = public_problems(problems)
    body = {"healthy": healthy, "problems": problems, "uptime_s": round(ctx.status.uptime_s, 1),
            "broker": ctx.status.broker_state()}  # not a whole snapshot: /healthz is polled often
    return jsonify(body), 200 if healthy else 503


@bp.get("/metrics")
def metrics():
    ctx = context()
    if not ctx.metrics_public and not is_loopback(request.remote_addr):
        return jsonify(error="/metrics is served to loopback only (start the panel with metrics_public=True)"), 403
    return prom.render(ctx.status.snapshot()), 200, {"Content-Type": prom.CONTENT_TYPE}
