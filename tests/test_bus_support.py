"""Helpers shared by the bus and display tests (no tests here): free ports, real mosquitto, a subscriber."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from appliance.bus.broker import EmbeddedBroker, find_mosquitto, port_open

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_mosquitto() -> str:
    exe = find_mosquitto()
    if exe is None:
        pytest.fail("mosquitto is not installed: run scripts/setup --test (apt install mosquitto mosquitto-clients)")
    return exe


def start_broker(state_dir: Path, *, port: int | None = None, ws_port: int | None = None, extra_conf: str = "") -> EmbeddedBroker:
    need_mosquitto()
    b = EmbeddedBroker(port=port or free_port(), ws_port=ws_port if ws_port is not None else free_port(),
                       state_dir=state_dir, extra_conf=extra_conf)
    b.start()
    return b


class Mosquitto:
    """mosquitto run directly with a config file (the shipped production config, a central broker)."""

    def __init__(self, conf: Path, port: int):
        self.conf, self.port = conf, port
        self.proc = subprocess.Popen([need_mosquitto(), "-c", str(conf)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mosquitto -c {conf} did not start: {self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Recorder:
    """A plain paho subscriber that records (topic, payload) pairs."""

    def __init__(self, port: int, topics: list[str], *, transport: str = "tcp", username=None, password=None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, transport=transport)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: (c.subscribe([(t, 1) for t in topics]), None)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test subscriber could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 10.0):
        with self.cond:
            ok = self.cond.wait_for(lambda: pred(self.messages), timeout)
        assert ok, f"timed out; got {[(t, p[:80]) for t, p, _ in self.messages][-10:]}"
        return self.messages

    def payloads(self, topic: str) -> list[bytes]:
        with self.cond:
            return [p for t, p, _ in self.messages if t == topic]

    def captions(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.payloads(topic)]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def final(i: int, lang: str = "pt", text: str | None = None) -> dict:
    return {"id": f"u{i}", "rev": 2, "final": True, "lang": lang, "source_lang": "en",
            "text": text if text is not None else f"frase número {i}", "start": float(i), "end": i + 0.9,
            "emitted": time.time(), "latency": {"final_s": 0.4}}


def partial(i: int, rev: int, lang: str = "pt", text: str | None = None) -> dict:
    return {"id": f"u{i}", "rev": rev, "final": False, "lang": lang, "source_lang": "en",
            "text": text if text is not None else f"frase {i} parcial {rev}", "start": float(i), "end": i + 0.5,
            "emitted": time.time()}


def wait_for_stderr_line(proc, needle: str, timeout: float = 30.0) -> list[str]:
    """Read a subprocess's stderr (text mode) until a line containing `needle`; returns the lines read."""
    import threading

    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), f"no {needle!r} from the subprocess within {timeout} s: {''.join(lines)[-2000:]}"
    return lines


def require(module: str, install: str):
    """Import a module that `scripts/test` installs; a missing one fails the test with how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AssertionError(f"{module} is missing ({exc}): {install}") from None
