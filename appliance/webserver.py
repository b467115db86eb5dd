"""The HTTP(S) server for the panel and the display server: cheroot (CherryPy's WSGI server) on its own thread.

Why cheroot: a maintained, pure-Python, threaded production WSGI server that serves TLS itself (Python's ssl
module), so the panel needs no reverse proxy on the device; waitress has no TLS and gunicorn is a process
manager built around fork and a master process, which does not fit a server embedded in the daemon.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["WebServer", "TlsFiles"]

THREADS = 8  # concurrent requests per server: a handful of admins or a room's worth of displays
REQUEST_TIMEOUT_S = 10
MAX_REQUEST_BODY_BYTES = 1024 * 1024  # the panel's own limit (256 KiB) is lower: this is the server's backstop


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    fingerprint: str  # SHA-256 of the certificate, AA:BB:…


class WebServer:
    """One WSGI app on host:port (port 0: any free port), HTTPS when `tls` is given; `start()` / `shutdown()`."""

    def __init__(self, app, host: str, port: int, *, tls: TlsFiles | None = None, name: str = "web"):
        from cheroot import wsgi

        self.name, self.tls = name, tls
        self.server = wsgi.Server((host, port), app, numthreads=THREADS, server_name=f"appliance-{name}",
                                  timeout=REQUEST_TIMEOUT_S)
        self.server.max_request_body_size = MAX_REQUEST_BODY_BYTES
        if tls is not None:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            self.server.ssl_adapter = BuiltinSSLAdapter(str(tls.cert_file), str(tls.key_file))
        self.server.prepare()  # binds now, so a busy port is an error here and port 0 is resolved
        self.host, self.port = host, self.server.bind_addr[1]
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        try:
            self.server.serve()
        except Exception:
            log.exception("%s server stopped", self.name)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def start(self) -> "WebServer":
        self.thread.start()
        return self

    def shutdown(self) -> None:
        self.server.stop()
        self.thread.join(5)
