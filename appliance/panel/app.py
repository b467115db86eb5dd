"""The Flask app factory: security (first-run password, login, CSRF, rate limit, headers) and error handlers.

It registers the blueprints (views.py, speakers_page.py, live.py, archive_views.py, glossary_views.py: HTML pages;
api.py: the JSON API) and builds the navigation bar from the pages they declare. The pages share context.py and
pages.py, never each other's names. The panel reads `Status` and writes the config file;
applying a saved config is the daemon's job (`on_config_saved`), run on the Applier's thread.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

from flask import Flask, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from appliance.config import Config
from appliance.hosts import host_allowed
from appliance.panel import api, archive_views, glossary_views, live, speakers_page, views
from appliance.panel.apply import Applier
from appliance.panel.auth import AdminStore, new_csrf_token, same_token
from appliance.panel.context import EXTENSION, SESSION_IDLE_S, PanelContext, admin_session
from appliance.panel.pages import navigation
from appliance.status import Status

log = logging.getLogger(__name__)

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PUBLIC_ENDPOINTS = {"static", "views.login", "views.setup", "api.healthz", "api.metrics"}
# the room display is not served here: the display server (appliance/display/server.py) serves it on its own port
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
APPLIED_NOTICE_S = 15.0  # an 'applied' notice shows this long; 'applying' and 'failed' stay
# registered in this order, which is the order of the navigation bar (each blueprint lists its own pages)
BLUEPRINTS = (views.bp, speakers_page.bp, live.bp, archive_views.bp, glossary_views.bp, api.bp)


def create_app(config_path: str | os.PathLike, status: Status, *, models_dir: str | os.PathLike,
               on_config_saved: Callable[[Config], Any] | None = None, admin_file: str | os.PathLike,
               device_lister: Callable[[], list] | None = None,
               health: Callable[[], tuple[bool, list[str]]] | None = None, metrics_public: bool = False,
               allowed_hosts: Iterable[str] = (), setup_code: str | None = None,
               archive: Callable[[], Any] | None = None, state_dir: str | os.PathLike | None = None,
               speakers: Callable[[], Any] | None = None, record: Callable[[float], Any] | None = None) -> Flask:
    """The config panel.

    config_path      the config file the panel edits (written with config.save_atomic)
    status           the daemon's live Status (read only)
    models_dir       where the installed models are (manifests are read for language and model choices)
    on_config_saved  called on a worker thread with the new, validated Config after each save
    admin_file       hashed admin password + session key (created 0600 at first run)
    device_lister    () -> [{"index", "name", "channels", "default_rate"}]; default appliance.audio.list_input_devices
    health           () -> (healthy, problems) for /healthz; default status.health
    metrics_public   serve /metrics to every address, not only loopback
    allowed_hosts    DNS names (besides IP literals, single-label and .local/.lan names) the panel answers to
    setup_code       the one-time code the first-run page asks for; made (and logged) when no password is set
    archive          () -> the daemon's running Archive (or None when recording is off): the archive page
    state_dir        the daemon's state folder (glossary file); default: state_dir of the config file
    speakers         () -> the room's SpeakerTracker or None (speaker turns off): the Speakers page
    record           seconds -> audio from the room microphone (the daemon's capture tap), for enrolment
    """
    app = Flask(__name__, static_folder="static", template_folder="templates")
    admin = AdminStore(admin_file)
    ctx = PanelContext(config_path=Path(config_path), status=status, models_dir=Path(models_dir), admin=admin,
                       applier=Applier(on_config_saved), device_lister=device_lister,
                       health=health or status.health, metrics_public=metrics_public)
    ctx.archive = archive
    ctx.state_dir = Path(state_dir) if state_dir is not None else None
    ctx.speakers, ctx.record = speakers, record
    app.extensions[EXTENSION] = ctx
    ctx.setup_code = setup_code
    if not _admin_set(admin):
        ctx.ensure_setup_code()
    # the session key is made once and kept in admin_file at first run; the cookie names a server-side session
    # (context.sessions, in memory), so logging out ends it and a restart of the panel logs everybody out
    app.config.update(SECRET_KEY=admin.secret_key, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_NAME="appliance_session",
                      PERMANENT_SESSION_LIFETIME=timedelta(seconds=SESSION_IDLE_S),
                      MAX_CONTENT_LENGTH=256 * 1024, PROPAGATE_EXCEPTIONS=False, TRAP_HTTP_EXCEPTIONS=False,
                      JSON_SORT_KEYS=False, TEMPLATES_AUTO_RELOAD=False)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    _guard_requests(app, admin, frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts))
    _page_context(app, ctx, navigation(app))
    _security_headers(app)
    _error_pages(app)
    return app


def _guard_requests(app: Flask, admin: AdminStore, extra_hosts: frozenset[str]) -> None:
    """Before every request: the Host check, the first-run and login redirects, the CSRF token of unsafe methods."""

    @app.before_request
    def guard():
        if not host_allowed(request.host, extra_hosts):
            return (f"Host '{request.host}' refused: open the panel by its address or local name "
                    "(DNS rebinding protection)", 400, {"Content-Type": "text/plain; charset=utf-8"})
        endpoint = request.endpoint or ""
        wants_json = request.path.startswith("/api/")
        protected = endpoint not in PUBLIC_ENDPOINTS
        if protected or endpoint in ("views.login", "views.setup"):
            try:
                admin.is_set
            except ValueError as exc:  # a damaged admin file: say which and how to recover
                return render_template("error.html", code=500, message=str(exc), logged_in=False), 500
        if protected:
            if not admin.is_set:
                if wants_json:
                    return jsonify(error="set the admin password first: open the panel in a browser"), 401
                return redirect(url_for("views.setup"), code=303)
            if not admin_session():
                if wants_json:
                    return jsonify(error="login required"), 401
                return redirect(url_for("views.login", next=request.path), code=303)
        if request.method in UNSAFE_METHODS:
            given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
            if not same_token(session.get("csrf"), given):
                msg = "missing or invalid CSRF token: reload the page and try again"
                if wants_json:
                    return jsonify(error=msg), 400
                return render_template("error.html", code=400, message=msg), 400
        return None


def _page_context(app: Flask, ctx: PanelContext, nav) -> None:
    """What every page template gets: the CSRF token, login state, navigation, the apply notice, TLS and display."""

    @app.context_processor
    def inject():
        if "csrf" not in session:
            session["csrf"] = new_csrf_token()
        apply = ctx.applier.state()
        apply["show"] = apply["state"] in ("applying", "failed") or (
            apply["state"] == "applied" and time.time() - apply["at"] < APPLIED_NOTICE_S)
        logged_in = admin_session()
        pinned = ctx.status.config_state()["overrides"] if logged_in else {}
        return {"csrf_token": session["csrf"], "logged_in": logged_in, "pages": nav, "apply_state": apply,
                "tls_fingerprint": ctx.tls_fingerprint, "display_url": _display_url(ctx), "pinned": pinned}


def _security_headers(app: Flask) -> None:
    @app.after_request
    def headers(resp):
        h = resp.headers
        h.setdefault("Content-Security-Policy", CSP)
        h["X-Frame-Options"] = "DENY"
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.endpoint != "static":
            h["Cache-Control"] = "no-store"
        return resp


def _error_pages(app: Flask) -> None:
    """HTTP errors as a page (JSON under /api/); an unexpected exception is logged and never shown."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            message = "the request is too large"
        if request.path.startswith("/api/") or request.path in ("/healthz", "/metrics"):
            return jsonify(error=f"{exc.code} {exc.name}: {message}"), exc.code
        return render_template("error.html", code=exc.code, message=f"{exc.name}: {message}"), exc.code

    @app.errorhandler(Exception)
    def crash(exc: Exception):
        log.exception("panel request %s %s failed", request.method, request.path)
        message = "internal error: the details are in the appliance log (journalctl -u appliance)"
        if request.path.startswith("/api/"):
            return jsonify(error=message), 500
        try:
            return render_template("error.html", code=500, message=message), 500
        except Exception:
            return message, 500, {"Content-Type": "text/plain; charset=utf-8"}


def _display_url(ctx: PanelContext) -> str | None:
    """The display server on the host name the admin used to reach the panel (it runs on the same device)."""
    if ctx.display_link is None:
        return None
    port, path = ctx.display_link
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return f"http://{host}:{port}{path}"


def _admin_set(admin: AdminStore) -> bool:
    try:
        return admin.is_set
    except ValueError:  # damaged: the pages say so; a set-up code is needed once it is deleted
        return False
