"""The config panel: a small Flask app (create_app) and a threaded server for the daemon (serve / PanelServer)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from appliance.panel.app import create_app

__all__ = ["create_app", "PanelServer", "serve", "ADMIN_FILE_NAME"]

log = logging.getLogger(__name__)
ADMIN_FILE_NAME = "panel-admin.json"


class PanelServer:
    """werkzeug's threaded WSGI server on its own thread; `shutdown()` stops it."""

    def __init__(self, app, host: str, port: int):
        from werkzeug.serving import make_server

        self.server = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="panel", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> "PanelServer":
        self.thread.start()
        log.info("config panel on %s", self.url)
        return self

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(supervisor, *, admin_file: str | Path | None = None, device_lister=None) -> PanelServer:
    """Start the panel for a running daemon.

    Uses supervisor.cfg (panel.host/port, state_dir), supervisor.opts.config_path and .models_dir,
    supervisor.status, and supervisor.apply_config(new_config) as the on-save callback.
    """
    from appliance.config import DEFAULT_PATH

    cfg = supervisor.cfg
    app = create_app(supervisor.opts.config_path or DEFAULT_PATH, supervisor.status,
                     models_dir=supervisor.opts.models_dir, on_config_saved=supervisor.apply_config,
                     admin_file=admin_file or Path(cfg.state_dir) / ADMIN_FILE_NAME, device_lister=device_lister,
                     archive=lambda: getattr(supervisor, "archive", None), state_dir=cfg.state_dir,
                     speakers=lambda: getattr(supervisor, "speakers", None),
                     record=tap.record if (tap := getattr(supervisor, "mic_tap", None)) else None)
    return PanelServer(app, cfg.panel.host, cfg.panel.port).start()
