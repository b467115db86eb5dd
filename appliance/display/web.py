"""Serves the web room display: a Flask blueprint the panel mounts (or `make_app()` on its own).

The page, its script and style live in `web/`; the MQTT client (mqtt.js) comes from the npm registry
(`npm ci` in appliance/display/web) and is vendored with its licence into `web/vendor/` by scripts/web-assets
(which scripts/setup and scripts/install run), so the same relative paths work when the page is opened from disk
and the installed package ships it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, abort, send_from_directory

__all__ = ["WEB_DIR", "MQTT_JS", "static_folder", "blueprint", "make_app", "FILES"]

WEB_DIR = Path(__file__).resolve().parent / "web"
MQTT_JS = "vendor/mqtt.min.js"
FILES = ("index.html", "display.js", "display.css", MQTT_JS)  # everything the page loads; nothing else is served
# the page talks to the broker over WebSocket on another port, so connect-src allows ws: / wss:
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_folder() -> Path:
    """The folder of the page (index.html opens from disk as it is)."""
    return WEB_DIR


def mqtt_js_installed() -> bool:
    return (WEB_DIR / MQTT_JS).is_file()


def blueprint(name: str = "display") -> Blueprint:
    """Routes: GET <prefix>/ (the page; ?room=&lang=&broker=), and the files in FILES under <prefix>/."""
    bp = Blueprint(name, __name__)

    @bp.route("/")
    def page():
        return _send("index.html")

    @bp.route("/<path:path>")
    def asset(path: str):
        if path not in FILES:
            abort(404)
        if path == MQTT_JS and not mqtt_js_installed():
            return Response("mqtt.js is not installed: run scripts/web-assets (scripts/setup does it)\n",
                            status=503, mimetype="text/plain")
        return _send(path)

    @bp.after_request
    def headers(resp):
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    return bp


def _send(path: str):
    resp = send_from_directory(WEB_DIR, path, max_age=300)
    return resp


def make_app(url_prefix: str = "/display") -> Flask:
    """A Flask app serving only the display (tests, or a display host without the panel)."""
    app = Flask(__name__, static_folder=None)
    app.register_blueprint(blueprint(), url_prefix=url_prefix)
    return app
