"""The recognizer stage's policy on plain data: when partials are decoded or skipped, when the final reuses the
end-of-speech probe's decode, Whisper's beam fallback, a final whose language is not the partials', a rejected final;
and its decoder's: the prompt's echo, left audio context.

A small scripted Whisper stands in for the model (given texts and language probabilities; every call recorded). The
same paths run on the real model in test_accuracy.py (each final the probe's decode with a beam; a Spanish turn
after English partials, whose English final needs the fallback; words after a finished sentence not lost to the
prompt; left audio context for a short continuation) and test_pipeline.py (partials on real speech, one aborted when
speech pauses in real time). Partials skipped behind real time run on real models only in `appliance bench`."""

from __future__ import annotations

import numpy as np

from appliance.asr.whisper import Transcription
from appliance.pipeline.context import PromptContext
from appliance.pipeline.decoding import FALLBACK_BEAM, LEFT_CONTEXT_SILENCE_S, Decoder
from appliance.pipeline.language import LanguageDecision
from appliance.pipeline.recognizer import BEHIND_SECONDS, FINAL_PAD_S, MIN_PARTIAL_AUDIO_S, RecognizerStage
from appliance.pipeline.speaker_stage import SpeakerStage
from appliance.pipeline.stats import Stats
from appliance.pipeline.utterance import SR, Utterance


class ScriptedWhisper:
    """Stands in for WhisperModel: `texts` are (text, avg_logprob) answered in turn; `probs` the detection."""

    def __init__(self, *texts, probs=(("en", 1.0),)):
        self.texts, self.probs, self.calls, self.audio = list(texts), list(probs), [], []

    def transcribe(self, audio, language=None, task="transcribe", beam_size=1, prompt=None, pad_seconds=None,
                   prefix=None):
        self.calls.append({"language": language, "beam": beam_size, "prompt": prompt, "pad": pad_seconds})
        self.audio.append((len(audio), prefix))
        text, logprob = self.texts.pop(0)
        return Transcription(text=text, language=language, tokens=(), avg_logprob=logprob, compression_ratio=1.2,
                             no_speech_prob=0.01, duration_s=len(audio) / SR)

    def detect_language(self, audio, pad_seconds=None):
        return self.probs


class Out:
    """What the stage writes: caption events (emit) and source captions for the translator (forward)."""

    def __init__(self):
        self.events, self.forwarded = [], []

    def emit(self, utt_id, final, lang, source_lang, text, *rest, **kwargs):
        self.events.append((utt_id, final, lang, text))

    def forward(self, cap):
        self.forwarded.append((cap.utt_id, cap.final, cap.lang, cap.text))


def stage(whisper, *, candidates=("en",), beam_size=1, backlog_s=0.0):
    ids = iter(f"u{i}" for i in range(2, 100))
    stats, out, context = Stats(), Out(), PromptContext()
    rec = RecognizerStage(whisper, decoder=Decoder(whisper, context, stats, beam_size),
                          language=LanguageDecision(candidates), context=context, speakers=SpeakerStage(),
                          stats=stats, emit=out.emit, forward=out.forward, routes=lambda source: {},
                          backlog_s=lambda: backlog_s, new_id=lambda: next(ids), beam_size=beam_size,
                          skip_when_behind=True)
    return rec, stats, out


def utterance(seconds: float, language: str | None = "en") -> Utterance:
    utt = Utterance(id="u1", start=0.0, onset_wall=0.0, language=language)
    utt.chunks, utt.samples = [np.zeros(int(seconds * SR), np.float32)], int(seconds * SR)
    return utt


def grow(utt: Utterance, seconds: float) -> None:
    utt.chunks.append(np.zeros(int(seconds * SR), np.float32))
    utt.samples += int(seconds * SR)


def test_partials_wait_for_enough_speech_and_the_cadence_and_are_skipped_when_behind():
    whisper = ScriptedWhisper(("Good morning", -0.2), ("Good morning everyone", -0.2))
    rec, stats, out = stage(whisper)
    utt = utterance(MIN_PARTIAL_AUDIO_S - 0.1)
    rec.speech(utt, 0.0)
    assert whisper.calls == []
    grow(utt, 0.1)
    rec.speech(utt, 0.0)  # the first partial does not wait for the cadence
    grow(utt, 0.1)
    rec.speech(utt, 0.0)  # 0.1 s more: not due yet
    grow(utt, 1.0)
    rec.speech(utt, 0.0)
    assert [e[3] for e in out.events] == ["Good morning", "Good morning everyone"] and stats.partials == 2
    assert [c["beam"] for c in whisper.calls] == [1, 1] and not stats.behind
    behind, stats, out = stage(ScriptedWhisper(), backlog_s=BEHIND_SECONDS + 0.5)
    behind.speech(utterance(1.0), 0.0)  # no text scripted: a decode would fail
    assert stats.partials_skipped == 1 and stats.behind and out.events == []


