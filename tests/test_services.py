"""The daemon's service lifecycle: ServiceGroup on small real services that record what happens to them (start in
order, stop in reverse, restart exactly what a config change touches, roll back, heal, aggregate health), and the
real supervisor's services: every config section restarts something or is documented as applying at the next
start, and a display setting saved in the panel moves the running display server."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.daemon import RunOptions, Supervisor
from appliance.services.base import Check, Service, ServiceGroup, SwitchFailed
from test_bus_support import free_port

NEXT_START = {"panel", "models_dir"}  # sections no service restarts for: they apply when the daemon starts again


class Recorded(Service):
    """A service that writes each start and stop to a shared log, on the config it is given by `config()`."""

    def __init__(self, name: str, sections: tuple[str, ...], log: list, config, *, fail_on=None, handover=False):
        self.name, self.sections, self.log, self.config = name, sections, log, config
        self.fail_on = fail_on or (lambda cfg: False)  # start raises on the configs this says
        self.handover = handover  # restart without a stop first (like the publisher and the pipeline)
        self.running = False
        self.broken = ""

    def start(self) -> None:
        cfg = self.config()
        self.log.append(("start", self.name, cfg.room.id))
        if self.fail_on(cfg):
            raise RuntimeError(f"{self.name} cannot start in room {cfg.room.id}")
        self.running, self.broken = True, ""

    def stop(self, timeout: float) -> None:
        self.log.append(("stop", self.name, timeout))
        self.running = False

    def restart(self) -> None:
        if self.handover:
            self.start()
        else:
            super().restart()

    def problem(self) -> str | None:
        return self.broken or None


class Room:
    """The config in force, as the supervisor's Context holds it."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def use(self, cfg: Config) -> None:
        self.cfg = cfg


def room(room_id: str = "r1", **sections) -> Config:
    return Config.model_validate({"room": {"id": room_id}, **sections})


def group(log: list, room_: Room, **fail) -> ServiceGroup:
    def make(name, sections, **kw):
        return Recorded(name, sections, log, lambda: room_.cfg, fail_on=fail.get(name), **kw)

    return ServiceGroup([make("broker", ("broker", "room")), make("publisher", ("room",), handover=True),
                         make("archive", ("archive",)), make("capture", ("audio",))])


def part(services: ServiceGroup, name: str) -> Recorded:
    return next(s for s in services if s.name == name)


def test_services_start_in_order_and_stop_in_reverse_each_with_its_own_timeout():
    log, r = [], Room(room())
    services = group(log, r)
    part(services, "capture").stop_timeout_s = 5.0
    services.start()
    assert [e[1] for e in log] == ["broker", "publisher", "archive", "capture"]
    log.clear()
    services.stop()
    assert log == [("stop", "capture", 5.0), ("stop", "archive", 10.0), ("stop", "publisher", 10.0),
                   ("stop", "broker", 10.0)]


def test_a_service_that_cannot_start_stops_those_started_before_it():
    log, r = [], Room(room())
    services = group(log, r, archive=lambda cfg: True)
    with pytest.raises(RuntimeError, match="archive cannot start"):
        services.start()
    assert [(e[0], e[1]) for e in log] == [("start", "broker"), ("start", "publisher"), ("start", "archive"),
                                           ("stop", "publisher"), ("stop", "broker")]


def test_a_change_restarts_exactly_the_services_built_from_the_changed_sections_in_order():
    log, r = [], Room(room())
    services = group(log, r)
    services.start()
    log.clear()
    new = room(audio={"reopen_interval_s": 9}, archive={"gap_min": 5})
    assert services.apply(r.cfg, new, r.use) == ["archive", "capture"]
    assert r.cfg is new
    assert [(e[0], e[1]) for e in log] == [("stop", "archive"), ("start", "archive"), ("stop", "capture"),
                                           ("start", "capture")]
    log.clear()
    assert services.apply(r.cfg, r.cfg.model_copy(deep=True), r.use) == []  # nothing changed: nothing restarts
    assert log == []
    assert services.apply(r.cfg, room("r2", audio={"reopen_interval_s": 9}, archive={"gap_min": 5}),
                          r.use) == ["broker", "publisher"]
    assert log == [("stop", "broker", 10.0), ("start", "broker", "r2"), ("start", "publisher", "r2")]  # handover


def test_a_change_that_cannot_start_rolls_every_touched_service_back():
    log, r = [], Room(room())
    services = group(log, r, publisher=lambda cfg: cfg.room.id == "bad")
    services.start()
    old = r.cfg
    log.clear()
    with pytest.raises(SwitchFailed) as err:
        services.apply(old, room("bad"), r.use)
    assert err.value.reason == "publisher cannot start in room bad" and err.value.rollback == ""
    assert r.cfg is old
    assert log == [("stop", "broker", 10.0), ("start", "broker", "bad"), ("start", "publisher", "bad"),
                   ("stop", "broker", 10.0), ("start", "broker", "r1"), ("start", "publisher", "r1")]
    assert all(service.running for service in services)


