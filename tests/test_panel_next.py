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
