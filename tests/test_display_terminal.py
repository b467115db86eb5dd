"""`appliance display` (terminal display) as a real subprocess against the embedded broker."""

from __future__ import annotations

import signal
import subprocess
import time

from appliance.bus.publisher import Publisher
from appliance.config import BrokerConfig
from appliance.display.terminal import parse_broker, safe_text
from test_bus_support import ROOT, final, partial, start_broker, wait_for_stderr_line, wait_until


def test_terminal_display_prints_each_final_once_literally(tmp_path, appliance_cmd):
    broker = start_broker(tmp_path / "broker")
    proc = subprocess.Popen([*appliance_cmd, "display", "--room", "r1", "--lang", "pt", "--broker",
                             f"mqtt://127.0.0.1:{broker.port}", "--plain"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = Publisher(BrokerConfig(port=broker.port), room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    try:
        wait_for_stderr_line(proc, "subscribed to room r1 in pt")  # the display subscribes
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


def test_demo_printer_subscribes_like_a_display(tmp_path):
    """`appliance demo` prints what display subscribers receive: each final once, chosen languages, literally."""
    import io

    from appliance.config import validate
    from appliance.display.terminal import print_finals

    broker = start_broker(tmp_path / "broker")
    cfg = validate({"room": {"id": "r1"}, "broker": {"mode": "external", "port": broker.port}})
    out = io.StringIO()
    feeds = print_finals(cfg, ["pt"], out=out)
    pub = Publisher(BrokerConfig(port=broker.port), room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    try:
        wait_until(lambda: all(f.connected.is_set() for f in feeds), what="the demo display subscribes")
        pub.start()
        pub.publish(partial(1, 1))
        pub.publish(final(1, text="olá\x1b[2J"))
        pub.publish(final(1, text="olá\x1b[2J"))  # the same final again: printed once
        pub.publish(final(2, lang="en", text="english"))
        pub.publish(final(3, text="<b>negrito</b>"))
        wait_until(lambda: out.getvalue().count("\n") >= 2, what="two Portuguese finals printed")
        time.sleep(0.3)
    finally:
        pub.stop()
        for f in feeds:
            f.stop()
        broker.stop()
    assert out.getvalue() == "[pt] olá [2J\n[pt] <b>negrito</b>\n"


def test_untranslated_final_is_labelled_with_its_language():
    import io

    from appliance.bus.client import CaptionState
    from appliance.display.terminal import TerminalView

    state = CaptionState()
    out = io.StringIO()
    view = TerminalView(out, plain=True)
    for i, msg in enumerate([final(1, text="Bom dia."), {**final(2, text="Thank you all."), "untranslated": True}]):
        state.accept({**msg, "seq": i + 1})
    view.changed(state)
    assert out.getvalue().splitlines() == ["Bom dia.", "[EN] Thank you all."]
    assert [text for text, _ in state.rows()] == ["Bom dia.", "[EN] Thank you all."]  # the live view too
