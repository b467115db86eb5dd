"""The segmenter on plain data: given VAD events in, utterance boundaries out (held pauses, resumes, speaker checks,
cuts, the end of the audio).

A small scripted recognizer stands in for the recognizer stage: it records what the segmenter asks and answers
`at_pause` with given texts. The same paths run on real models and real speech in test_accuracy.py (a pause inside
a sentence held open, a finished sentence ending at its pause) and test_features_together.py (another voice after a
held pause ends the utterance there, the same voice continues it).
"""

from __future__ import annotations

import numpy as np
import pytest

from appliance.events import SpeechSegment
from appliance.pipeline.segmenting import (CUT_SEARCH_S, SPEAKER_CHECK_S, TRAILING_SILENCE, Speech,
                                           UtteranceSegmenter, quietest_cut)
from appliance.pipeline.speaker_stage import SpeakerStage
from appliance.pipeline.stats import Stats

SR = 16000
UNFINISHED = "The budget for"  # its last word cannot end a sentence (asr/endpoint.py)
FINISHED = "The budget for next year is ready for the vote."


class ScriptedRecognizer:
    """Stands in for RecognizerStage: `at_pause` returns the given texts in turn; every call is recorded."""

    def __init__(self, texts=(), fail_final=False):
        self.texts, self.fail_final = list(texts), fail_final
        self.asked, self.finals = [], []

    def speech(self, utt, wall):
        self.asked.append(("speech", utt.id, utt.samples))

    def probe(self, utt, wall, trailing_silence_s):
        self.asked.append(("probe", utt.id, trailing_silence_s))

    def at_pause(self, utt, speech_samples, speech_end_wall):
        self.asked.append(("pause", utt.id, speech_samples))
        return self.texts.pop(0)

    def final(self, utt, speech_end_wall, speech_samples=None):
        if self.fail_final:
            raise RuntimeError("decoder failed")
        self.finals.append({"id": utt.id, "start": utt.start, "seconds": utt.seconds, "gap_s": utt.gap_s,
                            "speech_samples": speech_samples, "language": utt.language})


class Voices:
    """A speaker tracker that answers "did the voice change?" as scripted (the real one: test_speakers.py)."""

    def __init__(self, changed: bool):
        self.changed, self.asked = changed, []

    def speaker_changed(self, before, after):
        self.asked.append((len(before), len(after)))
        return self.changed


class Feed:
    """Drives a segmenter chunk by chunk on an audio clock (seconds), as the voice-activity thread would."""

    def __init__(self, segmenter: UtteranceSegmenter):
        self.segmenter, self.t = segmenter, 0.0

    def chunk(self, seconds: float, *events, silence: float = 0.0, onset: bool = False):
        self.t += seconds
        self.segmenter.chunk(Speech(list(events), wall=100.0 + self.t, samples=int(seconds * SR),
                                    trailing_silence_s=silence, in_onset=onset))

    def start(self, seconds: float, audio: np.ndarray | None = None):
        """Speech starts now and lasts `seconds` (one chunk)."""
        samples = audio if audio is not None else np.full(int(seconds * SR), 0.1, np.float32)
        self.chunk(seconds, SpeechSegment("start", samples, self.t, self.t + seconds))

    def more(self, seconds: float):
        self.chunk(seconds, SpeechSegment("continue", np.full(int(seconds * SR), 0.1, np.float32), self.t,
                                          self.t + seconds))

    def end(self, hangover: float = 0.3):
        """Speech ended at the current time; the VAD ends the segment after `hangover` seconds of silence."""
        speech_end = self.t
        self.chunk(hangover, SpeechSegment("end", np.zeros(int(hangover * SR), np.float32), speech_end,
                                           speech_end + hangover, speech_end=speech_end), silence=hangover)


def segmenter(recognizer, *, pause_s=1.0, voices=None, max_segment_s=15.0, language=None, stats=None):
    ids = iter(f"u{i}" for i in range(1, 100))
    return UtteranceSegmenter(recognizer, SpeakerStage(voices), new_id=lambda: next(ids), stats=stats or Stats(),
                              language=language, max_segment_s=max_segment_s, sentence_pause_s=pause_s)


def test_a_finished_sentence_ends_at_its_pause():
    rec = ScriptedRecognizer([FINISHED])
    feed = Feed(segmenter(rec))
    feed.start(1.0)
    feed.more(1.0)
    feed.end()
    assert rec.finals == [{"id": "u1", "start": 0.0, "seconds": 2.0 + TRAILING_SILENCE / SR, "gap_s": 0.0,
                           "speech_samples": 2 * SR, "language": None}]
    assert ("pause", "u1", 2 * SR) in rec.asked


def test_an_unfinished_sentence_is_held_open_and_continues_when_speech_resumes():
    stats = Stats()
    rec = ScriptedRecognizer([UNFINISHED, FINISHED])
    seg = segmenter(rec, stats=stats)
    feed = Feed(seg)
    feed.start(1.0)
    feed.end()  # pause 0.3 s < 1.0 s, "The budget for": held
    assert rec.finals == [] and seg.held is not None and seg.utt is None
    feed.chunk(0.3, onset=True)  # 0.6 s of pause; speech may be starting
    feed.start(1.0)  # resumes at 1.6 s: the same utterance
    assert seg.held is None and seg.utt.id == "u1"
    feed.end()
    assert stats.pauses_held == 1
    [final] = rec.finals
    assert final["id"] == "u1" and final["gap_s"] == pytest.approx(1.6 - (1.0 + TRAILING_SILENCE / SR))
    assert final["seconds"] == pytest.approx(2.0 + 2 * TRAILING_SILENCE / SR)  # both parts, and the silence kept
    assert [a for a in rec.asked if a[0] == "speech"][-1][1] == "u1"


