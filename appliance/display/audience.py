"""The audience page for attendees' phones: a Flask blueprint factory a read-only display server mounts.

GET <prefix>/                 the page (?room=&lang=&broker=&prefix=): language picker, font size, light/dark,
                              scroll-back through the meeting so far, then live captions over MQTT-over-WebSocket
GET <prefix>/api/captions     ?lang=L: the finals of the running (or latest) meeting in L, from the archive, read-only
GET <prefix>/qr.svg           a QR code of this page's LAN address (segno), for the room display to show
Nothing here writes: the archive is opened with SQLite's read-only mode, and only GET is routed.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, abort, jsonify, request, send_from_directory

from appliance.archive.store import ArchiveError, open_read_only
from appliance.display.web import MQTT_JS, WEB_DIR, mqtt_js_installed

__all__ = ["blueprint", "make_app", "lan_address", "PAGE_DIR", "page_url"]

PAGE_DIR = Path(__file__).resolve().parent / "audience_web"
FILES = ("index.html", "audience.js", "audience.css")
MAX_FINALS = 2000  # scroll-back sent at most (the latest ones)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def lan_address() -> str | None:
    """This host's address on the LAN (the interface of the default route); None without a network.

    connect() on a UDP socket only picks a route: no packet is sent, so this works offline on a LAN."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def page_url(host_url: str, prefix: str, params: dict) -> str:
    """The page's address as a phone must use it: a loopback host is replaced by the LAN address."""
    scheme, _, rest = host_url.partition("://")
    host = rest.rstrip("/")
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if name in ("127.0.0.1", "localhost", "[::1]") and (lan := lan_address()):
        host = f"{lan}:{port}" if port else lan
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{scheme}://{host}{prefix.rstrip('/')}/" + (f"?{query}" if query else "")


def _captions(archive_path: Path | None, lang: str):
    store = open_read_only(archive_path) if archive_path is not None else None
    if store is None:
        return {"meeting": None, "running": False, "languages": [], "finals": []}
    try:
        meetings = store.meetings()
        if not meetings:
            return {"meeting": None, "running": False, "languages": [], "finals": []}
        m = meetings[-1]
        if lang and lang not in m.languages:
            raise ArchiveError(f"meeting {m.id} has no captions in {lang!r}; languages: {', '.join(m.languages)}")
        finals = store.finals(m.id, lang)[-MAX_FINALS:] if lang else []
        return {"meeting": m.id, "running": m.running, "languages": list(m.languages),
                "finals": [{"id": f.utt_id, "text": f.text, "start": round(f.start - m.started, 3),
                            "end": round(f.end - m.started, 3), "speaker": f.speaker} for f in finals]}
    finally:
        store.close()


def blueprint(archive_path: Callable[[], Path | None], name: str = "audience") -> Blueprint:
    """archive_path: () -> the archive file (appliance.archive.db_path(state_dir)), or None when recording is off."""
    bp = Blueprint(name, __name__)

    @bp.route("/")
    def page():
        return send_from_directory(PAGE_DIR, "index.html", max_age=60)

    @bp.route("/<path:path>")
    def asset(path: str):
        if path in FILES:
            return send_from_directory(PAGE_DIR, path, max_age=300)
        if path == MQTT_JS:
            if not mqtt_js_installed():
                return Response("mqtt.js is not installed: run scripts/setup\n", 503, mimetype="text/plain")
            return send_from_directory(WEB_DIR, MQTT_JS, max_age=300)
        abort(404)

    @bp.route("/api/captions")
    def captions():
        lang = (request.args.get("lang") or "").strip().lower()
        try:
            return jsonify(_captions(archive_path(), lang))
        except ArchiveError as exc:
            return jsonify(error=str(exc)), 404

    @bp.route("/qr.svg")
    def qr():
        import segno

        prefix = request.script_root + request.path.rsplit("/", 1)[0]
        url = page_url(request.host_url, prefix, {k: request.args.get(k) for k in ("room", "lang", "broker")})
        out = io.BytesIO()
        segno.make(url, error="m", micro=False).save(out, kind="svg", scale=8, border=2, title=url)
        return Response(out.getvalue(), mimetype="image/svg+xml", headers={"X-Audience-URL": url})

    @bp.after_request
    def headers(resp):
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    return bp


def make_app(archive_path: Callable[[], Path | None], url_prefix: str = "/audience", *, with_display: bool = True) -> Flask:
    """A read-only app serving the audience page (and the room display at /display): tests, or a display host."""
    app = Flask(__name__, static_folder=None)
    app.register_blueprint(blueprint(archive_path), url_prefix=url_prefix)
    if with_display:
        from appliance.display.web import blueprint as display_blueprint

        app.register_blueprint(display_blueprint(), url_prefix="/display")
    return app
