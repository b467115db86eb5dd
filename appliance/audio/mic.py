"""Microphone capture through PortAudio (pyaudio), resilient to the device going away and coming back.

PortAudio calls `_on_audio` on its own thread; it only puts raw bytes into a bounded queue (dropping the oldest,
with a counter, when the consumer is behind), so capture never waits on the pipeline. A supervisor thread owns the
PortAudio objects: it notices a lost device (the stream stops, or no audio arrives for `stall_timeout_s`),
reports it (log, `state`, `on_state`), closes what is left and re-opens the device by the same index or name every
`reopen_interval_s` until it is back, without restarting the process. Conversion to 16 kHz mono happens on the
consumer's side.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from appliance.audio.base import SR, AudioError, AudioSource
from appliance.audio.convert import StreamResampler, pcm16_to_float
from appliance.events import AudioChunk

log = logging.getLogger(__name__)

FRAMES_PER_BUFFER = 512
QUEUE_SECONDS = 10.0  # raw audio kept for a slow consumer before the oldest is dropped
STALL_TIMEOUT_S = 2.0  # no audio for this long from an open stream means the device is lost
FIRST_AUDIO_GRACE_S = 3.0  # extra time a freshly opened stream gets to deliver its first audio
CLOSE_TIMEOUT_S = 5.0  # a driver that does not close in this time is abandoned (logged)


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: float
    host_api: str = ""
    is_default: bool = False


def _describe(devices: Sequence[InputDevice]) -> str:
    return ", ".join(f"{d.index} '{d.name}'" for d in devices) or "none"


def pick_device(devices: Sequence[InputDevice], spec: int | str | None) -> InputDevice:
    """The device `spec` names: None -> the default (else the first), an index, or an exact / partial name.

    Raises AudioError listing the available input devices when nothing matches.
    """
    if not devices:
        raise AudioError("no audio input device found (connect a microphone, or caption a file with audio.input_file)")
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return next((d for d in devices if d.is_default), devices[0])
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        for d in devices:
            if d.index == index:
                return d
        raise AudioError(f"no audio input device with index {index}; input devices: {_describe(devices)}")
    want = spec.strip().casefold()
    exact = [d for d in devices if d.name.casefold() == want]
    partial = [d for d in devices if want in d.name.casefold()]
    if exact or partial:
        return (exact or partial)[0]
    raise AudioError(f"no audio input device named '{spec}'; input devices: {_describe(devices)}")


_quiet = False
_handler = None  # keeps the ctypes callback alive
_jack_handler = None


def _quiet_alsa() -> None:
    """Send ALSA's own error printing (device probing noise on stderr) to our debug log instead."""
    global _quiet, _handler
    if _quiet:
        return
    _quiet = True
    try:
        import ctypes

        lib = ctypes.CDLL("libasound.so.2")
        proto = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
        _handler = proto(lambda file, line, fn, err, fmt: None)
        lib.snd_lib_error_set_handler(_handler)
    except (OSError, AttributeError):
        pass  # not ALSA (or no libasound): nothing to quieten
    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # PortAudio probes JACK; never start a server for it
    try:
        import ctypes

        jack = ctypes.CDLL("libjack.so.0")
        global _jack_handler
        _jack_handler = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(lambda msg: None)
        jack.jack_set_error_function(_jack_handler)
        jack.jack_set_info_function(_jack_handler)
    except (OSError, AttributeError):
        pass  # no JACK library: nothing to quieten


def _pyaudio():
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioError(f"PortAudio is not available ({exc}): "
                         "apt-get install libportaudio2 and pip install pyaudio") from None
    _quiet_alsa()
    return pyaudio


def _input_devices(pa) -> list[InputDevice]:
    try:
        default = pa.get_default_input_device_info()["index"]
    except (IOError, OSError):
        default = None
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) > 0:
            api = pa.get_host_api_info_by_index(info["hostApi"]).get("name", "")
            out.append(InputDevice(i, str(info["name"]), int(info["maxInputChannels"]),
                                   float(info["defaultSampleRate"]), str(api), i == default))
    return out


