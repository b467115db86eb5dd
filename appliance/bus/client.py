"""What every display does with the caption stream: de-duplicate, drop stale partials, roll up two lines.

`CaptionState` is pure (no MQTT) and shared by the terminal display and the benchmark; `CaptionFeed`
subscribes to one room and language over MQTT (TCP or WebSocket) and feeds a CaptionState.

De-duplication rule (docs/protocol.md): `seq` increases for every message of a room. A final whose `seq` is
not above the last final's, or whose (`id`, `rev`) was already shown, is a repeat (sent again after a
reconnection) and is dropped. A partial for an utterance already final, or older than the shown partial of
the same utterance, is dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import textwrap
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance.bus.schema import Topics, no_delay, parse_caption, parse_status

log = logging.getLogger(__name__)

__all__ = ["CaptionState", "CaptionFeed", "FeedOptions"]

ROWS = 2
WIDTH = 42  # characters per caption line (broadcast two-line roll-up)
REMEMBER = 2000  # (id, rev) keys kept for de-duplication
SESSION_EXPIRY_S = 600  # the broker keeps a display's subscription (and queues finals) this long while it is away


def untranslated_mark(msg: dict) -> str:
    """Prefix of an untranslated caption's first line: "[EN] " (the language actually shown)."""
    return f"[{str(msg.get('source_lang') or '?').upper()}] "


class CaptionState:
    def __init__(self, *, rows: int = ROWS, width: int = WIDTH, remember: int = REMEMBER):
        self.rows_n, self.width, self.remember = rows, width, remember
        self.final_lines: list[str] = []
        self.partial: dict | None = None
        self.last_final_seq = -1
        self.finals: list[dict] = []  # accepted finals, in order (bounded like the key memory)
        self.duplicates = 0
        self.stale = 0
        self._seen: OrderedDict = OrderedDict()
        self.last_speaker: str | None = None  # id of the speaker of the last final shown

    def _lines(self, msg: dict) -> list[str]:
        lines = msg.get("lines")
        if isinstance(lines, list) and lines and all(isinstance(x, str) for x in lines):
            return [x for x in lines if x.strip()]
        return textwrap.wrap(msg.get("text", ""), self.width) or []

    def accept(self, msg: dict) -> bool:
        """Apply one parsed caption message; True when what is shown changed."""
        key = (msg["id"], msg["rev"])
        if msg["final"]:
            if msg["seq"] <= self.last_final_seq or (key in self._seen and self._seen[key]):
                self.duplicates += 1
                return False
            self.last_final_seq = msg["seq"]
            self._seen[key] = True
            self._seen[(msg["id"], None)] = True  # the utterance is final: later partials of it are stale
            while len(self._seen) > self.remember:
                self._seen.popitem(last=False)
            msg["turn"] = self._turn_label(msg)  # "Chair" when the speaker changes here, else None
            sp = msg.get("speaker")
            if sp:
                self.last_speaker = sp["id"]
            self.finals.append(msg)
            del self.finals[: -self.remember]
            self.final_lines = (self.final_lines + self._marked_lines(msg, msg["turn"]))[-self.rows_n:]
            if self.partial is not None and self.partial["id"] == msg["id"]:
                self.partial = None
            return True
        if (msg["id"], None) in self._seen or msg["seq"] < self.last_final_seq:
            self.stale += 1
            return False
        p = self.partial
        if p is not None and p["id"] == msg["id"] and (msg["rev"], msg["seq"]) <= (p["rev"], p["seq"]):
            self.stale += 1
            return False
        self.partial = msg
        return True

    def rows(self) -> list[tuple[str, bool]]:
        """The lines to show now, oldest first: (text, provisional)."""
        rows = [(x, False) for x in self.final_lines]
        if self.partial is not None:
            rows += [(x, True) for x in self._marked_lines(self.partial, self._turn_label(self.partial))]
        return rows[-self.rows_n:]

    def _turn_label(self, msg: dict) -> str | None:
        """The speaker's name (or id) when this caption's speaker differs from the last final's, else None."""
        sp = msg.get("speaker")
        if not sp or sp["id"] == self.last_speaker:
            return None
        return sp.get("name") or sp["id"]

    def _marked_lines(self, msg: dict, label: str | None) -> list[str]:
        """A change of speaker starts its first line with "Name: ", untranslated source text (no translation agreed
        with it) with its language, "[EN] " (both: "[EN] Name: "); finals always start a new line, and the marks
        count in the line width, as on the web display."""
        mark = untranslated_mark(msg) if msg.get("untranslated") is True else ""
        if not label and not mark:
            return self._lines(msg)
        prefix, text = mark + (f"{label}: " if label else ""), msg.get("text", "")
        words = text.split()
        if not words:
            return []
        # the name alone on the first line when it fills it, or when the first word would fit only on a line of its
        # own (a word longer than a whole line is cut to fill the rest of the name's line, as on the web display)
        if len(prefix) >= self.width or len(words[0]) + len(prefix) > self.width >= len(words[0]):
            return [prefix.rstrip()] + textwrap.wrap(text, self.width)
        return textwrap.wrap(text, self.width, initial_indent=prefix)


