"""Audio capture as a service: the room microphone (or an input file) read on a thread of its own, each chunk
handed to the pipeline, the enrolment tap and the input level meter.

A missing microphone is retried until it appears while the rest of the appliance keeps running (with `--once` it
is an error). A capture that ended on an error is a problem, and the supervisor restarts it; a file that simply
ended is not.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.services.base import Context, Service, one_line
from appliance.speakers.recorder import MicrophoneTap

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample-en.flac"


class CaptureService(Service):
    name = "capture"
    sections = ("audio",)
    stop_timeout_s = 5.0
    restart_on_problem = True

    def __init__(self, ctx: Context, feed: Callable[[np.ndarray], None]):
        """feed: takes each chunk of 16 kHz samples (the pipeline)."""
        self.ctx = ctx
        self.feed = feed
        self.tap = MicrophoneTap()  # enrolment records from the capture already running (no second stream)
        self.replay_speed = 1.0  # an input file plays this many times faster than real time (a soak test's hours)
        self.source = None
        self.done = threading.Event()  # the input ended (a file played to its end, or an error)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error = ""  # why the capture thread ended, when it ended on an error
        self._devices_seen: list = []  # input devices listed before capture started (for the panel)

    def start(self) -> None:
        """Open the input and start the capture thread; a missing microphone is retried until it appears."""
        from appliance.audio import AudioError

        cfg = self.ctx.cfg
        try:
            self.source = self._open()
        except AudioError as exc:
            device = f" {cfg.audio.device!r}" if cfg.audio.device is not None else ""
            message = f"microphone{device}: {exc}"
            if self.ctx.opts.once:
                raise AudioError(message) from None
            log.error("%s; retrying every %.0f s (the rest of the appliance keeps running)", message,
                      cfg.audio.reopen_interval_s)
            self.ctx.status.set_mic_state("missing", message)
            self._thread = threading.Thread(target=self._wait_for_microphone, name="capture-retry", daemon=True)
            self._thread.start()
            return
        self._thread = threading.Thread(target=self._loop, args=(self.source,), name="capture", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self.source is not None:
            self.source.close()
        if self._thread is not None:
            self._thread.join(timeout)
        self.source = None
        self.done.clear()
        self._stop.clear()

    def problem(self) -> str | None:
        thread = self._thread
        if thread is not None and not thread.is_alive() and self._error:
            return f"stopped: {self._error}"
        return None

    def list_devices(self) -> list:
        """For the panel: a fresh PortAudio scan only while no microphone is capturing; during capture, the list
        taken when it started (a second PortAudio instance beside a live stream can disturb it)."""
        from appliance.audio import MicrophoneSource, list_input_devices

        if isinstance(self.source, MicrophoneSource) and self._thread is not None and self._thread.is_alive():
            return list(self._devices_seen)
        self._devices_seen = list(list_input_devices())
        return list(self._devices_seen)

    def _open(self):
        from appliance.audio import FileSource, MicrophoneSource, list_input_devices

        cfg, opts = self.ctx.cfg, self.ctx.opts
        path = opts.input_file or (Path(cfg.audio.input_file) if cfg.audio.input_file else None)
        if path is None and opts.use_sample_without_mic and not list_input_devices():
            log.info("no microphone found: captioning the bundled sample %s", SAMPLE.name)
            path = SAMPLE
        if path is not None:
            self.ctx.status.set_mic_state(f"file {path.name}")
            return FileSource(path, realtime=True, speed=self.replay_speed)
        try:  # the panel shows this list while the microphone is open (no second PortAudio scan then)
            self._devices_seen = list(list_input_devices())
        except Exception as exc:
            log.debug("listing input devices failed: %s", exc)
        return MicrophoneSource(cfg.audio.device, reopen_interval_s=cfg.audio.reopen_interval_s,
                                on_state=self.ctx.status.set_mic_state)

    def _wait_for_microphone(self) -> None:
        from appliance.audio import AudioError

        while not self._stop.wait(self.ctx.cfg.audio.reopen_interval_s):
            try:
                self.source = self._open()
            except AudioError:
                continue
            log.info("microphone found: capturing")
            self._loop(self.source)
            return

    def _loop(self, source) -> None:
        self._error = ""
        try:
            for chunk in source:
                self.feed(chunk.samples)
                self.tap.feed(chunk.samples)
                self.ctx.status.set_input_level(chunk.samples)
                if self._stop.is_set():
                    break
        except Exception as exc:
            log.error("capture stopped: %s", exc)
            self.ctx.status.warn(f"capture: {exc}")
            self._error = one_line(exc)
        finally:
            self.done.set()
