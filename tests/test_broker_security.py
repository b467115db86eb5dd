"""The closed room broker, probed from the LAN: real mosquitto, clients connecting from the machine's own
non-loopback address (what a stranger on the room network reaches), over WebSocket as browser displays do."""

from __future__ import annotations

import json
import stat
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from appliance.bus.broker import BrokerUsers, EmbeddedBroker
from appliance.bus.credentials import CredentialStore, acl_text, write_broker_files
from appliance.config import Config
from appliance.daemon import RunOptions, Supervisor
from test_bus_support import ROOT, free_port, need_mosquitto, port_open, wait_until


TEST_ADDR = "198.18.0.77"  # RFC 2544 benchmarking range: never a real peer
_added: list[str] = []


def lan_address() -> str:
    """The machine's first global IPv4 address (eth/wlan): traffic from it is not loopback to the broker.

    A machine without one (a CI container with only `lo`; or APPLIANCE_TEST_LAN_FALLBACK=1) gets a test address
    added to `lo` with global scope, removed when the tests end (needs CAP_NET_ADMIN: root in a container)."""
    import os

    if not os.environ.get("APPLIANCE_TEST_LAN_FALLBACK"):
        out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
        for link in json.loads(out):
            for a in link.get("addr_info", []):
                if a.get("scope") == "global":
                    return a["local"]
    if not _added:
        done = subprocess.run(["ip", "addr", "add", f"{TEST_ADDR}/32", "dev", "lo", "scope", "global"],
                              capture_output=True, text=True)
        if done.returncode != 0 and "exists" not in done.stderr:
            pytest.fail("no non-loopback IPv4 address to probe the broker from, and none could be added to lo "
                        f"({done.stderr.strip()}): run the tests as root or on a networked host")
        import atexit

        atexit.register(subprocess.run, ["ip", "addr", "del", f"{TEST_ADDR}/32", "dev", "lo"], capture_output=True)
        _added.append(TEST_ADDR)
    return TEST_ADDR


class Client:
    """A paho client over WebSocket from the LAN address; records the CONNACK and every message."""

    def __init__(self, host: str, port: int, user=None, password=None, topics=()):
        self.connack = threading.Event()
        self.reason = None
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport="websockets", protocol=mqtt.MQTTv5,
                             reconnect_on_failure=False)
        if user:
            self.c.username_pw_set(user, password)
        self.topics = list(topics)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.c.connect(host, port, bind_address=host)
        self.c.loop_start()
        assert self.connack.wait(10), "no CONNACK"

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.reason = reason
        if not reason.is_failure and self.topics:
            client.subscribe([(t, 1) for t in self.topics])
        self.connack.set()

    @property
    def accepted(self) -> bool:
        return self.reason is not None and not self.reason.is_failure

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def accepted(host: str, port: int, user: str, password: str) -> bool:
    c = Client(host, port, user, password)
    c.stop()
    return c.accepted


@pytest.fixture
def closed_broker(tmp_path):
    need_mosquitto()
    store = CredentialStore(tmp_path / "broker-credentials.json")
    passwd, acl = write_broker_files(store, tmp_path / "broker", prefix="appliance", rooms=["room1", "room2"])
    b = EmbeddedBroker(port=free_port(), ws_port=free_port(), ws_host="0.0.0.0", state_dir=tmp_path / "broker",
                       users=BrokerUsers(passwd, acl))
    b.start()
    yield b, store
    b.stop()


def test_credentials_are_private_and_stable(tmp_path):
    store = CredentialStore(tmp_path / "c.json")
    d1 = store.display("room1")
    assert d1 == store.display("room1") and d1.username == "display-room1" and len(d1.password) >= 30
    assert store.appliance().password != d1.password and store.display("room2").password != d1.password
    passwd, acl = write_broker_files(store, tmp_path / "b", prefix="appliance", rooms=["room1"])
    for f in (tmp_path / "c.json", passwd, acl):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    text = passwd.read_text()
    assert "display-room1:$" in text and d1.password not in text  # hashed ($7$ PBKDF2-SHA512)
    assert store.rotate_display("room1").password != d1.password
    rules = acl_text("appliance", ["room1"])
    assert "topic read appliance/room1/captions/+" in rules and "display-room1" in rules
    assert rules.split("user ")[0].count("topic") == 0  # nothing for anonymous clients


