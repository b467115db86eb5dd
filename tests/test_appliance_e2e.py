"""The appliance end to end, as an admin uses it: a running daemon on a real broker, its panel in a real chromium.

First-run password, log in, add a target language; the running daemon applies it without a restart and a
subscriber on the broker receives captions in the new language.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from appliance import config as cfgmod
from appliance.audio import load_audio
from appliance.bench.corpus import write_wav
from test_bus_support import Recorder, free_port, start_broker, wait_until
from test_panel_app import PASSWORD
from test_panel_browser import ARGS, CHROMIUM, playwright_api

SAMPLE = Path(__file__).resolve().parents[1] / "appliance" / "data" / "sample-en.flac"


@pytest.fixture(scope="module")
def models(built_model, models_dir):
    for name in ("whisper-base", "silero-vad", "bergamot-en-pt", "bergamot-pt-en"):
        built_model(name)
    return models_dir


def test_panel_change_reaches_the_running_daemon(models, tmp_path, artifacts):
    broker = start_broker(tmp_path / "broker")
    audio = load_audio(SAMPLE)
    long_input = tmp_path / "meeting.wav"
    write_wav(long_input, np.concatenate([audio, audio, audio]))  # a minute of meeting, replayed in real time
    panel_port = free_port()
    cfg_path = tmp_path / "etc" / "config.json"
    cfgmod.save_atomic(cfgmod.validate({
        "room": {"id": "hall"}, "languages": {"source": "auto", "targets": ["en"]},
        "broker": {"mode": "external", "host": "127.0.0.1", "port": broker.port},
        "panel": {"host": "127.0.0.1", "port": panel_port}, "state_dir": str(tmp_path / "state"),
        "display": {"host": "127.0.0.1", "port": free_port()},
    }), cfg_path)
    rec = Recorder(broker.port, ["appliance/hall/captions/#"])
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "--models-dir", str(models), "run", "--config",
                             str(cfg_path), "--input", str(long_input)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    err_lines: list[str] = []  # read as it comes: the first-run set-up code is in the log
    reader = threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{panel_port}"
    try:
        wait_until(lambda: any(c["final"] and c["text"] for c in rec.captions("appliance/hall/captions/en")), 90,
                   "a first English final")
        assert rec.captions("appliance/hall/captions/pt") == []
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(url + "/")
            assert page.url == url + "/setup"
            code = next(re.search(r"set-up code for the panel: (\S+)", l).group(1) for l in list(err_lines)
                        if "set-up code for the panel" in l)
            page.fill("#setup_code", code)
            page.fill("#password", PASSWORD)
            page.fill("#confirm", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(url + "/")
            page.check('input[name="languages.targets"][value="pt"]')
            with page.expect_navigation(url=url + "/"):
                page.click("form[data-save] button[type=submit]")
            page.wait_for_function("() => document.getElementById('apply-state').dataset.state === 'applied'")
            assert "restarted: pipeline" in page.inner_text("#apply-state")
            page.screenshot(path=str(artifacts / "e2e-panel-applied.png"), full_page=True)
            browser.close()
        assert json.loads(cfg_path.read_text())["languages"]["targets"] == ["en", "pt"]
        en_before = len([c for c in rec.captions("appliance/hall/captions/en") if c["final"]])
        wait_until(lambda: any(c["final"] and c["text"] for c in rec.captions("appliance/hall/captions/pt")), 60,
                   "a Portuguese final after the change")
        assert proc.poll() is None, "the daemon applied the change without restarting"
        wait_until(lambda: len([c for c in rec.captions("appliance/hall/captions/en") if c["final"]]) > en_before, 60,
                   "English captions going on")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        reader.join(10)
        err = "".join(err_lines)
        rec.stop()
        broker.stop()
    assert proc.returncode == 0, err[-3000:]
    assert "config applied: restarted pipeline" in err
