"""The audience page for phones in real headless chromium at phone size: scroll-back from a real archive,
live captions over the embedded broker, language, font size, theme; the QR code; read-only endpoints."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
import segno
from test_archive import final as archived
from test_bus_support import final, free_port, partial, start_broker
from test_display_web import ARGS, CHROMIUM
from werkzeug.serving import make_server

from appliance.archive import Archive
from appliance.bus.publisher import Publisher
from appliance.config import BrokerConfig
from appliance.display import audience, web
from appliance.meeting_code import MeetingCode

CODE = MeetingCode()  # the room's meeting code (test_audience_code.py: who may read with it)

PHONE = {"width": 390, "height": 844}


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
def archive_file(tmp_path):
    a = Archive(tmp_path / "archive.db").start()
    at = time.time() - 300
    for n in range(30):
        a.put(archived(n, "pt", text=f"frase antiga {n}", at=at, speaker="Ana" if n == 29 else None))
        a.put(archived(n, "en", text=f"old sentence {n}", at=at))
    a.stop()
    return a.path


@pytest.fixture
def stack(tmp_path, archive_file):
    broker = start_broker(tmp_path / "broker")
    pub = Publisher(BrokerConfig(port=broker.port), room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    pub.start()
    pub.publish_detail({"name": "Sala", "languages": ["pt", "en"]})
    server = make_server("127.0.0.1", free_port(), audience.make_app(lambda: archive_file, code=CODE), threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield broker, pub, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    pub.stop(timeout=1)
    broker.stop()


def test_phone_page_scrolls_back_follows_live_and_keeps_reader_settings(browser, stack, artifacts):
    broker, pub, base = stack
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, color_scheme="dark")
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/audience/?room=r1&lang=pt&code={CODE.current}&broker=ws://127.0.0.1:{broker.ws_port}")
    page.wait_for_function("() => window.audience.history === 30")
    texts = page.eval_on_selector_all("#log p", "els => els.map(e => e.textContent)")
    assert texts[0] == "frase antiga 0" and texts[-1] == "Ana:frase antiga 29"
    assert page.evaluate("window.scrollY") > 0  # opened at the end of the meeting so far
    page.wait_for_function("() => document.getElementById('banner').hidden")
    pub.publish(partial(40, 1, text="agora ao"))
    page.wait_for_function("() => document.getElementById('partial').textContent === 'agora ao'")
    pub.publish(final(40, text="Agora ao vivo."))
    page.wait_for_function("() => window.audience.finals === 1")
    assert page.eval_on_selector_all("#log p", "els => els.map(e => e.textContent)")[-1] == "Agora ao vivo."
    assert page.inner_text("#partial") == ""
    page.screenshot(path=str(artifacts / "audience-phone-dark.png"))
    size = lambda: page.evaluate("parseFloat(getComputedStyle(document.querySelector('#log p')).fontSize)")
    before = size()
    page.click("#bigger")
    page.click("#bigger")
    assert size() > before
    bg = lambda: page.evaluate("getComputedStyle(document.body).backgroundColor")
    dark = bg()
    page.click("#theme")
    assert bg() != dark and page.evaluate("document.body.dataset.theme") == "light"  # the phone preferred dark
    theme = page.evaluate("document.body.dataset.theme")
    assert sorted(page.eval_on_selector_all("#lang option", "els => els.map(e => e.value)")) == ["en", "pt"]
    page.select_option("#lang", "en")
    page.wait_for_function("() => window.audience.history === 30")
    assert page.eval_on_selector_all("#log p", "els => els.map(e => e.textContent)")[-1] == "old sentence 29"
    pub.publish(final(41, lang="en", text="Live in English."))
    pub.publish(final(42, lang="pt", text="Não é para esta página."))
    page.wait_for_function("() => window.audience.finals === 1 && document.querySelector('#log p:last-child')"
                           ".textContent === 'Live in English.'")
    page.screenshot(path=str(artifacts / "audience-phone-light.png"))
    page.reload()  # the reader's choices are kept on the phone
    page.wait_for_function("() => window.audience.history > 0")
    assert page.evaluate("window.audience.lang") == "en" and page.evaluate("document.body.dataset.theme") == theme
    assert size() > before
    assert not errors
    ctx.close()


def test_room_display_shows_the_qr_code_of_the_audience_page(browser, stack, artifacts):
    broker, _, base = stack
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{base}/display/?room=r1&lang=pt&broker=ws://127.0.0.1:{broker.ws_port}"
              "&qr=/audience/qr.svg%3Froom%3Dr1")
    page.wait_for_function("() => document.getElementById('qr') && document.getElementById('qr').naturalWidth > 0")
    page.screenshot(path=str(artifacts / "display-web-qr.png"))
    page.close()


def test_qr_code_encodes_the_lan_address_of_the_page(stack):
    _, _, base = stack
    client = audience.make_app(lambda: None).test_client()
    r = client.get("/audience/qr.svg?room=r1&lang=pt", base_url="http://192.168.7.20:8081")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"
    url = r.headers["X-Audience-URL"]
    assert url == "http://192.168.7.20:8081/audience/?room=r1&lang=pt"
    expected = io.BytesIO()
    segno.make(url, error="m", micro=False).save(expected, kind="svg", scale=8, border=2, title=url)
    assert r.data == expected.getvalue()  # the same symbol segno makes for that address
    local = client.get("/audience/qr.svg?room=r1", base_url="http://127.0.0.1:8081").headers["X-Audience-URL"]
    lan = audience.lan_address()
    assert local == (f"http://{lan}:8081/audience/?room=r1" if lan else "http://127.0.0.1:8081/audience/?room=r1")


def test_caption_api_is_read_only_and_names_languages(archive_file, tmp_path):
    client = audience.make_app(lambda: archive_file, code=CODE).test_client()
    body = client.get(f"/audience/api/captions?lang=pt&code={CODE.current}").get_json()
    assert body["meeting"] == 1 and body["running"] and body["languages"] == ["en", "pt"] and len(body["finals"]) == 30
    assert body["finals"][29] == {"id": "s1-29", "text": "frase antiga 29", "start": 116.0, "end": 119.0, "speaker": "Ana"}
    bad = client.get(f"/audience/api/captions?lang=de&code={CODE.current}")
    assert bad.status_code == 404 and "languages: en, pt" in bad.get_json()["error"]
    assert client.post("/audience/api/captions?lang=pt&code={CODE.current}").status_code == 405
    assert client.get("/audience/package.json").status_code == 404
    empty = audience.make_app(lambda: tmp_path / "none.db", code=CODE).test_client()
    nothing = empty.get(f"/audience/api/captions?lang=pt&code={CODE.current}")
    assert nothing.get_json() == {"meeting": None, "running": False, "languages": [], "finals": []}
    assert not (tmp_path / "none.db").exists()  # reading never creates an archive
    mtime = archive_file.stat().st_mtime_ns
    client.get(f"/audience/api/captions?lang=en&code={CODE.current}")
    assert archive_file.stat().st_mtime_ns == mtime
    assert json.loads(client.get(f"/audience/api/captions?code={CODE.current}").data)["finals"] == []
