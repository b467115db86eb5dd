"""Command line: parse arguments, load config, wire objects, run. Nothing else lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from appliance import __version__

log = logging.getLogger("appliance")


def _setup_logging(verbose: bool) -> None:
    """The appliance's own loggers at INFO (DEBUG with -v); other libraries only from WARNING."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("appliance").setLevel(logging.DEBUG if verbose else logging.INFO)


def _models_dir(args) -> Path:
    from appliance.modelstore.paths import models_dir

    return models_dir(args.models_dir)


# ---- config -------------------------------------------------------------------------------------------------
def cmd_config_validate(args) -> int:
    from appliance import config

    cfg = config.load(args.path)
    print(f"{args.path}: valid (room {cfg.room.id}, source {cfg.languages.source}, targets {','.join(cfg.languages.targets)})")
    return 0


def cmd_config_reference(args) -> int:
    from appliance.config import reference

    print("| key | default | description |\n|---|---|---|")
    for key, default, desc in reference():
        print(f"| `{key}` | `{default}` | {desc} |")
    return 0


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="check a config file")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    v = csub.add_parser("validate", help="validate a config file and name every bad key")
    v.add_argument("path")
    v.set_defaults(func=cmd_config_validate)
    r = csub.add_parser("reference", help="print the configuration reference (markdown)")
    r.set_defaults(func=cmd_config_reference)


# ---- broker users --------------------------------------------------------------------------------------------
def cmd_broker_users(args) -> int:
    """Write a mosquitto password file + ACL (the appliance's user, one read-only display user per room)."""
    from appliance import config
    from appliance.bus.credentials import CredentialStore, write_broker_files
    from appliance.bus.access import CREDENTIALS_FILE

    cfg = config.load(args.config) if args.config else config.Config()
    state = Path(args.state_dir or cfg.state_dir)
    store = CredentialStore(state / CREDENTIALS_FILE)
    rooms = args.room or [cfg.room.id]
    passwd, acl = write_broker_files(store, Path(args.out), prefix=cfg.broker.topic_prefix, rooms=rooms,
                                     names=("appliance.passwd", "appliance.acl"))
    if args.appliance_password_file:  # systemd's LoadCredential= source for broker.password
        from appliance.private_file import write_private

        write_private(Path(args.appliance_password_file), store.appliance().password + "\n")
    print(f"wrote {passwd} and {acl}: users appliance, {', '.join('display-' + r for r in store.rooms())} "
          f"(passwords in {store.path})")
    return 0


def _add_broker(sub) -> None:
    p = sub.add_parser("broker", help="broker users for a production mosquitto")
    bsub = p.add_subparsers(dest="broker_cmd", required=True)
    u = bsub.add_parser("users", help="write a mosquitto password file and ACL (read-only display user per room)")
    u.add_argument("--room", action="append", help="room id (repeat for several; default: the config's room)")
    u.add_argument("--out", required=True, help="folder for `passwd` and `acl` (e.g. /etc/mosquitto)")
    u.add_argument("--config", default=None, help="config file (topic prefix, room, state_dir)")
    u.add_argument("--state-dir", default=None, help="where the passwords are kept (default: the config's state_dir)")
    u.add_argument("--appliance-password-file", default=None,
                   help="also write the appliance user's password here (0600), e.g. for LoadCredential=")
    u.set_defaults(func=cmd_broker_users)


# ---- transcribe ---------------------------------------------------------------------------------------------
def _load_config(args):
    from appliance import config

    return config.load(args.config) if getattr(args, "config", None) else config.Config()


