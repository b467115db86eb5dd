"""Publishes caption events for one room (paho-mqtt 2.x), never losing a final.

One sender thread owns the MQTT connection. Finals are written to the on-disk spool first and deleted only
when the broker acknowledges them (QoS 1); after a (re)connection every unacknowledged final is sent again,
oldest first, before anything newer, so displays see finals in order (a final may arrive twice after a
reconnection; displays drop it by `seq`). Partials go out at QoS 0 only while connected. Each connection is
a fresh client (no hidden resends inside paho); reconnection backs off exponentially up to `max_backoff_s`.

Status: `<prefix>/<room>/status` is `online` (retained) after connecting and `offline` as the last will and
on a clean stop; `<prefix>/<room>/status/detail` is retained JSON (languages, models, version, uptime).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt

from appliance.bus import discovery
from appliance.bus.schema import STATUS_OFFLINE, STATUS_ONLINE, Topics, caption_message, encode, no_delay
from appliance.bus.spool import DEFAULT_MAX_ROWS, Spool

log = logging.getLogger(__name__)

__all__ = ["Publisher"]

WINDOW = 20  # finals in flight (sent, not yet acknowledged) on one connection
MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 10.0  # a connection that lasted this long resets the backoff
CONNACK_TIMEOUT_S = 10.0
DETAIL_INTERVAL_S = 60.0  # the retained detail (with uptime) is refreshed this often
REPEAT_LOG_S = 60.0  # the same connection error is logged again at most this often

StateCallback = Callable[[str, str], None]


class Publisher:
    """publish(event) from any thread; start() once; stop() flushes finals and says `offline`."""

    def __init__(self, cfg, *, room: str, state_dir: str | os.PathLike, on_state: StateCallback | None = None,
                 ha_discovery: bool | None = None, max_backoff_s: float = MAX_BACKOFF_S,
                 spool_max_rows: int = DEFAULT_MAX_ROWS, window: int = WINDOW):
        """cfg: appliance.config.BrokerConfig (host, port, tls, ca_file, cert_file, key_file, username, password,
        client_id, keepalive_s, topic_prefix); room: the room id; state_dir: the spool lives in
        <state_dir>/bus-<room>.sqlite; on_state(state, detail) is told connecting / connected / unreachable /
        refused / disconnected / stopped."""
        self.cfg = cfg
        self.room = room
        self.topics = Topics(cfg.topic_prefix, room)
        self.client_id = cfg.client_id or f"appliance-{room}"
        self.on_state = on_state
        self.ha_discovery = bool(getattr(cfg, "ha_discovery", False) if ha_discovery is None else ha_discovery)
        self.max_backoff_s = max_backoff_s
        self.window = window
        self.spool = Spool(Path(state_dir) / f"bus-{room}.sqlite", max_rows=spool_max_rows)
        self.sent_finals = 0
        self.sent_partials = 0
        self.dropped_partials = 0
        self._started_at = time.time()
        self._seq_lock = threading.Lock()
        self._seq = max(self.spool.max_seq(), time.time_ns() // 1_000_000)
        self._outbox: deque = deque()  # (seq, topic, payload, final) in publish order, while connected
        self._acks: deque = deque()  # mids acknowledged by the broker (appended by paho's thread)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._connack = threading.Event()
        self._refusal = ""
        self._detail: dict | None = None
        self._detail_dirty = False
        self._thread: threading.Thread | None = None
        self._state = ("", "")
        self._last_error = ("", 0.0)
        self._flush_deadline = 0.0

    # ---- producer side --------------------------------------------------------------------------------------
    def publish(self, event: Any) -> int:
        """Queue one caption event (a CaptionEvent or dict); returns its `seq`. Finals are stored on disk first.
        After stop() finals are still stored (sent by the next Publisher of this room) and partials dropped."""
        with self._seq_lock:
            self._seq += 1
            msg = caption_message(event, self._seq)
            topic = self.topics.captions(msg["lang"])
            payload = encode(msg)
            if msg["final"]:
                self.spool.put(self._seq, topic, payload)
                if self._connected.is_set():
                    self._outbox.append((self._seq, topic, payload, True))
            elif self._connected.is_set():
                self._outbox.append((self._seq, topic, payload, False))
            else:
                self.dropped_partials += 1
            seq = self._seq
        self._wake.set()
        return seq

    def publish_detail(self, detail: dict) -> None:
        """The retained status detail (room, languages, models, version, started...); uptime_s is added."""
        self._detail = dict(detail)
        self._detail_dirty = True
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Finals stored and not yet acknowledged by the broker."""
        return len(self.spool)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._make_client()  # bad TLS files etc. fail here, in the caller's thread, with a clear message
        self._thread = threading.Thread(target=self._run, name=f"mqtt-publisher-{self.room}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to `timeout` seconds), publish `offline`, disconnect."""
        self._flush_deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 5)
            self._thread = None
        left = len(self.spool)
        if left:
            log.warning("stopped with %d final(s) not yet acknowledged: they stay queued in %s and are sent at the "
                        "next start", left, self.spool.path)
        self._set_state("stopped", f"{left} final(s) queued" if left else "")

    # ---- connection -----------------------------------------------------------------------------------------
    def _set_state(self, state: str, detail: str = "") -> None:
        if (state, detail) == self._state:
            return
        self._state = (state, detail)
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:  # a status sink must not stop the publisher
                log.exception("on_state callback failed")

    def _log_error(self, message: str) -> None:
        now = time.monotonic()
        if message != self._last_error[0] or now - self._last_error[1] > REPEAT_LOG_S:
            log.warning("%s; retrying (captions are kept until it works)", message)
            self._last_error = (message, now)

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                        clean_session=True, reconnect_on_failure=False)
        c.will_set(self.topics.status, STATUS_OFFLINE, qos=1, retain=True)
        if cfg.username:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            for name in ("ca_file", "cert_file", "key_file"):
                path = getattr(cfg, name)
                if path and not os.path.isfile(path):
                    raise ValueError(f"broker.{name}: {path} does not exist; fix the path or clear it")
            if bool(cfg.cert_file) != bool(cfg.key_file):
                raise ValueError("broker.cert_file and broker.key_file go together: set both or neither")
            c.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None, keyfile=cfg.key_file or None,
                      cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
        else:
            no_delay(client)
            self._connected.set()
        self._connack.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self._connected.clear()
        self._connack.set()
        self._wake.set()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        # called by paho's thread with its internal lock held: only hand the mid over
        self._acks.append(mid)
        self._wake.set()

    def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        while not self._stop.is_set():
            self._set_state("connecting", f"{self.cfg.host}:{self.cfg.port}")
            began = time.monotonic()
            self._session()
            if self._stop.is_set():
                break
            if time.monotonic() - began > STABLE_S:
                backoff = MIN_BACKOFF_S
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def _session(self) -> None:
        """One connection: connect, resend the spool, publish until disconnected or stopped."""
        where = f"{self.cfg.host}:{self.cfg.port}"
        client = self._make_client()
        self._connack.clear()
        self._refusal = ""
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            self._set_state("unreachable", f"{where}: {exc}")
            self._log_error(f"cannot reach the MQTT broker at {where}: {exc}")
            return
        client.loop_start()
        try:
            self._connack.wait(CONNACK_TIMEOUT_S)
            if not self._connected.is_set():
                why = self._refusal or "no answer to CONNECT"
                hint = " (check broker.username / broker.password)" if "authori" in why.lower() or "user name" in why.lower() else ""
                self._set_state("refused", f"{where}: {why}")
                self._log_error(f"the MQTT broker at {where} refused the connection: {why}{hint}")
                return
            log.info("connected to the MQTT broker at %s as %s (%d final(s) queued)", where, self.client_id, len(self.spool))
            self._last_error = ("", 0.0)
            self._set_state("connected", where)
            self._connected_loop(client)
        finally:
            self._connected.clear()
            client.disconnect()
            client.loop_stop()

    def _connected_loop(self, client: mqtt.Client) -> None:
        client.publish(self.topics.status, STATUS_ONLINE, qos=1, retain=True)
        self._detail_dirty = self._detail is not None
        detail_at = 0.0
        inflight: dict[int, int] = {}  # mid -> seq
        self._acks.clear()
        with self._seq_lock:
            self._outbox.clear()
            resend_upto = self.spool.max_seq()
        last_sent = 0  # highest seq of a final submitted on this connection
        while True:
            self._wake.clear()
            if not self._connected.is_set():
                log.warning("lost the MQTT broker connection (%d final(s) waiting for acknowledgement)", len(self.spool))
                self._set_state("disconnected", "reconnecting")
                return
            while self._acks:
                seq = inflight.pop(self._acks.popleft(), None)
                if seq is not None:
                    self.spool.ack(seq)
                    self.sent_finals += 1
            # 1) finals stored before this connection, oldest first
            if last_sent < resend_upto and len(inflight) < self.window:
                for seq, topic, payload in self.spool.after(last_sent, self.window - len(inflight)):
                    if seq > resend_upto:
                        break
                    inflight[client.publish(topic, payload, qos=1).mid] = seq
                    last_sent = seq
                following = self.spool.after(last_sent, 1)
                if not following or following[0][0] > resend_upto:
                    last_sent = resend_upto  # every stored final is on its way
            # 2) new events in publish order
            while last_sent >= resend_upto and self._outbox and len(inflight) < self.window:
                seq, topic, payload, final = self._outbox.popleft()
                if final:
                    if seq > last_sent:
                        inflight[client.publish(topic, payload, qos=1).mid] = seq
                        last_sent = seq
                else:
                    client.publish(topic, payload, qos=0)
                    self.sent_partials += 1
            if self._detail_dirty or (self._detail is not None and time.monotonic() - detail_at > DETAIL_INTERVAL_S):
                self._publish_detail(client)
                detail_at = time.monotonic()
            if self._stop.is_set():
                idle = not inflight and not self._outbox and last_sent >= resend_upto
                if idle or time.monotonic() > self._flush_deadline:
                    client.publish(self.topics.status, STATUS_OFFLINE, qos=1, retain=True).wait_for_publish(2.0)
                    return
            self._wake.wait(1.0)

    def _publish_detail(self, client: mqtt.Client) -> None:
        self._detail_dirty = False
        detail = dict(self._detail or {})
        detail.setdefault("room", self.room)
        detail["v"] = 1
        detail["uptime_s"] = round(time.time() - float(detail.get("started") or self._started_at), 1)
        client.publish(self.topics.detail, json.dumps(detail, ensure_ascii=False), qos=1, retain=True)
        if self.ha_discovery:
            for topic, payload in discovery.messages(self.topics, detail):
                client.publish(topic, payload, qos=1, retain=True)