def list_input_devices() -> list[InputDevice]:
    """The input devices PortAudio sees now (a fresh scan)."""
    pyaudio = _pyaudio()
    pa = pyaudio.PyAudio()
    try:
        return _input_devices(pa)
    finally:
        pa.terminate()


class _Stream:
    """One opened PortAudio input stream (owned by the supervisor thread)."""

    def __init__(self, spec: int | str | None, frames: int, sink: Callable[[bytes, float, "_Stream"], None]):
        pyaudio = _pyaudio()
        self.pa = pyaudio.PyAudio()
        self.last_data = time.monotonic() + FIRST_AUDIO_GRACE_S  # the stall clock starts after a grace period
        self._sink = sink
        self.stream = None
        try:
            self.device = pick_device(_input_devices(self.pa), spec)
            self.channels, self.rate = self._format(pyaudio)
            self.stream = self.pa.open(rate=self.rate, channels=self.channels, format=pyaudio.paInt16, input=True,
                                       input_device_index=self.device.index, frames_per_buffer=frames,
                                       stream_callback=self._on_audio)
        except AudioError:
            self.pa.terminate()
            raise
        except Exception as exc:
            self.pa.terminate()
            raise AudioError(f"cannot open audio input '{spec}': {exc}") from None

    def _format(self, pyaudio) -> tuple[int, int]:
        """(channels, rate): mono if the device allows it, 16 kHz if it allows it, else its default rate."""
        dev = self.device
        for channels in dict.fromkeys((1, min(2, dev.channels), dev.channels)):
            for rate in dict.fromkeys((SR, int(dev.default_rate))):
                try:
                    if self.pa.is_format_supported(rate, input_device=dev.index, input_channels=channels,
                                                   input_format=pyaudio.paInt16):
                        return channels, rate
                except ValueError:
                    continue
        raise AudioError(f"audio input '{dev.name}' supports neither 16000 Hz nor its default rate "
                         f"{dev.default_rate:.0f} Hz in 16-bit")

    def _on_audio(self, data, frames, time_info, status):  # PortAudio's thread: be quick, never block
        now = time.monotonic()
        self.last_data = now
        try:
            self._sink(data, now - frames / self.rate, self)
        except Exception:  # an exception here would stop PortAudio's stream: log it and keep capturing
            log.exception("audio capture callback failed")
        return None, 0  # paContinue

    def healthy(self, stall_timeout_s: float) -> str:
        """'' while audio flows, else why the device counts as lost."""
        try:
            if not self.stream.is_active():
                return "the audio stream stopped"
        except (IOError, OSError) as exc:
            return f"the audio stream failed: {exc}"
        silent = time.monotonic() - self.last_data
        return f"no audio for {silent:.1f} s" if silent > stall_timeout_s else ""

    def close(self) -> None:
        try:
            if self.stream is not None:
                self.stream.close()
        except Exception as exc:
            log.debug("closing the audio stream: %s", exc)
        finally:
            self.pa.terminate()


