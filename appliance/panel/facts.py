"""What this device has: installed models, the languages they reach, microphones, execution providers.

Each function returns plain data plus, where a native part is missing, a one-line note instead of raising.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from appliance.config import Config
from appliance.engines import check_languages, mt_pairs
from appliance.modelstore.verify import installed
from appliance.routes import PIVOT, describe, find_route

log = logging.getLogger(__name__)


def models(models_dir: Path) -> list[dict]:
    out = []
    for m in installed(models_dir):
        langs = list(m.languages or [])
        out.append({"name": m.name, "kind": m.kind, "languages": langs,
                    "languages_text": ", ".join(langs[:12]) + (f" … ({len(langs)} in all)" if len(langs) > 12 else ""),
                    "pair": f"{m.source_lang} → {m.target_lang}" if m.source_lang and m.target_lang else "",
                    "quantization": m.quantization, "opset": m.opset, "format": m.format,
                    "size_mb": round(sum(m.sizes.values()) / 1e6, 1) if m.sizes else None,
                    "licence": m.licence, "source": ", ".join(m.source), "built_by": m.appliance_version,
                    "files": len(m.files)})
    return out


def _asr_manifest(cfg: Config, models_dir: Path):
    return next((m for m in installed(models_dir) if m.name == cfg.asr.model and m.kind == "asr"), None)


def languages(cfg: Config, models_dir: Path) -> dict:
    """Source choices, target choices with the route each takes, and a note when the speech model is missing."""
    asr = _asr_manifest(cfg, models_dir)
    if asr is None:
        return {"asr": None, "sources": [], "targets": [], "note":
                f"the speech model '{cfg.asr.model}' is not installed in {models_dir}: run `appliance models build`; "
                "languages are not checked until it is"}
    pairs = set(mt_pairs(models_dir))
    multilingual = len(asr.languages) > 1
    source = cfg.languages.source
    examples = sorted({s for s, _ in pairs} | {PIVOT}) if source == "auto" else [source]
    candidates = ({PIVOT} if multilingual else set()) | {t for _, t in pairs} | set(examples) | set(cfg.languages.targets)
    if not multilingual:
        candidates |= set(asr.languages)
    targets = []
    for t in sorted(candidates):
        routes = []
        for s in examples:
            r = find_route(s, t, pairs, whisper_to_english=multilingual)
            if r is not None or source != "auto":
                routes.append(describe(r))
        if source == "auto" and multilingual:
            other = find_route("xx", t, pairs, whisper_to_english=True)
            if other is not None:
                routes.append(describe(other).replace("xx", "other", 1))
        reachable = any(r != "no route" for r in routes)
        targets.append({"code": t, "routes": routes, "reachable": reachable, "selected": t in cfg.languages.targets})
    return {"asr": asr.name, "sources": list(asr.languages), "targets": targets, "multilingual": multilingual, "note": ""}


def check_config_languages(cfg: Config, models_dir: Path) -> None:
    """Raise ConfigError (naming languages.source / languages.targets) when the installed models cannot serve them."""
    asr = _asr_manifest(cfg, models_dir)
    if asr is None:
        return  # nothing to check against; the daemon reports the missing model
    check_languages(cfg.languages.source, cfg.languages.targets, list(asr.languages), set(mt_pairs(models_dir)),
                    len(asr.languages) > 1, cfg.languages.spoken)


def asr_models(models_dir: Path) -> list[str]:
    return [m.name for m in installed(models_dir) if m.kind == "asr" and not m.variant_of]  # variants: opened by provider


def _get(dev: Any, name: str, default=None):
    return dev.get(name, default) if isinstance(dev, dict) else getattr(dev, name, default)


def default_device_lister() -> list:
    from appliance.audio import list_input_devices  # lazy: PortAudio is a native library

    return list(list_input_devices())


def devices(lister: Callable[[], list] | None) -> tuple[list[dict], str]:
    """([{'index', 'name', 'channels', 'default_rate'}], note); an empty list with a note when PortAudio is missing."""
    try:
        raw = (lister or default_device_lister)()
    except (ImportError, OSError) as exc:
        return [], f"microphones cannot be listed on this machine (PortAudio missing: {exc}); type a device name instead"
    except Exception as exc:  # a driver error must not break the page
        log.warning("listing input devices failed: %s", exc)
        return [], f"listing microphones failed: {exc}"
    out = [{"index": _get(d, "index"), "name": str(_get(d, "name", "")), "channels": _get(d, "channels"),
            "default_rate": _get(d, "default_rate")} for d in raw]
    return out, "" if out else "no microphone found"


def providers() -> tuple[list[str], str]:
    try:
        from appliance.providers import available_providers

        return available_providers(), ""
    except Exception as exc:
        return [], f"onnxruntime cannot be imported: {exc}"


def flavour() -> dict:
    """The onnxruntime flavour installed and the one this hardware calls for (scripts/setup --accelerator X)."""
    from appliance import flavours

    found = flavours.installed_packages()
    detected, why = flavours.detect(flavours.probe())
    return {"installed": flavours.installed_flavour(found) or "none", "packages": found, "detected": detected,
            "detected_why": why, "choices": list(flavours.FLAVOURS)}