def test_the_final_reuses_the_probe_that_covered_every_spoken_sample():
    whisper = ScriptedWhisper(("Good morning everyone.", -0.2))
    rec, stats, out = stage(whisper, beam_size=2)
    utt = utterance(2.0)
    rec.probe(utt, 0.0, trailing_silence_s=0.05)  # speech paused: decoded as the final would be
    assert whisper.calls == [{"language": "en", "beam": 2, "prompt": None, "pad": FINAL_PAD_S}]
    grow(utt, 0.2)  # the VAD's hangover: silence, no more speech
    rec.final(utt, 0.0, speech_samples=2 * SR)
    assert len(whisper.calls) == 1 and stats.finals == 1 and stats.finals_from_probe == 1
    assert out.events[-1] == ("u1", True, "en", "Good morning everyone.")
    assert out.forwarded[-1] == ("u1", True, "en", "Good morning everyone.")


def test_a_doubtful_probe_is_decoded_again_and_falls_back_to_a_beam():
    whisper = ScriptedWhisper(("Good mourning every one", -1.5), ("Good mourning every one", -1.4),
                              ("Good morning everyone.", -0.3))
    rec, stats, out = stage(whisper)
    utt = utterance(2.0)
    rec.probe(utt, 0.0, trailing_silence_s=0.05)
    rec.final(utt, 0.0, speech_samples=2 * SR)
    assert [c["beam"] for c in whisper.calls] == [1, 1, FALLBACK_BEAM] and whisper.calls[-1]["prompt"] is None
    assert out.events[-1] == ("u1", True, "en", "Good morning everyone.") and stats.finals_from_probe == 0


def test_a_final_in_another_language_withdraws_the_partials_and_takes_a_new_id():
    whisper = ScriptedWhisper(("Hola a todos", -0.3), ("Hola a todos, bienvenidos.", -0.2),
                              probs=[("en", 0.95), ("es", 0.05)])
    rec, stats, out = stage(whisper, candidates=("en", "es"))
    utt = utterance(1.0, language=None)
    rec.partial(utt, 0.0)  # the first second sounds English: locked, shown in English
    assert utt.language == "en" and out.events == [("u1", False, "en", "Hola a todos")]
    grow(utt, 2.0)
    whisper.probs = [("es", 0.99), ("en", 0.01)]  # the whole utterance clearly says Spanish
    rec.final(utt, 0.0, speech_samples=3 * SR)
    assert out.events[1:] == [("u1", True, "en", ""), ("u2", True, "es", "Hola a todos, bienvenidos.")]
    assert out.forwarded[1:] == [("u1", True, "en", ""), ("u2", True, "es", "Hola a todos, bienvenidos.")]
    assert stats.language_changes == 1 and whisper.calls[-1]["language"] == "es"


def test_a_rejected_final_withdraws_what_was_shown_and_resets_the_context():
    whisper = ScriptedWhisper(("Good morning", -0.2), ("", -0.2))
    rec, stats, out = stage(whisper)
    rec.context.remember("en", "Welcome.", np.zeros(SR, np.float32), 1.0)
    utt = utterance(1.0)
    utt.start = 5.0  # 4 s after the last final: the same context, too late for left audio context
    rec.partial(utt, 0.0)
    assert whisper.calls[0]["prompt"] == "Welcome."
    rec.final(utt, 0.0)
    assert stats.rejected == 1 and stats.finals == 0
    assert out.events[-1] == ("u1", True, "en", "") and out.forwarded[-1] == ("u1", True, "en", "")
    assert rec.context.prompt(6.0, "en") is None


def test_a_decode_that_only_echoes_the_prompt_is_done_again_without_it():
    whisper = ScriptedWhisper(("Welcome to the meeting.", -0.2), ("by the European Union.", -0.3))
    rec, stats, out = stage(whisper)
    rec.context.remember("en", "Welcome to the meeting.", np.zeros(SR, np.float32), 1.0)
    utt = utterance(1.0)
    utt.start = 5.0
    rec.final(utt, 0.0)
    assert [c["prompt"] for c in whisper.calls] == ["Welcome to the meeting.", None] and stats.prompt_echoes == 1
    assert out.events[-1] == ("u1", True, "en", "by the European Union.")


def test_a_short_utterance_right_after_a_final_is_decoded_after_that_finals_audio():
    whisper = ScriptedWhisper(("tomorrow.", -0.2))  # (Whisper answers what follows the forced text)
    rec, stats, out = stage(whisper)
    rec.context.remember("en", "See you", np.zeros(SR, np.float32), 1.0)
    utt = utterance(0.8)
    utt.start = 1.5
    rec.final(utt, 0.0)
    joined = SR + int(LEFT_CONTEXT_SILENCE_S * SR) + int(0.8 * SR)  # the final's audio, a pause, the utterance
    assert whisper.audio == [(joined, "See you")]  # the final's text forced as the start of Whisper's output
    assert out.events[-1] == ("u1", True, "en", "tomorrow.")
