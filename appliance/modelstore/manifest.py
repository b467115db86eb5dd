"""The model manifest (`model.json`): what a built model is, where it came from, and the sha256 of every file."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "model.json"
SCHEMA = 1
KINDS = ("asr", "mt", "vad", "speaker")


class ModelError(RuntimeError):
    """A model problem with a one-line message that says what to do."""


@dataclass
class Manifest:
    name: str
    kind: str
    languages: list[str]
    source: list[str]  # "package==version" for built-ins, "import:<format>:<folder>" for imported models
    licence: str
    provenance: str
    quantization: str
    opset: int
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    sizes: dict[str, int] = field(default_factory=dict)
    source_lang: str | None = None
    target_lang: str | None = None
    format: str = ""  # converter that produced it: whisper-ct2, whisper-hf, bergamot, marian-hf, silero-vad
    build_key: str = ""
    architecture: dict = field(default_factory=dict)
    appliance_version: str = ""
    build_tools: dict[str, str] = field(default_factory=dict)  # python and the packages that made the files: version
    variant_of: str = ""  # a variant's model (modelstore/variants.py): "whisper-base" for whisper-base.openvino
    variant: str = ""  # the execution provider it is for: "openvino"
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_folder(folder: Path) -> tuple[dict[str, str], dict[str, int]]:
    files, sizes = {}, {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = sha256_file(path)
        sizes[rel] = path.stat().st_size
    return files, sizes


def write(manifest: Manifest, folder: Path) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def rebuild_hint(name: str) -> str:
    return f"run `appliance models build --force {name}` to rebuild it"


def read(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelError(f"{path}: missing manifest; {rebuild_hint(folder.name)}")
    try:
        return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({exc}); {rebuild_hint(folder.name)}") from None


def check_files(folder: Path, manifest: Manifest) -> list[str]:
    """Problems with the files on disk, one line each (empty when every file is present and hashes match)."""
    problems = []
    for rel, digest in sorted(manifest.files.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path}: missing; {rebuild_hint(manifest.name)}")
            continue
        size = path.stat().st_size
        expected = manifest.sizes.get(rel)
        if expected is not None and size != expected:
            problems.append(f"{path}: {size} bytes, expected {expected} (truncated or altered); {rebuild_hint(manifest.name)}")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: sha256 mismatch (altered); {rebuild_hint(manifest.name)}")
    return problems
