"""The archive writer through its own faults: an unexpected exception from the database is reported and the writer
goes on; a hung disk with a full queue never holds up shutdown."""

from __future__ import annotations

import threading
import time

from test_archive import final

from appliance.archive import Archive
from appliance.config import Config
from appliance.services.archive import ArchiveService
from appliance.services.base import Context, RunOptions
from appliance.status import Status


def _stop_within(archive: Archive, timeout: float) -> float:
    """Seconds stop(timeout) took, measured from another thread (a stop that hangs fails the test, not the run)."""
    took: list[float] = []

    def run() -> None:
        t = time.monotonic()
        archive.stop(timeout)
        took.append(time.monotonic() - t)

    stopper = threading.Thread(target=run, daemon=True)
    stopper.start()
    stopper.join(timeout + 3)
    assert took, f"stop({timeout}) did not return within {timeout + 3} s"
    return took[0]


def test_an_unexpected_exception_from_the_database_is_reported_and_the_writer_goes_on(tmp_path):
    warnings: list[str] = []
    a = Archive(tmp_path / "archive.db", on_warning=warnings.append).start()
    a.put(final(0))
    a.flush()
    store, real_add = a._store, a._store.add_finals

    def broken(*args):
        raise RuntimeError("the database answered something nobody expected")

    store.add_finals = broken  # the real store, with one step that raises what no handler names
    a.put(final(1))
    a.flush()  # answered: the writer is alive
    assert "RuntimeError: the database answered something nobody expected" in (a.problem() or "")
    assert any("unexpected" in w for w in warnings)
    store.add_finals = real_add
    a.put(final(2))
    a.flush()
    assert a.problem() is None and a.written == 2
    assert _stop_within(a, 5.0) < 5.5


def test_the_archive_service_shows_the_writer_fault_in_health(tmp_path):
    cfg = Config.model_validate({"state_dir": str(tmp_path)})
    status = Status()
    service = ArchiveService(Context(cfg, RunOptions(config_path=None, models_dir=tmp_path), status))
    service.start()
    try:
        service.put(final(0))
        service.writer.flush()
        service.writer._store.add_finals = lambda *a: (_ for _ in ()).throw(KeyError("speaker"))
        service.put(final(1))
        service.writer.flush()
        (check,) = service.checks()
        assert check.name == "archive" and not check.critical and "KeyError" in check.problem()
    finally:
        service.stop(5)


def test_stop_returns_within_its_timeout_with_a_hung_disk_and_a_full_queue(tmp_path):
    a = Archive(tmp_path / "archive.db", queue_events=10).start()
    a.put(final(0))
    a.flush()
    release, entered = threading.Event(), threading.Event()
    real_add = a._store.add_finals

    def hung(*args):
        entered.set()
        release.wait(30)  # a disk that stopped answering
        return real_add(*args)

    a._store.add_finals = hung
    a.put(final(1))
    assert entered.wait(5)
    for n in range(2, 40):
        a.put(final(n))  # fills the queue; the rest are dropped, never blocking
    assert a.dropped > 0
    try:
        assert _stop_within(a, 5.0) < 5.5
    finally:
        release.set()
