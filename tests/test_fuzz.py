"""Fuzzing with hypothesis: the panel's forms and /api/config, the config loader, and audio files.

Each surface gets at least 1,000 generated inputs (FUZZ_EXAMPLES). Required: no crash (only the documented error
type escapes), no 5xx from the panel, no stack trace shown to a user (panel pages, API bodies, CLI output).
Runs are derandomized so CI is reproducible; a failure prints the smallest input that shows it.
"""

from __future__ import annotations

import json
import re
import struct
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from appliance import cli
from appliance import config as cfgmod
from appliance.audio import AudioError, load_audio
from appliance.audio.file import FileSource
from appliance.panel import views
from test_panel_app import Panel

FUZZ_EXAMPLES = 1000
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
TRACE = re.compile(r'Traceback \(most recent call last\)|File "[^"]+", line \d+')

# ---- strategies ---------------------------------------------------------------------------------------------
KEYS = [key for key, _, _ in cfgmod.reference()]
odd_text = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "auto", "en", "pt,en", "0", "-1", "1e309", "nan",
                                                            "true", "null", "room1", "../../etc/passwd", "\x00",
                                                            "<script>alert(1)</script>", "9" * 40, "é" * 300]))
scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=True, allow_infinity=True), odd_text)
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(odd_text, inner, max_size=4)), max_leaves=8)


@st.composite
def config_data(draw):
    """Mostly real keys with odd values (so validation goes deep), sometimes unknown keys or wrong shapes."""
    data: dict = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=8)):
        section, _, name = key.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        if isinstance(target, dict):
            target[name] = draw(json_value)
    if draw(st.booleans()):
        data[draw(odd_text)] = draw(json_value)
    if draw(st.integers(0, 9)) == 0:
        section = draw(st.sampled_from(list(cfgmod.Config.model_fields)))
        data[section] = draw(json_value)  # a section that is not an object
    return data


FORM_FIELDS = {
    "/": views.ROOM_FIELDS + ["languages.source", "languages.targets", "languages.targets_other"],
    "/microphone": views.MIC_FIELDS + views.VAD_FIELDS + ["audio.device", "audio.device_other"],
    "/broker": views.BROKER_FIELDS + views.BROKER_MORE + ["broker.password", "broker.password_clear"],
    "/models": views.ASR_FIELDS + views.ACCEL_FIELDS + ["asr.model"],
}


@st.composite
def form_post(draw):
    page = draw(st.sampled_from(sorted(FORM_FIELDS)))
    names = draw(st.lists(st.sampled_from(FORM_FIELDS[page] + ["x", "csrf_token", ""]), max_size=10))
    return page, [(n, draw(odd_text)) for n in names]


# ---- the panel ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    return Panel(tmp_path_factory.mktemp("fuzz-panel")).setup_and_login()


def _shown_safely(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert not TRACE.search(r.text), r.text[:1000]


def test_fuzz_panel_forms(panel):
    token = panel.token("/")

    @FUZZ
    @given(form_post())
    def check(post):
        page, fields = post
        data = [(k, v) for k, v in fields if k != "csrf_token"] + [("csrf_token", token)]
        r = panel.client.post(page, data=MultiDict(data))
        _shown_safely(r)
        cfgmod.load(panel.config_path)  # whatever was accepted, the file on disk is still a valid config

    check()


def test_fuzz_api_config(panel):
    headers = {"X-CSRF-Token": panel.token("/")}

    @FUZZ
    @given(st.sampled_from(["PUT", "PATCH"]), st.one_of(config_data(), json_value),
           st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
    def check(method, body, ctype):
        try:
            raw = json.dumps(body, allow_nan=True)
        except (ValueError, TypeError):
            raw = str(body)
        r = panel.client.open("/api/config", method=method, data=raw, headers=headers, content_type=ctype)
        _shown_safely(r)
        assert r.is_json, r.text[:300]
        if r.status_code == 400:
            assert r.get_json()["error"]
        cfgmod.load(panel.config_path)

    check()
    assert panel.client.get("/api/config").status_code == 200


# ---- the config loader --------------------------------------------------------------------------------------
def test_fuzz_config_loader(tmp_path, capsys):
    path = tmp_path / "config.json"

    @FUZZ
    @given(st.one_of(config_data().map(lambda d: json.dumps(d, allow_nan=True).encode()),
                     json_value.map(lambda d: json.dumps(d, allow_nan=True).encode()),
                     st.binary(max_size=300),
                     config_data().map(lambda d: json.dumps(d).encode()).flatmap(
                         lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n]))))  # truncated files
    def check(raw):
        path.write_bytes(raw)
        try:
            cfgmod.load(path)
        except cfgmod.ConfigError as exc:
            assert str(exc).startswith(str(path))
        code = cli.main(["config", "validate", str(path)])
        out = capsys.readouterr()
        assert code in (0, 2)
        assert not TRACE.search(out.out + out.err)
        if code == 2:
            assert out.err.startswith("appliance: error: ")

    check()


# ---- audio files --------------------------------------------------------------------------------------------
def _wav_bytes(rate: int, channels: int, width: int, frames: int, seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.random.default_rng(seed).integers(0, 256, frames * channels * width, dtype=np.uint8).tobytes())
    return buf.getvalue()


def _float_wav(values: list[float], rate: int) -> bytes:
    """IEEE-float WAV (format 3), which can hold NaN and infinities."""
    data = struct.pack(f"<{len(values)}f", *values)
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt))
            + fmt + b"data" + struct.pack("<I", len(data)) + data)


@st.composite
def audio_file(draw):
    kind = draw(st.sampled_from(["wav", "float", "truncated", "garbage", "header"]))
    rate = draw(st.sampled_from([1, 8, 100, 4000, 8000, 11025, 16000, 22050, 44100, 48000, 96000, 192000]))
    if kind == "float":
        values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=400))
        return _float_wav(values, rate)
    if kind == "garbage":
        return draw(st.binary(max_size=2000))
    raw = _wav_bytes(rate, draw(st.integers(1, 8)), draw(st.integers(1, 4)), draw(st.integers(0, 3000)),
                     draw(st.integers(0, 2**32 - 1)))
    if kind == "truncated":
        return raw[:draw(st.integers(0, len(raw)))]
    if kind == "header":  # a valid header whose sizes lie
        return raw[:4] + struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + raw[8:40] + struct.pack(
            "<I", draw(st.integers(0, 2**32 - 1))) + raw[44:]
    return raw


def test_fuzz_audio_files(tmp_path):
    path = tmp_path / "input.wav"

    @FUZZ
    @given(audio_file())
    def check(raw):
        path.write_bytes(raw)
        try:
            audio = load_audio(path)
        except AudioError as exc:
            assert str(path) in str(exc)
            return
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.isfinite(audio).all()  # NaN or infinity never reaches the models
        chunks = [c.samples for c in FileSource(path, realtime=False)]
        assert all(c.dtype == np.float32 and np.isfinite(c).all() for c in chunks)

    check()
