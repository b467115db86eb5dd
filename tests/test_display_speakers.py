"""Displays mark a change of speaker: the shared caption state (roll-up lines), the terminal display as a real
subprocess against a real broker, and the web display in real chromium."""

from __future__ import annotations

import signal
import subprocess
import time

from appliance.bus.client import CaptionState
from appliance.bus.publisher import Publisher
from appliance.config import BrokerConfig
from test_bus_support import ROOT, final, partial, start_broker, wait_for_stderr_line, wait_until
from test_display_web import CAUGHT_UP, browser, rows, stack  # noqa: F401 (the web display tests' fixtures)

CHAIR = {"id": "S1", "name": "Chair"}
S2 = {"id": "S2", "name": None}


def spoken(i: int, speaker, text: str | None = None, **kw) -> dict:
    msg = final(i, text=text, **kw)
    msg["speaker"] = speaker
    return msg


def _accept(state: CaptionState, msg: dict, seq: int) -> None:
    from appliance.bus.schema import caption_message, encode, parse_caption

    m = caption_message(msg, seq)
    assert state.accept(parse_caption(encode(m)))


def test_caption_state_labels_each_change_of_speaker():
    state = CaptionState(rows=4, width=42)
    _accept(state, spoken(1, CHAIR, "Bom dia."), 1)
    _accept(state, spoken(2, CHAIR, "Vamos começar."), 2)
    _accept(state, spoken(3, S2, "Obrigado."), 3)
    _accept(state, spoken(4, None, "Sem orador."), 4)  # unknown speaker: no mark
    _accept(state, spoken(5, S2, "Continuo."), 5)  # same speaker as the last known one: no mark
    assert [r for r, _ in state.rows()] == ["Vamos começar.", "S2: Obrigado.", "Sem orador.", "Continuo."]
    assert [m["turn"] for m in state.finals] == ["Chair", None, "S2", None, None]
    partial = spoken(6, CHAIR, "Eu")
    partial.update(final=False, rev=1)
    _accept(state, partial, 6)
    assert state.rows()[-1] == ("Chair: Eu", True)


def test_caption_state_marks_untranslated_text_before_the_speaker_and_counts_both_in_the_width():
    """An untranslated final (the source text, no translation agreed with it) starts with its language, then the
    speaker's name at a change of speaker, as on the web display; both marks count in the line width."""
    state = CaptionState(rows=4, width=24)
    _accept(state, spoken(1, CHAIR, "Bom dia."), 1)
    _accept(state, {**spoken(2, CHAIR, "Thank you all for coming."), "untranslated": True}, 2)
    _accept(state, {**spoken(3, S2, "Thanks."), "untranslated": True}, 3)
    assert [r for r, _ in state.rows()] == ["Chair: Bom dia.", "[EN] Thank you all for", "coming.",
                                            "[EN] S2: Thanks."]


def test_caption_state_counts_the_speaker_label_in_the_line_width():
    state = CaptionState(rows=4, width=24)
    _accept(state, spoken(1, CHAIR, "Bom dia a todos e bem-vindos à reunião."), 1)
    _accept(state, spoken(2, CHAIR, "Obrigado."), 2)
    assert [r for r, _ in state.rows()] == ["Chair: Bom dia a todos e", "bem-vindos à reunião.", "Obrigado."]
    state = CaptionState(rows=4, width=10)
    _accept(state, spoken(1, {"id": "S4", "name": "Presidente"}, "Bom dia."), 1)
    assert [r for r, _ in state.rows()] == ["Presidente:", "Bom dia."]  # a name as wide as a line
    state = CaptionState(rows=4, width=24)
    _accept(state, spoken(1, {"id": "S5", "name": "Presidente da mesa"}, "Obrigado a todos."), 1)
    assert [r for r, _ in state.rows()] == ["Presidente da mesa:", "Obrigado a todos."]  # no word cut to fit
    _accept(state, spoken(2, CHAIR, "Supercalifragilisticexpialidocious!"), 2)  # longer than a line: cut
    assert [r for r, _ in state.rows()][-2:] == ["Chair: Supercalifragilis", "ticexpialidocious!"]


