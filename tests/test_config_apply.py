"""Config precedence and rollback in a real daemon: command-line flags survive panel saves, and a change that
cannot start rolls back to the last working config (reported in the panel and the status)."""

from __future__ import annotations

import json
import re
import subprocess
import threading

import pytest

from appliance import config as cfgmod
from appliance.daemon import ApplyError, RunOptions, Supervisor
from panel_client import PanelClient
from test_bus_support import Recorder, final, free_port, start_broker, wait_until
from test_daemon import models, speech_wav  # noqa: F401 (fixtures)


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


def test_flags_win_over_the_file_and_over_panel_saves(models, tmp_path, broker, speech_wav):  # noqa: F811
    """The issue's repro: a panel save must not switch room, broker or state folder away from the flags."""
    config_path = tmp_path / "config.json"
    cfgmod.save_atomic(cfgmod.Config(room={"id": "fileroom"}, languages={"source": "auto", "targets": ["pt"]},
                                     state_dir=str(tmp_path / "file-state")), config_path)
    panel_port = free_port()
    rec = Recorder(broker.port, ["appliance/#"])
    proc = subprocess.Popen(
        [*_appliance(models), "run", "--config", str(config_path), "--room", "cliroom",
         "--broker", f"mqtt://127.0.0.1:{broker.port}", "--state-dir", str(tmp_path / "cli-state"),
         "--panel", f"127.0.0.1:{panel_port}", "--input", str(speech_wav)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []  # read as it comes: the first-run set-up code is in the log
    reader = threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        panel = PanelClient(f"http://127.0.0.1:{panel_port}")
        wait_until(lambda: _up(panel), 120, "the panel")
        wait_until(lambda: any("set-up code for the panel" in line for line in list(err_lines)), 30, "the set-up code")
        code = next(re.search(r"set-up code for the panel: (\S+)", line).group(1) for line in list(err_lines)
                    if "set-up code for the panel" in line)
        panel.setup(code)
        status, body = panel.api("/api/config", {"room": {"name": "Hall B"}}, method="PATCH")
        assert status == 200, body
        wait_until(lambda: panel.api("/api/status")[1]["apply"]["state"] != "applying", 60, "the change applied")
        snap = panel.api("/api/status")[1]
        assert snap["apply"]["state"] == "applied", snap["apply"]
        pinned = snap["config"]["overrides"]
        assert pinned["room.id"] == {"saved": "fileroom", "in_force": "cliroom"}
        assert pinned["state_dir"]["in_force"] == str(tmp_path / "cli-state")
        assert pinned["broker.port"] == {"saved": 1883, "in_force": broker.port}
        # where each loaded graph runs: the CPU provider here, every node of it (tests/accel: OpenVINO)
        placed = {p["model"]: p for p in snap["placement"]}
        assert {"whisper-base/encoder.onnx", "whisper-base/decoder.onnx", "bergamot-en-pt/encoder.onnx"} <= set(placed)
        assert all(p["provider"] == "CPUExecutionProvider" and p["node_share"] == 1.0 for p in placed.values())
        # the daemon still publishes to the flag's room on the flag's broker, with the saved name
        rec.wait_for(lambda msgs: any(t == "appliance/cliroom/status/detail" and b"Hall B" in p for t, p, _ in msgs), 30)
        assert cfgmod.load(config_path).room.id == "fileroom"  # the file keeps its own value
        assert cfgmod.load(config_path).room.name == "Hall B"
        assert not any(t.startswith("appliance/fileroom/") for t, _, _ in rec.messages)
        assert not (tmp_path / "file-state").exists()

        # a change that cannot start (no such speech model) is rolled back; captioning goes on
        status, body = panel.api("/api/config", {"asr": {"model": "no-such-model"}}, method="PATCH")
        assert status == 200, body
        wait_until(lambda: panel.api("/api/status")[1]["apply"]["state"] != "applying", 120, "the change applied")
        snap = panel.api("/api/status")[1]
        assert snap["apply"]["state"] == "failed" and "rolled back" in snap["apply"]["message"], snap["apply"]
        assert "no-such-model" in snap["apply"]["message"]
        assert snap["config"]["state"] == "rolled back" and "no-such-model" in snap["config"]["detail"]
        assert snap["healthy"], snap["problems"]
        assert "rolled back" in panel.request("/")[1]  # the panel page shows it too
        rec.wait_for(lambda msgs: any(t == "appliance/cliroom/captions/pt" and json.loads(p)["final"]
                                      for t, p, _ in msgs), 120)
    finally:
        proc.terminate()
        proc.wait(timeout=90)
        reader.join(10)
        err = "".join(err_lines)
        rec.stop()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err.split("rolling back to the last working config")[0]


def test_failed_publisher_change_rolls_back_and_keeps_every_final(tmp_path, broker):
    """A broker change that cannot start (a TLS file that is not there): the publisher of the last working config
    is back, and finals published during the attempt are delivered (they waited in the on-disk queue)."""
    cfg = cfgmod.Config(room={"id": "r1"}, broker={"mode": "external", "host": "127.0.0.1", "port": broker.port},
                        state_dir=str(tmp_path / "state"))
    sup = Supervisor(cfg, RunOptions(config_path=None, models_dir=tmp_path))
    rec = Recorder(broker.port, ["appliance/r1/captions/pt"])
    sup.publisher.start()
    try:
        wait_until(lambda: sup.publisher.publisher.connected, 10, "publisher connected")
        sup.sink(final(1))
        bad = cfg.model_copy(deep=True)
        bad.broker.tls, bad.broker.ca_file = True, str(tmp_path / "missing-ca.pem")
        with pytest.raises(ApplyError, match="missing-ca.pem.*rolled back"):
            sup.apply_config(bad)
        assert sup.cfg == cfg
        sup.sink(final(2))
        wait_until(lambda: sup.publisher.publisher.connected, 10, "publisher reconnected")
        rec.wait_for(lambda msgs: {json.loads(p)["text"] for _, p, _ in msgs} >= {"frase número 1", "frase número 2"}, 20)
        snap = sup.status.snapshot()
        assert snap["config"]["state"] == "rolled back" and "missing-ca.pem" in snap["config"]["detail"]
        assert any("running on the last working config" in m["text"] for m in snap["messages"])
    finally:
        sup.publisher.stop(10)
        rec.stop()


def test_with_overrides_and_shadowed():
    cfg = cfgmod.Config(room={"id": "fileroom"})
    flags = {"room.id": "cliroom", "broker.port": 1999, "state_dir": "/tmp/x"}
    new = cfgmod.with_overrides(cfg, flags)
    assert (new.room.id, new.broker.port, new.state_dir) == ("cliroom", 1999, "/tmp/x")
    assert cfgmod.shadowed(cfg, flags) == {"room.id": ("fileroom", "cliroom"), "broker.port": (1883, 1999),
                                           "state_dir": ("/var/lib/appliance", "/tmp/x")}
    assert cfgmod.shadowed(new, flags) == {}
    with pytest.raises(cfgmod.ConfigError, match="room.id"):
        cfgmod.with_overrides(cfg, {"room.id": "bad room!"})


def _appliance(models):  # noqa: F811
    import sys

    return [sys.executable, "-m", "appliance", "--models-dir", str(models)]


def _up(panel: PanelClient) -> bool:
    try:
        return panel.request("/setup")[0] == 200
    except OSError:
        return False
