"""The display server as a service: the read-only room display pages and the audience page for phones, on the
room LAN (display.host:display.port), apart from the panel. It serves nothing that can change the appliance.

It is built from the display section: a change there moves, starts or stops it. What it serves (the broker's
connection details, the archive for the audience page) is read from the config in force at each request.
"""

from __future__ import annotations

import logging
import socket
from typing import Callable

from appliance.services.base import Context, Service

log = logging.getLogger(__name__)


class DisplayService(Service):
    name = "display"
    sections = ("display",)

    def __init__(self, ctx: Context, connection: Callable[[], dict]):
        """connection: what a room display needs to connect (room, broker port, the room's read-only user)."""
        self.ctx = ctx
        self.connection = connection
        self.server = None  # appliance.webserver.WebServer while it runs

    def start(self) -> None:
        cfg = self.ctx.cfg
        if not cfg.display.enabled:
            return
        from appliance.display.server import DEFAULT_PAGES, ReadOnlyPage, create_app
        from appliance.webserver import WebServer

        pages = DEFAULT_PAGES + (ReadOnlyPage("/audience", self._audience_page),)
        try:
            self.server = WebServer(create_app(self.connection, pages), cfg.display.host, cfg.display.port,
                                    name="display").start()
        except OSError as exc:  # captions go on: displays can still be opened from disk with their details
            message = (f"display server: cannot listen on {cfg.display.host}:{cfg.display.port} ({exc}); "
                       "change display.port")
            log.error("%s", message)
            self.ctx.status.warn(message)

    def stop(self, timeout: float) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()

    def urls(self) -> dict[str, str]:
        """Where the room's screens and the audience's phones open their pages (none while it is off)."""
        if self.server is None:
            return {}
        cfg = self.ctx.cfg
        lang = (cfg.languages.targets or ["en"])[0]
        host = cfg.display.host if cfg.display.host not in ("0.0.0.0", "::", "") else lan_host()
        base = f"http://{host}:{self.server.port}"
        return {"room display": f"{base}/display/?room={cfg.room.id}&lang={lang}",
                "audience page": f"{base}/audience/?room={cfg.room.id}"}

    def _audience_page(self):
        """The audience page for phones (scroll-back from the archive, read-only)."""
        from appliance.archive import db_path
        from appliance.display import audience

        return audience.blueprint(lambda: db_path(self.ctx.cfg.state_dir) if self.ctx.cfg.archive.enabled else None)


def lan_host() -> str:
    """This machine's address on the room network (the route to a LAN peer), for the URLs in the log."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()
