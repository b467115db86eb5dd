"""Run the pipeline over a whole audio array or file: as fast as possible, or paced in simulated real time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from appliance.config import Config
from appliance.engines import Engines
from appliance.events import CaptionEvent
from appliance.pipeline import SR, Pipeline

CHUNK = 512  # 32 ms at 16 kHz, the VAD window


def make_pipeline(cfg: Config, engines: Engines, sink: Callable[[CaptionEvent], None], *, realtime: bool = True,
                  partials: bool = True, speakers=None) -> Pipeline:
    from appliance.glossary import prompt_terms, store_for
    from appliance.translate.enforce import wrap_translators
    from appliance.vad import make_segmenter

    glossary = store_for(cfg.state_dir)
    translators = wrap_translators(engines.translators, glossary.current)  # glossary terms enforced
    return Pipeline(asr=engines.asr, segmenter=make_segmenter(engines.vad_dir, cfg.vad), translators=translators,
                    sink=sink, source_lang=cfg.languages.source, targets=cfg.languages.targets,
                    beam_size=cfg.asr.beam_size, mt_beam_size=cfg.translation.beam_size,
                    partial_interval_s=cfg.asr.partial_interval_s, max_segment_s=cfg.asr.max_segment_s,
                    partials=partials, skip_when_behind=realtime, speakers=speakers, spoken=cfg.languages.spoken,
                    sentence_pause_s=cfg.asr.sentence_pause_s, left_context_s=cfg.asr.left_context_s,
                    mt_guard=cfg.translation.roundtrip_guard,
                    prompt_terms=lambda lang: prompt_terms(lang, glossary.current()))  # and prompted to Whisper


def run_audio(pipeline: Pipeline, audio: np.ndarray, *, realtime: bool, tail_silence_s: float = 1.0) -> None:
    """Feed `audio` (then a little silence so the last utterance ends) and wait until every caption is out."""
    audio = np.concatenate([audio.astype(np.float32), np.zeros(int(tail_silence_s * SR), np.float32)])
    pipeline.start()
    t0 = time.monotonic()
    for i in range(0, len(audio), CHUNK):
        chunk = audio[i:i + CHUNK]
        if realtime:
            due = t0 + (i + len(chunk)) / SR
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
        pipeline.feed(chunk, time.monotonic(), block=not realtime)
    pipeline.stop()


def caption_file(cfg: Config, engines: Engines, path: Path, sink: Callable[[CaptionEvent], None], *,
                 realtime: bool = False, partials: bool = True, speakers=None) -> Pipeline:
    from appliance.audio import load_audio

    pipeline = make_pipeline(cfg, engines, sink, realtime=realtime, partials=partials, speakers=speakers)
    run_audio(pipeline, load_audio(path), realtime=realtime)
    return pipeline