def cmd_transcribe(args) -> int:
    import threading

    from appliance import subtitles
    from appliance.engines import load_engines
    from appliance.runner import caption_file

    cfg = _load_config(args)
    update = {}
    if args.source:
        update["source"] = args.source
    if args.targets is not None:
        update["targets"] = [t for t in args.targets.split(",") if t.strip()]
    if update:
        cfg = cfg.model_validate({**cfg.model_dump(), "languages": {**cfg.languages.model_dump(), **update}})
    if args.model:
        cfg.asr.model = args.model
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    engines = load_engines(cfg, _models_dir(args))
    events, lock = [], threading.Lock()

    def sink(ev):
        with lock:
            events.append(ev)
            if args.format == "jsonl":
                print(ev.to_json(), flush=True)

    speakers = _file_speakers(cfg, _models_dir(args))
    pipeline = caption_file(cfg, engines, path, sink, realtime=args.realtime, partials=args.format == "jsonl",
                            speakers=speakers)
    if pipeline.errors:
        print("appliance: error: " + "; ".join(pipeline.errors), file=sys.stderr)
        return 1
    if args.format != "jsonl":
        writer = {"srt": subtitles.to_srt, "vtt": subtitles.to_vtt, "text": subtitles.to_text}[args.format]
        langs = sorted({e.lang for e in events if e.final and e.text}, key=lambda l: (l not in cfg.languages.targets, l))
        for lang in langs:
            if len(langs) > 1:
                print(f"==> {lang} <==")
            print(writer(events, lang), end="" if args.format == "text" else "\n")
    return 0


def _file_speakers(cfg, models: Path):
    """Speaker turns for one file: a fresh tracker kept in memory (a file is not the room; its store is untouched)."""
    from appliance.speakers.wiring import open_tracker

    if not cfg.speakers.enabled:
        return None
    return open_tracker(cfg, models, lambda msg: print(f"appliance: warning: {msg}", file=sys.stderr), persist=False)


def _add_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="caption an audio file with the same pipeline the daemon runs")
    p.add_argument("file", help="WAV or FLAC file")
    p.add_argument("--source", default=None, help="source language: auto (default) or a code such as en")
    p.add_argument("--targets", default=None, help="comma-separated target languages, e.g. pt,en ('' for none)")
    p.add_argument("--format", choices=["jsonl", "srt", "vtt", "text"], default="jsonl")
    p.add_argument("--model", default=None, help="speech model name (default from config: whisper-base)")
    p.add_argument("--config", default=None, help="config file (default: built-in defaults)")
    p.add_argument("--realtime", action="store_true", help="replay at real-time speed (as a microphone would)")
    p.set_defaults(func=cmd_transcribe)


# ---- run / demo ---------------------------------------------------------------------------------------------
def run_overrides(args) -> dict:
    """The run flags as dotted config keys. They win over the config file, at start and after every panel save,
    for the life of the process (README: "Configuration precedence")."""
    from urllib.parse import urlparse

    from appliance import config

    out: dict = {}
    if args.room:
        out["room.id"] = args.room
    if args.broker:
        if args.broker == "embedded":
            out["broker.mode"] = "embedded"
        else:
            url = urlparse(args.broker)
            if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
                raise config.ConfigError(f"--broker {args.broker}: use mqtt://host:port, mqtts://host:port or embedded")
            out.update({"broker.mode": "external", "broker.host": url.hostname, "broker.tls": url.scheme == "mqtts",
                        "broker.port": url.port or (8883 if url.scheme == "mqtts" else 1883)})
            if url.username:
                out["broker.username"] = url.username
            if url.password:
                out["broker.password"] = url.password
    if args.panel:
        host, _, port = args.panel.rpartition(":")
        if not host or not port.isdigit():
            raise config.ConfigError(f"--panel {args.panel}: use HOST:PORT, e.g. 127.0.0.1:8080")
        out.update({"panel.host": host, "panel.port": int(port)})
    if args.device is not None:
        out["audio.device"] = int(args.device) if args.device.isdigit() else args.device
    if getattr(args, "state_dir", None):
        out["state_dir"] = args.state_dir
    return out


