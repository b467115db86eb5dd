"""The caption publisher as a service: the MQTT publisher with its on-disk queue of finals, and the one sink
door through which captions reach it.

A restart hands over without losing a final: the new publisher is the sink from the start (until it connects, its
finals wait in its on-disk queue, never in memory), and the old one flushes what it has before it stops. A
stopped publisher stays the sink, so a late final still goes to the queue and is sent at the next start.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from appliance.bus.access import BrokerAccess
from appliance.services.base import Check, Context, Service

log = logging.getLogger(__name__)

RECONNECT_MAX_S = 3.0  # longest wait between broker reconnection attempts: back within 5 s of the broker


class PublisherService(Service):
    name = "publisher"
    sections = ("room", "broker", "state_dir")

    def __init__(self, ctx: Context, detail: Callable[[], dict]):
        """detail: the retained status detail (room, languages, models, ...) as it is now."""
        self.ctx = ctx
        self.detail = detail
        self.publisher = None  # appliance.bus.publisher.Publisher, once started
        self._lock = threading.Lock()  # a caption never goes into a publisher that is being swapped out

    def connection(self):
        """The broker section the publisher connects with: the appliance's own user on loopback with the embedded
        broker; otherwise as configured, with the password from systemd's credential when the config holds none."""
        cfg = self.ctx.cfg
        broker = cfg.broker
        if broker.mode == "embedded":
            cred = BrokerAccess(cfg).appliance()
            return broker.model_copy(update={"host": "127.0.0.1", "tls": False, "username": cred.username,
                                             "password": cred.password})
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        cred = Path(cred_dir) / "broker-password" if cred_dir else None
        if not broker.password and cred is not None and cred.is_file():
            password = cred.read_text(encoding="utf-8").strip()
            if password:
                broker = broker.model_copy(update={"password": password})
        return broker

    def start(self) -> None:
        """Replace the publisher (see the module's docstring); bad TLS files and the like raise here."""
        from appliance.bus.publisher import Publisher

        cfg = self.ctx.cfg
        publisher = Publisher(self.connection(), room=cfg.room.id, state_dir=Path(cfg.state_dir),
                              on_state=self.ctx.status.set_broker_state, ha_discovery=cfg.broker.ha_discovery,
                              max_backoff_s=RECONNECT_MAX_S)
        with self._lock:
            old, self.publisher = self.publisher, publisher
        if old is not None:
            old.stop()
        publisher.start()
        publisher.publish_detail(self.detail())

    def restart(self) -> None:
        self.start()

    def stop(self, timeout: float) -> None:
        """Flush and disconnect (sends queued finals, then the clean-exit status)."""
        with self._lock:
            publisher = self.publisher
        if publisher is not None:
            publisher.stop(timeout)

    def publish(self, event) -> None:
        with self._lock:
            if self.publisher is not None:  # a stopped or restarting one queues finals on disk
                self.publisher.publish(event)
            elif event.final:
                log.error("final %s produced before the publisher started: not published", getattr(event, "id", "?"))

    def announce(self) -> None:
        """Publish the status detail again (after the models or languages changed)."""
        publisher = self.publisher
        if publisher is not None:
            publisher.publish_detail(self.detail())

    def problem(self) -> str | None:
        thread = getattr(self.publisher, "_thread", None)
        if thread is not None and not thread.is_alive():
            return "sender thread stopped"
        return None

    def queue_problem(self) -> str | None:
        """The on-disk queue cannot be written: finals are held in memory (a restart would lose them)."""
        spool = getattr(self.publisher, "spool", None)
        if spool is not None and spool.disk_error:
            return (f"cannot write {spool.path} ({spool.disk_error}); {spool.held_in_memory} final(s) held in memory "
                    "until it can")
        return None

    def checks(self) -> list[Check]:
        return [*super().checks(), Check("queue", self.queue_problem, critical=False)]
