"""`appliance display` (terminal display) as a real subprocess against the embedded broker."""

from __future__ import annotations

import signal
import subprocess
import time

from appliance.bus.publisher import Publisher
from appliance.config import BrokerConfig
from appliance.display.terminal import parse_broker, safe_text
from test_bus_support import ROOT, final, partial, start_broker, wait_until


def test_terminal_display_prints_each_final_once_literally(tmp_path, appliance_cmd):
    broker = start_broker(tmp_path / "broker")
    proc = subprocess.Popen([*appliance_cmd, "display", "--room", "r1", "--lang", "pt", "--broker",
                             f"mqtt://127.0.0.1:{broker.port}", "--plain"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = Publisher(BrokerConfig(port=broker.port), room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    try:
        time.sleep(1.5)  # the display subscribes
        pub.start()
        pub.publish(partial(1, 0))
        pub.publish(final(1, text="<b>negrito</b> & <script>x()</script>"))
        pub.publish(final(2, text="limpa\x1b[2Jtela\x07"))
        pub.publish(final(3, lang="en"))
        wait_until(lambda: pub.pending == 0, what="finals sent")
        time.sleep(0.5)
    finally:
        pub.stop(timeout=2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        broker.stop()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["<b>negrito</b> & <script>x()</script>", "limpa [2Jtela "]
    assert "[offline]" in err  # the room's status after the publisher's clean stop


def test_bad_broker_argument_is_a_clear_error(appliance_cmd):
    r = subprocess.run([*appliance_cmd, "display", "--room", "r1", "--lang", "pt", "--broker", "ftp://x"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "use host[:port] or mqtt://" in r.stderr


def test_parse_broker_and_safe_text():
    assert parse_broker("h") == ("h", 1883, "tcp", False)
    assert parse_broker("ws://h:9002") == ("h", 9002, "websockets", False)
    assert parse_broker("mqtts://h") == ("h", 8883, "tcp", True)
    assert safe_text("a\x1b[31mb\u202ec") == "a [31mb c"


def test_caption_printer_prints_finals_of_chosen_languages():
    import io
    from types import SimpleNamespace

    from appliance.display.terminal import caption_printer

    out = io.StringIO()
    sink = caption_printer(["pt"], out=out)
    sink(SimpleNamespace(final=False, lang="pt", text="parcial"))
    sink(SimpleNamespace(final=True, lang="en", text="english"))
    sink(SimpleNamespace(final=True, lang="pt", text="olá\x1b[2J"))
    sink({"final": True, "lang": "pt", "text": "<b>dict</b>"})
    assert out.getvalue() == "[pt] olá [2J\n[pt] <b>dict</b>\n"
