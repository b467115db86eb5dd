"""Caption bus against real mosquitto: the embedded broker (mosquitto subprocess with a generated config) and
the shipped production config; publisher, durable queue of finals, last will, bridge, bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from appliance.bus import discovery
from appliance.bus.client import CaptionFeed, CaptionState, FeedOptions
from appliance.bus.publisher import Publisher
from appliance.bus.schema import MAX_TEXT_CHARS, Topics, caption_message, encode, parse_caption
from appliance.config import BrokerConfig
from test_bus_support import (ROOT, Mosquitto, Recorder, final, free_port, need_mosquitto, partial, start_broker,
                              wait_for_stderr_line, wait_until)

OUTAGE_S = float(os.environ.get("APPLIANCE_TEST_OUTAGE_S", "6"))  # the slow variant below uses 30 s


def msg(seq, i, rev=1, final_=True, text=None):
    return parse_caption(encode(caption_message({"id": f"u{i}", "rev": rev, "final": final_, "lang": "pt",
                                                  "text": text or f"t{i}r{rev}"}, seq)))


# ---- pure rules -----------------------------------------------------------------------------------------------
def test_caption_state_dedupes_finals_and_drops_stale_partials():
    s = CaptionState(rows=2, width=42)
    assert s.accept(msg(10, 1, rev=0, final_=False, text="hello wor"))
    assert s.rows() == [("hello wor", True)]
    assert not s.accept(msg(9, 1, rev=0, final_=False, text="older"))  # same rev, older seq
    assert s.accept(msg(11, 1, rev=1, final_=False, text="hello world and"))
    assert s.accept(msg(12, 1, rev=2, text="hello world and more"))
    assert s.rows() == [("hello world and more", False)]
    assert not s.accept(msg(12, 1, rev=2, text="hello world and more"))  # resent after a reconnection
    assert not s.accept(msg(13, 1, rev=3, final_=False, text="late partial"))  # utterance already final
    assert s.accept(msg(14, 2, rev=0, final_=False, text="next"))
    assert s.rows() == [("hello world and more", False), ("next", True)]
    assert s.accept(msg(15, 2, rev=1, text="next one"))
    assert s.accept(msg(16, 3, rev=1, text="third"))
    assert s.rows() == [("next one", False), ("third", False)]  # two-line roll-up
    assert [m["seq"] for m in s.finals] == [12, 15, 16] and s.duplicates == 1 and s.stale == 2


def test_schema_cuts_oversized_text_and_rejects_malformed(caplog):
    m = caption_message({"id": "x" * 500, "rev": 1, "final": True, "lang": "pt", "text": "a" * 50_000,
                         "lines": ["b" * 500] * 9}, 7)
    assert len(m["text"]) == MAX_TEXT_CHARS and m["text"].endswith("…") and len(m["id"]) == 64
    assert m["v"] == 1 and m["seq"] == 7 and len(m["lines"]) == 4 and all(len(x) <= 120 for x in m["lines"])
    with caplog.at_level(logging.WARNING):
        for bad in (b"\xff\xfe", b"[]", b"{}", b'{"v":1,"seq":1,"id":"a","final":true}', b'{"v":99,"seq":1}',
                    b"x" * 20000, b'{"v":1,"seq":"1","id":"a","text":"t","final":true}'):
            assert parse_caption(bad, "appliance/r/captions/pt") is None
    assert caplog.text.count("ignored a malformed caption message") == 7


def test_pipeline_caption_event_is_published_with_v_and_seq():
    from appliance.events import CaptionEvent

    ev = CaptionEvent(id="u1", rev=2, final=True, lang="pt", source_lang="en", text="olá", lines=["olá"],
                      start=1.0, end=2.0, emitted=3.0, latency={"mt_s": float("nan")})
    m = parse_caption(encode(caption_message(ev, 42)))
    assert (m["id"], m["rev"], m["final"], m["text"], m["v"], m["seq"], m["latency"]) == ("u1", 2, True, "olá", 1, 42, {"mt_s": None})


def test_home_assistant_discovery_is_bound_to_status():
    (topic, payload), = discovery.messages(Topics("appliance", "r1"), {"languages": ["pt"], "version": "0.1"})
    cfg = json.loads(payload)
    assert topic == "homeassistant/sensor/appliance_r1_captions_pt/config"
    assert cfg["availability_topic"] == "appliance/r1/status" and cfg["state_topic"] == "appliance/r1/captions/pt"
    assert "[:255]" in cfg["value_template"]


# ---- embedded broker ------------------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


def make_pub(broker_port, state_dir, states=None, **kw):
    cfg = BrokerConfig(mode="external", port=broker_port, **kw)
    return Publisher(cfg, room="r1", state_dir=state_dir, max_backoff_s=1.0,
                     on_state=(lambda s, d: states.append((s, d))) if states is not None else None)


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_publisher_to_display_over_embedded_broker(broker, tmp_path, transport):
    states = []
    feed = CaptionFeed(FeedOptions(port=broker.port if transport == "tcp" else broker.ws_port, transport=transport),
                       "r1", "pt")
    feed.start()
    assert feed.connected.wait(10)
    pub = make_pub(broker.port, tmp_path, states, ha_discovery=True)
    pub.start()
    pub.publish_detail({"name": "Sala 1", "languages": ["en", "pt"], "models": ["whisper-base"], "version": "0.1.0"})
    for i in range(5):
        pub.publish(partial(i, 0))
        pub.publish(partial(i, 1, lang="en"))  # another language: not for this display
        pub.publish(final(i))
    wait_until(lambda: len(feed.state.finals) == 5, what="5 finals")
    assert [m["text"] for m in feed.state.finals] == [f"frase número {i}" for i in range(5)]
    seqs = [m["seq"] for m in feed.state.finals]
    assert seqs == sorted(seqs) and all(m["v"] == 1 and m["lang"] == "pt" for m in feed.state.finals)
    wait_until(lambda: feed.room_status == "online" and feed.detail is not None, what="status and detail")
    assert feed.detail["languages"] == ["en", "pt"] and feed.detail["uptime_s"] >= 0
    rec = Recorder(broker.port, ["homeassistant/#"])  # retained discovery config
    rec.wait_for(lambda ms: len(ms) == 2)
    rec.stop()
    pub.stop()
    wait_until(lambda: feed.room_status == "offline", what="offline after a clean stop")
    assert ("connected", f"127.0.0.1:{broker.port}") in states and states[-1][0] == "stopped"
    feed.stop()


def test_finals_survive_unreachable_broker_and_daemon_restart(tmp_path, caplog):
    port, states = free_port(), []
    pub = make_pub(port, tmp_path / "state", states)
    with caplog.at_level(logging.WARNING, logger="appliance.bus.publisher"):
        pub.start()
        for i in range(8):
            pub.publish(final(i))
            pub.publish(partial(i + 1, 0))  # partials while offline are dropped
        wait_until(lambda: any(s == "unreachable" for s, _ in states), what="unreachable state")
        pub.stop(timeout=0.5)
    assert f"cannot reach the MQTT broker at 127.0.0.1:{port}" in caplog.text
    assert pub.dropped_partials == 8
    # "daemon restart": a new publisher on the same state folder, now with a broker
    b = start_broker(tmp_path / "broker", port=port)
    try:
        feed = CaptionFeed(FeedOptions(port=port), "r1", "pt")
        feed.start()
        assert feed.connected.wait(10)
        pub2 = make_pub(port, tmp_path / "state")
        assert pub2.pending == 8
        pub2.start()
        pub2.publish(final(8))
        wait_until(lambda: len(feed.state.finals) == 9, what="9 finals")
        assert [m["id"] for m in feed.state.finals] == [f"u{i}" for i in range(9)]
        wait_until(lambda: pub2.pending == 0, what="spool drained")
        pub2.stop()
        feed.stop()
    finally:
        b.stop()


def _stream_through_outage(tmp_path, outage_s: float, appliance_cmd):
    port = free_port()
    b = start_broker(tmp_path / "broker", port=port)
    feed = CaptionFeed(FeedOptions(port=port), "r1", "pt")
    feed.start()
    assert feed.connected.wait(10)
    term = subprocess.Popen([*appliance_cmd, "display", "--room", "r1", "--lang", "pt", "--broker", f"127.0.0.1:{port}",
                             "--plain"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    pub = make_pub(port, tmp_path / "state")
    pub.start()
    wait_until(lambda: pub.connected, what="publisher connected")
    wait_for_stderr_line(term, "subscribed to room r1 in pt")  # the terminal display subscribes
    n, sent = 0, []

    def send(seconds):
        nonlocal n
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pub.publish(partial(n, 0))
            pub.publish(final(n))
            sent.append(f"frase número {n}")
            n += 1
            time.sleep(0.1)

    send(1.5)
    b.stop()  # the broker goes away in the middle of the stream ...
    send(outage_s)
    assert pub.pending > 0
    b = start_broker(tmp_path / "broker", port=port)  # ... and comes back (same persistence folder)
    send(1.5)
    try:
        try:
            wait_until(lambda: len(feed.state.finals) == len(sent), timeout=20, what=f"{len(sent)} finals")
        except AssertionError:
            got = [m["text"] for m in feed.state.finals]; print("MISSING", [s for s in sent if s not in got], "DUPS", feed.state.duplicates, pub.pending, len(got)); raise
        assert [m["text"] for m in feed.state.finals] == sent  # every final, in order, none twice
        time.sleep(1.0)
    finally:
        pub.stop()
        feed.stop()
        term.send_signal(signal.SIGTERM)
        out, err = term.communicate(timeout=10)
        b.stop()
    assert out.splitlines() == sent, err[-2000:]


def test_broker_outage_loses_and_repeats_no_final(tmp_path, appliance_cmd):
    _stream_through_outage(tmp_path, OUTAGE_S, appliance_cmd)


@pytest.mark.slow
def test_broker_outage_30s(tmp_path, appliance_cmd):
    _stream_through_outage(tmp_path, 30.0, appliance_cmd)


def test_last_will_offline_when_publisher_is_killed(broker, tmp_path):
    rec = Recorder(broker.port, ["appliance/r1/status"])
    code = ("import sys, time; from appliance.config import BrokerConfig; from appliance.bus.publisher import Publisher;"
            f"p = Publisher(BrokerConfig(port={broker.port}), room='r1', state_dir=sys.argv[1]); p.start();"
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT)
    try:
        rec.wait_for(lambda ms: any(p == b"online" for _, p, _ in ms), timeout=15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        rec.wait_for(lambda ms: ms[-1][1] == b"offline", timeout=10)
    finally:
        proc.kill()
        rec.stop()
    late = Recorder(broker.port, ["appliance/r1/status"])  # a display joining later reads the retained state
    late.wait_for(lambda ms: ms and ms[-1][1] == b"offline" and ms[-1][2])
    late.stop()


def test_malformed_messages_are_ignored(broker, tmp_path, caplog):
    feed = CaptionFeed(FeedOptions(port=broker.port), "r1", "pt")
    feed.start()
    assert feed.connected.wait(10)
    raw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    raw.connect("127.0.0.1", broker.port)
    raw.loop_start()
    with caplog.at_level(logging.WARNING):
        for payload in (b"not json", b"\xff", b"[1,2]", b'{"v":1}', b"x" * 100_000):
            raw.publish("appliance/r1/captions/pt", payload, qos=1).wait_for_publish(5)
        raw.publish("appliance/r1/status", b"<b>weird</b>", qos=1).wait_for_publish(5)
        raw.publish("appliance/r1/status/detail", b"{broken", qos=1).wait_for_publish(5)
        pub = make_pub(broker.port, tmp_path)
        pub.start()
        pub.publish(final(1, text="ainda funciona"))
        wait_until(lambda: feed.state.finals, what="the valid final")
    assert feed.state.finals[0]["text"] == "ainda funciona" and feed.malformed == 5
    assert "unknown status" in caplog.text and "malformed status detail" in caplog.text
    pub.stop()
    raw.loop_stop()
    feed.stop()


# ---- the shipped production config, authentication, bridge ----------------------------------------------------
def _room_conf(tmp_path: Path, port: int, ws_port: int, extra: str = "") -> Path:
    """systemd/mosquitto/appliance.conf with test ports and files, under a main config like Debian's."""
    need_mosquitto()
    src = ROOT / "systemd" / "mosquitto"
    conf = (src / "appliance.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1").replace("listener 9001", f"listener {ws_port}")
    conf = conf.replace("/etc/mosquitto/appliance.passwd", str(tmp_path / "passwd"))
    conf = conf.replace("/etc/mosquitto/appliance.acl", str(tmp_path / "acl"))
    (tmp_path / "acl").write_text((src / "appliance.acl").read_text().replace("room1", "r1"))
    (tmp_path / "conf.d").mkdir(exist_ok=True)
    (tmp_path / "conf.d" / "appliance.conf").write_text(conf + "\n" + extra)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "appliance", "s3cret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(tmp_path / "passwd"), "display-r1", "d1splay"], check=True)
    os.chmod(tmp_path / "passwd", 0o600)
    main = tmp_path / "mosquitto.conf"
    import pwd

    main.write_text(f"user {pwd.getpwuid(os.getuid()).pw_name}\npersistence true\npersistence_location {tmp_path}/\n"
                    f"log_dest stdout\ninclude_dir {tmp_path / 'conf.d'}\n")
    return main