class MicrophoneSource(AudioSource):
    """Live capture from a PortAudio input device (index, part of its name, or None for the default).

    `state` is "open", "lost" (waiting for the device to come back) or "closed"; `on_state(state, detail)` is
    called on each change. `dropped_chunks` counts raw buffers dropped because the consumer was behind.
    Raises AudioError at construction when the device cannot be found or opened.
    """

    def __init__(self, device: int | str | None = None, *, reopen_interval_s: float = 2.0,
                 on_state: Callable[[str, str], None] | None = None, queue_seconds: float = QUEUE_SECONDS,
                 stall_timeout_s: float = STALL_TIMEOUT_S, frames_per_buffer: int = FRAMES_PER_BUFFER):
        self.spec = device
        self.reopen_interval_s = float(reopen_interval_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.frames = int(frames_per_buffer)
        self.on_state = on_state
        self.state = "opening"
        self.detail = ""
        self.dropped_chunks = 0
        self.reopens = 0
        self._closed = threading.Event()
        self.queue_seconds = float(queue_seconds)
        self._q: queue.Queue = queue.Queue(maxsize=self._queue_size(SR))
        self._stream = _Stream(device, self.frames, self._put)  # raises AudioError: clear at start
        self._q.maxsize = self._queue_size(self._stream.rate)
        self._set_state("open", self._stream.device.name)
        self._supervisor = threading.Thread(target=self._supervise, name="mic-supervisor", daemon=True)
        self._supervisor.start()

    @property
    def device_name(self) -> str:
        s = self._stream
        return s.device.name if s is not None else ""

    @property
    def rate(self) -> int:
        """The rate the device is captured at (before conversion to 16 kHz)."""
        s = self._stream
        return s.rate if s is not None else 0

    def _queue_size(self, rate: int) -> int:
        return max(4, int(self.queue_seconds * rate / self.frames))

    # ---- capture side ---------------------------------------------------------------------------------------
    def _put(self, data: bytes, t: float, stream: _Stream) -> None:
        item = (stream, data, t)
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped_chunks += 1
                except queue.Empty:
                    pass

    # ---- supervisor -----------------------------------------------------------------------------------------
    def _set_state(self, state: str, detail: str = "") -> None:
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:
                log.exception("microphone state callback failed")

    def _supervise(self) -> None:
        last_error = ""
        while not self._closed.wait(0.2):
            stream = self._stream
            if stream is not None:
                why = stream.healthy(self.stall_timeout_s)
                if not why:
                    continue
                log.warning("microphone '%s' lost (%s); trying to re-open it every %g s", stream.device.name, why,
                            self.reopen_interval_s)
                self._stream = None
                self._set_state("lost", f"{stream.device.name}: {why}")
                self._close_stream(stream)
                continue
            try:
                stream = _Stream(self.spec, self.frames, self._put)
            except Exception as exc:  # AudioError, or PortAudio failing to initialise: keep trying
                if str(exc) != last_error:
                    log.info("microphone not back yet: %s", exc)
                    last_error = str(exc)
                self._closed.wait(self.reopen_interval_s)
                continue
            if self._closed.is_set():
                stream.close()
                return
            last_error = ""
            self.reopens += 1
            self._q.maxsize = self._queue_size(stream.rate)
            self._stream = stream
            log.info("microphone '%s' is back (%d Hz, %d ch)", stream.device.name, stream.rate, stream.channels)
            self._set_state("open", stream.device.name)

    def _close_stream(self, stream: _Stream) -> None:
        """Close in a helper thread: a driver stuck in a read must not stop the supervisor for ever."""
        t = threading.Thread(target=stream.close, name="mic-close", daemon=True)
        t.start()
        t.join(CLOSE_TIMEOUT_S)
        if t.is_alive():
            log.error("the lost audio device did not close within %.0f s; PortAudio may not see it come back",
                      CLOSE_TIMEOUT_S)

    # ---- consumer side --------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[AudioChunk]:
        current, convert = None, None
        while not self._closed.is_set():
            try:
                stream, data, t = self._q.get(timeout=0.1)
            except queue.Empty:
                continue
            if stream is not current:
                current, convert = stream, StreamResampler(stream.rate)
            samples = convert(pcm16_to_float(data, stream.channels))
            if len(samples):
                yield AudioChunk(samples, t)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._supervisor.is_alive() and self._supervisor is not threading.current_thread():
            self._supervisor.join(self.reopen_interval_s + CLOSE_TIMEOUT_S + 1)
        stream, self._stream = self._stream, None
        if stream is not None:
            self._close_stream(stream)
        self._set_state("closed")
