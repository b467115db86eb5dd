"""systemd service notifications (sd_notify) without libsystemd: one datagram per call to $NOTIFY_SOCKET.

Every function is a no-op returning False when the process was not started by systemd with
Type=notify (no $NOTIFY_SOCKET), and never raises: a lost notification must not stop the appliance.
Addresses starting with '@' are abstract unix sockets (the '@' becomes a leading NUL byte).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

__all__ = ["send", "ready", "status", "watchdog", "stopping", "reloading", "extend_timeout", "watchdog_interval"]


def _address() -> str | None:
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return None
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if not addr.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is not a unix socket path; notifications are off", addr)
        return None
    return addr


def _clean(text: str) -> str:
    """STATUS= is one line: newlines would start new assignments."""
    return " ".join(str(text).split())


def send(*assignments: str) -> bool:
    """Send 'KEY=value' assignments in one datagram; True when it was sent."""
    addr = _address()
    if addr is None or not assignments:
        return False
    payload = "\n".join(assignments).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, socket.MSG_DONTWAIT, addr)  # never let a slow reader stall the work loop
        return True
    except BlockingIOError:
        log.debug("sd_notify socket is full; dropped %s", assignments)
        return False
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def ready(status_text: str | None = None) -> bool:
    """Start-up finished (Type=notify): READY=1, with an optional STATUS line."""
    lines = ["READY=1"]
    if status_text:
        lines.append("STATUS=" + _clean(status_text))
    return send(*lines)


def status(text: str) -> bool:
    """The one-line status `systemctl status` shows."""
    return send("STATUS=" + _clean(text))


def watchdog() -> bool:
    """Keep-alive for WatchdogSec=: send only while the service is healthy."""
    return send("WATCHDOG=1")


def stopping(status_text: str | None = None) -> bool:
    lines = ["STOPPING=1"]
    if status_text:
        lines.append("STATUS=" + _clean(status_text))
    return send(*lines)


def reloading() -> bool:
    """Config is being applied; call ready() when done (MONOTONIC_USEC is required by systemd >= 253)."""
    import time

    return send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def extend_timeout(seconds: float) -> bool:
    """Ask for more start/stop time (long model loads, flushing finals)."""
    return send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, or None when the watchdog is off or not ours.

    systemd sets WATCHDOG_PID to the main process; a child that inherited the environment must not ping.
    """
    raw = os.environ.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; watchdog pings are off", raw)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000
