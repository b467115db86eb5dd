"""The whole appliance as a process: `appliance run` on a real broker, real models and real audio."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from appliance.bench.corpus import speak, write_wav
from test_bus_support import Recorder, free_port, start_broker, wait_until

ROOM = "room-t"


@pytest.fixture(scope="module")
def models(built_model, models_dir):
    for name in ("whisper-base", "silero-vad", "bergamot-en-pt", "bergamot-pt-en"):
        built_model(name)
    return models_dir


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    write_wav(path, speak("en-us", "Good morning everyone. The budget for next year will be presented by the finance team."))
    return path


def run_cmd(models, tmp_path, broker, *extra):
    return [sys.executable, "-m", "appliance", "--models-dir", str(models), "run", "--config", str(tmp_path / "config.json"),
            "--broker", f"mqtt://127.0.0.1:{broker.port}", "--room", ROOM, "--state-dir", str(tmp_path / "state"),
            "--panel", f"127.0.0.1:{free_port()}", *extra]


def test_run_once_publishes_finals_in_every_language(models, tmp_path, broker, speech_wav):
    (tmp_path / "state").mkdir()  # a glossary term, forced in the Portuguese captions (appliance/glossary.py)
    (tmp_path / "state" / "glossary.json").write_text(json.dumps({"entries": [
        {"source": "en", "target": "pt", "term": "finance team", "translation": "equipa de finanças"}]}))
    rec = Recorder(broker.port, [f"appliance/{ROOM}/#"])
    proc = subprocess.run(run_cmd(models, tmp_path, broker, "--input", str(speech_wav), "--once"),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    en = [c for c in rec.captions(f"appliance/{ROOM}/captions/en") if c["final"] and c["text"]]
    pt = [c for c in rec.captions(f"appliance/{ROOM}/captions/pt") if c["final"] and c["text"]]
    assert en and pt
    assert "budget" in " ".join(c["text"] for c in en).lower()
    assert "orçamento" in " ".join(c["text"] for c in pt).lower()
    for c in en + pt:
        assert c["v"] == 1 and isinstance(c["seq"], int) and c["lines"] and all(len(line) <= 42 for line in c["lines"])
    statuses = rec.payloads(f"appliance/{ROOM}/status")
    assert statuses[0] == b"online" and statuses[-1] == b"offline"
    detail = json.loads(rec.payloads(f"appliance/{ROOM}/status/detail")[0])
    assert {"en", "pt"} <= set(detail["languages"])
    rec.stop()
    assert "equipa de finanças" in " ".join(c["text"] for c in pt)
    # the meeting record holds the same finals, exported as `appliance archive` finds it (--state-dir)
    export = [sys.executable, "-m", "appliance", "archive", "export", "latest", "--state-dir", str(tmp_path / "state")]
    minutes = subprocess.run(export + ["--lang", "pt", "--format", "txt"], capture_output=True, text=True, check=True)
    assert "equipa de finanças" in minutes.stdout and "orçamento" in minutes.stdout.lower()
    srt = subprocess.run(export + ["--lang", "en", "--format", "srt"], capture_output=True, text=True, check=True)
    assert srt.stdout.startswith("1\n00:00:0") and "budget" in srt.stdout.lower()


def test_sigterm_flushes_the_open_utterance_and_goes_offline(models, tmp_path, broker, speech_wav):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = str(tmp_path / "notify.sock")
    notify.bind(notify_path)
    notify.settimeout(0.2)
    messages: list[str] = []
    done = threading.Event()

    def drain():  # read like systemd does, all the time
        while not done.is_set():
            try:
                messages.append(notify.recv(4096).decode())
            except socket.timeout:
                pass

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    rec = Recorder(broker.port, [f"appliance/{ROOM}/#"])
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="2000000")
    proc = subprocess.Popen(run_cmd(models, tmp_path, broker, "--input", str(speech_wav)), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # SIGTERM in the middle of the sentence: as soon as the first partial is out
        wait_until(lambda: any(not c["final"] for c in rec.captions(f"appliance/{ROOM}/captions/en")), 60, "a partial")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    en = rec.captions(f"appliance/{ROOM}/captions/en")
    partial_ids = {c["id"] for c in en if not c["final"]}
    final_ids = {c["id"] for c in en if c["final"] and c["text"]}
    assert partial_ids <= final_ids, "the utterance open at SIGTERM must be finalised and published"
    assert rec.payloads(f"appliance/{ROOM}/status")[-1] == b"offline"
    time.sleep(0.5)
    done.set()
    reader.join()
    assert "READY=1" in "\n".join(messages)
    assert any("STATUS=" in m for m in messages) and "STOPPING=1" in "\n".join(messages)
    rec.stop()


def test_corrupt_config_stops_before_starting_anything(models, tmp_path, broker, speech_wav):
    (tmp_path / "config.json").write_text('{"room": {"id": "a"}, "broker": {"port": "many"}}')
    rec = Recorder(broker.port, [f"appliance/{ROOM}/#"])
    proc = subprocess.run(run_cmd(models, tmp_path, broker, "--input", str(speech_wav), "--once"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "broker.port" in proc.stderr and "Traceback" not in proc.stderr
    time.sleep(0.5)
    assert rec.messages == []  # never connected, never published
    (tmp_path / "config.json").write_text('{"room": ')
    proc = subprocess.run(run_cmd(models, tmp_path, broker, "--once"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr
    rec.stop()


def test_unknown_device_is_a_clear_error_and_the_rest_keeps_running(models, tmp_path, broker):
    proc = subprocess.run(run_cmd(models, tmp_path, broker, "--device", "no-such-microphone-xyz", "--once"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "no-such-microphone-xyz" in proc.stderr and "Traceback" not in proc.stderr
    # as a service it keeps running: online on the broker, the microphone retried, the problem in the log
    rec = Recorder(broker.port, [f"appliance/{ROOM}/status"])
    proc = subprocess.Popen(run_cmd(models, tmp_path, broker, "--device", "no-such-microphone-xyz"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rec.wait_for(lambda msgs: any(p == b"online" for _, p, _ in msgs), 60)
        time.sleep(1)
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "no-such-microphone-xyz" in err and "retrying" in err
    rec.stop()
