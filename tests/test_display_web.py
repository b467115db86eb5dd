"""The web room display in real headless chromium (Playwright, /usr/bin/chromium), over MQTT-over-WebSocket
to the embedded broker, served by the appliance's display blueprint and opened from disk."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from appliance.bus.publisher import Publisher
from appliance.config import BrokerConfig
from appliance.display import web
from test_bus_support import final, free_port, partial, start_broker, wait_until

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
EVIL = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script><b>bold</b>'


@pytest.fixture(scope="module")
def browser():
    if not web.mqtt_js_installed():
        pytest.fail("mqtt.js is not installed: run scripts/web-assets (scripts/setup does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def stack(tmp_path):
    broker = start_broker(tmp_path / "broker")
    pub = Publisher(BrokerConfig(port=broker.port), room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    from appliance.webserver import WebServer

    server = WebServer(web.make_app(), "127.0.0.1", 0, name="display").start()
    yield broker, pub, f"http://127.0.0.1:{server.port}"
    server.shutdown()
    pub.stop(timeout=1)
    broker.stop()


def rows(page):
    return page.eval_on_selector_all(".row", "els => els.map(e => [e.textContent, e.classList.contains('partial')])")


def test_web_display_shows_partials_finals_literally_and_offline_banner(browser, stack, artifacts):
    broker, pub, base = stack
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    resp = page.goto(f"{base}/display/?room=r1&lang=pt&broker=ws://127.0.0.1:{broker.ws_port}")
    assert "connect-src 'self' ws: wss:" in resp.headers["content-security-policy"]
    page.wait_for_function("() => document.getElementById('banner').hidden === false")  # room not online yet
    pub.start()
    pub.publish_detail({"name": "Sala Azul", "languages": ["pt"]})
    page.wait_for_function("() => document.getElementById('banner').hidden")
    pub.publish(partial(1, 0, text="bom dia a"))
    page.wait_for_function("() => document.querySelector('.row.partial') !== null")
    assert rows(page)[-1] == ["bom dia a", True]
    page.screenshot(path=str(artifacts / "display-web-partial.png"))
    pub.publish(partial(1, 1, text="bom dia a todos"))
    pub.publish(final(1, text="Bom dia a todos."))
    page.wait_for_function("() => window.captionDisplay.finals === 1")
    assert rows(page)[-1] == ["Bom dia a todos.", False]
    raw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)  # garbage on every topic the page reads
    raw.connect("127.0.0.1", broker.port)
    raw.loop_start()
    for topic, payload in (("captions/pt", b"not json"), ("captions/pt", b'{"v":1,"seq":"x"}'), ("captions/pt", b"\xff"),
                           ("status", b"<b>?</b>"), ("status/detail", b"{broken")):
        raw.publish(f"appliance/r1/{topic}", payload, qos=1).wait_for_publish(5)
    raw.loop_stop()
    pub.publish(final(2, text=EVIL))
    page.wait_for_function("() => window.captionDisplay.finals === 2")
    text = page.inner_text("#captions")
    assert "<b>bold</b>" in text and "<script>" in text  # shown literally ...
    assert page.query_selector("#captions b") is None and page.query_selector("#captions img") is None
    assert page.title() != "pwned"  # ... never run
    assert "Sala Azul" in page.inner_text("#info")
    assert page.evaluate("window.captionDisplay.malformed") == 4
    page.screenshot(path=str(artifacts / "display-web.png"))
    pub.stop(timeout=2)  # the room goes offline: banner
    page.wait_for_function("() => !document.getElementById('banner').hidden")
    assert "offline" in page.inner_text("#banner").lower()
    page.screenshot(path=str(artifacts / "display-web-offline.png"))
    assert not errors
    page.close()


def test_web_display_joins_late_survives_broker_restart_opened_from_disk(browser, stack, artifacts):
    broker, pub, _ = stack
    pub.start()
    pub.publish(final(0, text="antes"))  # before the display exists: not shown (finals are not retained)
    wait_until(lambda: pub.pending == 0, what="first final sent")
    page = browser.new_page(viewport={"width": 1024, "height": 600})
    page.goto((web.static_folder() / "index.html").as_uri() + f"?room=r1&lang=pt&broker=ws://127.0.0.1:{broker.ws_port}")
    page.wait_for_function("() => document.getElementById('banner').hidden")  # retained 'online' on join
    for i in range(1, 4):
        pub.publish(final(i))
    page.wait_for_function("() => window.captionDisplay.finals === 3")
    broker.stop()
    page.wait_for_function("() => !document.getElementById('banner').hidden")  # connection lost
    for i in range(4, 8):
        pub.publish(final(i))
    time.sleep(1.0)
    broker.start()
    page.wait_for_function("() => window.captionDisplay.finals === 7", timeout=20000)
    assert [r[0] for r in rows(page)] == ["frase número 6", "frase número 7"]
    time.sleep(1.0)  # finals sent again after the reconnection are not shown twice
    assert page.evaluate("window.captionDisplay.finals") == 7 and "antes" not in page.inner_text("#captions")
    page.screenshot(path=str(artifacts / "display-web-from-disk.png"))
    page.close()


def test_display_blueprint_serves_only_its_files(stack):
    app = web.make_app()
    c = app.test_client()
    assert c.get("/display/").status_code == 200
    assert c.get(f"/display/{web.MQTT_JS}").status_code == 200
    assert c.get("/display/package.json").status_code == 404
    assert c.get("/display/node_modules/mqtt/package.json").status_code == 404


def test_display_from_the_display_server_reads_the_closed_broker_with_its_room_user(browser, tmp_path, artifacts):
    """The page as a room screen gets it: from the display server on the LAN address, connection details from
    connection.json, the room's read-only user against a closed broker."""
    from appliance.bus.broker import BrokerUsers, EmbeddedBroker
    from appliance.bus.credentials import CredentialStore, write_broker_files
    from appliance.display.server import create_app
    from appliance.webserver import WebServer
    from test_broker_security import lan_address

    store = CredentialStore(tmp_path / "creds.json")
    passwd, acl = write_broker_files(store, tmp_path / "broker", prefix="appliance", rooms=["r1"])
    broker = EmbeddedBroker(port=free_port(), ws_port=free_port(), ws_host="0.0.0.0", state_dir=tmp_path / "broker",
                            users=BrokerUsers(passwd, acl))
    broker.start()
    app_user = store.appliance()
    pub = Publisher(BrokerConfig(port=broker.port, username=app_user.username, password=app_user.password),
                    room="r1", state_dir=tmp_path, max_backoff_s=1.0)

    def info():  # read at every request, as the daemon does: a rotated password is served at once
        cred = store.display("r1")
        return {"room": "r1", "name": "Hall", "prefix": "appliance", "languages": ["pt"], "ws_port": broker.ws_port,
                "username": cred.username, "password": cred.password}

    lan = lan_address()
    server = WebServer(create_app(info), lan, 0, name="display").start()
    page = browser.new_page(viewport={"width": 1024, "height": 600})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pub.start()
        page.goto(f"http://{lan}:{server.port}/")  # redirected to the room's first language
        assert page.url.endswith("/display/?room=r1&lang=pt")
        page.wait_for_function("() => document.getElementById('banner').hidden")  # connected, room online
        pub.publish(final(1, text="Bom dia a todos."))
        page.wait_for_function("() => window.captionDisplay.finals === 1")
        assert rows(page)[-1] == ["Bom dia a todos.", False]
        page.screenshot(path=str(artifacts / "display-web-display-server.png"))
        # the display password is rotated (what the panel does): the broker restarts with the new users; the page
        # is refused with the old password, fetches the new details and shows captions again
        old = store.display("r1").password
        store.rotate_display("r1")
        write_broker_files(store, tmp_path / "broker", prefix="appliance", rooms=["r1"])
        broker.stop()
        broker.start()
        page.wait_for_function("() => window.captionDisplay === undefined || window.captionDisplay.finals === 0",
                               timeout=20000)  # reloaded
        page.wait_for_function("() => document.getElementById('banner').hidden", timeout=20000)
        pub.publish(final(2, text="Depois da troca."))
        page.wait_for_function("() => window.captionDisplay && window.captionDisplay.finals >= 1", timeout=20000)
        assert rows(page)[-1] == ["Depois da troca.", False] and store.display("r1").password != old
        assert not errors
    finally:
        page.close()
        server.shutdown()
        pub.stop(timeout=1)
        broker.stop()
