"""Fault-injection benchmark: the real daemon, a real broker, real models, one fault per run.

Each run captions the same English speech file (real-time replay). A baseline run without a fault gives the
finals every run must deliver; for each fault the table reports finals lost (baseline minus received, per
language), repeats (finals received twice; displays drop them by id), seconds from the end of the fault until
/healthz was healthy and connected again, and what /healthz showed meanwhile.

Faults: recognizer and translator exceptions (APPLIANCE_FAULTS), the queue's disk full while the broker is
away (a small tmpfs: needs root), the config file corrupted while running, the embedded mosquitto killed,
and the broker away for `outage_s` seconds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from appliance.bench.daemon_harness import (CaptionListener, DaemonRun, Window, english_speech, free_port,
                                            recovered_at)
from appliance.bus.broker import EmbeddedBroker

log = logging.getLogger(__name__)

ROOM = "faults"
FAULT_AT_S = 6.0  # seconds after the daemon is ready (speech is flowing) when the fault starts
SETTLE_S = 6.0  # after the input ends, time for the last finals to arrive
TMPFS_SIZE = "1m"  # the queue's filesystem in the disk-full fault
DISK_FULL_OUTAGE_S = 10.0  # with the disk full, the broker is away this long (finals must queue meanwhile)
FAULTS = ("recognizer", "translator", "disk_full", "config_corrupt", "mosquitto_killed", "broker_outage")


@dataclass
class Result:
    fault: str
    finals_expected: dict[str, int]
    finals_received: dict[str, int]
    finals_lost: int
    repeats: int
    recover_s: float | None
    status_showed: list[str] = field(default_factory=list)
    note: str = ""

    def row(self) -> dict:
        d = asdict(self)
        d["status_showed"] = "; ".join(self.status_showed) or "healthy throughout"
        d["finals_received"] = ", ".join(f"{k} {v}" for k, v in sorted(self.finals_received.items()))
        d["finals_expected"] = ", ".join(f"{k} {v}" for k, v in sorted(self.finals_expected.items()))
        return d


@dataclass
class Setup:
    models_dir: Path
    workdir: Path
    audio: Path
    audio_s: float
    outage_s: float


def _config(state_dir: Path, broker_port: int | None) -> dict:
    broker = ({"mode": "external", "host": "127.0.0.1", "port": broker_port} if broker_port else
              {"mode": "embedded", "port": free_port(), "ws_port": free_port()})
    return {"room": {"id": ROOM}, "languages": {"source": "en", "targets": ["pt"]}, "broker": broker,
            "state_dir": str(state_dir), "accelerator": {"threads": 1}}


def _run(setup: Setup, name: str, fault: Callable[[DaemonRun, dict], tuple[float, float, str]] | None, *,
         env: dict | None = None, embedded: bool = False, state_dir: Path | None = None) -> tuple[DaemonRun, dict, tuple]:
    """One daemon run with `fault(run, ctx) -> (start, end, note)` called FAULT_AT_S after it is ready."""
    work = setup.workdir / name
    broker = None if embedded else EmbeddedBroker(port=free_port(), ws_port=None, state_dir=work / "broker")
    if broker is not None:
        broker.start()
    state = state_dir or work / "state"
    cfg = _config(state, broker.port if broker else None)
    listener = CaptionListener(broker.port, ROOM) if broker else None  # subscribed before the first final
    run = DaemonRun(setup.models_dir, work, cfg, setup.audio, env=env)
    try:
        run.wait_ready()
        if listener is None:  # the daemon's own broker: up now
            from appliance.bus.access import BrokerAccess
            from appliance.config import validate

            listener = CaptionListener(cfg["broker"]["port"], ROOM, credential=BrokerAccess(validate(cfg)).display())
        ready = run.now()
        ctx = {"broker": broker, "cfg": cfg, "state": state}
        time.sleep(FAULT_AT_S)
        span = fault(run, ctx) if fault else (run.now(), run.now(), "")
        broker = ctx.get("broker", broker)
        remaining = ready + setup.audio_s + SETTLE_S - run.now()
        time.sleep(max(remaining, SETTLE_S))
        counts, repeats = listener.count(), listener.repeats
    finally:
        if listener is not None:
            listener.stop()
        code = run.stop()
        if broker is not None:
            broker.stop()
    if code != 0:
        raise RuntimeError(f"{name}: the daemon exited with {code}: {run.log_tail()}")
    return run, {"counts": counts, "repeats": repeats}, span


# ---- the faults ---------------------------------------------------------------------------------------------
def _injected(run: DaemonRun, ctx: dict) -> tuple[float, float, str]:
    deadline = time.monotonic() + 30
    while run.log_time("injecting a fault") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    t = run.log_time("injecting a fault")
    restarted = run.log_time("restarted after")
    if t is None:
        return run.now(), run.now(), "the fault did not fire"
    restarts = run.metric("appliance_restarts_total")
    note = f"stage restarted (/metrics restarts_total {restarts:.0f})" if restarted is not None and restarts else \
        "no restart seen"
    return t, (restarted or t), note


def _disk_full(run: DaemonRun, ctx: dict) -> tuple[float, float, str]:
    start = run.now()
    filler = ctx["state"] / "filler"
    with open(filler, "wb") as fh:  # fill the queue's filesystem to the last byte
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    broker: EmbeddedBroker = ctx["broker"]
    broker.stop()  # finals must now go to the queue, whose disk is full
    time.sleep(DISK_FULL_OUTAGE_S)
    held = run.log_time("holding finals in memory")
    broker.start()
    end = run.now()
    filler.unlink()
    return start, end, "" if held is not None else "no final was written while the disk was full"


def _config_corrupt(run: DaemonRun, ctx: dict) -> tuple[float, float, str]:
    start = run.now()
    run.config_path.write_text('{"room": {"id": ')  # truncated JSON, as after a bad manual edit
    return start, run.now(), "file left corrupt until the end of the run"


def _mosquitto_killed(run: DaemonRun, ctx: dict) -> tuple[float, float, str]:
    pids = run.children("mosquitto")
    if not pids:
        return run.now(), run.now(), "no mosquitto child found"
    start = run.now()
    os.kill(pids[0], 9)
    return start, start, ""


def _broker_outage(outage_s: float) -> Callable:
    def fault(run: DaemonRun, ctx: dict) -> tuple[float, float, str]:
        broker: EmbeddedBroker = ctx["broker"]
        start = run.now()
        broker.stop()
        time.sleep(outage_s)
        broker.start()
        return start, run.now(), f"broker away {outage_s:.0f} s"
    return fault


# ---- running them -------------------------------------------------------------------------------------------
def mount_small_tmpfs(path: Path) -> str:
    """Mount a TMPFS_SIZE tmpfs at `path`; '' on success, else why not (needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or "mount failed")


