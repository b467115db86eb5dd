"""The display server: read-only pages for the room LAN, apart from the admin panel.

It serves only the room display (`/display/`, its script, style and mqtt.js) and `/display/connection.json`,
the details a display needs: the broker's WebSocket port and the room's read-only broker user. Nothing it serves
can change the appliance: every method but GET and HEAD is refused. More read-only pages (an audience page, …)
mount as `ReadOnlyPage`s: a URL prefix and a blueprint factory.

    app = create_app(supervisor.display_connection)                 # the default pages
    app = create_app(conn, pages=DEFAULT_PAGES + (ReadOnlyPage("/audience", audience.blueprint),))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from flask import Blueprint, Flask, jsonify, redirect, request

from appliance.display import web
from appliance.hosts import host_allowed

log = logging.getLogger(__name__)

__all__ = ["ReadOnlyPage", "DEFAULT_PAGES", "create_app", "CONNECTION_PATH"]

CONNECTION_PATH = "/display/connection.json"
READ_METHODS = {"GET", "HEAD"}


@dataclass(frozen=True)
class ReadOnlyPage:
    prefix: str  # e.g. "/display"
    blueprint: Callable[[], Blueprint]  # a fresh blueprint of GET routes (its own CSP in an after_request)


DEFAULT_PAGES = (ReadOnlyPage("/display", web.blueprint),)


def create_app(connection: Callable[[], dict], pages: tuple[ReadOnlyPage, ...] = DEFAULT_PAGES,
               allowed_hosts: frozenset[str] = frozenset()) -> Flask:
    """connection() -> {"room", "name", "prefix", "languages", "ws_port", "username"?, "password"?}."""
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=0, PROPAGATE_EXCEPTIONS=False)
    for page in pages:
        app.register_blueprint(page.blueprint(), url_prefix=page.prefix)

    @app.before_request
    def guard():
        if request.method not in READ_METHODS:
            return "read-only server\n", 405, {"Allow": "GET, HEAD", "Content-Type": "text/plain; charset=utf-8"}
        if not host_allowed(request.host, allowed_hosts):  # a rebound public name must not read the credentials
            return "unknown host name (DNS rebinding protection)\n", 400, {"Content-Type": "text/plain; charset=utf-8"}
        return None

    @app.get(CONNECTION_PATH)
    def connection_details():
        resp = jsonify(connection())
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/")
    def index():
        info = connection()
        lang = (info.get("languages") or ["en"])[0]
        return redirect(f"/display/?room={info.get('room', '')}&lang={lang}", code=302)

    @app.after_request
    def headers(resp):
        h = resp.headers
        h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "no-referrer"
        return resp

    @app.errorhandler(Exception)
    def crash(exc):
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return f"{exc.code} {exc.name}\n", exc.code, {"Content-Type": "text/plain; charset=utf-8"}
        log.exception("display server request %s failed", request.path)
        return "internal error\n", 500, {"Content-Type": "text/plain; charset=utf-8"}

    return app
