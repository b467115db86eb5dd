"""Models side by side on execution providers (`appliance bench models --providers openvino,cpu`).

For each model and provider, in a process of its own (so that peak RSS is that pair's alone): the load time (with
warm-up), where the graphs run (the lowest share of a graph's nodes and of its profiled time on the provider), the
encoder at several audio lengths, the decoder per token, the time and WER of transcribing the corpus's speech clips
(recognition), and ms per sentence and chrF on the parallel sentences (translation). The same clips and sentences for
every provider, so a provider that loses accuracy shows it. Only the providers this onnxruntime offers can run: the
OpenVINO flavour's venv (scripts/flavour-venv openvino) offers OpenVINO and the CPU.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from pathlib import Path

from appliance.bench.model_bench import THREADS, _round, _rss_mb, time_whisper

ENCODER_SECONDS = (3, 10, 30)


def _where(model, row: dict) -> None:
    """The lowest node and time shares on the provider over the model's graphs (the weakest graph decides)."""
    nodes = [p.node_share for p in model.placement if p.node_share is not None]
    times = [p.time_share for p in model.placement if p.time_share is not None]
    row["nodes_on_it"] = min(nodes) if nodes else None
    row["time_on_it"] = min(times) if times else None


def _clips(languages: list[str], quick: bool) -> list:
    from appliance.bench.corpus import build_corpus

    wanted = ("en",) if quick else tuple(languages)
    return [c for c in build_corpus() if c.kind == "speech" and c.lang in wanted]


def _asr(folder: str, provider: str, quick: bool) -> dict:
    from appliance.asr import WhisperModel
    from appliance.audio import load_audio
    from appliance.bench.corpus import clip_path
    from appliance.bench.pipeline_bench import scoring_text, wer

    t0 = time.perf_counter()
    model = WhisperModel.load(folder, [provider], threads=THREADS, profile=True)
    row = {"model": Path(folder).name, "provider": model.providers[0].replace("ExecutionProvider", ""),
           "load_s": time.perf_counter() - t0}
    _where(model, row)

    time_whisper(model, row, seconds=ENCODER_SECONDS)
    clips = _clips(model.languages if model.multilingual else ["en"], quick)
    errors = words = 0.0
    t0 = time.perf_counter()
    for clip in clips:
        model.forget_encoding()
        text = model.transcribe(load_audio(clip_path(clip)), language=clip.lang).text
        n = len(scoring_text(clip.text, clip.lang).split())
        errors, words = errors + wer(clip.text, text, clip.lang) * n, words + n
    row["clips"] = len(clips)
    row["clips_s"] = time.perf_counter() - t0
    row["wer"] = errors / words if words else None
    row["peak_rss_mb"] = _rss_mb()
    return row


def _mt(folder: str, provider: str, quick: bool) -> dict:
    from sacrebleu.metrics import CHRF

    from appliance.bench.sentences import EN, PT
    from appliance.translate import Translator

    t0 = time.perf_counter()
    tr = Translator.load(folder, [provider], threads=1, profile=True)
    row = {"model": Path(folder).name, "provider": tr.placement[0].provider.replace("ExecutionProvider", ""),
           "load_s": time.perf_counter() - t0}
    _where(tr, row)
    sources, refs = (EN, PT) if tr.source_lang == "en" else (PT, EN)
    if quick:
        sources, refs = sources[:10], refs[:10]
    per, out = [], []
    for s in sources:
        t0 = time.perf_counter()
        out += tr.translate([s])
        per.append(time.perf_counter() - t0)
    row["ms_per_sentence"] = 1000 * statistics.median(per)
    row["chrf"] = CHRF().corpus_score(out, [list(refs)]).score
    row["peak_rss_mb"] = _rss_mb()
    return row


def _measure(kind: str, folder: str, provider: str, quick: bool) -> dict:
    return (_asr if kind == "asr" else _mt)(folder, provider, quick)


def run(models: Path, providers: list[str], *, asr_model: str = "whisper-base", quick: bool = False,
        progress=lambda m: None) -> dict[str, list[dict]]:
    """{table title: rows}: the speech model `asr_model` and every translation model (quick: bergamot-en-pt), each
    on every provider in `providers` (short names or onnxruntime's; a provider's variant of the model where one is
    built, as the appliance opens it), one process per pair."""
    from appliance.modelstore import variants
    from appliance.modelstore.verify import installed
    from appliance.providers import available_providers, canonical

    offered = available_providers()
    missing = [p for p in providers if canonical(p) not in offered]
    if missing:
        raise SystemExit(f"bench: this onnxruntime does not offer {', '.join(missing)} (it offers "
                         f"{', '.join(offered)}); run the bench from that flavour's venv (scripts/flavour-venv openvino)")
    tables: dict[str, list[dict]] = {"speech recognition by provider (ms; WER on the corpus's speech clips)": [],
                                     "translation by provider (ms per sentence; chrF on the parallel sentences)": []}
    asr_key, mt_key = list(tables)
    ctx = mp.get_context("spawn")
    for m in installed(models):
        mt = m.kind == "mt" and (not quick or m.name == "bergamot-en-pt")
        wanted = m.name == asr_model if m.kind == "asr" else mt
        if not wanted:
            continue
        for provider in providers:
            folder = variants.for_provider(models, m.name, [provider])  # the provider's variant where one is built
            progress(f"provider bench: {folder.name} on {provider}")
            with ctx.Pool(1) as pool:
                row = pool.apply(_measure, (m.kind, str(folder), provider, quick))
            tables[asr_key if m.kind == "asr" else mt_key].append({k: _round(v) for k, v in row.items()})
    return tables