def run_fault(setup: Setup, name: str, expected: dict[str, int]) -> Result:
    state_dir, mounted = None, False
    kwargs: dict = {}
    if name in ("recognizer", "translator"):
        fault, kwargs = _injected, {"env": {"APPLIANCE_FAULTS": f"{name}@3" if name == "recognizer" else f"{name}@2"}}
    elif name == "disk_full":
        state_dir = setup.workdir / name / "state"
        why = mount_small_tmpfs(state_dir)
        if why:
            raise RuntimeError(f"disk_full needs a small tmpfs (run as root): {why}")
        mounted, fault = True, _disk_full
    elif name == "config_corrupt":
        fault = _config_corrupt
    elif name == "mosquitto_killed":
        fault, kwargs = _mosquitto_killed, {"embedded": True}
    elif name == "broker_outage":
        fault = _broker_outage(setup.outage_s)
    else:
        raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
    try:
        run, got, (start, end, note) = _run(setup, name, fault, state_dir=state_dir, **kwargs)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(state_dir)], capture_output=True)
    back = recovered_at(run.samples, end)
    lost = sum(max(0, n - got["counts"].get(lang, 0)) for lang, n in expected.items())
    seen = Window.of(run.samples, start - 0.5, (back or end) + 0.5)
    showed = seen.problems + [f"broker {s}" for s in seen.broker_states if s != "connected"]
    return Result(name, expected, got["counts"], lost, got["repeats"],
                  None if back is None else round(max(0.0, back - end), 1), showed, note)


def baseline(setup: Setup) -> dict[str, int]:
    _, got, _ = _run(setup, "baseline", None)
    return got["counts"]


def prepare(models_dir: Path, workdir: Path, faults: tuple[str, ...], *, sentences: int = 2,
            outage_s: float = 30.0) -> Setup:
    """Speech long enough for the longest fault and its recovery (at least `sentences` sentences)."""
    audio = workdir / "speech.wav"
    need_s = FAULT_AT_S + max(outage_s if "broker_outage" in faults else 0.0, DISK_FULL_OUTAGE_S) + 10.0
    while (audio_s := english_speech(audio, sentences)) < need_s:
        sentences += 1
    return Setup(models_dir, workdir, audio, audio_s, outage_s)


def run(models_dir: Path, faults: tuple[str, ...] = FAULTS, *, outage_s: float = 30.0, workdir: Path | None = None,
        progress=lambda m: None) -> list[Result]:
    setup = prepare(models_dir, workdir or Path(tempfile.mkdtemp(prefix="appliance-faults-")), faults,
                    outage_s=outage_s)
    progress(f"baseline ({setup.audio_s:.0f} s of speech)")
    expected = baseline(setup)
    results = []
    for name in faults:
        progress(f"fault: {name}")
        results.append(run_fault(setup, name, expected))
    return results


COLUMNS = ["fault", "finals_expected", "finals_received", "finals_lost", "repeats", "recover_s", "status_showed", "note"]
