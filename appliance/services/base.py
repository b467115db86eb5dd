"""The one lifecycle every part of the daemon shares (after twisted.application.service), and the group that runs
parts by it.

A `Service` starts, stops within a timeout, says what is wrong with it (`problem()`, None when fine) and names
the config sections it is built from (`sections`). `ServiceGroup` starts its services in order, stops them in
reverse, and applies a new config by restarting, in order, exactly the services whose sections changed; when one
cannot start, the services touched so far are restarted on the last working config. Which setting restarts what
is therefore said once, by each service, and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from appliance.config import Config
from appliance.status import Status

log = logging.getLogger(__name__)

__all__ = ["Check", "Context", "RunOptions", "Service", "ServiceGroup", "SwitchFailed", "one_line"]


@dataclass
class RunOptions:
    config_path: Path | None
    models_dir: Path
    once: bool = False
    input_file: Path | None = None
    use_sample_without_mic: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted key -> value from the command line


@dataclass
class Context:
    """What every service reads: the config in force (the supervisor replaces it when a change is applied or rolled
    back, before restarting the services it touches), the run options and the live status."""

    cfg: Config
    opts: RunOptions
    status: Status


class Check(NamedTuple):
    """One health check: `problem()` is None when fine; a non-critical problem is shown but leaves health good."""

    name: str
    problem: Callable[[], str | None]
    critical: bool = True


def one_line(exc: BaseException) -> str:
    """An exception as one line for the panel and the status (its type when it has no message)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class Service:
    """A part of the daemon. Subclasses set `name` and `sections` and implement `start` and `stop`."""

    name = ""
    sections: tuple[str, ...] = ()  # top-level config sections this service is built from: a change restarts it
    stop_timeout_s = 10.0  # how long the supervisor lets stop() take
    restart_on_problem = False  # the supervisor restarts it while problem() says something (a capture that died)

    def start(self) -> None:
        """Start on the config in force (context.cfg); raise when that is impossible."""
        raise NotImplementedError

    def stop(self, timeout: float) -> None:
        """Stop within about `timeout` seconds; stopping a stopped service does nothing."""
        raise NotImplementedError

    def restart(self) -> None:
        """Bring the service up on the config in force now. By default stop, then start; a service that can hand
        over without a gap (a new publisher or pipeline before the old one goes) overrides it."""
        self.stop(self.stop_timeout_s)
        self.start()

    def problem(self) -> str | None:
        """What is wrong right now, in one line, or None. Checked on every health call."""
        return None

    def checks(self) -> list[Check]:
        """The health checks this service adds to the status: its problem(), plus any non-critical ones."""
        return [Check(self.name, self.problem)]

    def affected_by(self, old: Config, new: Config) -> bool:
        return any(getattr(old, section) != getattr(new, section) for section in self.sections)


class SwitchFailed(RuntimeError):
    """A service could not start on a new config. `rollback` is empty when the last working config is back, else
    why rolling back failed too."""

    def __init__(self, reason: str, rollback: str = ""):
        super().__init__(reason if not rollback else f"{reason}; rolling back failed: {rollback}")
        self.reason, self.rollback = reason, rollback


class ServiceGroup:
    """Services in dependency order: each may use those before it while it runs."""

    def __init__(self, services: list[Service]):
        names = [s.name for s in services]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"services need distinct names: {names}")
        self.services = list(services)

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)

    def start(self) -> None:
        """Start every service in order. When one fails, those already started are stopped (in reverse) and the
        error is raised."""
        started: list[Service] = []
        try:
            for service in self.services:
                service.start()
                started.append(service)
        except BaseException:
            self._stop(reversed(started))
            raise

    def stop(self) -> None:
        """Stop every service in reverse order, each within its own stop_timeout_s; one that fails to stop is logged
        and the others still stop."""
        self._stop(reversed(self.services))

    @staticmethod
    def _stop(services) -> None:
        for service in services:
            try:
                service.stop(service.stop_timeout_s)
            except Exception:
                log.exception("stopping %s failed", service.name)

    def checks(self) -> list[Check]:
        """Every service's health checks, in order."""
        return [check for service in self.services for check in service.checks()]

    def heal(self) -> list[str]:
        """Restart the services that ask for it (restart_on_problem) while they have a problem; returns their names."""
        healed = []
        for service in self.services:
            problem = service.restart_on_problem and service.problem()
            if problem:
                log.warning("%s: %s; restarting it", service.name, problem)
                service.restart()
                healed.append(service.name)
        return healed

    def affected(self, old: Config, new: Config) -> list[Service]:
        return [s for s in self.services if s.affected_by(old, new)]

    def apply(self, old: Config, new: Config, use: Callable[[Config], None]) -> list[str]:
        """Put `new` in force (`use(new)`) and restart, in order, the services whose sections differ from `old`.
        Returns their names. When one fails, `old` is put back in force and every service touched so far (the
        failing one included) is restarted on it; then SwitchFailed says why."""
        affected = self.affected(old, new)
        use(new)
        touched: list[Service] = []
        try:
            for service in affected:
                touched.append(service)
                service.restart()
        except Exception as exc:
            reason = one_line(exc)
            log.exception("applying the saved config failed (%s); rolling back to the last working config", reason)
            use(old)
            try:
                for service in touched:
                    service.restart()
            except Exception as again:
                log.exception("rolling back failed too")
                raise SwitchFailed(reason, one_line(again)) from None
            raise SwitchFailed(reason) from None
        return [s.name for s in affected]
