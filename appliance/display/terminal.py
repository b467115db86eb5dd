"""Terminal room display: `appliance display --room R --lang pt [--broker HOST[:PORT] | mqtt://… | ws://…]`,
or `appliance display --from http://<appliance>:8081/` (details and the room's read-only user from its display server).

On a terminal it redraws the two roll-up lines in place (partials dim and italic, an OFFLINE line from the
room's status); piped or with --plain it prints each final once, as a line. Control characters in captions
are removed before printing, so a caption cannot move the cursor or change the terminal.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from appliance.bus.client import CaptionState

log = logging.getLogger(__name__)

__all__ = ["add_parser", "main", "parse_broker", "safe_text", "print_finals"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str) -> str:
    return _CONTROL.sub(" ", text)


def parse_broker(spec: str | None, default_port: int = 1883) -> tuple[str, int, str, bool]:
    """'host', 'host:port', 'mqtt://h:p', 'mqtts://h:p', 'ws://h:p', 'wss://h:p' -> (host, port, transport, tls)."""
    if not spec:
        return "127.0.0.1", default_port, "tcp", False
    if "://" not in spec:
        spec = "mqtt://" + spec
    u = urlparse(spec)
    schemes = {"mqtt": ("tcp", False, 1883), "tcp": ("tcp", False, 1883), "mqtts": ("tcp", True, 8883),
               "ws": ("websockets", False, 9001), "wss": ("websockets", True, 443)}
    if u.scheme not in schemes or not u.hostname:
        raise ValueError(f"--broker {spec!r}: use host[:port] or mqtt://, mqtts://, ws://, wss:// host[:port]")
    transport, tls, port = schemes[u.scheme]
    try:
        port = u.port or (default_port if u.scheme == "mqtt" and "://" not in (spec or "") else port)
    except ValueError:
        raise ValueError(f"--broker {spec!r}: the port is not a number from 1 to 65535") from None
    return u.hostname, port, transport, tls


def _mark(msg: dict) -> str:
    from appliance.bus.client import untranslated_mark

    return untranslated_mark(msg)


class TerminalView:
    def __init__(self, out, *, plain: bool):
        self.out, self.plain = out, plain
        self._lock = threading.Lock()
        self._printed = -1  # seq of the last final printed
        self.status = ""

    def changed(self, state: CaptionState) -> None:
        with self._lock:
            if self.plain:
                for msg in state.finals:
                    if msg["seq"] > self._printed:
                        label = f"{msg['turn']}: " if msg.get("turn") else ""  # a change of speaker
                        mark = _mark(msg) if msg.get("untranslated") is True else ""  # the source text: its language
                        self.out.write(safe_text(mark + label + msg["text"]) + "\n")
                        self._printed = msg["seq"]
                self.out.flush()
                return
            self._draw(state)

    def set_status(self, status: str, state: CaptionState) -> None:
        with self._lock:
            if status in ("online", "offline", "connected", "disconnected", "refused"):
                if status == "connected" and self.status == "offline":
                    return  # the room's own status decides
                self.status = status
            if self.plain:
                if status in ("offline", "disconnected", "refused"):
                    print(f"[{status}]", file=sys.stderr, flush=True)
                return
            self._draw(state)

    def _draw(self, state: CaptionState) -> None:
        rows = state.rows()
        while len(rows) < state.rows_n:
            rows.insert(0, ("", False))
        banner = {"offline": "\x1b[1;41m CAPTIONS OFFLINE \x1b[0m", "disconnected": "\x1b[1;43m reconnecting… \x1b[0m",
                  "refused": "\x1b[1;41m broker refused the connection \x1b[0m"}.get(self.status, "")
        parts = ["\x1b[H\x1b[2J", banner, "\n\n"]
        for text, provisional in rows:
            text = safe_text(text)
            parts.append(f"\x1b[2;3m{text}\x1b[0m\n" if provisional else f"\x1b[1m{text}\x1b[0m\n")
        self.out.write("".join(parts))
        self.out.flush()


def add_parser(sub) -> None:
    p = sub.add_parser("display", help="show a room's live captions in this terminal")
    p.add_argument("--from", dest="from_url", default=None, metavar="URL",
                   help="the appliance's display server (http://device:8081/): broker, room and read-only user from it")
    p.add_argument("--room", default=None, help="room id (as in the appliance's config; default with --from: its room)")
    p.add_argument("--lang", default=None, help="caption language, e.g. pt (default with --from: the room's first)")
    p.add_argument("--broker", default=None, help="host[:port] or mqtt:// mqtts:// ws:// wss:// URL (default 127.0.0.1:1883)")
    p.add_argument("--prefix", default="appliance", help="topic prefix (broker.topic_prefix)")
    p.add_argument("--username", default=None, help="broker user name (password from $APPLIANCE_MQTT_PASSWORD)")
    p.add_argument("--ca-file", default=None, help="CA certificate for mqtts:// / wss://")
    p.add_argument("--rows", type=int, default=2, choices=range(1, 5), metavar="1-4", help="roll-up lines (default 2)")
    p.add_argument("--width", type=int, default=42, help="characters per line (default 42)")
    p.add_argument("--plain", action="store_true", help="print each final once as a line (default when not a terminal)")
    p.set_defaults(func=main)


def main(args) -> int:
    from appliance.bus.client import CaptionFeed, CaptionState, FeedOptions

    if args.from_url:
        opts, host, port, transport = _options_from_display_server(args)
    else:
        if not args.room or not args.lang:
            raise ValueError("give --room and --lang (or --from http://<appliance>:8081/)")
        host, port, transport, tls = parse_broker(args.broker)
        opts = FeedOptions(host=host, port=port, transport=transport, tls=tls, prefix=args.prefix,
                           username=args.username, password=os.environ.get("APPLIANCE_MQTT_PASSWORD"),
                           ca_file=args.ca_file)
    state = CaptionState(rows=args.rows, width=args.width)
    view = TerminalView(sys.stdout, plain=args.plain or not sys.stdout.isatty())
    feed = CaptionFeed(opts, args.room, args.lang, state=state, on_change=view.changed,
                       on_status=lambda s: view.set_status(s, state))
    log.info("display of room %s in %s from %s:%d (%s)", args.room, args.lang, host, port, transport)
    feed.start()
    stop = threading.Event()
    try:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        feed.stop()
    return 0


def _options_from_display_server(args):
    """Ask the display server for the connection details (broker WebSocket port, the room's read-only user)."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import urljoin, urlparse

    from appliance.bus.client import FeedOptions

    base = args.from_url if args.from_url.endswith("/") else args.from_url + "/"
    url = urljoin(base, "/display/connection.json")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            info = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ValueError(f"--from {args.from_url}: cannot read {url}: {exc}") from None
    host = info.get("ws_host") or urlparse(base).hostname or "127.0.0.1"
    args.room = args.room or info.get("room")
    args.lang = args.lang or (info.get("languages") or ["en"])[0]
    opts = FeedOptions(host=host, port=int(info["ws_port"]), transport="websockets", tls=False,
                       prefix=info.get("prefix", args.prefix), username=info.get("username"),
                       password=info.get("password"))
    return opts, host, opts.port, "websockets"


def print_finals(cfg, languages, out=None, *, credential=None) -> list:
    """Subscribe like a room display (one feed per language) and print each final once as `[lang] text`.

    Used by `appliance demo`; returns the started feeds (stop them with .stop()). `credential`: the room's
    read-only display user, which the (closed) embedded broker requires.
    """
    from appliance.bus.client import CaptionFeed, FeedOptions

    lock = threading.Lock()
    printed: dict[str, int] = {}
    host = "127.0.0.1" if cfg.broker.mode == "embedded" else cfg.broker.host
    opts = FeedOptions(host=host, port=cfg.broker.port, prefix=cfg.broker.topic_prefix,
                       username=credential.username if credential else cfg.broker.username,
                       password=credential.password if credential else cfg.broker.password,
                       tls=cfg.broker.tls and cfg.broker.mode != "embedded", ca_file=cfg.broker.ca_file)
    feeds = []
    for lang in languages:
        def changed(state, lang=lang) -> None:
            with lock:
                stream = out or sys.stdout
                for msg in state.finals:
                    if msg["seq"] > printed.get(lang, -1) and msg.get("text"):
                        printed[lang] = msg["seq"]
                        stream.write(f"[{lang}] {safe_text(msg['text'])}\n")
                stream.flush()

        feed = CaptionFeed(opts, cfg.room.id, lang, on_change=changed)
        feed.start()
        feeds.append(feed)
    return feeds
