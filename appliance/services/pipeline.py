"""The captioning pipeline as a service: the models loaded for the configured languages, the room's speaker
tracker, and the pipeline that turns audio into captions for the sink.

A restart hands over without a gap: the new pipeline is built and started first (when that fails, the running one
is left as it was), takes the audio from then on, and the old one finishes its last utterance on a thread of its
own; stopping waits for those too, so the process never exits while one of its models is still running.
Its health is the pipeline's own (dead, failing or stalled stages), which the status reads from the pipeline.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np

from appliance.config import Config, ConfigError
from appliance.engines import Engines, check_languages, load_engines, mt_pairs
from appliance.runner import make_pipeline
from appliance.services.base import Context, Service

log = logging.getLogger(__name__)

PIPELINE_STOP_S = 60.0  # stopping waits this long for a pipeline to finish its last utterance


class PipelineService(Service):
    name = "pipeline"
    # the room and state folder too: the glossary and the speaker store are kept per room under the state folder
    sections = ("languages", "vad", "asr", "translation", "accelerator", "speakers", "room", "state_dir")
    stop_timeout_s = PIPELINE_STOP_S

    def __init__(self, ctx: Context, sink: Callable, on_started: Callable[[], object] = lambda: None):
        """sink: where captions go; on_started: called after each new pipeline took over (the detail changed)."""
        self.ctx = ctx
        self.sink = sink
        self.on_started = on_started
        self.engines: Engines | None = None
        self.pipeline = None  # appliance.pipeline.Pipeline taking the audio now
        self.speakers = None  # the room's SpeakerTracker (None: speaker turns off); kept across pipeline restarts
        self._speakers_key: tuple | None = None
        self._draining: list[threading.Thread] = []  # replaced pipelines finishing their audio
        # called with each new pipeline's engines before it starts; a test harness may wrap them (fault injection)
        self.on_engines: list[Callable[[Engines], None]] = []

    def start(self) -> None:
        """Load the models and start a new pipeline; the one it replaces (if any) finishes on its own thread."""
        from appliance import glossary

        cfg = usable_targets(self.ctx.cfg, self.ctx.opts.models_dir, self.ctx.status.warn)
        glossary.install(glossary.store_for(cfg.state_dir))  # prompt_terms() reads the glossary the panel edits
        engines = load_engines(cfg, self.ctx.opts.models_dir)
        for hook in self.on_engines:
            hook(engines)
        self._open_speakers()
        pipeline = make_pipeline(cfg, engines, self.sink, realtime=True, speakers=self.speakers)
        pipeline.start()
        old, self.engines, self.pipeline = self.pipeline, engines, pipeline
        self.ctx.status.set_providers(engines.providers)
        self.ctx.status.set_placement(engines.placement())
        self.ctx.status.pipeline = pipeline
        if old is not None:
            self._retire(old)
        self.on_started()

    def restart(self) -> None:
        self.start()

    def stop(self, timeout: float) -> None:
        """Finish the last utterance (of this pipeline and of those it replaced), then close the speaker store.
        The status keeps the stopped pipeline, for its last counters."""
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            pipeline.stop(timeout=timeout)
        for thread in self._draining:
            thread.join(timeout)
        self._draining = []
        if self.speakers is not None:
            self.speakers.close()
        self.speakers, self._speakers_key = None, None

    def feed(self, samples: np.ndarray) -> None:
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.feed(samples)

    def model_names(self) -> list[str]:
        if not self.engines:
            return []
        return [self.engines.asr_manifest.name] + [m.name for m in self.engines.mt_manifests]

    def _retire(self, pipeline) -> None:
        self._draining = [t for t in self._draining if t.is_alive()]
        thread = threading.Thread(target=pipeline.stop, args=(PIPELINE_STOP_S,), name="pipeline-drain", daemon=True)
        thread.start()
        self._draining.append(thread)

    def _open_speakers(self) -> None:
        """(Re)open the speaker tracker when speaker settings, the room or the state folder changed."""
        from appliance.speakers.wiring import open_tracker

        cfg = self.ctx.cfg
        key = (cfg.speakers, cfg.room.id, cfg.state_dir)
        if self.speakers is not None and self._speakers_key == key:
            return
        if self.speakers is not None:
            self.speakers.close()
        self.speakers = open_tracker(cfg, self.ctx.opts.models_dir, self.ctx.status.warn)
        self._speakers_key = key


def usable_targets(cfg: Config, models_dir, warn: Callable[[str], None]) -> Config:
    """`cfg` without the targets no installed model can reach (each one logged and told to `warn`), so the rest
    keeps running."""
    from appliance.modelstore import manifest as mf

    asr_m = mf.read(models_dir / cfg.asr.model)
    pairs = mt_pairs(models_dir).keys()
    good = []
    for t in cfg.languages.targets:
        try:
            check_languages(cfg.languages.source, [t], asr_m.languages, pairs, len(asr_m.languages) > 1)
            good.append(t)
        except ConfigError as exc:
            log.error("%s; captions in '%s' are off until a model for it is installed", exc, t)
            warn(str(exc))
    out = cfg.model_copy(deep=True)
    out.languages.targets = good
    return out
