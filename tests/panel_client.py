"""A small HTTP client for a running daemon's panel (urllib with a cookie jar): set-up, login, JSON API."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.request

PASSWORD = "correct horse"


class PanelClient:
    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, path: str, *, method: str = "GET", data: bytes | None = None, headers: dict | None = None):
        """(status, body text); HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def token(self, path: str = "/login") -> str:
        return re.search(r'name="csrf-token" content="([^"]+)"', self.request(path)[1]).group(1)

    def setup(self, setup_code: str, password: str = PASSWORD) -> "PanelClient":
        """First-run set-up with the one-time code the daemon printed in its log."""
        from urllib.parse import urlencode

        body = urlencode({"password": password, "confirm": password, "setup_code": setup_code,
                          "csrf_token": self.token("/setup")}).encode()
        status, text = self.request("/setup", method="POST", data=body,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status in (200, 303), (status, text[:500])
        return self

    def api(self, path: str, body=None, method: str = "GET"):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", "X-CSRF-Token": self.token("/")}
        status, text = self.request(path, method=method, data=data, headers=headers)
        return status, json.loads(text) if text.strip().startswith("{") else text
