"""The panel's microphone list while the daemon captures: no second PortAudio instance beside a live stream
(real PortAudio on the PulseAudio virtual microphone of test_audio_mic)."""

from __future__ import annotations

import appliance.audio as audio_mod
from appliance.config import Config
from appliance.daemon import RunOptions, Supervisor
from test_audio_mic import NAME, speech, virtual_mic  # noqa: F401 (fixtures)
from test_bus_support import wait_until


def test_device_list_is_not_rescanned_while_the_microphone_captures(virtual_mic, tmp_path, monkeypatch):  # noqa: F811
    sup = Supervisor(Config(audio={"device": NAME}, state_dir=str(tmp_path / "state")),
                     RunOptions(config_path=None, models_dir=tmp_path))
    sup.capture.start()
    try:
        wait_until(lambda: sup.status.input_level()["level"] is not None, 20, "captured audio")
        scans = []
        real = audio_mod.list_input_devices
        monkeypatch.setattr(audio_mod, "list_input_devices", lambda: scans.append(1) or real())
        listed = sup.capture.list_devices()
        assert scans == []  # the list taken before capture started, no PortAudio scan now
        assert any(NAME in d.name for d in listed)
    finally:
        sup.capture.stop(5)
    assert any(NAME in d.name for d in sup.capture.list_devices())
    assert scans == [1]  # capture stopped: a fresh scan