def test_shipped_config_auth_acl_and_bridge_to_central(tmp_path, caplog):
    central_port = free_port()
    (tmp_path / "central").mkdir()
    central_conf = tmp_path / "central" / "mosquitto.conf"
    import pwd

    # as the room broker's config does: run as this user (mosquitto started as root otherwise drops to the
    # `mosquitto` user, whose libwrap check refuses clients where /etc/hosts.allow and hosts.deny exist, as on a
    # fresh Debian root)
    central_conf.write_text(f"listener {central_port} 127.0.0.1\nallow_anonymous true\n"
                            f"user {pwd.getpwuid(os.getuid()).pw_name}\n")
    central = Mosquitto(central_conf, central_port)
    bridge = (ROOT / "systemd" / "mosquitto" / "bridge-central.conf.example").read_text()
    bridge = bridge.replace("address central.example.org:8883", f"address 127.0.0.1:{central_port}")
    bridge = "\n".join(l for l in bridge.splitlines() if not l.startswith(("bridge_cafile", "remote_")))
    room_port, ws_port = free_port(), free_port()
    room = Mosquitto(_room_conf(tmp_path, room_port, ws_port, extra=bridge), room_port)
    try:
        far = CaptionFeed(FeedOptions(port=central_port), "r1", "pt")  # a display on the central broker
        far.start()
        assert far.connected.wait(10), f"no connection to the central broker: {central.output()}"
        states = []
        with caplog.at_level(logging.WARNING, logger="appliance.bus.publisher"):
            bad = make_pub(room_port, tmp_path / "bad", states, username="appliance", password="wrong")
            bad.start()
            wait_until(lambda: any(s == "refused" for s, _ in states), what="refused state")
            bad.stop(timeout=0.5)
        assert "refused the connection" in caplog.text and "broker.password" in caplog.text
        # anonymous clients are refused; the display user may read but not publish captions (ACL)
        anon = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        refused = []
        anon.on_connect = lambda c, u, f, reason, p: refused.append(reason.is_failure)
        anon.connect("127.0.0.1", room_port)
        anon.loop_start()
        wait_until(lambda: refused, what="anonymous CONNACK")
        anon.loop_stop()
        assert refused == [True]
        near = Recorder(room_port, ["appliance/r1/captions/pt"], username="display-r1", password="d1splay")
        raw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        raw.username_pw_set("display-r1", "d1splay")
        raw.connect("127.0.0.1", room_port)
        raw.loop_start()
        raw.publish("appliance/r1/captions/pt", encode(caption_message(final(99), 1)), qos=1).wait_for_publish(5)
        pub = make_pub(room_port, tmp_path / "good", username="appliance", password="s3cret")
        pub.start()
        for i in range(3):
            pub.publish(final(i))
        wait_until(lambda: len(far.state.finals) == 3, what="finals through the bridge")
        assert [m["id"] for m in far.state.finals] == ["u0", "u1", "u2"]
        wait_until(lambda: far.room_status == "online", what="status through the bridge")
        assert [c["id"] for c in near.captions("appliance/r1/captions/pt")] == ["u0", "u1", "u2"]  # not u99
        pub.stop()
        raw.loop_stop()
        near.stop()
        far.stop()
    finally:
        room.stop()
        central.stop()


