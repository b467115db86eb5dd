"""Load-modify-validate-save of the config file, shared by the form pages and the JSON API.

A change is validated as a whole config (errors name the key) and against the installed models
(languages); only then is the file replaced (config.save_atomic) and the daemon told (Applier).
An invalid change leaves the file untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from appliance import config as cfgmod
from appliance.config import Config, ConfigError
from appliance.panel import facts

SECRET_KEYS = ("broker.password",)


@dataclass
class SaveResult:
    ok: bool
    config: Config | None = None
    error: str = ""
    changed: bool = False
    attempted: dict = field(default_factory=dict)


def load_current(ctx) -> Config:
    """The config on disk (defaults when there is no file yet); ConfigError names the bad key."""
    return cfgmod.load(ctx.config_path)


def save(ctx, build: Callable[[dict], dict]) -> SaveResult:
    """`build` gets a copy of the current config as JSON data and returns the whole new data."""
    with ctx.save_lock:
        try:
            current = load_current(ctx)
        except ConfigError as exc:
            return SaveResult(False, error=f"{exc}; fix the file by hand (the previous version is "
                                           f"{ctx.config_path.name}.bak) before saving from the panel")
        attempted = build(copy.deepcopy(current.model_dump(mode="json")))
        try:
            new = cfgmod.validate(attempted)
            if new.languages != current.languages or new.asr.model != current.asr.model:
                facts.check_config_languages(new, ctx.models_dir)
        except ConfigError as exc:
            return SaveResult(False, error=str(exc), attempted=attempted)
        if new == current and ctx.config_path.exists():
            return SaveResult(True, config=new, changed=False, attempted=attempted)
        try:
            cfgmod.save_atomic(new, ctx.config_path)
        except OSError as exc:
            return SaveResult(False, error=f"cannot write {ctx.config_path}: {exc.strerror or exc}", attempted=attempted)
    ctx.applier.submit(new)
    return SaveResult(True, config=new, changed=True, attempted=attempted)


def redact(data: dict) -> dict:
    """Config data without secrets (write-only fields are never sent to a browser)."""
    out = copy.deepcopy(data)
    for key in SECRET_KEYS:
        section, name = key.split(".")
        out.get(section, {}).pop(name, None)
    return out


def secrets_set(cfg: Config) -> dict[str, bool]:
    return {key: bool(getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])) for key in SECRET_KEYS}
