"""One validated configuration object, shared by the daemon, the panel and the CLI.

Every field carries a description; the panel reuses it as help text. Loading reports
errors by key path with the allowed values; saving is atomic (temporary file, fsync,
rename) and keeps the previous file as `<name>.bak`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PATH = Path("/etc/appliance/config.json")
LANG_RE = re.compile(r"^[a-z]{2,3}$")


class ConfigError(ValueError):
    """A config file or value that does not validate; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RoomConfig(_Section):
    id: str = Field("room1", pattern=r"^[A-Za-z0-9_-]{1,64}$", title="Room id",
                    description="Used in MQTT topics: letters, digits, '-' and '_' (1-64).")
    name: str = Field("Meeting room", max_length=120, title="Room name", description="Shown on displays and in the panel.")


class LanguageConfig(_Section):
    source: str = Field("auto", title="Source language",
                        description="Language spoken in the room: 'auto' to detect per speaker turn, or an ISO 639-1 code.")
    targets: list[str] = Field(default_factory=lambda: ["en", "pt"], title="Target languages",
                               description="Caption languages published for displays (ISO 639-1 codes).")
    spoken: list[str] = Field(default_factory=list, title="Spoken languages",
                              description="Languages people may speak in this room (ISO 639-1 codes). With 'auto', language "
                                          "identification chooses only among them (one code: nothing to detect); empty: any "
                                          "language the speech model knows.")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        v = v.strip().lower()
        if v != "auto" and not LANG_RE.match(v):
            raise ValueError("must be 'auto' or a language code such as 'en'")
        return v

    @field_validator("targets", "spoken")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for code in v:
            code = code.strip().lower()
            if not LANG_RE.match(code):
                raise ValueError(f"'{code}' is not a language code such as 'en'")
            if code not in out:
                out.append(code)
        return out


class AudioConfig(_Section):
    device: Optional[Union[int, str]] = Field(None, title="Microphone",
                                              description="PortAudio input device, by index or (part of its) name; empty for the default.")
    input_file: Optional[str] = Field(None, title="Input file",
                                      description="Caption this WAV/FLAC file instead of a microphone (replays at real-time speed).")
    reopen_interval_s: float = Field(2.0, gt=0, le=60, title="Re-open interval",
                                     description="Seconds between attempts to re-open a lost microphone.")


class VadConfig(_Section):
    threshold: float = Field(0.5, gt=0, lt=1, description="Speech probability above which a frame counts as speech.")
    min_speech_ms: int = Field(250, ge=0, le=5000, description="Shorter bursts are ignored.")
    hangover_ms: int = Field(300, ge=0, le=5000, description="Silence that ends a segment.")
    preroll_ms: int = Field(200, ge=0, le=2000, description="Audio kept before speech onset.")


class AsrConfig(_Section):
    model: str = Field("whisper-base", description="Speech-recognition model name (a folder under the models directory).")
    beam_size: int = Field(1, ge=1, le=8, description="1 for greedy decoding; more for beam search in finals (and "
                                                     "the end-of-speech probe that becomes the final; partials stay "
                                                     "greedy). On 2 cores a beam of 4 made finals ~0.07 s later for "
                                                     "no better streaming WER (docs/accuracy.md).")
    partial_interval_s: float = Field(1.0, ge=0.1, le=5, title="Partial interval",
                                      description="Seconds of new audio between partial captions (at least; in real "
                                                  "time they are spaced further when one takes long). 0.5 updates "
                                                  "twice as often at about 40 % more recognition work "
                                                  "(docs/accuracy.md).")
    max_segment_s: float = Field(15.0, ge=2, le=30, description="Longest utterance before a final is forced (cut at a pause).")
    sentence_pause_s: float = Field(1.0, ge=0, le=5, title="Sentence pause",
                                    description="A pause shorter than this (seconds of silence after speech) inside a "
                                                "sentence keeps the utterance open: the final comes when the text ends a "
                                                "sentence, the pause reaches this length, or at the maximum segment "
                                                "length. 0 makes every pause the VAD detects end the utterance.")
    left_context_s: float = Field(2.0, ge=0, le=5, title="Left audio context",
                                  description="Finals of a short utterance (at most 2 s of audio) that starts at most "
                                              "this many seconds after the previous final (same language) are decoded "
                                              "with that final's audio before them, as an offline transcript hears it: "
                                              "fewer wrong words in the rest of a sentence cut at a pause "
                                              "(docs/accuracy.md). 0 turns it off.")