def test_unwritable_state_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot open the queue of unsent finals"):
        make_pub(1883, blocker / "state")


def _pki(d: Path) -> None:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(ext + "\n")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", f"{name}.ext", "-out", f"{name}.crt")


def test_tls_with_client_certificate(tmp_path):
    _pki(tmp_path)
    tls_port, plain_port = free_port(), free_port()
    b = start_broker(tmp_path / "broker", port=plain_port, extra_conf=(
        f"listener {tls_port} 127.0.0.1\ncafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
        f"keyfile {tmp_path}/server.key\nrequire_certificate true\n"))
    try:
        feed = CaptionFeed(FeedOptions(port=plain_port), "r1", "pt")
        feed.start()
        assert feed.connected.wait(10)
        states = []
        no_cert = make_pub(tls_port, tmp_path / "a", states, tls=True, ca_file=str(tmp_path / "ca.crt"))
        no_cert.start()  # the broker wants a client certificate: no connection, a clear state, nothing lost
        no_cert.publish(final(0))
        wait_until(lambda: any(s in ("unreachable", "refused", "disconnected") for s, _ in states), what="TLS refusal")
        no_cert.stop(timeout=0.5)
        assert no_cert.pending == 1 and not feed.state.finals
        pub = make_pub(tls_port, tmp_path / "b", tls=True, ca_file=str(tmp_path / "ca.crt"),
                       cert_file=str(tmp_path / "client.crt"), key_file=str(tmp_path / "client.key"))
        pub.start()
        pub.publish(final(1))
        wait_until(lambda: len(feed.state.finals) == 1, what="a final over TLS")
        pub.stop()
        feed.stop()
        with pytest.raises(ValueError, match="broker.ca_file: .* does not exist"):
            make_pub(tls_port, tmp_path / "c", tls=True, ca_file=str(tmp_path / "missing.crt")).start()
    finally:
        b.stop()


