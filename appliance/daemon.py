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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from appliance import __version__, notify
from appliance import config as cfgmod
from appliance.config import Config, ConfigError
from appliance.engines import Engines, check_languages, load_engines, mt_pairs
from appliance.pipeline import Pipeline
from appliance.runner import make_pipeline
from appliance.speakers.recorder import MicrophoneTap
from appliance.status import Status

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).resolve().parent / "data" / "sample-en.flac"
RECONNECT_MAX_S = 3.0  # longest wait between broker reconnection attempts: back within 5 s of the broker
PIPELINE_STOP_S = 60.0  # shutdown waits this long for the pipeline to finish its last utterance
# which config sections each stage is built from: a change restarts that stage only
STAGE_SECTIONS = {"publisher": ("room", "broker", "state_dir"),
                  # the room and state folder too: the speaker store is kept per room under the state folder
                  "pipeline": ("languages", "vad", "asr", "translation", "accelerator", "speakers", "room", "state_dir"),
                  "archive": ("archive", "state_dir"),
                  "capture": ("audio",)}


def _shown(key: str, value: Any) -> Any:
    """A config value as status and the panel may show it (secrets masked)."""
    return "(set)" if "password" in key and value else value


class ApplyError(RuntimeError):
    """A config change that could not be applied; the daemon runs on the last working config."""