def cmd_run(args, *, demo: bool = False) -> int:
    from appliance import config
    from appliance.daemon import RunOptions, Supervisor

    path = Path(args.config) if args.config else (config.DEFAULT_PATH if not demo else _demo_config_path())
    overrides = run_overrides(args)
    cfg = config.with_overrides(config.load(path), overrides)
    if demo:  # a demo should start anywhere: move off ports another program (e.g. Debian's mosquitto) holds
        moved = {}
        if cfg.broker.mode == "embedded" and _busy(cfg.broker.port):
            moved["broker.port"] = cfg.broker.port = _free_port()
        if cfg.broker.mode == "embedded" and _busy(cfg.broker.ws_port):
            moved["broker.ws_port"] = cfg.broker.ws_port = _free_port()
        if _busy(cfg.panel.port):
            moved["panel.port"] = cfg.panel.port = _free_port()
        if cfg.display.enabled and _busy(cfg.display.port):
            moved["display.port"] = cfg.display.port = _free_port()
        if moved:
            log.warning("demo: default ports in use, using %s for this run", moved)
            overrides.update(moved)  # held for the whole run, like a flag
    if args.input and not Path(args.input).is_file():
        raise FileNotFoundError(f"--input {args.input}: no such audio file")
    opts = RunOptions(config_path=path, models_dir=_models_dir(args), once=args.once,
                      input_file=Path(args.input) if args.input else None, use_sample_without_mic=demo,
                      overrides=overrides)
    supervisor = Supervisor(cfg, opts)
    if args.prepare is not None:  # a test harness's hooks (appliance.bench.inject)
        args.prepare(supervisor)
    if demo:  # show the captions as a room display receives them: subscribers on the broker, one per language
        from appliance.display.terminal import print_finals

        def on_started():
            for what, url in supervisor.urls().items():
                print(f"{what}: {url}", flush=True)
            return print_finals(cfg, cfg.languages.targets, credential=supervisor.credentials.display(cfg.room.id)
                                if cfg.broker.mode == "embedded" else None)

        supervisor.on_started = on_started
    return supervisor.run()


def _demo_config_path() -> Path:
    import os

    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "appliance" / "demo.json"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _busy(port: int) -> bool:
    from appliance.bus.broker import port_open

    return port_open("127.0.0.1", port)


def cmd_demo(args) -> int:
    import os

    if not args.state_dir:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        args.state_dir = str(Path(base) / "appliance-demo")
    return cmd_run(args, demo=True)


def _add_run(sub) -> None:
    for name, func, text in (("run", cmd_run, "run the appliance: capture, pipeline, publisher and panel"),
                             ("demo", cmd_demo, "run on embedded defaults (embedded broker, bundled sample without a microphone)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", default=None, help="config file (run: /etc/appliance/config.json; demo: ~/.config/appliance/demo.json)")
        src = p.add_mutually_exclusive_group()
        src.add_argument("--input", default=None, help="caption this WAV/FLAC file instead of a microphone")
        src.add_argument("--device", default=None, help="microphone by index or name")
        p.add_argument("--once", action="store_true", help="exit after the input has been captioned and every final published")
        p.add_argument("--broker", default=None, help="mqtt://host:port, mqtts://host:port or embedded")
        p.add_argument("--room", default=None, help="room id (used in topics)")
        p.add_argument("--panel", default=None, help="panel HOST:PORT")
        p.add_argument("--state-dir", default=None, help="state folder (queue of unsent finals, panel admin)")
        p.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="Offline interpretation appliance")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--models-dir", default=None, help="folder of built models (default: $APPLIANCE_MODELS_DIR or models/)")
    sub = parser.add_subparsers(dest="command", required=True)
    from appliance.modelstore.cli import add_parser as _add_models  # `appliance models`: build, import, verify, list

    _add_models(sub)
    _add_config(sub)
    _add_broker(sub)
    _add_transcribe(sub)
    from appliance.bench.cli import add_parser as _add_bench  # `appliance bench`: the benchmarks' own command

    _add_bench(sub)
    _add_run(sub)
    # further subcommands are added below by the modules that own them
    from appliance.display.terminal import add_parser as _add_display  # bus helper: terminal room display

    _add_display(sub)
    from appliance.archive.cli import add_parser as _add_archive  # the meeting record: list, export

    _add_archive(sub)
    return parser


def main(argv: list[str] | None = None, *, prepare=None) -> int:
    """The command line. prepare: called with the daemon's Supervisor before `run` or `demo` runs it (the bench
    harness installs its fault injection this way; `appliance` itself passes nothing)."""
    from appliance.audio.base import AudioError
    from appliance.bus.broker import BrokerError
    from appliance.bus.credentials import CredentialError
    from appliance.config import ConfigError
    from appliance.modelstore.manifest import ModelError

    args = build_parser().parse_args(argv)
    args.prepare = prepare
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ModelError, AudioError, BrokerError, CredentialError, FileNotFoundError, ValueError) as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("appliance: interrupted", file=sys.stderr)
        return 130