def test_stranger_on_the_lan_can_neither_connect_nor_write_nor_read_another_room(closed_broker):
    broker, store = closed_broker
    lan = lan_address()
    assert not port_open(lan, broker.port), "plain MQTT must stay on loopback"
    anonymous = Client(lan, broker.ws_port)
    assert not anonymous.accepted and anonymous.reason.value in (0x86, 0x87, 0x05, 0x04)
    anonymous.stop()
    wrong = Client(lan, broker.ws_port, "display-room1", "not-the-password")
    assert not wrong.accepted
    wrong.stop()

    room1, room2, app = store.display("room1"), store.display("room2"), store.appliance()
    reader1 = Client(lan, broker.ws_port, room1.username, room1.password, ["appliance/room1/captions/pt"])
    reader2 = Client(lan, broker.ws_port, room2.username, room2.password,
                     ["appliance/room1/captions/pt", "appliance/room2/captions/pt"])
    assert reader1.accepted and reader2.accepted
    assert reader1.subscribed.wait(10) and reader2.subscribed.wait(10)
    # the display user tries to write a caption for its own room: the broker drops it
    writer = Client(lan, broker.ws_port, room1.username, room1.password)
    writer.c.publish("appliance/room1/captions/pt", b'{"forged": true}', qos=1, retain=True).wait_for_publish(5)
    writer.c.publish("appliance/room1/status", b"offline", qos=1, retain=True).wait_for_publish(5)
    writer.stop()
    # the appliance publishes (from loopback, with its own user): room 1 first, then room 2
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.username_pw_set(app.username, app.password)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    pub.publish("appliance/room1/captions/pt", b"room one", qos=1).wait_for_publish(5)
    pub.publish("appliance/room2/captions/pt", b"room two", qos=1).wait_for_publish(5)
    wait_until(lambda: ("appliance/room2/captions/pt", b"room two") in reader2.messages, what="room 2 caption")
    wait_until(lambda: ("appliance/room1/captions/pt", b"room one") in reader1.messages, what="room 1 caption")
    assert reader1.messages == [("appliance/room1/captions/pt", b"room one")]  # never the forged one
    assert reader2.messages == [("appliance/room2/captions/pt", b"room two")]  # never room 1's
    pub.loop_stop()
    pub.disconnect()
    # nothing forged was retained either: a fresh reader of room 1 gets no retained caption or status
    late = Client(lan, broker.ws_port, room1.username, room1.password,
                  ["appliance/room1/captions/pt", "appliance/room1/status"])
    assert late.subscribed.wait(10)
    pub2 = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub2.username_pw_set(app.username, app.password)
    pub2.connect("127.0.0.1", broker.port)
    pub2.loop_start()
    pub2.publish("appliance/room1/status", b"online", qos=1).wait_for_publish(5)
    wait_until(lambda: late.messages, what="status")
    assert late.messages == [("appliance/room1/status", b"online")]
    pub2.loop_stop()
    pub2.disconnect()
    for c in (reader1, reader2, late):
        c.stop()


def test_rotated_display_password_replaces_the_old_one(closed_broker, tmp_path):
    broker, store = closed_broker
    lan = lan_address()
    old = store.display("room1")
    new = store.rotate_display("room1")
    write_broker_files(store, tmp_path / "broker", prefix="appliance", rooms=["room1"])
    broker.reload()
    wait_until(lambda: not accepted(lan, broker.ws_port, old.username, old.password), what="old password refused")
    assert accepted(lan, broker.ws_port, new.username, new.password)


def test_daemon_broker_is_closed_and_gives_displays_their_room(tmp_path):
    need_mosquitto()
    cfg = Config.model_validate({"room": {"id": "lab"}, "state_dir": str(tmp_path),
                                 "broker": {"port": free_port(), "ws_port": free_port()}})
    sup = Supervisor(cfg, RunOptions(config_path=tmp_path / "c.json", models_dir=ROOT / "models"))
    sup.broker.start()
    try:
        conf = sup.broker.broker.conf_path.read_text()
        assert "allow_anonymous false" in conf and "password_file" in conf and "acl_file" in conf
        info = sup.display_connection()
        assert info["username"] == "display-lab" and info["ws_port"] == cfg.broker.ws_port and info["room"] == "lab"
        lan = lan_address()
        assert accepted(lan, cfg.broker.ws_port, info["username"], info["password"])
        assert sup.publisher.connection().username == "appliance"
        old_session = Client(lan, cfg.broker.ws_port, info["username"], info["password"])
        assert old_session.accepted
        gone = threading.Event()
        old_session.c.on_disconnect = lambda *a: gone.set()
        sup.rotate_display_password()
        assert gone.wait(10), "a display connected with the old password must be cut off"
        old_session.c.reconnect_delay_set(60, 60)
        old_session.stop()
        wait_until(lambda: not accepted(lan, cfg.broker.ws_port, info["username"], info["password"]),
                   what="the rotated password refused")
        assert accepted(lan, cfg.broker.ws_port, info["username"], sup.display_connection()["password"])
        assert stat.S_IMODE((Path(tmp_path) / "broker-credentials.json").stat().st_mode) == 0o600
    finally:
        sup.broker.stop(5)


