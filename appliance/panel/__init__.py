"""The config panel: a small Flask app (create_app), served for the daemon by cheroot (serve).

On loopback the panel speaks plain HTTP unless `panel.https`; bound to any other address it always speaks
HTTPS, with a self-signed certificate made at first start (its fingerprint is logged and shown on every page).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from appliance.panel.app import create_app
from appliance.panel.context import context
from appliance.webserver import WebServer

__all__ = ["create_app", "PanelServer", "serve", "ADMIN_FILE_NAME", "TLS_DIR_NAME", "needs_https"]

log = logging.getLogger(__name__)
ADMIN_FILE_NAME = "panel-admin.json"
TLS_DIR_NAME = "panel-tls"
PanelServer = WebServer  # the name older callers use


def needs_https(host: str, https: bool) -> bool:
    """HTTPS when asked, and always off loopback (a password typed over the room LAN must not travel in clear)."""
    if https:
        return True
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name could resolve to anything


def serve(supervisor, *, admin_file: str | Path | None = None, device_lister=None) -> WebServer:
    """Start the panel for a running daemon.

    Uses supervisor.cfg (panel, display, state_dir), supervisor.opts.config_path and .models_dir,
    supervisor.status, supervisor.apply_config(new_config) as the on-save callback, and (when present)
    supervisor.rotate_display_password for the embedded broker's display user.
    """
    from appliance.config import DEFAULT_PATH

    cfg = supervisor.cfg
    app = create_app(supervisor.opts.config_path or DEFAULT_PATH, supervisor.status,
                     models_dir=supervisor.opts.models_dir, on_config_saved=supervisor.apply_config,
                     admin_file=admin_file or Path(cfg.state_dir) / ADMIN_FILE_NAME, device_lister=device_lister,
                     archive=lambda: getattr(supervisor, "archive", None), state_dir=cfg.state_dir,
                     speakers=lambda: getattr(supervisor, "speakers", None),
                     record=tap.record if (tap := getattr(supervisor, "mic_tap", None)) else None)
    ctx = context(app)
    tls = None
    if needs_https(cfg.panel.host, cfg.panel.https):
        from appliance.panel.tls import ensure_certificate

        tls = ensure_certificate(Path(cfg.state_dir) / TLS_DIR_NAME)
        ctx.tls_fingerprint = tls.fingerprint
        app.config["SESSION_COOKIE_SECURE"] = True  # the session never travels in clear
        log.info("panel certificate SHA-256 fingerprint %s (check it when the browser asks)", tls.fingerprint)
    if cfg.broker.mode == "embedded" and hasattr(supervisor, "rotate_display_password"):
        ctx.rotate_display_password = supervisor.rotate_display_password
    if hasattr(supervisor, "new_meeting_code"):
        ctx.new_meeting_code = supervisor.new_meeting_code
    if cfg.display.enabled:
        lang = (cfg.languages.targets or ["en"])[0]
        ctx.display_link = (cfg.display.port, f"/display/?room={cfg.room.id}&lang={lang}")
    server = WebServer(app, cfg.panel.host, cfg.panel.port, tls=tls, name="panel").start()
    log.info("config panel on %s", server.url)
    return server