def test_embedded_broker_is_restarted_when_it_dies(tmp_path, caplog):
    b = start_broker(tmp_path / "broker")
    try:
        statuses: list[str] = []
        feed = CaptionFeed(FeedOptions(port=b.port), "r1", "pt", on_status=statuses.append)
        feed.start()
        assert feed.connected.wait(10)
        pub = make_pub(b.port, tmp_path)
        pub.start()
        pub.publish(final(0))
        wait_until(lambda: len(feed.state.finals) == 1, what="first final")
        old = b.proc.pid
        seen = len(statuses)
        with caplog.at_level(logging.ERROR, logger="appliance.bus.broker"):
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: b.proc is not None and b.proc.pid != old and b.running(), timeout=15, what="restart")
        assert "embedded broker exited" in caplog.text
        # the display is back (a final published before it has subscribed again would not be queued for it: the
        # killed broker saved no session made in its last seconds)
        def reconnected() -> bool:
            after = statuses[seen:]
            return "disconnected" in after and "connected" in after[after.index("disconnected"):]

        wait_until(reconnected, timeout=20, what="the display reconnecting")
        pub.publish(final(1))
        wait_until(lambda: len(feed.state.finals) == 2, timeout=20, what="final after the broker's restart")
        pub.stop()
        feed.stop()
    finally:
        b.stop()


def test_display_logs_an_unreachable_broker(caplog):
    port = free_port()
    feed = CaptionFeed(FeedOptions(port=port), "r1", "pt")
    with caplog.at_level(logging.WARNING, logger="appliance.bus.client"):
        feed.start()
        wait_until(lambda: "cannot reach the MQTT broker" in caplog.text, what="log line")
    feed.stop()
    assert caplog.text.count("cannot reach the MQTT broker") == 1
