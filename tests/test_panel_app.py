"""The config panel through Flask's test client: security, the JSON API, saves, health and metrics.

The models folder holds real manifests (model.json) only: the panel reads manifests, never weights.
The browser-level flows are in test_panel_browser.py.
"""

from __future__ import annotations

import json
import logging
import re
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from appliance import config as cfgmod
from appliance.modelstore import manifest as mf
from appliance.panel import create_app
from appliance.status import Status

PASSWORD = "correct horse"


def write_models(folder: Path) -> Path:
    specs = [("whisper-base", "asr", ["en", "pt", "de", "fr", "es"], None, None),
             ("bergamot-en-pt", "mt", ["en", "pt"], "en", "pt"),
             ("bergamot-pt-en", "mt", ["pt", "en"], "pt", "en"),
             ("silero-vad", "vad", [], None, None)]
    for name, kind, langs, src, tgt in specs:
        (folder / name).mkdir(parents=True)
        mf.write(mf.Manifest(name=name, kind=kind, languages=langs, source=[f"{name}-pkg==1.0"], licence="MIT",
                             provenance="test", quantization="int8", opset=17, source_lang=src, target_lang=tgt,
                             sizes={"model.onnx": 2_000_000}), folder / name)
    return folder


class Panel:
    def __init__(self, tmp_path: Path, **kw):
        self.dir = tmp_path
        self.config_path = tmp_path / "etc" / "config.json"
        self.config_path.parent.mkdir()
        cfgmod.save_atomic(cfgmod.Config(languages={"source": "auto", "targets": ["en"]},
                                         broker={"password": "s3cret-broker"}), self.config_path)
        self.saved: list = []
        self.status = Status()
        self.admin_file = tmp_path / "state" / "panel-admin.json"
        kw.setdefault("device_lister", lambda: [{"index": 3, "name": "USB Audio Mic", "channels": 1, "default_rate": 48000.0}])
        kw.setdefault("on_config_saved", self.saved.append)
        self.app = create_app(self.config_path, self.status, models_dir=write_models(tmp_path / "models"),
                              admin_file=self.admin_file, **kw)
        self.ctx = self.app.extensions["appliance_panel"]
        self.client = self.app.test_client()

    def token(self, path="/login") -> str:
        return re.search(r'name="csrf-token" content="([^"]+)"', self.client.get(path).text).group(1)

    def setup_and_login(self):
        r = self.client.post("/setup", data={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": self.token("/setup"),
                                             "setup_code": self.ctx.setup_code})
        assert r.status_code == 303, r.text
        return self

    def put(self, body, method="PUT", token=True, ctype="application/json"):
        headers = {"X-CSRF-Token": self.token("/")} if token else {}
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.open("/api/config", method=method, data=data, headers=headers, content_type=ctype)


@pytest.fixture
def panel(tmp_path):
    return Panel(tmp_path)


def test_first_run_sets_a_hashed_password_in_a_private_file(panel):
    assert panel.client.get("/").headers["Location"].endswith("/setup")
    assert panel.client.get("/api/config").status_code == 401
    bad = panel.client.post("/setup", data={"password": "short", "confirm": "short", "csrf_token": panel.token("/setup")})
    assert bad.status_code == 400 and "at least 8 characters" in bad.text
    assert not panel.admin_file.exists()
    panel.setup_and_login()
    assert stat.S_IMODE(panel.admin_file.stat().st_mode) == 0o600
    text = panel.admin_file.read_text()
    assert PASSWORD not in text and json.loads(text)["password_hash"].startswith(("scrypt:", "pbkdf2:"))
    assert panel.client.get("/").status_code == 200  # logged in by the set-up
    again = panel.client.post("/setup", data={"password": "another pw", "confirm": "another pw",
                                              "csrf_token": panel.token("/")})
    assert again.status_code == 303 and again.headers["Location"].endswith("/login")  # cannot be reset from the web


NAV = [("/", "Room &amp; languages"), ("/microphone", "Microphone"), ("/broker", "Broker"),
       ("/models", "Models &amp; accelerator"), ("/speakers", "Speakers"), ("/live", "Live"), ("/archive", "Archive"),
       ("/glossary", "Glossary"), ("/password", "Password")]