def test_a_failed_rollback_says_both_reasons():
    log, r = [], Room(room())
    rolling_back = lambda cfg: cfg.room.id == "r1" and ("start", "publisher", "bad") in log  # noqa: E731
    services = group(log, r, publisher=lambda cfg: cfg.room.id == "bad", broker=rolling_back)
    services.start()
    with pytest.raises(SwitchFailed) as err:
        services.apply(r.cfg, room("bad"), r.use)
    assert err.value.reason == "publisher cannot start in room bad"
    assert err.value.rollback == "broker cannot start in room r1"
    assert "rolling back failed: broker cannot start" in str(err.value)


def test_heal_restarts_only_the_services_that_ask_for_it_while_they_have_a_problem():
    log, r = [], Room(room())
    services = group(log, r)
    services.start()
    part(services, "capture").restart_on_problem = True
    part(services, "capture").broken = "stopped: device lost"
    part(services, "archive").broken = "disk gone"  # a problem, but not one a restart is asked for
    log.clear()
    assert services.heal() == ["capture"]
    assert [(e[0], e[1]) for e in log] == [("stop", "capture"), ("start", "capture")]
    assert services.heal() == []  # healthy again


def test_checks_are_every_service_problem_in_order():
    log, r = [], Room(room())
    services = group(log, r)
    part(services, "archive").broken = "disk gone"
    checks = services.checks()
    assert [c.name for c in checks] == ["broker", "publisher", "archive", "capture"]
    assert [c.problem() for c in checks] == [None, None, "disk gone", None] and all(c.critical for c in checks)


def test_services_need_distinct_names():
    log, r = [], Room(room())
    with pytest.raises(ValueError, match="distinct names"):
        ServiceGroup([Recorded("a", (), log, lambda: r.cfg), Recorded("a", (), log, lambda: r.cfg)])


# ---- the daemon's own services --------------------------------------------------------------------------------
def daemon(tmp_path, **cfg) -> Supervisor:
    return Supervisor(Config.model_validate({"state_dir": str(tmp_path / "state"), **cfg}),
                      RunOptions(config_path=None, models_dir=tmp_path))


def test_every_config_section_restarts_a_service_or_waits_for_the_next_start(tmp_path):
    sup = daemon(tmp_path)
    built_from = {section for service in sup.services for section in service.sections}
    assert set(Config.model_fields) - built_from == NEXT_START
    assert built_from <= set(Config.model_fields)
    assert [s.name for s in sup.services] == ["broker", "attached", "publisher", "archive", "pipeline", "capture",
                                              "panel", "display"]
    old = sup.cfg
    changed = {"display": old.model_copy(update={"display": old.display.model_copy(update={"port": 9999})}),
               "audio": old.model_copy(update={"audio": old.audio.model_copy(update={"reopen_interval_s": 7})}),
               "state_dir": old.model_copy(update={"state_dir": str(tmp_path / "other")})}
    affected = {key: [s.name for s in sup.services.affected(old, new)] for key, new in changed.items()}
    assert affected == {"display": ["display"], "audio": ["capture"],
                        "state_dir": ["broker", "publisher", "archive", "pipeline"]}


def test_the_configuration_guide_lists_what_each_service_restarts_for(tmp_path):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    doc = doc.split("## Applying a change")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^(|]*)", doc, re.M))
    listed = {name: tuple(re.findall(r"`(\w+)`", sections)) for name, sections in rows.items()}
    assert listed == {s.name: s.sections for s in daemon(tmp_path).services if s.sections}
    assert list(listed) == [s.name for s in daemon(tmp_path).services if s.sections]  # in restart order
    assert all(f"`{section}`" in doc.split("changes take effect at the next start")[0].rsplit("\n\n", 1)[-1]
               for section in NEXT_START)


def test_health_names_every_service_check_and_the_config_file(tmp_path):
    sup = daemon(tmp_path)
    sup.capture._thread, sup.capture._error = _ended(), "device lost"
    ok, problems = sup.status.health()
    assert not ok and "capture: stopped: device lost" in problems
    assert isinstance(sup.publisher.checks()[1], Check) and sup.publisher.checks()[1].name == "queue"
    assert not sup.publisher.checks()[1].critical


def _ended():
    import threading

    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    return thread


def test_a_display_setting_saved_in_the_panel_moves_the_running_display_server(tmp_path):
    first, second = free_port(), free_port()
    sup = daemon(tmp_path, room={"id": "hall"}, display={"host": "127.0.0.1", "port": first})
    sup.display.start()
    try:
        assert _connection(first)["room"] == "hall"
        moved = sup.cfg.model_copy(deep=True)
        moved.display.port = second
        assert sup.apply_config(moved) == ["display"]
        assert _connection(second)["room"] == "hall"
        with pytest.raises(OSError):
            _connection(first)
        assert sup.status.config_state()["detail"] == "restarted display"
        off = sup.cfg.model_copy(deep=True)
        off.display.enabled = False
        assert sup.apply_config(off) == ["display"]
        assert sup.display.server is None and sup.urls() == {}
        with pytest.raises(OSError):
            _connection(second)
    finally:
        sup.display.stop(5)


def _connection(port: int) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/display/connection.json")
    return json.loads(c.getresponse().read())
