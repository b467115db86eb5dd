"""The panel and the display server on a room LAN, through the real servers (cheroot, TLS) and real sockets:
HTTPS with a self-signed certificate, the first-run set-up code, a login limit that holds under concurrent
bursts, no exception text on public endpoints, and a display server that serves only read-only things."""

from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
import hashlib
import threading
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance import config as cfgmod
from appliance.display.server import create_app as display_app
from appliance.panel import TLS_DIR_NAME, needs_https, serve
from appliance.panel.auth import RateLimiter
from appliance.status import Status
from appliance.webserver import WebServer
from test_broker_security import lan_address
from test_bus_support import free_port
from test_panel_app import PASSWORD, Panel, write_models


def test_https_is_required_off_loopback():
    assert needs_https("127.0.0.1", False) is False and needs_https("localhost", False) is False
    assert needs_https("::1", False) is False and needs_https("127.0.0.1", True) is True
    assert needs_https("0.0.0.0", False) and needs_https("192.168.1.20", False) and needs_https("panel.lan", False)


def test_rate_limiter_reserves_attempts_atomically():
    now = [0.0]
    lim = RateLimiter(3, 60.0, clock=lambda: now[0])
    assert [lim.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.acquire("a") > 0 and lim.acquire("b") == 0.0
    lim.reset("b")
    now[0] = 61.0
    assert lim.acquire("a") == 0.0


class Lan:
    """serve() for a daemon-like object, on the machine's LAN address (so HTTPS) with a real certificate."""

    def __init__(self, tmp: Path):
        self.lan = lan_address()
        self.tmp = tmp
        cfg = cfgmod.Config(panel={"host": self.lan, "port": free_port()}, state_dir=str(tmp / "state"),
                            display={"port": 18081})
        self.status = Status()
        self.supervisor = SimpleNamespace(cfg=cfg, status=self.status, apply_config=lambda c: [],
                                          rotate_display_password=lambda: "display-room1",
                                          opts=SimpleNamespace(config_path=tmp / "config.json",
                                                               models_dir=write_models(tmp / "models")))
        self.server = serve(self.supervisor)
        self.ctx = self.server.server.wsgi_app.extensions["appliance_panel"]
        self.cert = tmp / "state" / TLS_DIR_NAME / "panel.crt"
        self.tls = ssl.create_default_context(cafile=str(self.cert))  # the pinned self-signed certificate
        self.tls.check_hostname = False  # the certificate names this host, not the test's LAN address

    def conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.lan, self.server.port, context=self.tls, timeout=30)

    def request(self, method, path, body=None, cookie=None):
        c = self.conn()
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        if cookie:
            headers["Cookie"] = cookie
        c.request(method, path, body=urllib.parse.urlencode(body) if body is not None else None, headers=headers)
        r = c.getresponse()
        out = (r.status, dict(r.getheaders()), r.read().decode())
        c.close()
        return out

    def session(self, path="/login"):
        status, headers, text = self.request("GET", path)
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        token = re.search(r'name="csrf-token" content="([^"]+)"', text).group(1)
        return cookie, token


@pytest.fixture
def lan(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        ln = Lan(tmp_path)
    ln.log = caplog.text
    yield ln
    ln.server.shutdown()


def test_lan_panel_speaks_only_https_with_the_logged_fingerprint(lan):
    assert lan.server.url.startswith("https://")
    pem = ssl.get_server_certificate((lan.lan, lan.server.port))
    served = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    assert ":".join(served[i:i + 2] for i in range(0, 64, 2)) == lan.ctx.tls_fingerprint
    assert lan.ctx.tls_fingerprint in lan.log
    key = lan.cert.with_name("panel.key")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    plain = http.client.HTTPConnection(lan.lan, lan.server.port, timeout=10)
    try:
        plain.request("GET", "/setup")
        got = plain.getresponse().status
    except (http.client.HTTPException, OSError):
        got = None
    assert got in (None, 400)  # plain HTTP on the TLS port gets an error, never the page
    status, _, text = lan.request("GET", "/setup")
    assert status == 200 and lan.ctx.tls_fingerprint in text and 'name="setup_code"' in text


def test_first_run_needs_the_logged_one_time_code(lan):
    code = lan.ctx.setup_code
    assert re.fullmatch(r"[A-Z2-9]{5}-[A-Z2-9]{5}", code) and code in lan.log
    cookie, token = lan.session("/setup")
    form = {"password": PASSWORD, "confirm": PASSWORD, "csrf_token": token}
    status, _, text = lan.request("POST", "/setup", {**form, "setup_code": "AAAAA-AAAAA"}, cookie)
    assert status == 401 and "wrong set-up code" in text and not lan.ctx.admin.is_set
    status, _, _ = lan.request("POST", "/setup", {**form, "setup_code": ""}, cookie)
    assert status == 401 and not lan.ctx.admin.is_set
    status, headers, _ = lan.request("POST", "/setup", {**form, "setup_code": code}, cookie)
    assert status == 303 and lan.ctx.admin.is_set
    assert "Secure" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]


