"""Load the models a config asks for: speech recognition, voice activity, and the translation models its routes need.

Checks languages up front: an unknown source language or a target with no route is a clear
error that names the options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Config, ConfigError
from appliance.modelstore import manifest as mf
from appliance.modelstore import variants
from appliance.modelstore.manifest import Manifest, ModelError
from appliance.modelstore.verify import installed
from appliance.routes import describe, find_route

log = logging.getLogger(__name__)
VAD_MODEL = "silero-vad"


@dataclass
class Engines:
    asr: object
    asr_manifest: Manifest
    vad_dir: Path
    translators: dict[tuple[str, str], object] = field(default_factory=dict)
    mt_manifests: list[Manifest] = field(default_factory=list)

    @property
    def providers(self) -> list[str]:
        return list(getattr(self.asr, "providers", []))

    def placement(self) -> list[dict]:
        """Where each loaded graph runs: provider, share of its nodes and of its profiled time (placement.py)."""
        models = [self.asr, *self.translators.values()]
        return [p.to_dict() for m in models for p in getattr(m, "placement", [])]


def mt_pairs(models: Path) -> dict[tuple[str, str], Manifest]:
    return {(m.source_lang, m.target_lang): m for m in installed(models) if m.kind == "mt" and m.source_lang and m.target_lang}


def _require(models: Path, name: str, kind: str) -> Manifest:
    folder = models / name
    if not (folder / mf.MANIFEST).is_file():
        options = [m.name for m in installed(models) if m.kind == kind]
        raise ModelError(f"{kind} model '{name}' is not installed in {models}; run `appliance models build` "
                         f"(installed {kind} models: {', '.join(options) or 'none'})")
    m = mf.read(folder)
    if m.kind != kind:
        raise ModelError(f"model '{name}' is a {m.kind} model, not {kind}")
    return m


def check_languages(source: str, targets: list[str], asr_languages: list[str], pairs, multilingual: bool,
                    spoken: list[str] = ()) -> dict[str, str]:
    """Validate source/targets/spoken against what is installed; returns target -> route description."""
    unknown = [c for c in spoken if c not in asr_languages]
    if unknown:
        raise ConfigError(f"languages.spoken: {', '.join(unknown)} not supported by the speech model "
                          f"(supported: {', '.join(asr_languages[:20])}{'…' if len(asr_languages) > 20 else ''})")
    if source != "auto" and source not in asr_languages:
        raise ConfigError(f"languages.source: '{source}' is not supported by the speech model "
                          f"(supported: auto, {', '.join(asr_languages[:20])}{'…' if len(asr_languages) > 20 else ''})")
    sources = (list(spoken) or asr_languages) if source == "auto" else [source]
    routes = {}
    for t in targets:
        found = [find_route(s, t, pairs, whisper_to_english=multilingual) for s in sources]
        best = next((r for r in found if r is not None), None)
        if best is None and all(r is None for r in found):
            reach = sorted({tt for s in sources for tt in {b for _, b in pairs} | {"en"} | set(sources)
                            if find_route(s, tt, pairs, whisper_to_english=multilingual) is not None})
            raise ConfigError(f"languages.targets: no route to '{t}' from {source} with the installed models "
                              f"(reachable: {', '.join(reach[:30])})")
        routes[t] = describe(best) if source != "auto" else f"from any source ({describe(best)} …)"
    return routes


def load_engines(cfg: Config, models: Path) -> Engines:
    from appliance.asr import WhisperModel
    from appliance.translate import Translator

    asr_m = _require(models, cfg.asr.model, "asr")
    _require(models, VAD_MODEL, "vad")
    pairs = mt_pairs(models)
    multilingual = len(asr_m.languages) > 1
    routes = check_languages(cfg.languages.source, cfg.languages.targets, asr_m.languages, pairs.keys(), multilingual,
                             cfg.languages.spoken)
    for t, r in routes.items():
        log.info("target %s: %s", t, r)
    sources = [cfg.languages.source] if cfg.languages.source != "auto" else (cfg.languages.spoken or asr_m.languages)
    needed = {(h.source, h.target) for s in sources for t in cfg.languages.targets
              for h in (find_route(s, t, pairs.keys(), whisper_to_english=multilingual) or ()) if h.engine == "mt"}
    if cfg.translation.roundtrip_guard:  # the reverse models that check final translations, where installed
        needed |= {(b, a) for a, b in needed if (b, a) in pairs}
    prov, threads = cfg.accelerator.providers, cfg.accelerator.threads
    asr = WhisperModel.load(variants.for_provider(models, asr_m.name, prov), providers=prov, threads=threads)
    translators = {pair: Translator.load(models / pairs[pair].name, providers=prov, threads=threads) for pair in sorted(needed)}
    return Engines(asr=asr, asr_manifest=asr_m, vad_dir=models / VAD_MODEL, translators=translators,
                   mt_manifests=[pairs[p] for p in sorted(needed)])
