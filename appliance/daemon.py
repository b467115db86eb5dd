"""The supervisor: runs the daemon's services (appliance/services/) in one lifecycle, applies config changes, and
keeps systemd told.

Services start in order (broker, publisher, archive, pipeline, capture, then the panel and the display server)
and stop in reverse on SIGTERM, so capture stops first and the last finals are flushed before the broker goes.
A config saved in the panel restarts exactly the services whose config sections changed (each service names its
own) and rolls back to the last working config when one cannot start. Health is every service's problem, plus
the config file on disk.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

from appliance import __version__, notify
from appliance import config as cfgmod
from appliance.config import Config, ConfigError
from appliance.services.archive import ArchiveService
from appliance.services.base import Context, RunOptions, Service, ServiceGroup, SwitchFailed
from appliance.services.broker import BrokerService
from appliance.services.capture import CaptureService
from appliance.services.display import DisplayService
from appliance.services.panel import PanelService
from appliance.services.pipeline import PipelineService
from appliance.services.publisher import PublisherService
from appliance.status import Status

log = logging.getLogger(__name__)

__all__ = ["ApplyError", "RunOptions", "Supervisor"]

ATTACHED_LINGER_S = 0.3  # attached displays get this long to receive the last finals before they stop


def _shown(key: str, value: Any) -> Any:
    """A config value as status and the panel may show it (secrets masked)."""
    return "(set)" if "password" in key and value else value


def languages_on_offer(cfg: Config) -> list[str]:
    """The caption languages: the targets, and a fixed source language first."""
    langs = list(cfg.languages.targets)
    if cfg.languages.source != "auto" and cfg.languages.source not in langs:
        langs.insert(0, cfg.languages.source)
    return langs


class ApplyError(RuntimeError):
    """A config change that could not be applied; the daemon runs on the last working config."""


class Attached(Service):
    """What `Supervisor.on_started` attached (the demo's terminal displays): stopped once the publisher has sent
    the last finals, before the broker goes (it stands right after the broker, so it stops right before it)."""

    name = "attached"

    def __init__(self):
        self.things: list = []

    def start(self) -> None:
        """Nothing: on_started attaches them once every other service runs."""

    def stop(self, timeout: float) -> None:
        things, self.things = self.things, []
        time.sleep(ATTACHED_LINGER_S if things else 0)
        for thing in things:
            thing.stop()


class Supervisor:
    """The daemon: its services in start order, the config in force, and the main loop."""

    def __init__(self, cfg: Config, opts: RunOptions):
        self.ctx = Context(cfg, opts, Status())
        self.opts, self.status = opts, self.ctx.status
        self.on_started: Callable[[], object] | None = None  # e.g. the demo's display subscribers
        self._stop = threading.Event()
        self._lock = threading.RLock()  # serialises config changes, the display password and healing
        self.broker = BrokerService(self.ctx)
        self.attached = Attached()
        self.publisher = PublisherService(self.ctx, detail=self._detail)
        self.recording = ArchiveService(self.ctx)  # the "archive" service; `archive` is its writer (for the panel)
        self.pipeline = PipelineService(self.ctx, self.sink, on_started=self.publisher.announce)
        self.capture = CaptureService(self.ctx, feed=self.pipeline.feed)
        self.panel = PanelService(self, device_lister=self.capture.list_devices)
        self.display = DisplayService(self.ctx, connection=self.display_connection)
        front = [] if opts.once else [self.panel, self.display]
        self.services = ServiceGroup([self.broker, self.attached, self.publisher, self.recording, self.pipeline,
                                      self.capture, *front])
        self.status.set_config_state("loaded", overrides={key: {"in_force": _shown(key, value)}
                                                          for key, value in opts.overrides.items()})
        for check in self.services.checks():
            self.status.add_check(check.name, check.problem, critical=check.critical)
        self.status.add_check("config", self._config_file_problem, critical=False)  # a restart would not start
        self._config_seen: tuple = (None, None)  # (mtime_ns, problem) of the config file last checked

    @property
    def cfg(self) -> Config:
        """The config in force."""
        return self.ctx.cfg

    # ---- what the panel reads (appliance.panel.serve) --------------------------------------------------------
    @property
    def archive(self):
        return self.recording.writer

    @property
    def speakers(self):
        return self.pipeline.speakers

    @property
    def mic_tap(self):
        return self.capture.tap

    @property
    def credentials(self):
        """The broker passwords (0600 in the state folder): appliance + one read-only display user per room."""
        return self.broker.access.store

    def rotate_display_password(self) -> str:
        with self._lock:
            return self.broker.rotate_display_password()

    def display_connection(self) -> dict:
        """What a room display needs to connect (the display server serves it): see BrokerAccess."""
        return self.broker.access.display_connection(languages_on_offer(self.cfg))

    # ---- captions -------------------------------------------------------------------------------------------
    def sink(self, event) -> None:
        """Where the pipeline's captions go: the live status, the meeting record, the publisher."""
        self.status.add_caption(event)
        self.recording.put(event)
        self.publisher.publish(event)

    def _detail(self) -> dict:
        cfg = self.cfg
        return {"room": cfg.room.id, "name": cfg.room.name, "languages": languages_on_offer(cfg),
                "source": cfg.languages.source, "version": __version__, "models": self.pipeline.model_names(),
                "started": self.status.started}

    def urls(self) -> dict[str, str]:
        """Where people open things: {"room display": …, "admin panel": …} (what is running)."""
        return {**self.display.urls(), **self.panel.urls()}

    def log_urls(self) -> None:
        for what, url in self.urls().items():
            log.info("%s: %s", what, url)

    # ---- config changes -------------------------------------------------------------------------------------
    def apply_config(self, saved: Config) -> list[str]:
        """Apply a config saved in the panel: command-line flags still win over it (RunOptions.overrides), and
        only the services whose config sections changed restart. Returns their names.

        When a service fails to start, every service touched is restarted on the last working config, and
        ApplyError says so (the panel shows it; status shows 'rolled back')."""
        new = cfgmod.with_overrides(saved, self.opts.overrides)
        pinned = {key: {"saved": _shown(key, saved_v), "in_force": _shown(key, flag_v)}
                  for key, (saved_v, flag_v) in cfgmod.shadowed(saved, self.opts.overrides).items()}
        for key, v in pinned.items():
            log.warning("config %s: the command line sets %r; the saved %r applies when the daemon starts without "
                        "that flag", key, v["in_force"], v["saved"])
        with self._lock:
            try:
                restarted = self.services.apply(self.cfg, new, self._use)
            except SwitchFailed as exc:
                if exc.rollback:
                    self.status.error(f"config change failed ({exc.reason}) and rolling back failed ({exc.rollback})")
                    self.status.set_config_state("failed", f"{exc.reason}; rolling back failed: {exc.rollback}")
                    raise ApplyError(f"{exc.reason}; rolling back failed too: {exc.rollback}") from None
                self.status.error(f"config change failed ({exc.reason}); running on the last working config")
                self.status.set_config_state("rolled back", exc.reason)
                raise ApplyError(f"{exc.reason}; rolled back to the last working config") from None
            note = f"restarted {', '.join(restarted)}" if restarted else "nothing to restart"
            if pinned:
                note += "; the command line keeps " + ", ".join(f"{k}={v['in_force']!r}" for k, v in pinned.items())
            self.status.set_config_state("applied", note, overrides=pinned)
            log.info("config applied: %s", note)
            return restarted

    def _use(self, cfg: Config) -> None:
        self.ctx.cfg = cfg

    # ---- health ---------------------------------------------------------------------------------------------
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
        """Called about once a second: restart the services that ask for it while they have a problem (capture
        that ended on an error; a file that simply ended is no problem)."""
        if self.opts.once or self._stop.is_set() or not self._lock.acquire(blocking=False):
            return
        try:
            self.services.heal()
        finally:
            self._lock.release()

    def healthy(self) -> bool:
        """The same verdict as /healthz: a stuck or crashed pipeline stops the watchdog pings, and systemd restarts
        us."""
        return self.status.health()[0]

    # ---- main loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        signal.signal(signal.SIGINT, lambda *_: self._stop.set())
        self.services.start()
        self.log_urls()
        if self.on_started is not None:
            self.attached.things = list(self.on_started() or [])
        notify.ready(f"captioning room {self.cfg.room.id}")
        while not self._stop.is_set():
            if self.opts.once and self.capture.done.is_set():
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
        self._stop.set()
        self.services.stop()
        log.info("stopped")
        return 0
