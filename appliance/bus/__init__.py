"""The caption bus: MQTT topics and message schema, the publisher with its durable queue of finals,
the embedded broker, and the de-duplicating client the displays share.

    schema.py      topic names, the caption message (v, seq, limits), parsing of what clients read
    spool.py       bounded on-disk queue of finals not yet acknowledged by the broker (SQLite)
    publisher.py   Publisher: start / publish / publish_detail / stop (paho-mqtt 2.x)
    broker.py      EmbeddedBroker: mosquitto as a subprocess (TCP on loopback + WebSocket), closed by users + ACL
    credentials.py the broker's users: the appliance, one read-only display user per room (password file, ACL)
    access.py      BrokerAccess: those users for the configured room, and the details a display is given
    client.py      CaptionFeed: subscriber that de-duplicates and rolls captions up (terminal display, bench)
    discovery.py   optional Home Assistant MQTT discovery messages
"""

from appliance.bus.schema import SCHEMA_VERSION, Topics

__all__ = ["SCHEMA_VERSION", "Topics"]