@dataclass
class RunOptions:
    config_path: Path | None
    models_dir: Path
    once: bool = False
    input_file: Path | None = None
    use_sample_without_mic: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value from the command line


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
        self._draining: list[threading.Thread] = []  # pipelines replaced by a config change, finishing their audio
        self._capture_error = ""  # why the capture thread ended, when it ended on an error
        self._devices_seen: list = []  # input devices listed before capture started (for the panel)
        self.status.set_config_state("loaded", overrides={key: {"in_force": _shown(key, value)}
                                                          for key, value in opts.overrides.items()})
        self.status.add_check("capture", self._capture_problem)
        self.status.add_check("broker", self._broker_problem)
        self.status.add_check("publisher", self._publisher_problem)
        self.status.add_check("queue", self._queue_problem, critical=False)  # a restart would lose what memory holds
        self.status.add_check("config", self._config_file_problem, critical=False)  # a restart would not start
        self._config_seen: tuple = (None, None)  # (mtime_ns, problem) of the config file last checked

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
        """Replace the publisher. The new one is the sink from the start: until it connects, its finals wait in
        its on-disk queue (never in memory), and the old one flushes what it has before it stops."""
        from appliance.bus.publisher import Publisher

        publisher = Publisher(self._broker_config(), room=self.cfg.room.id, state_dir=Path(self.cfg.state_dir),
                              on_state=self.status.set_broker_state, ha_discovery=self.cfg.broker.ha_discovery,
                              max_backoff_s=RECONNECT_MAX_S)
        with self._sink_lock:
            old, self.publisher = self.publisher, publisher
        if old is not None:
            old.stop()
        publisher.start()
        publisher.publish_detail(self._detail())

    def stop_publisher(self) -> None:
        """Flush and disconnect. The stopped publisher stays the sink: a late final still goes to its on-disk queue."""
        with self._sink_lock:
            publisher = self.publisher
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
        """Load the models and start a new pipeline; on failure the running one (if any) is left as it was."""
        from appliance import faults, glossary

        cfg = self._usable_targets()
        glossary.install(glossary.store_for(cfg.state_dir))  # prompt_terms() reads the glossary the panel edits
        engines = load_engines(cfg, self.opts.models_dir)
        faults.inject_from_env(engines)  # fault-injection tests only (APPLIANCE_FAULTS); nothing otherwise
        self._open_speakers()
        pipeline = make_pipeline(cfg, engines, self._sink, realtime=True, speakers=self.speakers)
        pipeline.start()
        self.engines, self.pipeline = engines, pipeline
        self.status.set_providers(engines.providers)
        self.status.set_placement(engines.placement())
        self.status.pipeline = pipeline

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
        with self._sink_lock:  # under the lock: never into a publisher that is being swapped out
            if self.publisher is not None:  # set once running; a stopped or restarting one queues finals on disk
                self.publisher.publish(event)
            elif event.final:
                log.error("final %s produced before the publisher started: not published", getattr(event, "id", "?"))

    def _source(self):
        from appliance.audio import FileSource, MicrophoneSource, list_input_devices

        path = self.opts.input_file or (Path(self.cfg.audio.input_file) if self.cfg.audio.input_file else None)
        if path is None and self.opts.use_sample_without_mic and not list_input_devices():
            log.info("no microphone found: captioning the bundled sample %s", SAMPLE.name)
            path = SAMPLE
        if path is not None:
            self.status.set_mic_state(f"file {path.name}")
            from appliance.faults import replay_speed

            return FileSource(path, realtime=True, speed=replay_speed())
        try:  # the panel shows this list while the microphone is open (no second PortAudio scan then)
            self._devices_seen = list(list_input_devices())
        except Exception as exc:
            log.debug("listing input devices failed: %s", exc)
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
        self._capture_error = ""
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
            self._capture_error = " ".join(str(exc).split()) or type(exc).__name__
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

        self.panel = serve(self, device_lister=self.list_devices)

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
    def apply_config(self, saved: Config) -> list[str]:
        """Apply a config saved in the panel: command-line flags still win over it (RunOptions.overrides), and
        only the stages whose settings changed restart. Returns their names.

        When a stage fails to start, every stage touched is restarted on the last working config, and ApplyError
        says so (the panel shows it; status shows 'rolled back')."""
        new = cfgmod.with_overrides(saved, self.opts.overrides)
        pinned = {key: {"saved": _shown(key, saved_v), "in_force": _shown(key, flag_v)}
                  for key, (saved_v, flag_v) in cfgmod.shadowed(saved, self.opts.overrides).items()}
        for key, v in pinned.items():
            log.warning("config %s: the command line sets %r; the saved %r applies when the daemon starts without "
                        "that flag", key, v["in_force"], v["saved"])
        with self._lock:
            old, touched = self.cfg, []
            try:
                restarted = self._switch(old, new, touched)
            except Exception as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                log.exception("applying the saved config failed (%s); rolling back to the last working config", reason)
                self._roll_back(new, old, touched, reason)
                raise ApplyError(f"{reason}; rolled back to the last working config") from None
            note = f"restarted {', '.join(restarted)}" if restarted else "nothing to restart"
            if pinned:
                note += "; the command line keeps " + ", ".join(f"{k}={v['in_force']!r}" for k, v in pinned.items())
            self.status.set_config_state("applied", note, overrides=pinned)
            log.info("config applied: %s", note)
            return restarted

    def _switch(self, old: Config, new: Config, touched: list[str]) -> list[str]:
        """Restart the stages whose sections differ; `touched` collects each stage as it is attempted."""
        stages = [stage for stage, sections in STAGE_SECTIONS.items()
                  if any(getattr(old, section) != getattr(new, section) for section in sections)]
        self.cfg = new
        for stage in stages:
            touched.append(stage)
            self._restart(stage, old, new)
        return stages

    def _roll_back(self, failed: Config, old: Config, touched: list[str], reason: str) -> None:
        self.cfg = old
        try:
            for stage in touched:
                self._restart(stage, failed, old)
        except Exception as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            log.exception("rolling back failed too")
            self.status.error(f"config change failed ({reason}) and rolling back failed ({detail})")
            self.status.set_config_state("failed", f"{reason}; rolling back failed: {detail}")
            raise ApplyError(f"{reason}; rolling back failed too: {detail}") from None
        self.status.error(f"config change failed ({reason}); running on the last working config")
        self.status.set_config_state("rolled back", reason)

    def _retire(self, pipeline) -> None:
        """Let a replaced pipeline finish what it has on a thread of its own; shutdown waits for it, so the process
        never exits while one of its models is still running."""
        self._draining = [t for t in self._draining if t.is_alive()]
        thread = threading.Thread(target=pipeline.stop, args=(PIPELINE_STOP_S,), name="pipeline-drain", daemon=True)
        thread.start()
        self._draining.append(thread)

    def _restart(self, stage: str, old: Config, new: Config) -> None:
        if stage == "publisher":
            if old.broker != new.broker and self.broker is not None:
                self.broker.stop()
                self.broker = None
            if self.broker is None:
                self.start_broker()
            elif old.room.id != new.room.id:  # a new room: its display user and ACL
                self.access.broker_users()
                self.broker.reload()
            self.start_publisher()
        elif stage == "pipeline":
            old_pipeline = self.pipeline
            self.start_pipeline()  # the new pipeline takes audio from now on; the old one finishes what it has
            if old_pipeline is not None and old_pipeline is not self.pipeline:
                self._retire(old_pipeline)
            if self.publisher is not None:
                self.publisher.publish_detail(self._detail())
        elif stage == "archive":
            self.stop_archive()
            self.start_archive()
        elif stage == "capture":
            self.stop_capture()
            self.start_capture()

    # ---- health ---------------------------------------------------------------------------------------------
    def _capture_problem(self) -> str | None:
        thread = self._capture_thread
        if thread is not None and not thread.is_alive() and self._capture_error:
            return f"stopped: {self._capture_error}"
        return None

    def _broker_problem(self) -> str | None:
        broker = self.broker
        if broker is None or self._stop.is_set():
            return None
        watcher = getattr(broker, "_watcher", None)
        if not broker.running() and (watcher is None or not watcher.is_alive()):
            return "embedded mosquitto exited and is no longer restarted"
        return None

    def _publisher_problem(self) -> str | None:
        publisher = self.publisher
        thread = getattr(publisher, "_thread", None)
        if publisher is not None and thread is not None and not thread.is_alive() and not self._stop.is_set():
            return "sender thread stopped"
        return None

    def _queue_problem(self) -> str | None:
        spool = getattr(self.publisher, "spool", None)
        if spool is not None and spool.disk_error:
            return (f"cannot write {spool.path} ({spool.disk_error}); {spool.held_in_memory} final(s) held in memory "
                    "until it can")
        return None

    def _config_file_problem(self) -> str | None:
        """The config file as it is on disk now (re-read when it changes): a file damaged while we run would stop
        the next start, so say it now. The running daemon keeps its last working config."""
        path = self.opts.config_path
        if path is None:
            return None
        try:
            mtime = Path(path).stat().st_mtime_ns
        except OSError:
            return None  # no file: the defaults
        if self._config_seen[0] != mtime:
            try:
                cfgmod.load(path)
                problem = None
            except ConfigError as exc:
                problem = f"{exc}; running on the last working config, but a restart would fail until it is fixed"
            self._config_seen = (mtime, problem)
        return self._config_seen[1]

    def heal(self) -> None:
        """Called about once a second: restart capture that ended on an error (a file that simply ended is left)."""
        if self.opts.once or self._stop.is_set() or not self._lock.acquire(blocking=False):
            return
        try:
            thread = self._capture_thread
            if thread is not None and not thread.is_alive() and self._capture_error:
                log.warning("capture ended (%s): restarting it", self._capture_error)
                self.stop_capture()
                self.start_capture()
        finally:
            self._lock.release()

    def list_devices(self) -> list:
        """For the panel: a fresh PortAudio scan only while no microphone is capturing; during capture, the list
        taken when it started (a second PortAudio instance beside a live stream can disturb it)."""
        from appliance.audio import MicrophoneSource, list_input_devices

        if isinstance(self.capture, MicrophoneSource) and self._capture_thread is not None and self._capture_thread.is_alive():
            return list(self._devices_seen)
        self._devices_seen = list(list_input_devices())
        return list(self._devices_seen)

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
            self.heal()
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
            self.pipeline.stop(timeout=PIPELINE_STOP_S)
        for thread in self._draining:  # pipelines replaced by a config change finish their last utterance
            thread.join(PIPELINE_STOP_S)
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