def test_terminal_display_on_another_device_gets_its_details_from_the_display_server(closed_broker, tmp_path,
                                                                                      appliance_cmd):
    """`appliance display --from http://<device>:8081/`: the room's read-only user, over WebSocket from the LAN."""
    import time

    from appliance.display.server import create_app
    from appliance.webserver import WebServer

    broker, store = closed_broker
    lan = lan_address()
    cred = store.display("room1")
    info = {"room": "room1", "name": "Hall", "prefix": "appliance", "languages": ["pt"], "ws_port": broker.ws_port,
            "username": cred.username, "password": cred.password}
    server = WebServer(create_app(lambda: info), lan, 0, name="display").start()
    proc = subprocess.Popen([*appliance_cmd, "display", "--from", f"http://{lan}:{server.port}/", "--plain"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    app = store.appliance()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.username_pw_set(app.username, app.password)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        n = 0
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline:  # until the display (a new process) has subscribed
            msg = {"v": 1, "seq": n, "id": f"u{n}", "rev": 1, "final": True, "lang": "pt", "text": f"frase {n}",
                   "lines": [f"frase {n}"]}
            pub.publish("appliance/room1/captions/pt", json.dumps(msg), qos=1).wait_for_publish(5)
            n += 1
            time.sleep(0.3)
        assert lines, "the terminal display printed nothing"
    finally:
        pub.loop_stop()
        pub.disconnect()
        proc.terminate()
        proc.wait(10)
        reader.join(5)
        server.shutdown()
    err = proc.stderr.read()
    assert lines[0].startswith("frase ") and f"from {lan}:{broker.ws_port} (websockets)" in err, err[-1500:]


def test_display_details_with_an_external_broker(tmp_path):
    cfg = Config.model_validate({"room": {"id": "lab"}, "state_dir": str(tmp_path),
                                 "broker": {"mode": "external", "host": "broker.lan", "ws_port": 9443}})
    sup = Supervisor(cfg, RunOptions(config_path=tmp_path / "c.json", models_dir=ROOT / "models"))
    info = sup.display_connection()
    assert info["ws_host"] == "broker.lan" and info["ws_port"] == 9443 and "password" not in info
    CredentialStore(tmp_path / "broker-credentials.json").display("lab")  # `appliance broker users --room lab`
    assert sup.display_connection()["username"] == "display-lab"


def test_password_file_lines_are_mosquittos_own_format(closed_broker):
    """The `$7$` lines written here (no mosquitto_passwd) are read by the real mosquitto: right password in,
    wrong password out."""
    broker, store = closed_broker
    lan = lan_address()
    line = (broker.state_dir / "passwd").read_text().splitlines()[1]
    user = store.display("room1")
    assert line.startswith(f"{user.username}:$7$101$") and user.password not in line
    assert accepted(lan, broker.ws_port, user.username, user.password)
    assert not accepted(lan, broker.ws_port, user.username, user.password[:-1] + "x")


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_line = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat_line[stat_line.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


def test_no_broker_password_in_any_process_arguments(tmp_path, monkeypatch):
    """While the daemon starts its broker and rotates a display password, no process it starts carries a broker
    password in its arguments: /proc/<pid>/cmdline of every descendant is read all along, and any
    `mosquitto_passwd` run records its own cmdline before it goes on to the real one."""
    import os

    need_mosquitto()
    wrappers, seen = tmp_path / "bin", tmp_path / "cmdlines"
    wrappers.mkdir()
    real = subprocess.run(["sh", "-c", "command -v mosquitto_passwd"], capture_output=True, text=True).stdout.strip()
    if real:
        (wrappers / "mosquitto_passwd").write_text(f'#!/bin/sh\ncat /proc/$$/cmdline >> "{seen}"\nexec "{real}" "$@"\n')
        (wrappers / "mosquitto_passwd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}:{os.environ['PATH']}")
    cfg = Config.model_validate({"room": {"id": "lab"}, "state_dir": str(tmp_path / "state"),
                                 "broker": {"port": free_port(), "ws_port": free_port()}})
    sup = Supervisor(cfg, RunOptions(config_path=tmp_path / "c.json", models_dir=ROOT / "models"))
    stop, cmdlines = threading.Event(), []

    def watch() -> None:
        while not stop.is_set():
            for pid in _descendants(os.getpid()):
                try:
                    cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
                except OSError:
                    continue

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    store = CredentialStore(Path(cfg.state_dir) / "broker-credentials.json")
    try:
        sup.broker.start()
        secrets_ = [store.appliance().password, store.display("lab").password]
        sup.rotate_display_password()
        secrets_.append(store.display("lab").password)
    finally:
        stop.set()
        watcher.join(5)
        sup.broker.stop(5)
    recorded = cmdlines + ([seen.read_bytes()] if seen.exists() else [])
    assert any(b"mosquitto" in c for c in cmdlines), "the watcher must have seen the broker process"
    for line in recorded:
        for secret in secrets_:
            assert secret.encode() not in line, f"a broker password in process arguments: {line!r}"[:200]