def test_navigation_lists_every_page_in_order_and_marks_the_current_one(panel):
    """The bar is built from the pages the blueprints declare, in the order the app registers them."""
    panel.setup_and_login()
    for path, _ in NAV:
        page = panel.client.get(path)
        assert page.status_code == 200, path
        nav = re.search(r"<nav>(.*?)</nav>", page.text, re.S).group(1)
        assert re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav) == NAV
        assert re.findall(r'<a href="([^"]+)" aria-current="page">', nav) == [path]


def test_login_is_rate_limited_per_address(panel):
    panel.setup_and_login()
    fresh = panel.app.test_client()
    tok = re.search(r'name="csrf-token" content="([^"]+)"', fresh.get("/login").text).group(1)
    for _ in range(5):
        assert fresh.post("/login", data={"password": "wrong", "csrf_token": tok}).status_code == 401
    blocked = fresh.post("/login", data={"password": PASSWORD, "csrf_token": tok})
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    assert "too many failed logins" in blocked.text
    other = panel.app.test_client()  # another address is not blocked
    tok2 = re.search(r'name="csrf-token" content="([^"]+)"', other.get("/login", environ_base={"REMOTE_ADDR": "10.0.0.9"}).text).group(1)
    ok = other.post("/login", data={"password": PASSWORD, "csrf_token": tok2}, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert ok.status_code == 303


def test_safe_headers_on_every_page(panel):
    panel.setup_and_login()
    for path in ("/", "/microphone", "/broker", "/models", "/live", "/login", "/api/status", "/nope"):
        h = panel.client.get(path).headers
        assert "'unsafe-inline'" not in h["Content-Security-Policy"] and "script-src 'self'" in h["Content-Security-Policy"]
        assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer"
    page = panel.client.get("/").text
    assert "<script>" not in page and " style=" not in page and 'name="viewport"' in page


def test_api_config_get_never_returns_the_password_and_put_keeps_it(panel):
    panel.setup_and_login()
    got = panel.client.get("/api/config").get_json()
    assert "password" not in got["config"]["broker"] and "s3cret-broker" not in json.dumps(got)
    assert got["secrets_set"] == {"broker.password": True}
    assert got["csrf_token"] == panel.token("/")  # for scripts: send it back as X-CSRF-Token
    body = got["config"]
    body["languages"]["targets"] = ["en", "pt"]
    r = panel.put(body)
    assert r.status_code == 200, r.text
    on_disk = json.loads(panel.config_path.read_text())
    assert on_disk["languages"]["targets"] == ["en", "pt"] and on_disk["broker"]["password"] == "s3cret-broker"
    assert panel.ctx.applier.wait()["state"] == "applied"
    assert panel.saved[-1] == cfgmod.load(panel.config_path)
    r = panel.put({"broker": {"password": None}}, method="PATCH")
    assert r.status_code == 200 and json.loads(panel.config_path.read_text())["broker"]["password"] is None
    assert json.loads(panel.config_path.read_text())["languages"]["targets"] == ["en", "pt"]  # PATCH merged


def test_writes_need_login_then_csrf(panel):
    panel.setup_and_login()
    before = panel.config_path.read_bytes()
    anon = panel.app.test_client()
    r = anon.put("/api/config", json={"room": {"id": "x"}})
    assert r.status_code == 401 and r.get_json()["error"] == "login required"
    r = anon.post("/", data={"room.id": "x"})
    assert r.status_code == 303 and "/login" in r.headers["Location"]
    r = panel.put({"room": {"id": "x"}}, method="PATCH", token=False)
    assert r.status_code == 400 and "CSRF" in r.get_json()["error"]
    r = panel.client.post("/", data={"room.id": "x", "room.name": "y"})
    assert r.status_code == 400 and "CSRF" in r.text
    assert panel.config_path.read_bytes() == before and not panel.saved


@pytest.mark.parametrize("body,ctype,message", [
    ('{"room": {"id": "hall"', "application/json", "not valid JSON"),
    ("[1, 2]", "application/json", "must be a JSON object"),
    ("room=hall", "application/x-www-form-urlencoded", "Content-Type: application/json"),
    (b"\xff\xfe", "application/json", "not UTF-8"),
    ({"room": {"id": "bad id!"}}, "application/json", "room.id"),
    ({"broker": {"port": 70000}}, "application/json", "broker.port"),
    ({"colour": "blue"}, "application/json", "colour: unknown key"),
    ({"languages": {"targets": ["ja"]}}, "application/json", "languages.targets: no route to 'ja'"),
])
def test_bad_writes_give_400_with_a_message_and_leave_the_file(panel, body, ctype, message):
    panel.setup_and_login()
    before = panel.config_path.read_bytes()
    r = panel.put(body, method="PATCH", ctype=ctype)
    assert r.status_code == 400, r.text
    assert message in r.get_json()["error"]
    assert panel.config_path.read_bytes() == before and not panel.saved


def test_form_save_validates_against_installed_models(panel):
    panel.setup_and_login()
    page = panel.client.get("/").text
    assert "pt → en (whisper) → pt (mt)" not in page  # sanity: routes are described per source
    assert "en → pt (mt)" in page and "other → en (whisper) → pt (mt)" in page
    tok = panel.token("/")
    before = panel.config_path.read_bytes()
    r = panel.client.post("/", data={"csrf_token": tok, "room.id": "hall", "room.name": "Hall", "languages.source": "en",
                                     "languages.targets": ["pt"], "languages.targets_other": "de"})
    assert r.status_code == 400 and "languages.targets: no route to &#39;de&#39;" in r.text
    assert panel.config_path.read_bytes() == before
    r = panel.client.post("/", data={"csrf_token": tok, "room.id": "hall", "room.name": "Hall", "languages.source": "en",
                                     "languages.targets": ["pt", "en"]})
    assert r.status_code == 303
    cfg = cfgmod.load(panel.config_path)
    assert (cfg.room.id, cfg.languages.source, cfg.languages.targets) == ("hall", "en", ["pt", "en"])
    assert cfg.broker.password == "s3cret-broker"  # untouched sections stay


def test_spoken_languages_field(panel):
    panel.setup_and_login()
    page = panel.client.get("/").text
    assert 'name="languages.spoken"' in page and "Spoken languages" in page
    form = {"csrf_token": panel.token("/"), "room.id": "hall", "room.name": "Hall", "languages.source": "auto",
            "languages.targets": ["en"]}
    r = panel.client.post("/", data={**form, "languages.spoken": "en, xx"})
    assert r.status_code == 400 and "languages.spoken: xx not supported" in r.text
    r = panel.client.post("/", data={**form, "languages.spoken": "en, pt"})
    assert r.status_code == 303
    assert cfgmod.load(panel.config_path).languages.spoken == ["en", "pt"]


def test_broker_password_is_write_only_in_the_form(panel):
    panel.setup_and_login()
    page = panel.client.get("/broker").text
    assert "s3cret-broker" not in page and "set (leave empty to keep it)" in page
    for name in cfgmod.BrokerConfig.model_fields:  # every field of the section has an input, even new ones
        assert f'name="broker.{name}"' in page
    form = {"csrf_token": panel.token("/broker"), "broker.mode": "external", "broker.host": "mqtt.local",
            "broker.port": "8883", "broker.ws_port": "9001", "broker.tls": "on", "broker.topic_prefix": "venue",
            "broker.keepalive_s": "30", "broker.username": "panel", "broker.password": ""}
    assert panel.client.post("/broker", data=form).status_code == 303
    cfg = cfgmod.load(panel.config_path)
    assert (cfg.broker.mode, cfg.broker.port, cfg.broker.tls, cfg.broker.password) == ("external", 8883, True, "s3cret-broker")
    assert cfg.broker.ca_file is None  # empty optional field -> null
    form.update({"broker.password": "new-one"})
    panel.client.post("/broker", data=form)
    assert cfgmod.load(panel.config_path).broker.password == "new-one"


def test_pages_show_models_providers_devices_and_help_from_config(panel):
    panel.setup_and_login()
    models = panel.client.get("/models").text
    assert "bergamot-en-pt" in models and "en → pt" in models and "CPUExecutionProvider" in models
    assert "Translation beam size" in models and "Recognition beam size" in models
    assert cfgmod.AcceleratorConfig.model_fields["threads"].description in models
    mic = panel.client.get("/microphone").text
    assert "USB Audio Mic (#3, 1 ch, 48000 Hz)" in mic and 'id="level"' in mic
    assert cfgmod.VadConfig.model_fields["hangover_ms"].description in mic


def test_models_page_and_status_show_the_flavour_and_each_graphs_placement(panel, built_model):
    from appliance import placement
    from appliance.providers import open_session

    sess = open_session(built_model("silero-vad") / "silero_vad.onnx", ["cpu"], threads=1)
    panel.status.set_placement([placement.report(sess, "silero-vad/silero_vad.onnx").to_dict()])
    panel.setup_and_login()
    page = panel.client.get("/models").text
    assert re.search(r"Installed onnxruntime flavour: <code>cpu</code>\s+\(onnxruntime \d", page)
    assert "scripts/setup --accelerator cpu|openvino|cuda|qnn" in page
    assert re.search(r"<code>silero-vad/silero_vad.onnx</code></td><td><code>CPUExecutionProvider</code></td>\s*"
                     r"<td>100 % of \d+</td>\s*<td>not profiled</td>", page)
    (p,) = panel.client.get("/api/status").json["placement"]
    assert (p["model"], p["provider"], p["node_share"], p["time_share"]) == \
        ("silero-vad/silero_vad.onnx", "CPUExecutionProvider", 1.0, None)


def test_microphone_page_survives_a_missing_portaudio(tmp_path):
    def no_portaudio():
        raise OSError("PortAudio library not found")

    p = Panel(tmp_path, device_lister=no_portaudio).setup_and_login()
    page = p.client.get("/microphone")
    assert page.status_code == 200 and "PortAudio missing" in page.text
    assert p.client.get("/api/devices").get_json()["devices"] == []


def test_healthz_and_metrics(panel):
    r = panel.client.get("/healthz")  # no login needed, even before set-up
    assert r.status_code == 503 and r.get_json()["problems"] == ["pipeline not running"]
    panel.status.pipeline = SimpleNamespace(stats=SimpleNamespace(audio_s=4.0, busy_s=1.0, rtf=0.25, finals=2,
                                                                  final_latency_s=[0.4, 0.6], mt_withheld=3),
                                            errors=[], backlog_s=lambda: 0.0)
    panel.status.add_caption({"id": "a", "lang": "pt", "final": True, "text": "olá"})
    panel.status.set_broker_state("connected")
    r = panel.client.get("/healthz")
    assert r.status_code == 200 and r.get_json()["healthy"] is True
    from prometheus_client.parser import text_string_to_metric_families

    text = panel.client.get("/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["appliance_rtf"].samples[0].value == 0.25
    assert fams["appliance_healthy"].samples[0].value == 1
    assert fams["appliance_mt_withheld"].samples[0].value == 3  # untranslated finals are counted
    lat = {(s.name, s.labels.get("quantile")): s.value for s in fams["appliance_stage_latency_seconds"].samples
           if s.labels["stage"] == "final"}
    assert lat[("appliance_stage_latency_seconds", "0.95")] == 0.6
    assert lat[("appliance_stage_latency_seconds_count", None)] == 2
    caps = fams["appliance_captions"].samples  # the parser drops _total from counter family names
    assert [(s.labels, s.value) for s in caps] == [({"lang": "pt", "kind": "final"}, 1.0)]
    remote = panel.client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert remote.status_code == 403


def test_metrics_can_be_public(tmp_path):
    p = Panel(tmp_path, metrics_public=True)
    assert p.client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200


def test_errors_never_show_a_trace(tmp_path):
    p = Panel(tmp_path)
    p.app.add_url_rule("/boom", "boom", lambda: 1 / 0)
    p.setup_and_login()
    r = p.client.get("/boom")
    assert r.status_code == 500 and "internal error" in r.text
    assert "Traceback" not in r.text and "ZeroDivisionError" not in r.text
    r = p.client.get("/no/such/page")
    assert r.status_code == 404 and "Not Found" in r.text
    r = p.client.get("/api/nothing")
    assert r.status_code == 404 and r.get_json()["error"].startswith("404")


def test_failed_apply_is_reported_and_the_file_is_still_saved(tmp_path):
    def refuse(cfg):
        raise RuntimeError("speech model could not load")

    p = Panel(tmp_path, on_config_saved=refuse)
    p.setup_and_login()
    assert p.put({"room": {"id": "hall2"}}, method="PATCH").status_code == 200
    state = p.ctx.applier.wait()
    assert state["state"] == "failed" and "speech model could not load" in state["message"]
    assert cfgmod.load(p.config_path).room.id == "hall2"
    assert p.client.get("/api/status").get_json()["apply"]["state"] == "failed"


def test_password_change_ends_other_sessions(panel):
    panel.setup_and_login()
    other = panel.app.test_client()
    tok = re.search(r'name="csrf-token" content="([^"]+)"', other.get("/login").text).group(1)
    assert other.post("/login", data={"password": PASSWORD, "csrf_token": tok}).status_code == 303
    assert other.get("/api/status").status_code == 200
    r = panel.client.post("/password", data={"csrf_token": panel.token("/"), "current": PASSWORD,
                                             "password": "a new password", "confirm": "a new password"})
    assert r.status_code == 303
    assert other.get("/api/status").status_code == 401
    assert panel.client.get("/api/status").status_code == 200


@pytest.mark.parametrize("asr_langs,source,targets,expect", [
    # multilingual speech model, auto source: English through Whisper, Portuguese through the en->pt model
    (["en", "pt", "de"], "auto", ["en"], {"en": True, "pt": True}),
    # fixed German source: en via Whisper's translate task, pt via the English pivot
    (["en", "pt", "de"], "de", ["en"], {"en": True, "pt": True, "de": True}),
    # English-only speech model: no Whisper translate task, so only en and what en->X models reach
    (["en"], "en", ["en"], {"en": True, "pt": True}),
])
def test_language_choices_follow_the_installed_models(tmp_path, asr_langs, source, targets, expect):
    from appliance.panel import facts

    models = write_models(tmp_path / "models")
    m = mf.read(models / "whisper-base")
    m.languages = asr_langs
    mf.write(m, models / "whisper-base")
    cfg = cfgmod.Config(languages={"source": source, "targets": targets})
    got = facts.languages(cfg, models)
    assert {t["code"]: t["reachable"] for t in got["targets"]} == expect
    routes = {t["code"]: t["routes"] for t in got["targets"]}
    if source == "de":
        assert routes["pt"] == ["de → en (whisper) → pt (mt)"]
    if asr_langs == ["en"]:
        cfg.languages.targets = ["de"]
        with pytest.raises(cfgmod.ConfigError, match="languages.targets: no route to 'de'"):
            facts.check_config_languages(cfg, models)


def test_applier_coalesces_saves_made_while_applying():
    import threading

    from appliance.panel.apply import Applier

    gate, started, seen = threading.Event(), threading.Event(), []

    def slow(cfg):
        started.set()
        gate.wait(5)
        seen.append(cfg.room.id)

    a = Applier(slow)
    a.submit(cfgmod.Config(room={"id": "a"}))
    assert started.wait(5)  # "a" is being applied; the next two wait
    for rid in ("b", "c"):
        a.submit(cfgmod.Config(room={"id": rid}))
    assert a.state()["state"] == "applying" and a.state()["generation"] == 3
    gate.set()
    assert a.wait(5)["state"] == "applied"
    assert seen == ["a", "c"]  # "b" was superseded before its turn
    a.submit(cfgmod.Config(room={"id": "d"}))  # the worker restarts after going idle
    assert a.wait(5)["state"] == "applied" and seen[-1] == "d"


def test_room_display_is_not_served_by_the_admin_panel(panel):
    assert panel.client.get("/display/").status_code in (302, 303)  # the display server serves it (own port)
    panel.setup_and_login()
    assert panel.client.get("/display/").status_code == 404


def test_default_device_lister_lists_or_explains():
    from appliance.panel import facts

    devices, note = facts.devices(None)  # appliance.audio + PortAudio when present, else a one-line note
    assert isinstance(devices, list)
    assert devices or note
    for d in devices:
        assert set(d) == {"index", "name", "channels", "default_rate"}


def test_serve_runs_the_panel_for_a_daemon(tmp_path):
    import socket
    import urllib.error
    import urllib.request

    from appliance.panel import ADMIN_FILE_NAME, serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = cfgmod.Config(panel={"host": "127.0.0.1", "port": port}, state_dir=str(tmp_path / "state"))
    applied = []
    supervisor = SimpleNamespace(cfg=cfg, status=Status(), apply_config=applied.append,
                                 opts=SimpleNamespace(config_path=tmp_path / "config.json",
                                                      models_dir=write_models(tmp_path / "models")))
    server = serve(supervisor)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert err.value.code == 503 and json.loads(err.value.read())["problems"] == ["pipeline not running"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/setup", timeout=10) as r:
            assert r.status == 200
    finally:
        server.shutdown()
    assert server.url == f"http://127.0.0.1:{port}/"
    assert not (tmp_path / "state" / ADMIN_FILE_NAME).exists()  # created only when the password is set


@pytest.mark.parametrize("host,ok", [
    ("127.0.0.1:8080", True), ("[::1]:8080", True), ("192.168.1.20", True), ("localhost:8080", True),
    ("appliance", True), ("appliance.local", True), ("room-3.lan:8080", True), ("panel.example.org", True),
    ("evil.example.com", False), ("127.0.0.1.nip.io", False), ("", False),
])
def test_host_header_check_against_dns_rebinding(tmp_path, host, ok):
    p = Panel(tmp_path, allowed_hosts=["panel.example.org"])
    r = p.client.get("/healthz", headers={"Host": host})
    assert (r.status_code != 400) == ok, r.text
    if not ok:
        assert "DNS rebinding" in r.text


def test_damaged_admin_file_names_itself(tmp_path):
    p = Panel(tmp_path)
    p.admin_file.parent.mkdir(parents=True, exist_ok=True)
    p.admin_file.write_text("{not json")
    r = p.client.get("/")
    assert r.status_code == 500 and "panel-admin.json: unreadable" in r.text and "delete it" in r.text
    assert p.client.get("/login").status_code == 500
    assert p.client.get("/healthz").status_code == 503  # health does not depend on the admin file


def test_display_password_is_rotated_from_the_live_page(tmp_path):
    p = Panel(tmp_path).setup_and_login()
    assert p.client.post("/display-password", data={"csrf_token": p.token("/live")}).status_code == 409  # external
    rotated = []
    p.ctx.rotate_display_password = lambda: rotated.append(1) or "display-room1"
    assert 'id="rotate-display-password"' in p.client.get("/live").text
    assert p.client.post("/display-password", data={}).status_code == 400 and not rotated  # CSRF
    r = p.client.post("/display-password", data={"csrf_token": p.token("/live")})
    assert r.status_code == 303 and rotated == [1]
    assert "New password for display-room1" in p.client.get("/live").text
    anon = p.app.test_client()
    assert anon.post("/display-password", data={}).status_code in (302, 303, 400) and rotated == [1]


def test_live_page_title_is_plain(tmp_path):
    p = Panel(tmp_path).setup_and_login()
    title = re.search(r"<title>(.*?)</title>", p.client.get("/live").text, re.S).group(1)
    assert title == "Live · Interpretation appliance"


def test_deleting_the_admin_file_needs_a_fresh_logged_code(tmp_path, caplog):
    p = Panel(tmp_path).setup_and_login()
    first = p.ctx.setup_code
    p.admin_file.unlink()
    p.ctx.admin._data = None  # as after a restart of the store's cache; the file is gone
    p.ctx.setup_code = None  # a panel started with a password has no code yet
    anon = p.app.test_client()
    with caplog.at_level(logging.WARNING):
        assert anon.get("/setup").status_code == 200
    assert p.ctx.setup_code and p.ctx.setup_code in caplog.text
    tok = re.search(r'name="csrf-token" content="([^"]+)"', anon.get("/setup").text).group(1)
    r = anon.post("/setup", data={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": tok, "setup_code": first
                                  if first != p.ctx.setup_code else "XXXXX-XXXXX"})
    assert r.status_code == 401
    r = anon.post("/setup", data={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": tok,
                                  "setup_code": p.ctx.setup_code})
    assert r.status_code == 303
