"""Who may use the room broker, from the config: the appliance's own login, the users file + ACL the embedded
broker starts with, and the connection details a room display is given (by the display server).

The passwords live in `<state_dir>/broker-credentials.json` (0600, see credentials.py); nothing here talks MQTT.
"""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.bus.broker import BrokerUsers
from appliance.bus.credentials import Credential, CredentialError, CredentialStore, write_broker_files

log = logging.getLogger(__name__)

__all__ = ["BrokerAccess", "CREDENTIALS_FILE"]

CREDENTIALS_FILE = "broker-credentials.json"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class BrokerAccess:
    def __init__(self, cfg):
        self.cfg = cfg
        self.store = CredentialStore(Path(cfg.state_dir) / CREDENTIALS_FILE)

    def appliance(self) -> Credential:
        """The appliance's own user: it publishes captions and status."""
        return self.store.appliance()

    def display(self) -> Credential:
        """The room's read-only display user (created at first use)."""
        return self.store.display(self.cfg.room.id)

    def broker_users(self) -> BrokerUsers:
        """Write the embedded broker's password file and ACL (0600, under <state_dir>/broker/) for this room."""
        passwd, acl = write_broker_files(self.store, Path(self.cfg.state_dir) / "broker",
                                         prefix=self.cfg.broker.topic_prefix, rooms=[self.cfg.room.id])
        return BrokerUsers(passwd, acl)

    def display_connection(self, languages: list[str]) -> dict:
        """What a room display needs: the broker's WebSocket port (and host when an external broker runs elsewhere)
        and the room's read-only user (always with the embedded broker; with an external one when
        `appliance broker users` made it)."""
        b = self.cfg.broker
        info = {"room": self.cfg.room.id, "name": self.cfg.room.name, "prefix": b.topic_prefix,
                "languages": languages, "ws_port": b.ws_port}
        if b.mode == "external" and b.host not in LOCAL_HOSTS:
            info["ws_host"] = b.host  # on this machine the page's own host name is used
        try:
            if b.mode == "embedded" or self.cfg.room.id in self.store.rooms():
                cred = self.display()
                info.update(username=cred.username, password=cred.password)
        except CredentialError as exc:  # displays then connect without a user, and a closed broker refuses them
            log.error("display details without the room's user: %s", exc)
        return info
