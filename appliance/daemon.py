"""The supervisor: starts the stages (broker, publisher, models + pipeline, capture, panel), keeps them alive,
applies config changes by restarting only the stage that changed, and shuts down cleanly on SIGTERM.

Stage order follows the data: capture -> pipeline -> publisher. Each stage is built by one function
here from the config; the stages themselves know nothing of each other.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from appliance import __version__, notify
from appliance.config import Config, ConfigError
from appliance.engines import Engines, check_languages, load_engines, mt_pairs
from appliance.pipeline import Pipeline
from appliance.runner import make_pipeline
from appliance.speakers.recorder import MicrophoneTap
from appliance.status import Status

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).resolve().parent / "data" / "sample-en.flac"


@dataclass
class RunOptions:
    config_path: Path | None
    models_dir: Path
    once: bool = False
    input_file: Path | None = None
    use_sample_without_mic: bool = False


def _lan_host() -> str:
    """This machine's address on the room network (the route to a LAN peer), for the URLs in the log."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()


class Supervisor:
    def __init__(self, cfg: Config, opts: RunOptions):
        self.cfg = cfg
        self.opts = opts
        self.status = Status()
        self.on_started: Callable[[], object] | None = None  # e.g. the demo's display subscribers
        self._attached: list = []  # what on_started returned: stopped first at shutdown
        self.engines: Engines | None = None
        self.pipeline: Pipeline | None = None
        self.speakers = None  # the room's SpeakerTracker (None: speaker turns off); kept across pipeline restarts
        self.mic_tap = MicrophoneTap()  # enrolment records from the capture already running (no second stream)
        self.publisher = None
        self.broker = None
        self.capture = None
        self.panel = None
        self.display_server = None
        self.archive = None  # appliance.archive.Archive while meetings are recorded
        self._capture_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._input_done = threading.Event()
        self._capture_stop = threading.Event()
        self._lock = threading.RLock()  # serialises config changes
        self._sink_lock = threading.Lock()
        self._held: list = []  # finals produced while the publisher is being replaced

    # ---- stages ---------------------------------------------------------------------------------------------
    @property
    def access(self):
        """Who may use the room broker (the appliance's login, the display user), from the current config."""
        from appliance.bus.access import BrokerAccess

        return BrokerAccess(self.cfg)

    @property
    def credentials(self):
        """The broker passwords (0600 in the state folder): appliance + one read-only display user per room."""
        return self.access.store

    def start_broker(self) -> None:
        if self.cfg.broker.mode != "embedded":
            return
        from appliance.bus.broker import EmbeddedBroker

        b = self.cfg.broker
        self.broker = EmbeddedBroker(host="127.0.0.1", port=b.port, ws_port=b.ws_port, ws_host=b.ws_host,
                                     state_dir=Path(self.cfg.state_dir) / "broker", users=self.access.broker_users())
        self.broker.start()
        log.info("embedded broker: MQTT on 127.0.0.1:%d, WebSocket on %s:%d (closed: display user %s reads room %s)",
                 b.port, b.ws_host or "*", b.ws_port, self.access.display().username,
                 self.cfg.room.id)

    def rotate_display_password(self) -> str:
        """A new read-only password for this room's displays. The embedded broker restarts, which ends every
        connection made with the old password (mosquitto would keep them on a reload); the publisher reconnects
        by itself (finals wait in its on-disk queue) and displays fetch the new password from the display server."""
        with self._lock:
            cred = self.credentials.rotate_display(self.cfg.room.id)
            if self.broker is not None:
                self.access.broker_users()
                self.broker.stop()
                self.broker.start()
        log.info("display password of room %s rotated: displays reconnect with the new one", self.cfg.room.id)
        return cred.username

    def display_connection(self) -> dict:
        """What a room display needs to connect (the display server serves it): see BrokerAccess."""
        return self.access.display_connection(self._languages_on_offer())

    def _broker_config(self):
        """The broker section, with the password from systemd's credential when the config holds none."""
        import os

        broker = self.cfg.broker
        if broker.mode == "embedded":  # our own broker on loopback, with the appliance's own user
            cred = self.access.appliance()
            return broker.model_copy(update={"host": "127.0.0.1", "tls": False, "username": cred.username,
                                             "password": cred.password})
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        cred = Path(cred_dir) / "broker-password" if cred_dir else None
        if not broker.password and cred is not None and cred.is_file():
            password = cred.read_text(encoding="utf-8").strip()
            if password:
                broker = broker.model_copy(update={"password": password})
        return broker

    def start_publisher(self) -> None:
        from appliance.bus.publisher import Publisher

        publisher = Publisher(self._broker_config(), room=self.cfg.room.id, state_dir=Path(self.cfg.state_dir),
                              on_state=self.status.set_broker_state, ha_discovery=self.cfg.broker.ha_discovery)
        publisher.start()
        publisher.publish_detail(self._detail())
        with self._sink_lock:  # events held while the publisher was being replaced go out first, in order
            held, self._held = self._held, []
            self.publisher = publisher
            for event in held:
                publisher.publish(event)

    def stop_publisher(self) -> None:
        with self._sink_lock:
            publisher, self.publisher = self.publisher, None
        if publisher is not None:
            publisher.stop()

    def _detail(self) -> dict:
        return {"room": self.cfg.room.id, "name": self.cfg.room.name, "languages": self._languages_on_offer(),
                "source": self.cfg.languages.source, "version": __version__,
                "models": [m for m in self._model_names()], "started": self.status.started}

    def _model_names(self) -> list[str]:
        if not self.engines:
            return []
        return [self.engines.asr_manifest.name] + [m.name for m in self.engines.mt_manifests]

    def _languages_on_offer(self) -> list[str]:
        langs = list(self.cfg.languages.targets)
        if self.cfg.languages.source != "auto" and self.cfg.languages.source not in langs:
            langs.insert(0, self.cfg.languages.source)
        return langs

    def _usable_targets(self) -> Config:
        """Drop targets with no route (logged, shown in status) so the rest keeps running."""
        from appliance.modelstore import manifest as mf

        asr_m = mf.read(self.opts.models_dir / self.cfg.asr.model)
        pairs = mt_pairs(self.opts.models_dir).keys()
        good = []
        for t in self.cfg.languages.targets:
            try:
                check_languages(self.cfg.languages.source, [t], asr_m.languages, pairs, len(asr_m.languages) > 1)
                good.append(t)
            except ConfigError as exc:
                log.error("%s; captions in '%s' are off until a model for it is installed", exc, t)
                self.status.warn(str(exc))
        cfg = self.cfg.model_copy(deep=True)
        cfg.languages.targets = good
        return cfg

    def start_pipeline(self) -> None:
        from appliance import glossary

        cfg = self._usable_targets()
        glossary.install(glossary.store_for(cfg.state_dir))  # prompt_terms() reads the glossary the panel edits
        self.engines = load_engines(cfg, self.opts.models_dir)
        self.status.set_providers(self.engines.providers)
        self._open_speakers()
        self.pipeline = make_pipeline(cfg, self.engines, self._sink, realtime=True, speakers=self.speakers)
        self.status.pipeline = self.pipeline
        self.pipeline.start()

    def start_archive(self) -> None:
        """Record finals by meeting (a bounded queue and its own writer thread: never slows captions)."""
        if not self.cfg.archive.enabled:
            return
        from appliance.archive import Archive, db_path

        try:
            self.archive = Archive(db_path(self.cfg.state_dir), gap_s=self.cfg.archive.gap_min * 60,
                                   retention_days=self.cfg.archive.retention_days, on_warning=self.status.warn).start()
        except Exception as exc:  # an unusable state folder costs the record, never the captions
            log.error("archive off: %s", exc)
            self.status.warn(f"archive off: {exc}")

    def stop_archive(self) -> None:
        archive, self.archive = self.archive, None
        if archive is not None:
            archive.stop()

    def _open_speakers(self) -> None:
        """(Re)open the speaker tracker when speaker settings, the room or the state folder changed."""
        from appliance.speakers.wiring import open_tracker

        key = (self.cfg.speakers, self.cfg.room.id, self.cfg.state_dir)
        if self.speakers is not None and getattr(self, "_speakers_key", None) == key:
            return
        if self.speakers is not None:
            self.speakers.close()
        self.speakers = open_tracker(self.cfg, self.opts.models_dir, self.status.warn)
        self._speakers_key = key

    def _sink(self, event) -> None:
        self.status.add_caption(event)
        archive = self.archive
        if archive is not None:
            archive.put(event)
        with self._sink_lock:
            if self.publisher is not None:
                self.publisher.publish(event)
            elif event.final:
                self._held.append(event)  # never lose a final while the publisher restarts

    def _source(self):
        from appliance.audio import FileSource, MicrophoneSource, list_input_devices

        path = self.opts.input_file or (Path(self.cfg.audio.input_file) if self.cfg.audio.input_file else None)
        if path is None and self.opts.use_sample_without_mic and not list_input_devices():
            log.info("no microphone found: captioning the bundled sample %s", SAMPLE.name)
            path = SAMPLE
        if path is not None:
            self.status.set_mic_state(f"file {path.name}")
            return FileSource(path, realtime=True)
        return MicrophoneSource(self.cfg.audio.device, reopen_interval_s=self.cfg.audio.reopen_interval_s,
                                on_state=self.status.set_mic_state)

    def start_capture(self) -> None:
        """Open the input and start the capture thread; a missing microphone is retried until it appears."""
        from appliance.audio import AudioError

        try:
            self.capture = self._source()
        except AudioError as exc:
            message = f"microphone {self.cfg.audio.device!r}: {exc}" if self.cfg.audio.device is not None else f"microphone: {exc}"
            if self.opts.once:
                raise AudioError(message) from None
            log.error("%s; retrying every %.0f s (the rest of the appliance keeps running)", message,
                      self.cfg.audio.reopen_interval_s)
            self.status.set_mic_state("missing", message)
            self._capture_thread = threading.Thread(target=self._wait_for_microphone, name="capture-retry", daemon=True)
            self._capture_thread.start()
            return
        self._capture_thread = threading.Thread(target=self._capture_loop, args=(self.capture,), name="capture", daemon=True)
        self._capture_thread.start()

    def _wait_for_microphone(self) -> None:
        from appliance.audio import AudioError

        while not self._stop.wait(self.cfg.audio.reopen_interval_s) and not self._capture_stop.is_set():
            try:
                self.capture = self._source()
            except AudioError:
                continue
            log.info("microphone found: capturing")
            self._capture_loop(self.capture)
            return

    def _capture_loop(self, source) -> None:
        try:
            for chunk in source:
                pipeline = self.pipeline
                if pipeline is not None:
                    pipeline.feed(chunk.samples)
                self.mic_tap.feed(chunk.samples)
                self.status.set_input_level(chunk.samples)
                if self._stop.is_set():
                    break
        except Exception as exc:
            log.error("capture stopped: %s", exc)
            self.status.warn(f"capture: {exc}")
        finally:
            self._input_done.set()

    def stop_capture(self) -> None:
        self._capture_stop.set()
        if self.capture is not None:
            self.capture.close()
        if self._capture_thread is not None:
            self._capture_thread.join(5)
        self.capture = None
        self._input_done.clear()
        self._capture_stop.clear()

    def start_panel(self) -> None:
        from appliance.panel import serve

        self.panel = serve(self)

    def start_display_server(self) -> None:
        """The read-only display pages on the room LAN (display.host:display.port), apart from the panel."""
        if not self.cfg.display.enabled:
            return
        from appliance.display.server import DEFAULT_PAGES, ReadOnlyPage, create_app
        from appliance.webserver import WebServer

        pages = DEFAULT_PAGES + (ReadOnlyPage("/audience", self._audience_page),)
        try:
            self.display_server = WebServer(create_app(self.display_connection, pages), self.cfg.display.host,
                                            self.cfg.display.port, name="display").start()
        except OSError as exc:  # captions go on: displays can still be opened from disk with their details
            message = (f"display server: cannot listen on {self.cfg.display.host}:{self.cfg.display.port} ({exc}); "
                       "change display.port")
            log.error("%s", message)
            self.status.warn(message)

    def _audience_page(self):
        """The audience page for phones (scroll-back from the archive, read-only), on the display server."""
        from appliance.archive import db_path
        from appliance.display import audience

        return audience.blueprint(lambda: db_path(self.cfg.state_dir) if self.cfg.archive.enabled else None)

    def urls(self) -> dict[str, str]:
        """Where people open things: {"room display": …, "admin panel": …} (what is running)."""
        out = {}
        if self.display_server is not None:
            lang = (self.cfg.languages.targets or ["en"])[0]
            host = self.cfg.display.host if self.cfg.display.host not in ("0.0.0.0", "::", "") else _lan_host()
            out["room display"] = (f"http://{host}:{self.display_server.port}/display/"
                                   f"?room={self.cfg.room.id}&lang={lang}")
            out["audience page"] = f"http://{host}:{self.display_server.port}/audience/?room={self.cfg.room.id}"
        if self.panel is not None:
            out["admin panel"] = self.panel.url
        return out

    def _log_urls(self) -> None:
        for what, url in self.urls().items():
            log.info("%s: %s", what, url)

    # ---- config changes -------------------------------------------------------------------------------------
    def apply_config(self, new: Config) -> list[str]:
        """Restart only the stages whose settings changed; returns their names."""
        with self._lock:
            old, self.cfg = self.cfg, new
            changed = [s for s in ("room", "languages", "audio", "vad", "asr", "translation", "broker", "accelerator",
                                   "speakers")
                       if getattr(old, s) != getattr(new, s)]
            restarted = []
            if {"broker", "room"} & set(changed):
                self.stop_publisher()
                if "broker" in changed and self.broker:
                    self.broker.stop()
                    self.broker = None
                    self.start_broker()
                elif self.broker is not None:  # a new room: its display user and ACL
                    self.access.broker_users()
                    self.broker.reload()
                self.start_publisher()
                restarted.append("publisher")
            if {"languages", "vad", "asr", "translation", "accelerator", "speakers"} & set(changed):
                old_pipeline = self.pipeline
                self.start_pipeline()  # new pipeline takes audio from now on; the old one finishes what it has
                if old_pipeline is not None:
                    threading.Thread(target=old_pipeline.stop, name="pipeline-drain", daemon=True).start()
                restarted.append("pipeline")
                if self.publisher:
                    self.publisher.publish_detail(self._detail())
            if old.archive != new.archive:
                self.stop_archive()
                self.start_archive()
                restarted.append("archive")
            if "audio" in changed:
                self.stop_capture()
                self.start_capture()
                restarted.append("capture")
            log.info("config applied: changed %s, restarted %s", changed or "nothing", restarted or "nothing")
            return restarted

    # ---- main loop ------------------------------------------------------------------------------------------
    def healthy(self) -> bool:
        """The same verdict as /healthz: a stuck or crashed pipeline stops the watchdog pings, and systemd restarts us."""
        return self.status.health()[0]

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        self.start_broker()
        self.start_publisher()
        self.start_archive()
        self.start_pipeline()
        self.start_capture()
        if not self.opts.once:
            self.start_panel()
            self.start_display_server()
            self._log_urls()
        if self.on_started is not None:
            self._attached = list(self.on_started() or [])
        notify.ready(f"captioning room {self.cfg.room.id}")
        while not self._stop.is_set():
            if self.opts.once and self._input_done.is_set():
                break
            self.status.tick()
            if self.healthy():
                notify.watchdog()
            notify.status(self.status.summary())
            self._stop.wait(1.0)
        return self.shutdown()

    def shutdown(self) -> int:
        notify.stopping()
        log.info("stopping: capture, then flushing finals")
        self.stop_capture()
        if self.pipeline is not None:
            self.pipeline.stop(timeout=60)
        self.stop_archive()  # writes the finals still queued
        if self.speakers is not None:
            self.speakers.close()
        self.stop_publisher()  # sends queued finals, then the clean-exit status
        time.sleep(0.3 if self._attached else 0)  # let attached displays receive the last finals
        for thing in self._attached:
            thing.stop()
        if self.panel is not None:
            self.panel.shutdown()
        if self.display_server is not None:
            self.display_server.shutdown()
        if self.broker is not None:
            self.broker.stop()
        log.info("stopped")
        return 0
