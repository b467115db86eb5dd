"""A real `appliance run` process under observation, for the fault and soak benchmarks.

DaemonRun starts the daemon (through appliance.bench.inject, so APPLIANCE_FAULTS and APPLIANCE_REPLAY_SPEED in its
environment take effect) on a config file, reads its log, polls `/healthz` and `/metrics`, and samples
its RSS, open files and threads from /proc. CaptionListener is a plain MQTT subscriber that keeps every final
it receives (by language and id) and reconnects quickly after a broker outage.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.bench.corpus import SR, ESPEAK_SENTENCES, speak, write_wav

POLL_S = 0.2  # /healthz polling period
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def english_speech(path: Path, sentences: int, gap_s: float = 1.5) -> float:
    """`sentences` English sentences (repeating the corpus's) with `gap_s` of silence between; returns seconds."""
    texts = [t for lang, _, t, _ in ESPEAK_SENTENCES if lang == "en"]
    gap = np.zeros(int(gap_s * SR), np.float32)
    parts = []
    for i in range(sentences):
        parts += [speak("en-us", texts[i % len(texts)]), gap]
    audio = np.concatenate(parts)
    write_wav(path, audio)
    return len(audio) / SR


@dataclass
class Sample:
    t: float  # seconds since the daemon started
    healthy: bool | None
    problems: list[str]
    broker: str


class CaptionListener:
    """Subscribes to every caption of a room; `finals[lang]` maps id -> text of the finals with text."""

    def __init__(self, port: int, room: str, prefix: str = "appliance", credential=None):
        import paho.mqtt.client as mqtt

        self.finals: dict[str, dict[str, str]] = {}
        self.repeats = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # back before the publisher resends
        if credential is not None:  # the daemon's own broker is closed: read as the room's display user
            self.client.username_pw_set(credential.username, credential.password)
        topic = f"{prefix}/{room}/captions/+"
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if data.get("final") and data.get("text"):
            with self.lock:
                seen = self.finals.setdefault(data.get("lang", "?"), {})
                self.repeats += data["id"] in seen
                seen[data["id"]] = data["text"]

    def count(self) -> dict[str, int]:
        with self.lock:
            return {lang: len(ids) for lang, ids in self.finals.items()}

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class DaemonRun:
    """`appliance run` (with the harness's hooks) on a config file, the input file and a panel on a free port."""

    def __init__(self, models_dir: Path, workdir: Path, config: dict, audio: Path, *, env: dict | None = None,
                 flags: tuple[str, ...] = ()):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.panel_port = free_port()
        cmd = [sys.executable, "-m", "appliance.bench.inject", "--models-dir", str(models_dir), "run", "--config",
               str(self.config_path), "--input", str(audio), "--panel", f"127.0.0.1:{self.panel_port}", *flags]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, env=dict(os.environ, **(env or {})), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[tuple[float, str]] = []
        self.samples: list[Sample] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._read_log, daemon=True),
                         threading.Thread(target=self._poll, daemon=True)]
        for t in self._threads:
            t.start()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.log.append((self.now(), line.rstrip()))

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.panel_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def _poll(self) -> None:
        while not self._done.is_set() and self.proc.poll() is None:
            try:
                _, body = self._get("/healthz")
                data = json.loads(body)
                self.samples.append(Sample(self.now(), bool(data["healthy"]), list(data["problems"]),
                                           str(data.get("broker", ""))))
            except (OSError, ValueError, KeyError):
                self.samples.append(Sample(self.now(), None, ["panel not answering"], ""))
            self._done.wait(POLL_S)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}): {self.log_tail()}")
            s = self.samples[-1] if self.samples else None
            if s is not None and s.healthy and s.broker == "connected":
                return
            time.sleep(POLL_S)
        raise RuntimeError(f"the daemon was not healthy and connected within {timeout_s:.0f} s: {self.log_tail()}")

    def metric(self, name: str) -> float | None:
        status, body = self._get("/metrics")
        m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", body, re.M) if status == 200 else None
        return float(m.group(1)) if m else None

    def log_time(self, text: str) -> float | None:
        return next((t for t, line in self.log if text in line), None)

    def log_tail(self, n: int = 8) -> str:
        return " | ".join(line for _, line in self.log[-n:])

    def children(self, name: str) -> list[int]:
        """Pids of this daemon's child processes whose command is `name`."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                comm = stat[stat.index("(") + 1:stat.rindex(")")]
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid and comm == name:
                out.append(int(entry.name))
        return out

    def resources(self) -> dict:
        """RSS (MB), open files (not sockets), sockets and threads of the daemon process, from /proc. Sockets and
        threads include the panel's connection from our own /healthz poll when one is in flight."""
        base = Path("/proc") / str(self.proc.pid)
        status = (base / "status").read_text()
        rss_kb = int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
        threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))
        targets = []
        for fd in os.listdir(base / "fd"):
            try:
                targets.append(os.readlink(base / "fd" / fd))
            except OSError:  # closed while we looked
                continue
        sockets = sum(t.startswith("socket:") for t in targets)
        return {"rss_mb": round(rss_kb / 1024, 1), "open_files": len(targets) - sockets, "sockets": sockets,
                "threads": threads}

    def stop(self, timeout_s: float = 90.0) -> int:
        self._done.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self._threads:
            t.join(5)
        return self.proc.returncode


@dataclass
class Window:
    """What /healthz said between two moments of a run."""

    problems: list[str] = field(default_factory=list)
    broker_states: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, samples: list[Sample], start: float, end: float) -> "Window":
        w, kinds = cls(), set()
        for s in samples:
            if start <= s.t <= end:
                for p in s.problems:
                    kind = re.sub(r"\d+", "N", p)  # the same problem with another count is not news
                    if kind not in kinds:
                        kinds.add(kind)
                        w.problems.append(p)
                if s.broker and s.broker not in w.broker_states:
                    w.broker_states.append(s.broker)
        return w


def recovered_at(samples: list[Sample], after: float) -> float | None:
    """The first time after `after` from which the daemon was healthy and connected at every poll until the end
    of the window it was sampled in (the next unhealthy poll starts a new wait)."""
    good = None
    for s in samples:
        if s.t < after:
            continue
        ok = bool(s.healthy) and s.broker == "connected"
        if ok and good is None:
            good = s.t
        elif not ok:
            good = None
    return good
