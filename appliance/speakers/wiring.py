"""Open the room's speaker tracker from the config, or explain why speaker turns are off (captions go on)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from appliance.speakers.embedder import SpeakerEmbedder
from appliance.speakers.store import store_path
from appliance.speakers.tracker import SpeakerTracker

log = logging.getLogger(__name__)


def open_tracker(cfg, models_dir: Path, warn: Callable[[str], None], *, persist: bool = True) -> SpeakerTracker | None:
    """The tracker for `cfg.room`, its store under `cfg.state_dir` (`persist=False`: in memory, starting empty);
    None when turned off or the model is unusable (then `warn` is told why, once, and how to fix it)."""
    if not cfg.speakers.enabled:
        return None
    from appliance.modelstore import manifest as mf

    folder = Path(models_dir) / cfg.speakers.model
    try:
        if mf.read(folder).kind != "speaker":
            raise ValueError(f"'{cfg.speakers.model}' is not a speaker model")
        embedder = SpeakerEmbedder(folder, providers=cfg.accelerator.providers, threads=1)
    except Exception as exc:  # a missing or broken speaker model costs speaker labels, never captions
        message = (f"speaker turns are off: speaker model '{cfg.speakers.model}' is unusable ({exc}); "
                   f"run `appliance models build {cfg.speakers.model}`")
        log.warning("%s", message)
        warn(message)
        return None
    return SpeakerTracker(embedder, threshold=cfg.speakers.threshold,
                          path=store_path(cfg.state_dir, cfg.room.id) if persist else None, warn=warn)
