"""The audience page for attendees' phones: a Flask blueprint factory a read-only display server mounts.

GET <prefix>/                 the page (?room=&lang=&broker=&prefix=): language picker, font size, light/dark,
                              scroll-back through the meeting so far, then live captions over MQTT-over-WebSocket
GET <prefix>/api/captions     ?lang=L&code=C: the finals of the running meeting in L, from the archive, read-only;
                              only with the current meeting code (403 without it), never an ended meeting
GET <prefix>/qr.svg           a QR code of this page's LAN address (segno), for the room display to show
Nothing here writes: the archive is opened with SQLite's read-only mode, and only GET is routed.
`audience.enabled: false` answers 404 everywhere; `audience.scrollback: none` serves no earlier finals.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path
from typing import Callable
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, abort, jsonify, request, send_from_directory

from appliance.archive.store import ArchiveError, open_read_only
from appliance.config import AudienceConfig
from appliance.display.web import MQTT_JS, WEB_DIR, mqtt_js_installed
from appliance.meeting_code import MeetingCode

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


NOTHING = {"meeting": None, "running": False, "languages": [], "finals": []}


def _captions(archive_path: Path | None, lang: str, scrollback: bool = True):
    """The running meeting's finals in `lang` (none with scrollback off); nothing when no meeting runs."""
    store = open_read_only(archive_path) if archive_path is not None else None
    if store is None:
        return dict(NOTHING)
    try:
        m = store.open_meeting()
        if m is None:  # an ended meeting is never served here
            return dict(NOTHING)
        if lang and m.languages and lang not in m.languages:  # a meeting just started has none yet
            raise ArchiveError(f"meeting {m.id} has no captions in {lang!r}; languages: {', '.join(m.languages)}")
        finals = store.finals(m.id, lang)[-MAX_FINALS:] if lang in m.languages and scrollback else []
        return {"meeting": m.id, "running": m.running, "languages": list(m.languages),
                "finals": [{"id": f.utt_id, "text": f.text, "start": round(f.start - m.started, 3),
                            "end": round(f.end - m.started, 3), "speaker": f.speaker} for f in finals]}
    finally:
        store.close()


def blueprint(archive_path: Callable[[], Path | None], code: MeetingCode,
              settings: Callable[[], AudienceConfig] = AudienceConfig, name: str = "audience") -> Blueprint:
    """archive_path: () -> the archive file (appliance.archive.db_path(state_dir)), or None when recording is off;
    code: the room's meeting code; settings: () -> the audience section in force."""
    bp = Blueprint(name, __name__)

    @bp.before_request
    def enabled():
        if not settings().enabled:
            return Response("the audience page is off (audience.enabled)\n", 404, mimetype="text/plain")
        return None

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
        if not code.matches(request.args.get("code")):
            return jsonify(error="the meeting code shown on the room display is needed"), 403
        lang = (request.args.get("lang") or "").strip().lower()
        try:
            return jsonify(_captions(archive_path(), lang, settings().scrollback == "meeting"))
        except ArchiveError as exc:
            return jsonify(error=str(exc)), 404

    @bp.route("/qr.svg")
    def qr():
        import segno

        prefix = request.script_root + request.path.rsplit("/", 1)[0]
        url = page_url(request.host_url, prefix, {k: request.args.get(k) for k in ("room", "lang", "broker", "code")})
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


def make_app(archive_path: Callable[[], Path | None], url_prefix: str = "/audience", *, with_display: bool = True,
             code: MeetingCode | None = None, settings: Callable[[], AudienceConfig] = AudienceConfig) -> Flask:
    """A read-only app serving the audience page (and the room display at /display): tests, or a display host."""
    app = Flask(__name__, static_folder=None)
    app.register_blueprint(blueprint(archive_path, code or MeetingCode(), settings), url_prefix=url_prefix)
    if with_display:
        from appliance.display.web import blueprint as display_blueprint

        app.register_blueprint(display_blueprint(), url_prefix="/display")
    return app