class TranslationConfig(_Section):
    beam_size: int = Field(4, ge=1, le=8, description="1 for greedy decoding; more for beam search (finals; partials "
                                                         "are always greedy). The round-trip guard reranks this beam's "
                                                         "candidates (at least 2).")
    roundtrip_guard: bool = Field(True, title="Round-trip guard",
                                  description="Check each final translation by translating it back with the reverse "
                                              "model where one is installed: rerank the beam's candidates, and publish "
                                              "the source text marked untranslated when none agrees with the source.")


class BrokerConfig(_Section):
    mode: Literal["embedded", "external"] = Field("embedded", title="Broker",
                                                   description="'embedded' runs a broker on loopback; 'external' connects to host:port.")
    host: str = Field("127.0.0.1", min_length=1, max_length=253, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker MQTT port.")
    ws_port: int = Field(9001, ge=1, le=65535, description="WebSocket port for browser displays (embedded broker).")
    ws_host: str = Field("0.0.0.0", max_length=253,
                         description="Address the embedded broker's WebSocket listener binds to ('0.0.0.0': every "
                                     "interface, so room displays can connect). It needs the room's display "
                                     "credentials either way; mosquitto 2.0.11 binds WebSocket on every interface "
                                     "whatever this says.")
    tls: bool = Field(False, description="Connect with TLS (mqtts).")
    ca_file: Optional[str] = Field(None, description="CA certificate file for TLS; empty for the system store.")
    cert_file: Optional[str] = Field(None, description="Client certificate file (optional).")
    key_file: Optional[str] = Field(None, description="Client key file (optional).")
    username: Optional[str] = Field(None, max_length=256, description="Broker user name.")
    password: Optional[str] = Field(None, max_length=256, description="Broker password (write-only in the panel).")
    client_id: Optional[str] = Field(None, max_length=128, description="MQTT client id; default appliance-<room>.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds.")
    topic_prefix: str = Field("appliance", pattern=r"^[A-Za-z0-9_/-]{1,64}$", description="First level of every topic.")
    ha_discovery: bool = Field(False, title="Home Assistant discovery",
                               description="Publish retained Home Assistant MQTT discovery config (one caption sensor per language).")


class PanelConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the config panel binds to (loopback by default).")
    port: int = Field(8080, ge=1, le=65535, description="Config panel port.")
    https: bool = Field(False, title="HTTPS on loopback",
                        description="Serve the panel over HTTPS even on loopback. A panel bound to any other "
                                    "address always uses HTTPS (self-signed certificate made at first start).")


class DisplayServerConfig(_Section):
    enabled: bool = Field(True, description="Serve the read-only room display pages (display page, its assets, "
                                            "the room's read-only broker credentials) on their own listener.")
    host: str = Field("0.0.0.0", description="Address the display server binds to ('0.0.0.0': the room LAN). "
                                             "It serves nothing that can change the appliance.")
    port: int = Field(8081, ge=1, le=65535, description="Display server port.")


class AcceleratorConfig(_Section):
    providers: list[str] = Field(default_factory=lambda: ["cuda", "openvino", "qnn", "coreml", "cpu"],
                                 description="onnxruntime execution providers in order of preference; CPU is always the fallback.")
    threads: int = Field(0, ge=0, le=256, description="Threads per model; 0 lets onnxruntime decide.")


class ArchiveConfig(_Section):
    enabled: bool = Field(True, title="Record meetings",
                          description="Store every final, in every language, in the archive under the state folder.")
    gap_min: float = Field(30.0, gt=0, le=1440, title="Silence gap",
                           description="Minutes without a final after which the next final starts a new meeting.")
    retention_days: float = Field(30.0, gt=0, le=3650, title="Retention",
                                  description="Days a finished meeting is kept before it is deleted.")


class AudienceConfig(_Section):
    enabled: bool = Field(True, title="Audience page",
                          description="Serve the audience page for phones on the display server. It shows only "
                                      "the running meeting, and only to those who type the meeting code shown on "
                                      "the room display.")
    scrollback: Literal["meeting", "none"] = Field("meeting", title="Scroll-back",
                                                   description="What a phone sees of what was said before it "
                                                               "joined: 'meeting' (the running meeting so far) "
                                                               "or 'none' (live captions only).")


class SpeakersConfig(_Section):
    enabled: bool = Field(True, title="Speaker turns",
                          description="Tell speakers apart with the on-device speaker model and mark each change of speaker "
                                      "on the displays. Voice prints stay on this appliance (see the README's privacy note).")
    threshold: float = Field(0.7, ge=0.3, le=0.99, title="Same-speaker similarity",
                             description="Cosine similarity to a known speaker's voice print above which an utterance is "
                                         "theirs; lower merges voices, higher splits one voice into several speakers.")
    model: str = Field("speaker-ge2e", description="Speaker model name (a folder under the models directory).")


class Config(_Section):
    room: RoomConfig = Field(default_factory=RoomConfig)
    languages: LanguageConfig = Field(default_factory=LanguageConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    vad: VadConfig = Field(default_factory=VadConfig)
    asr: AsrConfig = Field(default_factory=AsrConfig)
    translation: TranslationConfig = Field(default_factory=TranslationConfig)
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    panel: PanelConfig = Field(default_factory=PanelConfig)
    display: DisplayServerConfig = Field(default_factory=DisplayServerConfig)
    accelerator: AcceleratorConfig = Field(default_factory=AcceleratorConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    audience: AudienceConfig = Field(default_factory=AudienceConfig)
    speakers: SpeakersConfig = Field(default_factory=SpeakersConfig)
    models_dir: Optional[str] = Field(None, description="Folder of built models; default: the project's models/ or /var/lib/appliance/models.")
    state_dir: str = Field("/var/lib/appliance", description="Folder for the queue of unsent finals and other state.")


def describe_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"must be one of {err.get('ctx', {}).get('expected', '')}"
        lines.append(f"{key}: {msg}")
    return "; ".join(lines)


def validate(data: dict) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def load(path: str | os.PathLike | None = None) -> Config:
    """Load and validate a config file; a missing file gives the defaults."""
    path = Path(path) if path else DEFAULT_PATH
    if not path.exists():
        return Config()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object")
    try:
        return validate(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """`cfg` with each dotted key (e.g. 'room.id') set to its value, validated as a whole.

    The command line's flags are such overrides: they win over the file at start and over every later panel
    save, for the life of the process (see README, "Configuration precedence")."""
    data = cfg.model_dump()
    for key, value in overrides.items():
        *parents, name = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[name] = value
    return validate(data)


def shadowed(cfg: Config, overrides: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """dotted key -> (value in `cfg`, value in force) for each override that differs from `cfg`."""
    out = {}
    for key, value in overrides.items():
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if node != value:
            out[key] = (node, value)
    return out


def save_atomic(config: Config, path: str | os.PathLike) -> None:
    """Write the config atomically: temp file in the same folder, fsync, keep a .bak, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            shutil.copy2(path, path.with_name(path.name + ".bak"))
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def reference() -> list[tuple[str, str, str]]:
    """(key, default, description) for every field: the configuration reference (README, panel help)."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], instance: BaseModel, prefix: str) -> None:
        for name, info in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                walk(type(value), value, f"{prefix}{name}.")
            else:
                rows.append((f"{prefix}{name}", json.dumps(value), info.description or ""))

    walk(Config, Config(), "")
    return rows
