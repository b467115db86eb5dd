"""The config panel in a real chromium (Playwright, Debian's /usr/bin/chromium) against the real threaded server.

Screenshots go to test-artifacts/panel-*.png. The models folder holds real manifests only (see test_panel_app).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import config as cfgmod
from appliance.panel import PanelServer, create_app
from appliance.status import Status

from test_panel_app import PASSWORD, write_models
from test_bus_support import require

playwright_api = require("playwright.sync_api", "scripts/setup --test installs playwright (test extra)")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


class Live:
    def __init__(self, tmp: Path):
        self.config_path = tmp / "etc" / "config.json"
        self.config_path.parent.mkdir(parents=True)
        cfgmod.save_atomic(cfgmod.Config(languages={"source": "auto", "targets": ["en"]}), self.config_path)
        self.status = Status()
        self.saved: list = []
        self.app = create_app(self.config_path, self.status, models_dir=write_models(tmp / "models"),
                              on_config_saved=self.apply, admin_file=tmp / "state" / "panel-admin.json",
                              device_lister=lambda: [{"index": 1, "name": "Room mic", "channels": 2, "default_rate": 44100.0}])
        self.ctx = self.app.extensions["appliance_panel"]
        self.ctx.display_link = (8081, "/display/?room=room1&lang=en")  # what serve() sets for the display server
        self.server = PanelServer(self.app, "127.0.0.1", 0).start()
        self.url = self.server.url.rstrip("/")

    def apply(self, cfg):
        time.sleep(0.6)  # the daemon takes a while: the page shows "applying…" meanwhile
        self.saved.append(cfg)
        return ["pipeline"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    lv = Live(tmp_path_factory.mktemp("panel"))
    yield lv
    lv.server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def console_errors():
    return []


@pytest.fixture
def new_page(browser, console_errors):
    contexts = []

    def make(**kw):
        ctx = browser.new_context(**kw)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        # script errors and CSP violations; "Failed to load resource" is the expected 4xx of refused requests
        page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                and console_errors.append(m.text))
        page.on("pageerror", lambda exc: console_errors.append(str(exc)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not console_errors, console_errors  # includes CSP violations


@pytest.fixture
def logged_in(live, new_page):
    if not live.ctx.admin.is_set:
        live.ctx.admin.set_password(PASSWORD, first_run=True)
    page = new_page()
    page.goto(live.url + "/login")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live.url + "/")
    return page


def test_first_run_password_then_login(live, new_page, artifacts):
    page = new_page()
    page.goto(live.url + "/")
    assert page.url == live.url + "/setup"
    page.fill("#setup_code", "WRONG-CODE0")
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.click("button[type=submit]")
    assert "wrong set-up code" in page.inner_text("#form-error") and not live.ctx.admin.is_set
    page.fill("#setup_code", live.ctx.setup_code.lower())  # as typed off the console: case does not matter
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.screenshot(path=str(artifacts / "panel-first-run.png"))
    page.click("button[type=submit]")
    page.wait_for_url(live.url + "/")
    assert "Admin password set" in page.inner_text("main")
    page.click("text=Log out")
    page.wait_for_url("**/login")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert page.inner_text("#form-error") == "wrong password"
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(live.url + "/")
    assert page.is_visible("text=Room & languages")


def test_change_target_languages_writes_the_file_and_tells_the_daemon(live, logged_in, artifacts):
    page = logged_in
    assert "en → pt (mt)" in page.inner_text("ul.targets")
    before = len(live.saved)
    page.check('input[name="languages.targets"][value="pt"]')
    with page.expect_navigation(url=live.url + "/"):
        page.click("form[data-save] button[type=submit]")
    assert "Saved." in page.inner_text("main")
    bar = page.locator("#apply-state")
    assert bar.inner_text() in ("applying…", "applied (restarted: pipeline)")
    page.wait_for_function("() => document.getElementById('apply-state').dataset.state === 'applied'")
    assert bar.inner_text() == "applied (restarted: pipeline)"
    assert json.loads(live.config_path.read_text())["languages"]["targets"] == ["en", "pt"]
    assert len(live.saved) == before + 1 and live.saved[-1].languages.targets == ["en", "pt"]
    assert live.saved[-1] == cfgmod.load(live.config_path)
    page.screenshot(path=str(artifacts / "panel-languages-saved.png"), full_page=True)


def test_invalid_value_shows_the_key_and_keeps_the_file(live, logged_in, artifacts):
    page = logged_in
    before = live.config_path.read_bytes()
    page.fill('input[name="room.id"]', "bad id!")
    page.click("form[data-save] button[type=submit]")
    error = page.locator("#form-error")
    error.wait_for()
    assert error.inner_text().startswith("room.id: String should match pattern")
    assert page.get_attribute('input[name="room.id"]', "aria-invalid") == "true"
    assert page.input_value('input[name="room.id"]') == "bad id!"  # what was typed stays for correction
    page.screenshot(path=str(artifacts / "panel-invalid-value.png"), full_page=True)
    assert live.config_path.read_bytes() == before


def test_form_without_its_csrf_token_is_refused(live, logged_in):
    page = logged_in
    before = live.config_path.read_bytes()
    page.goto(live.url + "/broker")
    page.eval_on_selector('form[data-save] input[name="csrf_token"]', "el => el.remove()")
    page.fill('input[name="broker.host"]', "evil.example")
    with page.expect_response(lambda r: r.url == live.url + "/broker" and r.request.method == "POST") as resp:
        page.click("form[data-save] button[type=submit]")
    assert resp.value.status == 400
    assert "CSRF" in page.inner_text("main")
    assert live.config_path.read_bytes() == before


def test_writes_without_login_are_refused(live, browser):
    before = live.config_path.read_bytes()
    ctx = browser.new_context()
    try:
        r = ctx.request.put(live.url + "/api/config", data=json.dumps({"room": {"id": "x"}}),
                            headers={"Content-Type": "application/json"})
        assert r.status == 401 and r.json()["error"] == "login required"
        r = ctx.request.post(live.url + "/", form={"room.id": "x", "room.name": "y"}, max_redirects=0)
        assert r.status == 303 and "/login" in r.headers["location"]
        page = ctx.new_page()
        page.goto(live.url + "/broker")
        assert "/login" in page.url
    finally:
        ctx.close()
    assert live.config_path.read_bytes() == before


def test_malformed_json_put_gives_400_with_a_message(live, logged_in):
    page = logged_in
    before = live.config_path.read_bytes()
    result = page.evaluate("""async () => {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const r = await fetch('/api/config', {method: 'PUT', body: '{"room": {"id": ',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': token}});
        return {status: r.status, body: await r.json()};
    }""")
    assert result["status"] == 400
    assert result["body"]["error"].startswith("400 Bad Request: the body is not valid JSON")
    assert live.config_path.read_bytes() == before
    page.reload()
    assert page.is_visible("text=Room & languages")  # the panel carries on


def test_live_page_and_level_meter_on_a_phone(live, new_page, artifacts):
    if not live.ctx.admin.is_set:
        live.ctx.admin.set_password(PASSWORD, first_run=True)
    live.status.set_broker_state("connected")
    live.status.set_mic_state("open", "Room mic")
    live.status.add_caption({"id": "u1", "lang": "en", "final": True, "text": "Welcome to the meeting."})
    live.status.add_caption({"id": "u1", "lang": "pt", "final": True, "text": "Bem-vindos à reunião."})
    live.status.add_caption({"id": "u2", "lang": "en", "final": False, "text": "Today we"})
    stop = threading.Event()

    def speak():  # a capture loop feeding the meter: a 0.3-amplitude tone
        t = np.arange(512) / 16000
        while not stop.is_set():
            live.status.set_input_level((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
            time.sleep(0.05)

    feeder = threading.Thread(target=speak, daemon=True)
    feeder.start()
    try:
        page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2)
        page.goto(live.url + "/login")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(live.url + "/")
        page.goto(live.url + "/microphone")
        assert "Room mic (#1, 2 ch, 44100 Hz)" in page.inner_text("select[name='audio.device']")
        page.wait_for_function("() => document.getElementById('level').value > 0.5")
        assert "dBFS" in page.inner_text("#level-text") and page.inner_text("#mic-state") == "open (Room mic)"
        page.screenshot(path=str(artifacts / "panel-microphone-phone.png"), full_page=True)
        page.goto(live.url + "/live")
        live.status.add_caption({"id": "u2", "lang": "en", "final": True, "text": "Today we talk about the budget."})
        page.wait_for_function("() => document.getElementById('live-captions').innerText.includes('budget')")
        text = page.inner_text("#live-captions")
        assert "Bem-vindos à reunião." in text and "Today we talk about the budget." in text
        assert page.inner_text("#live-broker") == "connected"
        assert page.get_attribute("a.button", "href") == "http://127.0.0.1:8081/display/?room=room1&lang=en"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
        page.screenshot(path=str(artifacts / "panel-live-phone.png"), full_page=True)
    finally:
        stop.set()
        feeder.join()