def test_terminal_display_prints_the_speaker_at_each_change(tmp_path, appliance_cmd):
    broker = start_broker(tmp_path / "broker")
    proc = subprocess.Popen([*appliance_cmd, "display", "--room", "r1", "--lang", "pt", "--broker",
                             f"mqtt://127.0.0.1:{broker.port}", "--plain"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pub = Publisher(BrokerConfig(port=broker.port), room="r1", state_dir=tmp_path, max_backoff_s=1.0)
    try:
        wait_for_stderr_line(proc, "subscribed to room r1 in pt")  # the display subscribes
        pub.start()
        for msg in (spoken(1, CHAIR, "Bom dia."), spoken(2, CHAIR, "Começamos."), spoken(3, S2, "Obrigado."),
                    spoken(4, {"id": "S3", "name": "Del\x1b[2Jegada"}, "Sim.")):
            pub.publish(msg)
        wait_until(lambda: pub.pending == 0, what="finals sent")
        time.sleep(0.5)
    finally:
        pub.stop(timeout=2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        broker.stop()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["Chair: Bom dia.", "Começamos.", "S2: Obrigado.", "Del [2Jegada: Sim."]


def _online_display(browser, stack, options: str):
    """The Portuguese web display of room r1 with `options`, connected and the room online:
    -> (page, page errors, publisher)."""
    broker, pub, base = stack
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/display/?room=r1&lang=pt&{options}&broker=ws://127.0.0.1:{broker.ws_port}")
    pub.start()
    page.wait_for_function("() => document.getElementById('banner').hidden")
    return page, errors, pub


def test_web_display_marks_speakers_with_a_name_and_a_colour(browser, stack, artifacts):
    page, errors, pub = _online_display(browser, stack, "rows=3")
    pub.publish(spoken(1, CHAIR, "Bom dia."))
    pub.publish(spoken(2, CHAIR, "Vamos começar."))
    pub.publish(spoken(3, {"id": "S2", "name": "<b>Quénia</b>"}, "Obrigado."))
    page.wait_for_function("() => window.captionDisplay.finals === 3")
    page.wait_for_function(CAUGHT_UP)  # finals are revealed at reading speed
    assert [r[0] for r in rows(page)] == ["Chair: Bom dia.", "Vamos começar.", "<b>Quénia</b>: Obrigado."]
    labels = page.eval_on_selector_all(".row .speaker", "els => els.map(e => [e.textContent, "
                                       "getComputedStyle(e).color])")
    assert [t for t, _ in labels] == ["Chair: ", "<b>Quénia</b>: "]
    assert labels[0][1] != labels[1][1]  # a colour per speaker
    assert page.query_selector("#captions b") is None  # the name is text, never HTML
    same = page.eval_on_selector_all(".row", "els => els.map(e => getComputedStyle(e).borderLeftColor)")
    assert same[0] == same[1] != same[2]  # the chair's two lines share a colour
    msg = partial(4, 1, text="e agora")
    msg["speaker"] = CHAIR
    pub.publish(msg)
    page.wait_for_function("() => document.querySelector('.row.partial') !== null")
    assert rows(page)[-1] == ["Chair: e agora", True]
    page.screenshot(path=str(artifacts / "display-web-speakers.png"))
    assert not errors
    page.close()


def test_web_display_rolls_speaker_turns_up_with_labels_counted_in_the_width(browser, stack, artifacts):
    """Roll-up with history: each change of speaker starts a line with the name, the name counts in the line
    width, and the history rows keep the label and the speaker's colour."""
    page, errors, pub = _online_display(browser, stack, "rows=2&width=24&history=3")
    pub.publish(spoken(1, CHAIR, "Bom dia a todos e bem-vindos à reunião."))
    pub.publish(spoken(2, S2, "Obrigado pela palavra."))
    pub.publish(spoken(3, None, "Sem orador."))  # unknown speaker: no label, no colour
    pub.publish(spoken(4, S2, "Continuo."))  # the same speaker as the last known one: no label
    pub.publish(spoken(5, CHAIR, "Vamos ao primeiro ponto."))
    page.wait_for_function("() => window.captionDisplay.finals === 5")
    page.wait_for_function(CAUGHT_UP, timeout=30_000)
    assert [r[0] for r in rows(page)] == ["Chair: Vamos ao primeiro", "ponto."]  # 7 + 17 = 24 characters
    assert page.eval_on_selector_all(".row", "els => els.map(e => e.className)") == ["row sp1", "row sp1"]
    hist = page.eval_on_selector_all("#history .hist", "els => els.map(e => [e.textContent, e.className])")
    assert hist == [["S2: Obrigado pela", "hist age-3 sp2"], ["palavra.", "hist age-3 sp2"],
                    ["Sem orador.", "hist age-2"], ["Continuo.", "hist age-1 sp2"]]
    assert page.eval_on_selector_all("#history .speaker", "els => els.map(e => e.textContent)") == ["S2: "]
    colours = page.eval_on_selector_all("#history .hist, .row", "els => els.map(e => "
                                        "getComputedStyle(e).borderLeftColor)")
    assert colours[0] == colours[1] == colours[3] != colours[4] == colours[5]  # one colour per speaker
    pub.publish(spoken(6, {"id": "S5", "name": "Presidente da mesa"}, "Obrigado a todos."))
    pub.publish(spoken(7, CHAIR, "Supercalifragilisticexpialidocious!"))
    page.wait_for_function("() => window.captionDisplay.finals === 7")
    page.wait_for_function(CAUGHT_UP, timeout=30_000)
    lines = page.evaluate("window.captionDisplay.lines.map(l => (l.label ? l.label + ': ' : '') + l.text)")
    assert lines[:2] == ["Chair: Bom dia a todos e", "bem-vindos à reunião."]
    assert lines[-4:] == ["Presidente da mesa: ", "Obrigado a todos.",  # no word cut to fit after a name
                          "Chair: Supercalifragilis", "ticexpialidocious!"]  # longer than a line: cut
    assert max(len(x) for x in lines) <= 24
    page.screenshot(path=str(artifacts / "display-web-speakers-roll-up.png"))
    assert not errors
    page.close()
