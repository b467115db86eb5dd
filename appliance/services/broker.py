"""The embedded room broker as a service: mosquitto on loopback (and its WebSocket listener for displays), closed
by the appliance's user and the room's read-only display user. With `broker.mode = external` it runs nothing.

It is built from the broker section, the state folder (its files and the credentials) and the room (the display
user and ACL): a new room only rewrites the users and reloads mosquitto, anything else restarts it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.bus.access import BrokerAccess
from appliance.services.base import Context, Service

log = logging.getLogger(__name__)


class BrokerService(Service):
    name = "broker"
    sections = ("broker", "room", "state_dir")
    stop_timeout_s = 5.0

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.broker = None  # appliance.bus.broker.EmbeddedBroker while the embedded broker runs
        self._built_from: tuple = ()  # (broker section, state folder, room id) it was started on

    @property
    def access(self) -> BrokerAccess:
        """Who may use the room broker (the appliance's login, the display user), from the config in force."""
        return BrokerAccess(self.ctx.cfg)

    def start(self) -> None:
        cfg = self.ctx.cfg
        if cfg.broker.mode != "embedded":
            return
        from appliance.bus.broker import EmbeddedBroker

        b, access = cfg.broker, self.access
        broker = EmbeddedBroker(host="127.0.0.1", port=b.port, ws_port=b.ws_port, ws_host=b.ws_host,
                                state_dir=Path(cfg.state_dir) / "broker", users=access.broker_users())
        broker.start()
        self.broker, self._built_from = broker, (b, cfg.state_dir, cfg.room.id)
        log.info("embedded broker: MQTT on 127.0.0.1:%d, WebSocket on %s:%d (closed: display user %s reads room %s)",
                 b.port, b.ws_host or "*", b.ws_port, access.display().username, cfg.room.id)

    def restart(self) -> None:
        cfg = self.ctx.cfg
        if self.broker is not None and self._built_from[:2] == (cfg.broker, cfg.state_dir):
            if self._built_from[2] != cfg.room.id:  # a new room: its display user and ACL, connections kept
                self.access.broker_users()
                self.broker.reload()
                self._built_from = (cfg.broker, cfg.state_dir, cfg.room.id)
            return
        super().restart()

    def stop(self, timeout: float) -> None:
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.stop(timeout)

    def rotate_display_password(self) -> str:
        """A new read-only password for this room's displays. The embedded broker restarts, which ends every
        connection made with the old password (mosquitto would keep them on a reload); the publisher reconnects
        by itself (finals wait in its on-disk queue) and displays fetch the new password from the display server.
        Returns the display user's name."""
        access = self.access
        cred = access.store.rotate_display(self.ctx.cfg.room.id)
        if self.broker is not None:
            access.broker_users()
            self.broker.stop()
            self.broker.start()
        log.info("display password of room %s rotated: displays reconnect with the new one", self.ctx.cfg.room.id)
        return cred.username

    def problem(self) -> str | None:
        broker = self.broker
        if broker is None:
            return None
        watcher = getattr(broker, "_watcher", None)
        if not broker.running() and (watcher is None or not watcher.is_alive()):
            return "embedded mosquitto exited and is no longer restarted"
        return None
