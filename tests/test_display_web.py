"""The web room display in real headless chromium (Playwright, /usr/bin/chromium), over MQTT-over-WebSocket
to the embedded broker, served by the appliance's display blueprint and opened from disk."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from werkzeug.serving import make_server

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
        pytest.fail("mqtt.js is not installed: run scripts/setup (npm ci in appliance/display/web)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def stack(tmp_path):
    broker = start_broker(tmp_path / "broker")
    pub = Publisher(BrokerConfig(port=broker.port), room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    server = make_server("127.0.0.1", free_port(), web.make_app(), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield broker, pub, f"http://127.0.0.1:{server.server_port}"
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


def test_web_display_marks_untranslated_source_text(browser, stack):
    broker, pub, base = stack
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{base}/display/?room=r1&lang=pt&broker=ws://127.0.0.1:{broker.ws_port}")
    page.wait_for_function("() => document.getElementById('banner').hidden === false")
    pub.start()
    pub.publish_detail({"name": "Sala Azul", "languages": ["pt"]})
    page.wait_for_function("() => document.getElementById('banner').hidden")  # subscribed and the room is online
    pub.publish(final(1, text="Bom dia."))
    pub.publish({**final(2, text="Thank you all for coming."), "untranslated": True})
    page.wait_for_function("() => window.captionDisplay.finals === 2")
    shown = page.eval_on_selector_all(".row", "els => els.map(e => [e.textContent, e.className, "
                                      "getComputedStyle(e, '::before').content])")
    assert shown[0][:2] == ["Bom dia.", "row"]
    assert shown[1][:2] == ["Thank you all for coming.", "row untranslated"]  # the text itself is untouched
    assert shown[1][2] == '"[EN] "'  # labelled with the language it is in
    page.close()
