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


CAUGHT_UP = "() => window.captionDisplay.pending.length === 0"  # every final revealed (reading-speed pacing)


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
    page.wait_for_function(CAUGHT_UP)
    text = page.inner_text("#captions") + page.inner_text("#history")
    assert "<b>bold</b>" in text and "<script>" in text  # shown literally ...
    assert page.query_selector("#captions b") is None and page.query_selector("#captions img") is None
    assert page.query_selector("#history b") is None and page.query_selector("#history img") is None
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
    page.wait_for_function(CAUGHT_UP)
    assert [r[0] for r in rows(page)] == ["frase número 6", "frase número 7"]
    time.sleep(1.0)  # finals sent again after the reconnection are not shown twice
    assert page.evaluate("window.captionDisplay.finals") == 7 and "antes" not in page.inner_text("#captions")
    page.screenshot(path=str(artifacts / "display-web-from-disk.png"))
    page.close()


SNAPSHOTS = """() => {
  window.__snaps = [];
  const take = () => {
    const hist = [...document.querySelectorAll('#history .hist')].map(e => e.textContent);
    const live = [...document.querySelectorAll('#captions .row:not(.partial)')].map(e => e.textContent).filter(t => t);
    const s = hist.concat(live).join('\\n');
    if (window.__snaps[window.__snaps.length - 1] !== s) window.__snaps.push(s);
  };
  new MutationObserver(take).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
LONG = ["Good morning to all of you and welcome to the meeting.",
        "The first item on the agenda is the budget for next year.",
        "We will vote on it after the coffee break at eleven.",
        "Please keep your questions short so that everyone can speak.",
        "The minutes of the last meeting were sent by email."]


def _rate(events: list, burst: int = 8) -> float:
    """Characters per second revealed after the first word, less the burst a display may show at once."""
    chars = sum(c for _, c in events[1:]) - burst
    return chars / ((events[-1][0] - events[0][0]) / 1000)


def test_web_display_rolls_up_with_dimmed_history_at_reading_speed_never_jumping_back(browser, stack, artifacts):
    broker, pub, base = stack
    pub.start()
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{base}/display/?room=r1&lang=en&history=5&broker=ws://127.0.0.1:{broker.ws_port}")
    page.wait_for_function("() => document.getElementById('banner').hidden")
    page.evaluate(SNAPSHOTS)
    pub.publish(partial(1, 1, lang="en", text="good morning to all"))
    page.wait_for_function("() => document.querySelector('.row.partial') !== null")
    pub.publish(final(1, lang="en", text=LONG[0]))
    page.wait_for_function("() => window.captionDisplay.finals === 1")
    assert " ".join(r[0] for r in rows(page) if r[0]).startswith("Good morning to all")  # the partial's words stay
    page.wait_for_function(CAUGHT_UP)
    pub.publish(final(2, lang="en", text=LONG[1]))
    page.wait_for_function("() => window.captionDisplay.finals === 2")
    page.wait_for_function(CAUGHT_UP)
    paced = page.evaluate("window.captionDisplay.revealed.slice()")
    second = [e for e in paced if e[0] >= paced[-1][0] - 10_000][-len(LONG[1].split()):]
    assert _rate(second) <= 17 * 1.02, second  # one final with no backlog: held to the reading speed
    start = len(paced)
    for i in range(3, 6):  # a burst of finals: the display speeds up rather than fall behind
        pub.publish(final(i, lang="en", text=LONG[i - 1]))
    page.wait_for_function("() => window.captionDisplay.finals === 5")
    page.wait_for_function(CAUGHT_UP, timeout=30_000)
    burst = page.evaluate("window.captionDisplay.revealed.slice()")[start:]
    assert _rate(burst) > 17
    hist = page.eval_on_selector_all("#history .hist", "els => els.map(e => [e.textContent, e.className, "
                                     "parseFloat(getComputedStyle(e).opacity)])")
    assert [r[0] for r in rows(page)] == ["The minutes of the last meeting were sent", "by email."]
    assert " ".join(h[0] for h in hist).endswith("so that everyone can speak.")
    assert {h[1] for h in hist} >= {"hist age-1", "hist age-2", "hist age-3", "hist age-4"}
    opacity = {h[1]: h[2] for h in hist}
    assert opacity["hist age-1"] > opacity["hist age-2"] > opacity["hist age-3"] >= opacity["hist age-4"]
    snaps = page.evaluate("window.__snaps")
    assert len(snaps) > 20
    for before, after in zip(snaps, snaps[1:]):
        assert after.startswith(before), (before, after)  # text only ever grows: nothing shown is taken back
    page.screenshot(path=str(artifacts / "display-web-roll-up.png"))
    page.close()


def test_display_blueprint_serves_only_its_files(stack):
    app = web.make_app()
    c = app.test_client()
    assert c.get("/display/").status_code == 200
    assert c.get(f"/display/{web.MQTT_JS}").status_code == 200
    assert c.get("/display/package.json").status_code == 404
    assert c.get("/display/node_modules/mqtt/package.json").status_code == 404


def shown(page, text: str) -> None:
    """Wait until the last row shows `text` in full (finals are revealed word by word at reading speed)."""
    page.wait_for_function("t => { const r = document.querySelectorAll('.row'); "
                           "return r.length && r[r.length - 1].textContent === t; }", arg=text, timeout=20000)


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
        shown(page, "Bom dia a todos.")
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
        shown(page, "Depois da troca.")
        assert store.display("r1").password != old
        assert not errors
    finally:
        page.close()
        server.shutdown()
        pub.stop(timeout=1)
        broker.stop()


def test_audience_page_on_the_display_server_reads_the_closed_broker(browser, tmp_path):
    """The phones' page, mounted on the display server, connects with the room's read-only user it gets from
    ../display/connection.json (the broker refuses anonymous clients)."""
    from appliance.bus.broker import BrokerUsers, EmbeddedBroker
    from appliance.bus.credentials import CredentialStore, write_broker_files
    from appliance.display import audience
    from appliance.display.server import DEFAULT_PAGES, ReadOnlyPage, create_app
    from appliance.webserver import WebServer
    from test_broker_security import lan_address

    store = CredentialStore(tmp_path / "creds.json")
    passwd, acl = write_broker_files(store, tmp_path / "broker", prefix="appliance", rooms=["r1"])
    broker = EmbeddedBroker(port=free_port(), ws_port=free_port(), ws_host="0.0.0.0", state_dir=tmp_path / "broker",
                            users=BrokerUsers(passwd, acl))
    broker.start()
    app_user, cred = store.appliance(), store.display("r1")
    pub = Publisher(BrokerConfig(port=broker.port, username=app_user.username, password=app_user.password),
                    room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    info = {"room": "r1", "name": "Hall", "prefix": "appliance", "languages": ["pt"], "ws_port": broker.ws_port,
            "username": cred.username, "password": cred.password}
    from appliance.meeting_code import MeetingCode

    code = MeetingCode()
    pages = DEFAULT_PAGES + (ReadOnlyPage("/audience", lambda: audience.blueprint(lambda: None, code)),)
    lan = lan_address()
    server = WebServer(create_app(lambda: info, pages), lan, 0, name="display").start()
    page = browser.new_page(viewport={"width": 390, "height": 844})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pub.start()
        page.goto(f"http://{lan}:{server.port}/audience/?room=r1&lang=pt&code={code.current}")
        page.wait_for_function("() => document.getElementById('banner').hidden", timeout=20000)  # connected
        pub.publish(final(1, text="Para os telefones."))
        page.wait_for_function("() => window.audience.finals === 1", timeout=20000)
        assert page.eval_on_selector_all("#log p", "els => els.map(e => e.textContent)")[-1] == "Para os telefones."
        assert not errors
    finally:
        page.close()
        server.shutdown()
        pub.stop(timeout=1)
        broker.stop()


def test_web_display_marks_untranslated_source_text(browser, stack, artifacts):
    """A final whose text is the source text (no translation agreed with it): its lines in another colour, its first
    line marked with the language it is in ("[EN] ", counted in the line width), on the live rows and in the
    history; with a change of speaker the mark comes before the name. The text itself is untouched."""
    broker, pub, base = stack
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/display/?room=r1&lang=pt&rows=2&width=24&history=3&broker=ws://127.0.0.1:{broker.ws_port}")
    page.wait_for_function("() => document.getElementById('banner').hidden === false")
    pub.start()
    pub.publish_detail({"name": "Sala Azul", "languages": ["pt"]})
    page.wait_for_function("() => document.getElementById('banner').hidden")  # subscribed and the room is online
    pub.publish(final(1, text="Bom dia."))
    pub.publish({**final(2, text="Thank you all for coming."), "untranslated": True})
    page.wait_for_function("() => window.captionDisplay.finals === 2")
    page.wait_for_function(CAUGHT_UP, timeout=30_000)
    marked = "els => els.map(e => [e.textContent, e.className, getComputedStyle(e, '::before').content])"
    assert page.eval_on_selector_all(".row", marked) == [  # "[EN] " + 17 characters: "coming." goes on
        ["Thank you all for", "row untranslated", '"[EN] "'], ["coming.", "row untranslated", "none"]]
    assert page.eval_on_selector_all("#history .hist", marked) == [["Bom dia.", "hist age-1", "none"]]
    pub.publish(final(3, text="Obrigado."))
    page.wait_for_function("() => window.captionDisplay.finals === 3")
    page.wait_for_function(CAUGHT_UP, timeout=30_000)
    assert page.eval_on_selector_all("#history .hist", marked) == [
        ["Bom dia.", "hist age-2", "none"], ["Thank you all for", "hist age-0 untranslated", '"[EN] "']]
    live = page.eval_on_selector_all(".row", "els => els.map(e => [e.textContent, getComputedStyle(e).color])")
    assert live[0][0] == "coming." and live[1][0] == "Obrigado."
    assert live[0][1] != live[1][1]  # untranslated text in another colour
    pub.publish({**final(4, text="Thanks."), "untranslated": True, "speaker": {"id": "S1", "name": "Chair"}})
    page.wait_for_function("() => window.captionDisplay.finals === 4")
    page.wait_for_function(CAUGHT_UP, timeout=30_000)
    assert page.eval_on_selector_all(".row", marked)[-1] == ["Chair: Thanks.", "row sp1 untranslated", '"[EN] "']
    page.screenshot(path=str(artifacts / "display-web-untranslated.png"))
    assert not errors
    page.close()
