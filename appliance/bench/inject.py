"""Fault injection and compressed time for a daemon under test. `python -m appliance.bench.inject ARGS...` is
`appliance ARGS...` with these hooks installed into the daemon before it runs (DaemonRun starts the daemon this
way); the daemon itself never imports this module, and `appliance run` has no such hooks.

`APPLIANCE_FAULTS=recognizer@3,translator@1` makes the 3rd speech-recognition call and the 1st translation call
of each started pipeline raise `InjectedFault`. `APPLIANCE_REPLAY_SPEED=3` replays an input file three times
faster than real time (compressed time for the soak test).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

log = logging.getLogger(__name__)

ENV = "APPLIANCE_FAULTS"
SPEED_ENV = "APPLIANCE_REPLAY_SPEED"
STAGES = ("recognizer", "translator")


class InjectedFault(RuntimeError):
    """Raised by a stage on purpose (APPLIANCE_FAULTS)."""


def parse(spec: str) -> dict[str, int]:
    """'recognizer@3,translator' -> {'recognizer': 3, 'translator': 1}; unknown stages are an error."""
    out: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        stage, _, nth = item.partition("@")
        if stage not in STAGES or (nth and not nth.isdigit()) or nth == "0":
            raise ValueError(f"{ENV}={spec!r}: use STAGE[@N] with STAGE one of {', '.join(STAGES)} and N >= 1")
        out[stage] = int(nth or 1)
    return out


def _raise_on_call(func: Callable, nth: int, stage: str) -> Callable:
    calls, lock = [0], threading.Lock()

    def wrapped(*args, **kwargs):
        with lock:
            calls[0] += 1
            fire = calls[0] == nth
        if fire:
            log.warning("injecting a fault into the %s (call %d)", stage, nth)
            raise InjectedFault(f"injected {stage} fault")
        return func(*args, **kwargs)

    return wrapped


def inject_from_env(engines) -> None:
    """Wrap the engines' recognizer / translators as APPLIANCE_FAULTS asks (the translators share one count)."""
    plan = parse(os.environ.get(ENV, ""))
    if "recognizer" in plan:
        engines.asr.transcribe = _raise_on_call(engines.asr.transcribe, plan["recognizer"], "recognizer")
    if "translator" in plan:
        shared = _raise_on_call(lambda t, *a, **k: t(*a, **k), plan["translator"], "translator")
        for translator in engines.translators.values():
            original = translator.translate
            translator.translate = lambda *a, _t=original, **k: shared(_t, *a, **k)


def replay_speed() -> float:
    """APPLIANCE_REPLAY_SPEED as a factor (1.0 when unset); a bad value is an error that names the variable."""
    raw = os.environ.get(SPEED_ENV, "").strip()
    try:
        speed = float(raw) if raw else 1.0
    except ValueError:
        speed = 0.0
    if not 0.1 <= speed <= 100:
        raise ValueError(f"{SPEED_ENV}={raw!r}: use a factor between 0.1 and 100")
    return speed


def install(supervisor) -> None:
    """The hooks, in a daemon's Supervisor before it runs: each new pipeline's engines are wrapped as
    APPLIANCE_FAULTS asks, and an input file plays at APPLIANCE_REPLAY_SPEED."""
    supervisor.pipeline.on_engines.append(inject_from_env)
    supervisor.capture.replay_speed = replay_speed()


def main(argv: list[str] | None = None) -> int:
    from appliance import cli

    return cli.main(argv, prepare=install)


if __name__ == "__main__":
    raise SystemExit(main())
