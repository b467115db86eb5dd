"""Microphone capture through real PortAudio (ALSA host API) from a virtual input device set up by the test.

The device: a PulseAudio daemon started by the test in a temporary HOME, with a null sink "room"; the test's
~/.asoundrc defines the ALSA PCM `appliance_test_mic` (alsa-plugins' pulse plugin) on the sink's monitor, so
PortAudio lists it like any microphone. `pacat` plays espeak-ng speech into the sink at real-time speed.
"Unplugging" stops the daemon (the open stream fails and the PCM can no longer be opened, so PortAudio no longer
lists it); "plugging in" starts it again.
Needs: pulseaudio, pulseaudio-utils, libasound2-plugins (scripts/setup --test installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.audio import AudioError, InputDevice, MicrophoneSource, list_input_devices, load_audio, pick_device

SR = 16000
NAME = "appliance_test_mic"
DEFAULT_PA = """load-module module-null-sink sink_name=room rate=48000 channels=2
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
"""
ASOUNDRC = """pcm.{name} {{
    type pulse
    device "room.monitor"
    hint {{ show on description "Appliance test microphone (PulseAudio null sink monitor)" }}
}}
"""


def _need(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install pulseaudio pulseaudio-utils "
                    "libasound2-plugins espeak-ng (scripts/setup --test does it)")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 6 s of espeak-ng speech with pauses, then 0.5 s of silence, as 16 kHz float32."""
    _need("espeak-ng")
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav),
                    "Good morning everyone. Let us begin the weekly meeting. First, the budget report."], check=True)
    return np.concatenate([load_audio(wav), np.zeros(SR // 2, np.float32)])


class VirtualMic:
    """A PulseAudio null sink whose monitor is an ALSA PCM; speech is played into it in a loop."""

    def __init__(self, home: Path, speech: np.ndarray):
        self.home = home
        self.pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
        self.socket = home / "pulse.socket"
        self.env = dict(os.environ)
        self.daemon: subprocess.Popen | None = None
        self.player: subprocess.Popen | None = None
        self._feeder: threading.Thread | None = None
        (home / "default.pa").write_text(DEFAULT_PA.format(socket=self.socket))
        (home / ".asoundrc").write_text(ASOUNDRC.format(name=NAME))

    def plug(self) -> None:
        self.daemon = subprocess.Popen(
            ["pulseaudio", "-n", "-F", str(self.home / "default.pa"), "--daemonize=no", "--exit-idle-time=-1",
             "--use-pid-file=no", "--log-target=file:" + str(self.home / "pulseaudio.log")],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=self.env, capture_output=True).returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                log = (self.home / "pulseaudio.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"the test's PulseAudio daemon did not start:\n{log}")
            time.sleep(0.1)
        self.player = subprocess.Popen(["pacat", "--playback", "-d", "room", "--format=s16le", "--rate=16000",
                                        "--channels=1", "--latency-msec=40"], env=self.env, stdin=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        self._feeder = threading.Thread(target=self._feed, args=(self.player,), daemon=True)
        self._feeder.start()

    def _feed(self, player: subprocess.Popen) -> None:
        try:
            while player.poll() is None:
                player.stdin.write(self.pcm)  # pacat plays in real time, so this blocks: real-time pacing
        except (BrokenPipeError, ValueError, OSError):
            pass

    def unplug(self) -> None:
        for proc in (self.player, self.daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._feeder is not None:
            self._feeder.join(5)
        self.player = self.daemon = None


@pytest.fixture
def virtual_mic(tmp_path, monkeypatch, speech):
    _need("pulseaudio", "pactl", "pacat")
    home = tmp_path / "home"
    (home / "config" / "pulse").mkdir(parents=True)
    (home / "runtime").mkdir(mode=0o700)
    (home / "config" / "pulse" / "client.conf").write_text("autospawn = no\n")
    monkeypatch.setenv("HOME", str(home))  # alsa-lib reads ~/.asoundrc at each PortAudio initialisation
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "runtime"))
    monkeypatch.setenv("PULSE_SERVER", f"unix:{home / 'pulse.socket'}")
    mic = VirtualMic(home, speech)
    mic.plug()
    yield mic
    mic.unplug()


def envelope(x: np.ndarray, frame: int = SR // 50) -> np.ndarray:
    x = x.astype(np.float32)
    n = len(x) // frame
    return np.log10(np.mean(x[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-8)


def best_correlation(captured: np.ndarray, source: np.ndarray) -> float:
    """Highest Pearson correlation of the captured energy envelope with the (looped) source's, over all lags."""
    cap = envelope(captured)
    src = envelope(np.concatenate([source] * (len(captured) // len(source) + 2)))
    best = -1.0
    for lag in range(len(src) - len(cap) + 1):
        best = max(best, float(np.corrcoef(cap, src[lag:lag + len(cap)])[0, 1]))
    return best


def capture(source: MicrophoneSource, seconds: float, timeout: float = 20.0) -> np.ndarray:
    got, n, t0 = [], 0, time.monotonic()
    for chunk in source:
        assert chunk.samples.dtype == np.float32
        got.append(chunk.samples)
        n += len(chunk.samples)
        if n >= seconds * SR or time.monotonic() - t0 > timeout:
            break
    return np.concatenate(got) if got else np.zeros(0, np.float32)


def test_virtual_device_is_listed(virtual_mic):
    names = [d.name for d in list_input_devices()]
    assert NAME in names


def test_captured_audio_is_the_speech(virtual_mic, speech):
    states = []
    with MicrophoneSource("test_mic", on_state=lambda s, d: states.append((s, d))) as mic:
        assert mic.device_name == NAME and mic.rate == SR
        t0 = time.monotonic()
        audio = capture(mic, 4.0)
        elapsed = time.monotonic() - t0
    assert len(audio) >= 4 * SR
    assert elapsed > 2.0, "a real-time device cannot deliver 4 s of audio at once"
    assert best_correlation(audio[SR // 2:], speech) > 0.9
    assert states[0] == ("open", NAME) and states[-1][0] == "closed"


def test_unknown_device_error_lists_the_devices(virtual_mic):
    with pytest.raises(AudioError, match=rf"no audio input device named 'no-such-mic'; input devices: .*'{NAME}'"):
        MicrophoneSource("no-such-mic")


def test_slow_consumer_drops_oldest_with_a_counter(virtual_mic):
    with MicrophoneSource(NAME, queue_seconds=0.5) as mic:
        time.sleep(2.5)  # nobody reads: capture must go on, dropping the oldest audio
        assert mic.dropped_chunks > 0
        assert mic.state == "open"
        kept = capture(mic, 0.3)
    assert len(kept) >= 0.3 * SR


def test_lost_device_is_reported_and_reopened(virtual_mic, speech):
    states = []
    mic = MicrophoneSource(NAME, reopen_interval_s=0.5, on_state=lambda s, d: states.append((s, d)))
    try:
        assert best_correlation(capture(mic, 3.0)[-2 * SR:], speech) > 0.9
        virtual_mic.unplug()  # the device disappears while it is being captured
        deadline = time.monotonic() + 10
        while mic.state != "lost" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mic.state == "lost" and NAME in mic.detail
        time.sleep(1.5)
        assert mic.state == "lost", "re-opened a device that is not there"
        assert NAME not in [d.name for d in list_input_devices()]
        virtual_mic.plug()  # it comes back
        deadline = time.monotonic() + 15
        while mic.state != "open" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mic.state == "open" and mic.reopens == 1
        audio = capture(mic, 3.0)  # the same iterator goes on: no new source, no restart
        assert best_correlation(audio[-2 * SR:], speech) > 0.9
    finally:
        mic.close()
    assert [s for s, _ in states] == ["open", "lost", "open", "closed"]


def test_stalled_device_counts_as_lost(virtual_mic):
    """A device that stays open but stops delivering audio (a hung driver) is reported and re-opened."""
    mic = MicrophoneSource(NAME, reopen_interval_s=0.5, stall_timeout_s=1.0)
    try:
        assert len(capture(mic, 0.5)) >= SR // 2
        os.kill(virtual_mic.daemon.pid, 19)  # SIGSTOP: the server freezes, the stream stays open and silent
        try:
            deadline = time.monotonic() + 10
            while mic.state != "lost" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mic.state == "lost" and "no audio for" in mic.detail
        finally:
            os.kill(virtual_mic.daemon.pid, 18)  # SIGCONT
        deadline = time.monotonic() + 15
        while mic.state != "open" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mic.state == "open"
        assert len(capture(mic, 1.0)) >= SR
    finally:
        mic.close()


PICK = [
    (None, 1), ("", 1), (0, 0), ("2", 2), ("USB", 2), ("usb audio", 2), ("Built-in Microphone", 0), ("micro", 0),
]
DEVICES = [InputDevice(0, "Built-in Microphone", 2, 48000.0), InputDevice(1, "default", 32, 44100.0, is_default=True),
           InputDevice(2, "USB Audio Device: hw:1,0", 1, 16000.0), InputDevice(3, "Another USB Audio", 1, 48000.0)]


@pytest.mark.parametrize("spec,index", PICK)
def test_pick_device(spec, index):
    assert pick_device(DEVICES, spec).index == index


@pytest.mark.parametrize("spec,message", [
    (7, "no audio input device with index 7; input devices: 0 'Built-in Microphone', 1 'default'"),
    ("webcam", "no audio input device named 'webcam'; input devices: 0 'Built-in"),
])
def test_pick_device_errors(spec, message):
    with pytest.raises(AudioError, match=message.replace("(", r"\(")):
        pick_device(DEVICES, spec)


def test_pick_device_none_available():
    with pytest.raises(AudioError, match="no audio input device found"):
        pick_device([], None)
