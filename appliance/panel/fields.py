"""Form fields derived from the config model: label, help text (the Field description), input type, limits.

The panel never restates a description or a limit: everything comes from appliance.config.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel

from appliance.config import Config

LABELS = {"asr.beam_size": "Recognition beam size", "translation.beam_size": "Translation beam size"}  # where a name repeats
ACRONYMS = {"id": "ID", "ca": "CA", "tls": "TLS", "ws": "WebSocket", "vad": "VAD", "asr": "ASR", "ms": "(ms)", "s": "(s)"}


@dataclass
class FieldSpec:
    key: str  # dotted path, e.g. "broker.port"
    name: str  # form field name (same as key)
    label: str
    help: str
    kind: str  # text | number | checkbox | select | list | password
    optional: bool = False
    choices: list[tuple[str, str]] = field(default_factory=list)  # (value, label)
    min: float | None = None
    max: float | None = None
    step: str | None = None
    value: Any = None  # current value, for rendering
    extra: dict = field(default_factory=dict)  # page-specific facts (e.g. route per language)

    @property
    def display(self) -> str:
        """The value as the input shows it."""
        v = self.value
        if v is None:
            return ""
        if isinstance(v, list):
            return ", ".join(str(x) for x in v)
        return str(v)


def _model_field(key: str):
    model: type[BaseModel] = Config
    parts = key.split(".")
    for part in parts[:-1]:
        ann = model.model_fields[part].annotation
        model = ann  # sections are plain BaseModel subclasses
    return model.model_fields[parts[-1]]


def _humanise(name: str) -> str:
    words = [ACRONYMS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def spec(key: str, value: Any = None) -> FieldSpec:
    info = _model_field(key)
    ann = info.annotation
    optional = False
    args = typing.get_args(ann)
    if typing.get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        ann = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
    s = FieldSpec(key=key, name=key, label=info.title or LABELS.get(key) or _humanise(key.rsplit(".", 1)[-1]),
                  help=info.description or "", kind="text", optional=optional, value=value)
    origin = typing.get_origin(ann)
    if ann is bool:
        s.kind = "checkbox"
    elif ann in (int, float):
        s.kind = "number"
        s.step = "1" if ann is int else "any"
        for m in info.metadata:
            if isinstance(m, (at.Ge, at.Gt)):
                s.min = float(getattr(m, "ge", getattr(m, "gt", None)))
            elif isinstance(m, (at.Le, at.Lt)):
                s.max = float(getattr(m, "le", getattr(m, "lt", None)))
        if ann is int:
            s.min = int(s.min) if s.min is not None else None
            s.max = int(s.max) if s.max is not None else None
    elif origin is Literal:
        s.kind = "select"
        s.choices = [(str(a), str(a)) for a in typing.get_args(ann)]
    elif origin is list:
        s.kind = "list"
    return s


def parse(s: FieldSpec, form) -> Any:
    """The submitted value for one field, as the config model expects it before validation."""
    if s.kind == "checkbox":
        return s.name in form
    raw = (form.get(s.name) or "").strip()
    if s.kind == "list":
        return [p for p in raw.replace(",", " ").split() if p]
    if raw == "" and s.optional:
        return None
    return raw


def set_path(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return  # the data holds something else here: validation names that key
    node[parts[-1]] = value


def get_path(data: dict, key: str, default: Any = None) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
