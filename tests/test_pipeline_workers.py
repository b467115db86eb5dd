"""What the pipeline's worker threads share, on plain data: bounded puts that never hang, and a stage's restart
budget (errors kept, failing stages named until they succeed, a stage left dead past its budget).

The same on real models, with faults injected into running stages: test_self_healing.py."""

from __future__ import annotations

import queue
import threading
from collections import deque

from appliance.pipeline.stats import Stats
from appliance.pipeline.workers import (ERRORS_KEPT, STAGE_RESTART_WINDOW_S, STAGE_RESTARTS, StageHealth,
                                        put_dropping_oldest, put_with_timeout)


def test_a_full_queue_loses_its_oldest_item_and_counts_it():
    q, dropped = queue.Queue(maxsize=2), []
    for item in range(5):
        put_dropping_oldest(q, item, dropped=lambda: dropped.append(1))
    assert [q.get_nowait(), q.get_nowait()] == [3, 4] and len(dropped) == 3


def test_a_put_to_a_full_queue_gives_up_after_its_timeout():
    q = queue.Queue(maxsize=1)
    assert put_with_timeout(q, 1, 0.01) is True
    assert put_with_timeout(q, 2, 0.01) is False and q.get_nowait() == 1


def test_a_stage_restarts_within_its_budget_and_then_stays_stopped():
    now = [0.0]
    stats = Stats()
    health = StageHealth(stats, clock=lambda: now[0])
    assert all(health.may_restart("recognizer", RuntimeError(f"boom {i}")) for i in range(STAGE_RESTARTS))
    assert not health.may_restart("recognizer", RuntimeError("once too often"))
    assert health.may_restart("translator", RuntimeError("another stage has its own budget"))
    assert stats.restarts == STAGE_RESTARTS + 1
    now[0] = STAGE_RESTART_WINDOW_S + 1  # the failures left the window: the budget is back
    assert health.may_restart("recognizer", RuntimeError("later"))


def test_errors_are_kept_bounded_and_a_stage_is_failing_until_it_succeeds():
    health = StageHealth(Stats())
    for i in range(ERRORS_KEPT + 5):
        health.may_restart(f"stage{i}", RuntimeError(f"error {i}"))
    assert len(health.errors) == ERRORS_KEPT and health.errors[-1] == f"stage{ERRORS_KEPT + 4}: error {ERRORS_KEPT + 4}"
    assert health.failing["stage0"] == "stage0: error 0"
    health.ok("stage0")
    assert "stage0" not in health.failing


def run_on_a_thread(health, work, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=health.run, args=("recognizer", work), kwargs=kwargs)
    thread.start()
    thread.join(10)
    return thread


def test_a_worker_that_raises_runs_again_in_place():
    attempts, restarts = deque([RuntimeError("first"), RuntimeError("second"), None]), []

    def work():
        if exc := attempts.popleft():
            raise exc

    thread = run_on_a_thread(StageHealth(Stats()), work, give_up=lambda: restarts.append("gave up"),
                             after_restart=lambda: restarts.append("restarted"))
    assert restarts == ["restarted", "restarted"] and not attempts
    assert getattr(thread, "stopped", False)  # it ended on request: not dead


def test_a_worker_past_its_budget_gives_up_and_is_dead():
    gave_up = []

    def work():
        raise RuntimeError("always")

    thread = run_on_a_thread(StageHealth(Stats()), work, give_up=lambda: gave_up.append(1))
    assert gave_up == [1] and not getattr(thread, "stopped", False)
