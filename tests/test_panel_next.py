"""Where the panel sends a browser after login: its own paths only (an open redirect would lend its name to phishing)."""

from __future__ import annotations

import pytest
from test_panel_app import PASSWORD, Panel


@pytest.mark.parametrize("target", ["/\t/evil.com", "/\n/evil.com", "/\r\n/evil.com", "/ /evil.com", "//evil.com",
                                    "/\\evil.com", "https://evil.com/", "/\x7f/evil.com", "/\u3000/evil.com"])
def test_login_never_redirects_off_the_panel(tmp_path, target):
    panel = Panel(tmp_path).setup_and_login()
    panel.client.post("/logout", data={"csrf_token": panel.token("/")})
    r = panel.client.post("/login", data={"password": PASSWORD, "next": target, "csrf_token": panel.token("/login")})
    assert r.status_code == 303 and r.headers["Location"] == "/"


def test_login_returns_to_the_panel_page_asked_for(tmp_path):
    panel = Panel(tmp_path).setup_and_login()
    panel.client.post("/logout", data={"csrf_token": panel.token("/")})
    r = panel.client.post("/login", data={"password": PASSWORD, "next": "/archive?x=1",
                                          "csrf_token": panel.token("/login")})
    assert r.status_code == 303 and r.headers["Location"] == "/archive?x=1"


def _copy_of(client) -> str:
    """The session cookie's value, as a thief would copy it."""
    return client.get_cookie("appliance_session").value


def _with_cookies(panel, value: str):
    other = panel.app.test_client()
    other.set_cookie("appliance_session", value)
    return other


def test_a_copied_cookie_stops_working_after_logout(tmp_path):
    panel = Panel(tmp_path).setup_and_login()
    stolen = _copy_of(panel.client)
    thief = _with_cookies(panel, stolen)
    assert thief.get("/api/status").status_code == 200
    assert panel.client.post("/logout", data={"csrf_token": panel.token("/")}).status_code == 303
    assert thief.get("/api/status").status_code == 401
    assert _with_cookies(panel, stolen).get("/").status_code in (302, 303)


def test_a_copied_cookie_stops_working_after_a_password_change(tmp_path):
    panel = Panel(tmp_path).setup_and_login()
    stolen = _copy_of(panel.client)
    r = panel.client.post("/password", data={"csrf_token": panel.token("/"), "current": PASSWORD,
                                             "password": "a new password", "confirm": "a new password"})
    assert r.status_code == 303 and panel.client.get("/api/status").status_code == 200
    assert _with_cookies(panel, stolen).get("/api/status").status_code == 401
