"""The config panel as a service: the admin's Flask app, served by cheroot on panel.host:panel.port.

It is built from no section that a save restarts: a save made in the panel must not pull the panel away from
under the browser that made it, so panel settings take effect at the next start.
"""

from __future__ import annotations

from typing import Callable

from appliance.services.base import Service


class PanelService(Service):
    name = "panel"
    sections = ()

    def __init__(self, daemon, device_lister: Callable[[], list]):
        """daemon: what appliance.panel.serve reads (cfg, opts, status, apply_config, ...)."""
        self.daemon = daemon
        self.device_lister = device_lister
        self.server = None  # appliance.webserver.WebServer while it runs

    def start(self) -> None:
        from appliance.panel import serve

        self.server = serve(self.daemon, device_lister=self.device_lister)

    def stop(self, timeout: float) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()

    def urls(self) -> dict[str, str]:
        return {"admin panel": self.server.url} if self.server is not None else {}