def test_a_held_pause_that_grows_long_ends_the_utterance_unless_speech_is_starting():
    rec = ScriptedRecognizer([UNFINISHED])
    seg = segmenter(rec, pause_s=1.0)
    feed = Feed(seg)
    feed.start(1.0)
    feed.end()
    feed.chunk(0.8, onset=True)  # 1.1 s of pause, but the VAD may be hearing speech start: wait for it
    assert rec.finals == []
    feed.chunk(0.1)
    assert [f["id"] for f in rec.finals] == ["u1"] and seg.held is None
    assert rec.finals[0]["speech_samples"] == SR


def test_without_sentence_holding_every_pause_ends_the_utterance():
    rec = ScriptedRecognizer()  # no text needed: nothing is decoded at the pause
    feed = Feed(segmenter(rec, pause_s=0.0))
    for _ in range(2):
        feed.start(1.0)
        feed.end()
        feed.chunk(0.2)
    assert [f["id"] for f in rec.finals] == ["u1", "u2"]
    assert not [a for a in rec.asked if a[0] == "pause"]


@pytest.mark.parametrize("changed", [True, False])
def test_with_speaker_turns_the_voice_after_a_held_pause_decides(changed):
    voices = Voices(changed)
    rec = ScriptedRecognizer([UNFINISHED, FINISHED])
    seg = segmenter(rec, voices=voices)
    feed = Feed(seg)
    feed.start(1.2)
    feed.end()
    feed.start(0.5)  # less than SPEAKER_CHECK_S of the new speech: undecided, nothing decoded for it
    assert voices.asked == [] and not [a for a in rec.asked if a[0] == "speech" and a[1] == "u2"]
    feed.more(SPEAKER_CHECK_S)
    assert voices.asked == [(int(1.2 * SR), int((0.5 + SPEAKER_CHECK_S) * SR))]  # speech before the pause, after it
    feed.end()
    if changed:  # the held utterance ends at its pause; the new voice is an utterance of its own
        assert [(f["id"], f["start"], f["speech_samples"]) for f in rec.finals] == [
            ("u1", 0.0, int(1.2 * SR)), ("u2", pytest.approx(1.5), int((0.5 + SPEAKER_CHECK_S) * SR))]
    else:  # the same voice: one utterance
        assert [f["id"] for f in rec.finals] == ["u1"] and rec.finals[0]["gap_s"] > 0


def test_a_long_monologue_is_cut_at_its_quietest_point():
    audio = np.full(int(3.0 * SR), 0.1, np.float32)
    audio[int(2.2 * SR):int(2.3 * SR)] = 0.0  # a dip in the last CUT_SEARCH_S seconds
    assert quietest_cut(audio) == int(2.25 * SR)  # the middle of the quietest 100 ms
    assert quietest_cut(audio[:SR // 20]) == SR // 20  # too short to search: everything
    rec = ScriptedRecognizer()
    seg = segmenter(rec, pause_s=0.0, max_segment_s=3.0, language="en")
    feed = Feed(seg)
    feed.start(3.0, audio)
    assert rec.finals == [{"id": "u1", "start": 0.0, "seconds": 2.25, "gap_s": 0.0, "speech_samples": None,
                           "language": "en"}]
    assert seg.utt.id == "u2" and seg.utt.start == pytest.approx(2.25) and seg.utt.seconds == pytest.approx(0.75)
    assert seg.utt.language == "en" and CUT_SEARCH_S > 3.0 - 2.25


def test_the_end_of_the_audio_finalises_what_is_open():
    rec = ScriptedRecognizer([UNFINISHED])
    seg = segmenter(rec)
    feed = Feed(seg)
    feed.start(1.0)
    feed.end()  # held
    feed.start(0.5)  # and speech resumed: open
    seg.end()
    assert [f["id"] for f in rec.finals] == ["u1"]
    rec = ScriptedRecognizer([UNFINISHED])
    seg = segmenter(rec)
    feed = Feed(seg)
    feed.start(1.0)
    feed.end()  # held, nothing after it
    seg.end()
    assert [f["id"] for f in rec.finals] == ["u1"] and seg.held is None


def test_the_probe_is_asked_after_every_chunk_of_an_open_utterance():
    rec = ScriptedRecognizer()
    feed = Feed(segmenter(rec, language="pt"))
    feed.chunk(0.5)  # silence: nothing open
    feed.start(1.0)
    feed.chunk(0.03, silence=0.03)  # speech paused (not yet ended by the VAD)
    assert [a for a in rec.asked if a[0] == "probe"] == [("probe", "u1", 0.0), ("probe", "u1", 0.03)]
    assert feed.segmenter.utt.language == "pt"  # one candidate: known before anyone speaks
    assert feed.segmenter.utt.onset_wall == pytest.approx(100.0 + 0.5)


def test_a_final_that_fails_is_named_for_the_retry():
    rec = ScriptedRecognizer(fail_final=True)
    seg = segmenter(rec, pause_s=0.0)
    feed = Feed(seg)
    feed.start(1.0)
    with pytest.raises(RuntimeError):
        seg.end()
    utt = seg.take_finalising()
    assert utt is not None and utt.id == "u1" and seg.utt is None and seg.take_finalising() is None
    rec.fail_final = False
    seg.finalise(utt, 0.0)
    assert [f["id"] for f in rec.finals] == ["u1"] and seg.finalising is None
