"""`appliance bench` runs end to end and reports every agreed key (values are measured, never asserted as timings)."""

from __future__ import annotations

import json
import subprocess

PIPELINE_KEYS = {"rtf", "final_latency_p50_s", "final_latency_p95_s", "first_partial_p50_s", "translated_final_extra_p50_s",
                 "mt_ms_median", "wer_en", "wer_by_lang", "captions_on_nonspeech", "peak_rss_mb", "model", "providers"}


def test_bench_quick_json(appliance_cmd, built_model, models_dir):
    for name in ("whisper-base", "whisper-tiny.en", "silero-vad", "bergamot-en-pt", "bergamot-pt-en"):
        built_model(name)
    proc = subprocess.run(appliance_cmd + ["--models-dir", str(models_dir), "bench", "--quick", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert PIPELINE_KEYS <= set(data)
    assert data["model"] == "whisper-base" and data["providers"][-1] == "CPUExecutionProvider"
    assert 0 < data["rtf"] and 0 < data["final_latency_p50_s"] <= data["final_latency_p95_s"]
    assert data["captions_on_nonspeech"] == 0
    assert 0 <= data["wer_en"] <= 1 and "en" in data["wer_by_lang"]
    asr, mt = data["model_bench"].values()
    assert [r["model"] for r in asr] == ["whisper-tiny.en"] and [r["model"] for r in mt] == ["bergamot-en-pt"]
    assert {"enc_2s_ms", "enc_30s_ms", "dec_ms_per_token", "ct2_dec_ms_per_token", "dec_ratio_vs_ct2", "peak_rss_mb"} <= set(asr[0])
    # the encoder is really run each time (not the model's kept last encoding): 15x the audio is not free (~7x here)
    assert asr[0]["enc_30s_ms"] > 2 * asr[0]["enc_2s_ms"] > 0
    assert {"ms_per_sentence", "native_ms_per_sentence", "ratio_vs_native"} <= set(mt[0])


def test_bench_table(appliance_cmd, built_model, models_dir):
    for name in ("whisper-tiny.en", "bergamot-en-pt"):
        built_model(name)
    proc = subprocess.run(appliance_cmd + ["--models-dir", str(models_dir), "bench", "models", "--quick"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| model" in proc.stdout and "bergamot-en-pt" in proc.stdout and "ratio_vs_native" in proc.stdout


def test_bench_models_side_by_side_on_providers(appliance_cmd, built_model, models_dir):
    """`--providers`: one row per model and provider, with placement, speed, memory and accuracy on the same inputs
    (OpenVINO beside the CPU: tests/accel/test_openvino.py, in that flavour's venv)."""
    for name in ("whisper-tiny.en", "bergamot-en-pt"):
        built_model(name)
    cmd = appliance_cmd + ["--models-dir", str(models_dir), "bench", "models", "--quick", "--json", "--model",
                           "whisper-tiny.en"]
    proc = subprocess.run(cmd + ["--providers", "cpu"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    asr, mt = json.loads(proc.stdout)["model_bench"].values()
    assert [(r["model"], r["provider"]) for r in asr] == [("whisper-tiny.en", "CPU")]
    assert [(r["model"], r["provider"]) for r in mt] == [("bergamot-en-pt", "CPU")]
    assert asr[0]["nodes_on_it"] == asr[0]["time_on_it"] == mt[0]["nodes_on_it"] == 1.0
    assert {"load_s", "enc_3s_ms", "enc_30s_ms", "dec_ms_per_token", "clips_s", "peak_rss_mb"} <= set(asr[0])
    assert asr[0]["clips"] >= 3 and 0 <= asr[0]["wer"] < 0.5 and mt[0]["chrf"] > 30 and mt[0]["ms_per_sentence"] > 0
    missing = subprocess.run(cmd + ["--providers", "openvino,cpu"], capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "does not offer openvino" in missing.stderr


ACCURACY_KEYS = {"wer_streaming", "wer_offline", "lid_accuracy", "sentences_lost", "translations_withheld",
                 "guard_false_rejections", "chrf", "final_latency_p50_s", "final_latency_p95_s", "first_partial_p50_s"}


def test_bench_accuracy_quick_json(appliance_cmd, built_model, models_dir):
    for name in ("whisper-base", "silero-vad", "bergamot-en-pt", "bergamot-pt-en"):
        built_model(name)
    proc = subprocess.run(appliance_cmd + ["--models-dir", str(models_dir), "bench", "accuracy", "--quick", "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert ACCURACY_KEYS <= set(data)
    assert 0 <= data["wer_streaming"] <= 1 and 0 <= data["wer_offline"] <= 1
    assert data["guard_checked"] == 70 and 0 <= data["guard_false_rejections"] <= data["guard_checked"]
    assert data["spoken"] == ["en", "es", "pt", "de", "fr", "it"]
    assert 0 < data["rtf_partials"] < data["rtf"]  # partials were shown, and they are only part of the work


def test_wer_scores_english_as_whispers_normaliser_does():
    """Numbers, spellings and contractions are formatting, not recognition: "eleven" and "11" agree in English
    (Whisper's English normaliser); other languages keep the simple rule (number words up to ten)."""
    from appliance.bench.pipeline_bench import wer

    assert wer("We will take a short break at eleven.", "We will take a short break at 11.", "en") == 0.0
    assert wer("It's the colour of the sky", "it is the color of the sky", "en") == 0.0
    assert wer("We will take a short break at eleven.", "We will take a short brake at 11.", "en") == 1 / 8
    assert wer("one two three four five six seven eight nine ten", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10.", "en") == 0.0
    assert wer("one two three four", "1, 2, 3, 5.", "en") == 1 / 4  # counting compares word by word
    assert wer("Twenty-one people came.", "21 people came.", "en") == 0.0  # a compound is one number
    assert wer("one hundred and one", "101", "en") == 0.0
    assert wer("Five years.", "5 years.", "en") == 0.0
    assert wer("Uno dos tres", "uno 2 tres", "es") == 0.0
    assert wer("once", "11", "es") == 1.0  # Spanish: only up to ten


def test_offline_baseline_windows_end_at_a_pause():
    """The offline baseline's windows (at most 30 s, consecutive, covering the file) end at a pause when there is
    one in the last seconds before 30 s, not in the middle of a word."""
    import numpy as np

    from appliance.bench.accuracy_bench import SR, offline_windows

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(70 * SR)).astype(np.float32)  # loud all through ...
    audio[int(27.2 * SR):int(27.6 * SR)] = 0  # ... but for a pause before 30 s
    windows = offline_windows(audio)
    assert windows[0][0] == 0 and windows[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(0 < end - start <= 30 * SR for start, end in windows)
    assert 27.2 * SR <= windows[0][1] <= 27.6 * SR
    assert offline_windows(audio[:20 * SR]) == [(0, 20 * SR)]