def test_login_limit_holds_under_a_concurrent_burst(lan):
    lan.ctx.admin.set_password(PASSWORD, first_run=True)
    cookie, token = lan.session()
    results: list[int] = []
    go = threading.Barrier(24)

    def attempt(i: int) -> None:
        c = lan.conn()
        c.connect()  # TLS handshake first, so the requests themselves arrive together
        go.wait()
        body = urllib.parse.urlencode({"password": f"wrong {i}", "csrf_token": token})
        c.request("POST", "/login", body=body, headers={"Cookie": cookie,
                                                         "Content-Type": "application/x-www-form-urlencoded"})
        results.append(c.getresponse().status)
        c.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 24 and set(results) <= {401, 429}
    assert results.count(401) == 5, sorted(results)  # exactly the limit got a password check
    status, _, text = lan.request("POST", "/login", {"password": PASSWORD, "csrf_token": token}, cookie)
    assert status == 429 and "too many failed logins" in text  # even the right password waits


def test_healthz_shows_no_exception_text_to_anonymous_callers(lan):
    lan.status.pipeline = SimpleNamespace(errors=["OSError: [Errno 2] /var/lib/appliance/models/x.onnx"],
                                          backlog_s=lambda: 0.0, stats=None)
    status, _, text = lan.request("GET", "/healthz")
    body = json.loads(text)
    assert status == 503 and body["problems"] == ["pipeline error"] and "Errno" not in text and "/var" not in text


def test_healthz_details_for_a_logged_in_admin(tmp_path):
    p = Panel(tmp_path).setup_and_login()
    p.status.pipeline = SimpleNamespace(errors=["boom: details"], backlog_s=lambda: 0.0, stats=None)
    assert p.client.get("/healthz").get_json()["problems"] == ["pipeline error: boom: details"]


def test_display_server_serves_only_read_only_things(tmp_path):
    lan = lan_address()
    info = {"room": "room1", "name": "Hall", "prefix": "appliance", "languages": ["pt"], "ws_port": 9001,
            "username": "display-room1", "password": "p4ss"}
    server = WebServer(display_app(lambda: info), lan, 0, name="display").start()
    try:
        def get(method, path, host=None):
            c = http.client.HTTPConnection(lan, server.port, timeout=10)
            c.request(method, path, headers={"Host": host} if host else {})
            r = c.getresponse()
            out = (r.status, dict(r.getheaders()), r.read())
            c.close()
            return out

        status, headers, body = get("GET", "/display/connection.json")
        assert status == 200 and json.loads(body) == info and headers["Cache-Control"] == "no-store"
        assert "Access-Control-Allow-Origin" not in headers  # other sites' pages cannot read it
        assert get("GET", "/display/")[0] == 200
        assert get("GET", "/display/display.js")[0] == 200
        assert get("GET", "/")[1]["Location"] == "/display/?room=room1&lang=pt"
        for path in ("/api/config", "/setup", "/login", "/display/package.json", "/display/../panel-admin.json"):
            assert get("GET", path)[0] == 404, path
        for method in ("POST", "PUT", "DELETE"):
            assert get(method, "/display/connection.json")[0] == 405
        assert get("GET", "/display/connection.json", host="evil.example.com")[0] == 400  # DNS rebinding
    finally:
        server.shutdown()


def test_daemon_runs_panel_and_display_server_apart_and_logs_both(tmp_path, caplog):
    from appliance.daemon import RunOptions, Supervisor

    cfg = cfgmod.Config.model_validate({"room": {"id": "hall"}, "state_dir": str(tmp_path / "state"),
                                        "languages": {"targets": ["pt", "en"]},
                                        "panel": {"host": "127.0.0.1", "port": free_port()},
                                        "display": {"host": "0.0.0.0", "port": free_port()}})
    sup = Supervisor(cfg, RunOptions(config_path=tmp_path / "c.json", models_dir=write_models(tmp_path / "models")))
    with caplog.at_level(logging.INFO):
        sup.panel.start()
        sup.display.start()
        sup.log_urls()
    try:
        urls = sup.urls()
        lan = lan_address()
        assert urls["admin panel"] == f"http://127.0.0.1:{cfg.panel.port}/"
        from appliance.services.display import lan_host  # the address the room reaches this device on (default route)

        assert urls["room display"] == f"http://{lan_host()}:{cfg.display.port}/display/?room=hall&lang=pt"
        assert f"room display: {urls['room display']}" in caplog.text and "admin panel: http://127.0.0.1" in caplog.text
        c = http.client.HTTPConnection(lan, cfg.display.port, timeout=10)
        c.request("GET", "/display/connection.json")
        info = json.loads(c.getresponse().read())
        assert info["username"] == "display-hall" and info["room"] == "hall" and info["languages"] == ["pt", "en"]
        assert info["password"] == sup.credentials.display("hall").password
        for path in ("/audience/?room=hall", "/audience/vendor/mqtt.min.js", "/display/vendor/mqtt.min.js"):
            c = http.client.HTTPConnection(lan, cfg.display.port, timeout=10)
            c.request("GET", path)
            assert c.getresponse().status == 200, path  # the audience page is mounted beside the display
        assert urls["audience page"].endswith(f":{cfg.display.port}/audience/?room=hall")
        with pytest.raises(OSError):  # the admin panel is not on the LAN
            http.client.HTTPConnection(lan, cfg.panel.port, timeout=5).request("GET", "/setup")
    finally:
        sup.panel.stop(5)
        sup.display.stop(5)
