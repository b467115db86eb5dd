"""The speech pipeline: audio chunks -> voice activity -> utterances -> recognition -> translation -> caption events.

Parts with one job each, wired by `Pipeline` (wiring.py: the threads, the queues, which thread calls the sink):
  segmenting.py     UtteranceSegmenter: VAD events in, utterance boundaries out (held pauses, resumes, cuts)
  language.py       LanguageDecision: each utterance's language, locked for partials, settled for the final
  context.py        PromptContext: the prompt memory (previous text, glossary terms, left audio) and its resets
  recognizer.py     RecognizerStage: when to decode partials, the end-of-speech probe and finals, and what they show
  decoding.py       Decoder: one Whisper decode with the context, left audio context, echo guard and beam fallback
  speaker_stage.py  SpeakerStage: the questions to the speaker tracker (who speaks, did the voice change)
  appliance/translate/stage.py  TranslationStage: source captions -> captions in every target language
  utterance.py      Utterance: what the parts share about one stretch of speech
  stats.py          Stats and Window: bounded counters and latencies
  workers.py        bounded puts and the restart budget the worker threads share
Accuracy (docs/accuracy.md): the language is chosen among the room's spoken languages with the previous turn as
prior; decodes are conditioned on the text finalised before; a pause inside an unfinished sentence holds the
utterance open; a final's translation is checked by the reverse model and withheld when nothing agrees.
This package imports no MQTT and no Flask.
"""

from appliance.pipeline.context import CONTEXT_RESET_SILENCE_S, TERMS_PROMPT_MAX_CHARS
from appliance.pipeline.recognizer import LANGUAGE_RETRY_S, MIN_PARTIAL_AUDIO_S
from appliance.pipeline.stats import STATS_WINDOW, Stats, Window
from appliance.pipeline.utterance import SR
from appliance.pipeline.wiring import Pipeline

__all__ = ["CONTEXT_RESET_SILENCE_S", "LANGUAGE_RETRY_S", "MIN_PARTIAL_AUDIO_S", "SR", "STATS_WINDOW",
           "TERMS_PROMPT_MAX_CHARS", "Pipeline", "Stats", "Window"]
