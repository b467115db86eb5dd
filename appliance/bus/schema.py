"""Topic names and the caption message schema (docs/protocol.md is the reference; keep the two in step).

Publishers build messages with `caption_message()`; every client reads them with `parse_caption()`, which
returns None (after one log line) for anything malformed, so a bad message on the bus never crashes a display.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# limits of the schema: longer values are cut by the publisher and refused / cut by readers
MAX_TEXT_CHARS = 1000
MAX_LINES = 4
MAX_LINE_CHARS = 120
MAX_ID_CHARS = 64
MAX_SPEAKER_NAME_CHARS = 60
MAX_PAYLOAD_BYTES = 16 * 1024
HA_STATE_CHARS = 255  # Home Assistant caps entity states at 255 characters

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"


@dataclass(frozen=True)
class Topics:
    """`<prefix>/<room>/...` topic names for one room."""

    prefix: str
    room: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.room}"

    def captions(self, lang: str) -> str:
        return f"{self.base}/captions/{lang}"

    @property
    def captions_all(self) -> str:
        return f"{self.base}/captions/+"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def detail(self) -> str:
        return f"{self.base}/status/detail"


def no_delay(client) -> None:
    """Disable Nagle on a connected paho client's socket: captions are small and latency matters
    (paho does not do it; with delayed ACKs Nagle adds about 40 ms per message)."""
    import socket

    sock = client.socket()
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # a WebSocket or TLS wrapper without setsockopt: leave it
        inner = getattr(sock, "_socket", None) or getattr(sock, "socket", None)
        if inner is not None and hasattr(inner, "setsockopt"):
            try:
                inner.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass


def _event_dict(event: Any) -> dict:
    if isinstance(event, dict):
        return dict(event)
    to_dict = getattr(event, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"a caption event must be a dict or have to_dict(), not {type(event).__name__}")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def caption_message(event: Any, seq: int) -> dict:
    """The message published for one caption event: the event's fields, cut to the schema's limits, plus v and seq."""
    d = _event_dict(event)
    for key in ("id", "lang", "text"):
        if key not in d:
            raise ValueError(f"caption event without '{key}': {sorted(d)}")
    msg = dict(d)
    msg["id"] = _cut(str(d["id"]), MAX_ID_CHARS)
    msg["rev"] = int(d.get("rev") or 0)
    msg["final"] = bool(d.get("final", False))
    msg["lang"] = str(d["lang"])
    msg["text"] = _cut(str(d["text"] or ""), MAX_TEXT_CHARS)
    lines = d.get("lines")
    if isinstance(lines, (list, tuple)):
        msg["lines"] = [_cut(str(x), MAX_LINE_CHARS) for x in lines[-MAX_LINES:]]
    msg["v"] = SCHEMA_VERSION
    msg["seq"] = int(seq)
    return msg


def _json_default(o: Any) -> Any:
    item = getattr(o, "item", None)  # numpy scalars
    if callable(item):
        return item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _finite(o: Any) -> Any:
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


def _dumps(msg: dict) -> bytes:
    try:
        text = json.dumps(msg, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default)
    except ValueError:  # NaN or infinity somewhere (a latency): null instead
        text = json.dumps(_finite(json.loads(json.dumps(msg, default=_json_default))), ensure_ascii=False,
                          separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def encode(msg: dict) -> bytes:
    data = _dumps(msg)
    if len(data) > MAX_PAYLOAD_BYTES:  # only possible with huge extra fields: drop those, keep the caption
        slim = {k: msg[k] for k in ("id", "rev", "final", "lang", "source_lang", "text", "lines", "start", "end",
                                    "emitted", "v", "seq", "speaker", "untranslated") if k in msg}
        data = _dumps(slim)
    return data


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_caption(payload: bytes, topic: str = "") -> dict | None:
    """A caption message as a dict with checked types, or None (logged) when malformed."""
    why = None
    msg: Any = None
    if len(payload) > MAX_PAYLOAD_BYTES:
        why = f"{len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit"
    else:
        try:
            msg = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            why = f"not JSON ({exc})"
    if why is None:
        if not isinstance(msg, dict):
            why = "not a JSON object"
        elif not isinstance(msg.get("v"), int) or isinstance(msg.get("v"), bool) or msg["v"] > SCHEMA_VERSION:
            why = f"unsupported schema version {msg.get('v')!r} (this client reads v{SCHEMA_VERSION})"
        elif not isinstance(msg.get("seq"), int) or isinstance(msg.get("seq"), bool):
            why = "no integer 'seq'"
        elif not isinstance(msg.get("id"), (str, int)) or isinstance(msg.get("id"), bool):
            why = "no 'id'"
        elif not isinstance(msg.get("text"), str):
            why = "no string 'text'"
        elif not isinstance(msg.get("final"), bool):
            why = "no boolean 'final'"
        elif "rev" in msg and not _num(msg["rev"]):
            why = "'rev' is not a number"
    if why is not None:
        log.warning("ignored a malformed caption message on %s: %s", topic or "?", why)
        return None
    out = dict(msg)
    out["id"] = str(msg["id"])[:MAX_ID_CHARS]
    out["rev"] = int(msg.get("rev") or 0)
    out["text"] = msg["text"][:MAX_TEXT_CHARS]
    lines = msg.get("lines")
    out["lines"] = [str(x)[:MAX_LINE_CHARS] for x in lines[-MAX_LINES:]] if isinstance(lines, list) else None
    out["speaker"] = speaker_of(msg)
    return out


def speaker_of(msg: dict) -> dict | None:
    """The message's `speaker` as {"id": str, "name": str | None}, or None when absent or malformed (the caption
    is still shown, without a speaker)."""
    sp = msg.get("speaker")
    if not isinstance(sp, dict) or not isinstance(sp.get("id"), str) or not sp["id"]:
        return None
    name = sp.get("name")
    return {"id": sp["id"][:MAX_ID_CHARS],
            "name": name[:MAX_SPEAKER_NAME_CHARS] if isinstance(name, str) and name.strip() else None}


def parse_status(payload: bytes, topic: str = "") -> str | None:
    text = payload.decode("utf-8", "replace").strip()
    if text in (STATUS_ONLINE, STATUS_OFFLINE):
        return text
    log.warning("ignored an unknown status %r on %s (expected online or offline)", text[:40], topic or "?")
    return None
