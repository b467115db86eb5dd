"""silero VAD: already ONNX upstream; copied as published (float32, 2 MB) and checked to load."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from appliance.modelstore.manifest import ModelError

VERSION = "1"
FILE = "silero_vad.onnx"


def check_source(src: Path) -> None:
    if not (src / FILE).is_file():
        raise ModelError(f"{src} is not a silero-vad data folder: missing {FILE}")


def convert(src: Path, out: Path, *, progress: Callable[[str], None], quantize: bool = True) -> dict:
    import onnx

    check_source(src)
    progress(f"copying {FILE}")
    shutil.copy2(src / FILE, out / FILE)
    model = onnx.load(str(out / FILE), load_external_data=False)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {
        "languages": [],
        "quantization": "none: upstream float32 graph kept (2 MB; quantizing it saves nothing measurable)",
        "opset": int(opset),
        "architecture": {"sample_rate": 16000, "window": 512, "context": 64},
    }