@dataclass
class FeedOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    transport: str = "tcp"  # or "websockets"
    prefix: str = "appliance"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    client_id: str | None = None
    keepalive_s: int = 30
    extra: dict = field(default_factory=dict)


class CaptionFeed:
    """Subscribes to `<prefix>/<room>/captions/<lang>` and the room's status; reconnects by itself.

    on_change(state) after every accepted caption; on_status("online"|"offline"|"connected"|"disconnected").
    A persistent MQTT 5 session (expiry SESSION_EXPIRY_S) makes the broker keep finals for a display that is
    briefly away, e.g. while the broker itself restarts with persistence.
    """

    def __init__(self, opts: FeedOptions, room: str, lang: str, *, state: CaptionState | None = None,
                 on_change: Callable[[CaptionState], None] | None = None,
                 on_status: Callable[[str], None] | None = None):
        self.opts, self.room, self.lang = opts, room, lang
        self.topics = Topics(opts.prefix, room)
        self.state = state or CaptionState()
        self.on_change, self.on_status = on_change, on_status
        self.room_status: str | None = None
        self.detail: dict | None = None
        self.connected = threading.Event()
        self.malformed = 0
        self._lock = threading.Lock()
        cid = opts.client_id or f"display-{room}-{lang}-{socket.gethostname()}-{os.getpid()}-{id(self) % 10000}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5,
                        transport=opts.transport)
        if opts.username:
            c.username_pw_set(opts.username, opts.password)
        if opts.tls:
            c.tls_set(ca_certs=opts.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        c.reconnect_delay_set(0.5, 5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        self.client = c
        self._fail_logged = False
        self._stopping = False

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(self.opts.host, self.opts.port, keepalive=self.opts.keepalive_s,
                                  clean_start=False, properties=props)  # mosquitto 2.0 persists only sessions begun with clean_start=False
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def _tell(self, status: str) -> None:
        if self.on_status is not None:
            self.on_status(status)

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            log.warning("broker %s:%d refused the display: %s", self.opts.host, self.opts.port, reason)
            self._tell("refused")
            return
        no_delay(client)
        self._fail_logged = False
        client.subscribe([(self.topics.captions(self.lang), 1), (self.topics.status, 1), (self.topics.detail, 0)])
        self.connected.set()
        self._tell("connected")

    def _on_subscribe(self, client, userdata, mid, reasons, properties) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            log.warning("broker refused the display's subscription to room %s in %s: %s", self.room, self.lang, refused[0])
        else:
            log.info("subscribed to room %s in %s", self.room, self.lang)

    def _on_connect_fail(self, client, userdata) -> None:
        if not self._fail_logged:  # once per outage; paho keeps retrying (0.5 s .. 5 s)
            log.warning("cannot reach the MQTT broker at %s:%d (%s); retrying", self.opts.host, self.opts.port,
                        self.opts.transport)
            self._fail_logged = True
        self._tell("disconnected")

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if self.connected.is_set() and not self._stopping:
            log.warning("lost the broker %s:%d (%s); reconnecting", self.opts.host, self.opts.port, reason)
        self.connected.clear()
        self._tell("disconnected")

    def _on_message(self, client, userdata, message) -> None:
        try:
            self._handle(message.topic, message.payload)
        except Exception:  # never let one message stop the display
            self.malformed += 1
            log.exception("ignored a message on %s that could not be handled", message.topic)

    def _handle(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.status:
            status = parse_status(payload, topic)
            if status is not None:
                self.room_status = status
                self._tell(status)
            return
        if topic == self.topics.detail:
            import json

            try:
                detail = json.loads(payload)
                self.detail = detail if isinstance(detail, dict) else None
            except ValueError:
                log.warning("ignored a malformed status detail on %s", topic)
            return
        msg = parse_caption(payload, topic)
        if msg is None:
            self.malformed += 1
            return
        with self._lock:
            changed = self.state.accept(msg)
        if changed and self.on_change is not None:
            self.on_change(self.state)
