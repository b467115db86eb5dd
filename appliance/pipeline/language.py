"""The language decision of each utterance: locked early for its partials, settled on the whole for its final.

The choice itself is `appliance.asr.language`'s (pure): among the room's candidate languages, weighted by a prior.
This part keeps what the choice needs between utterances and when to make it:
- the prior (`prior(speaker_id)`): the speaker's own last language when speaker turns know it, else the previous
  turn's (`last`), held with hysteresis;
- `lock`: while speech goes on, detect again until the choice is confident enough to lock it for the turn's
  partials (a caption never changes language mid-sentence);
- `settle`: at the final, detect again on all the audio (the lock heard a second of it), keeping the partials'
  language unless the whole clearly says another; a decision made on at least the same audio is reused.
Probabilities come from a callable (Whisper's detection on the encoding a decode shares), asked only when needed.
Recognizer thread only.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Sequence

from appliance.asr import language as lid
from appliance.pipeline.utterance import Utterance

log = logging.getLogger(__name__)

Probabilities = Callable[[], Sequence[tuple[str, float]]]  # -> [(language, probability)], Whisper's detection


class LanguageDecision:
    """`candidates`: the languages an utterance may be in (one: known before anyone speaks).
    `speaker_language(speaker_id)`: that speaker's last language, or None (speaker turns off or unknown)."""

    def __init__(self, candidates: Iterable[str], *,
                 speaker_language: Callable[[str], str | None] = lambda speaker_id: None):
        self.candidates = list(candidates)
        if not self.candidates:
            raise ValueError("no candidate language")
        self.speaker_language = speaker_language
        self.last: str | None = None  # the previous turn's language (the default prior)
        # speaker id (None: unknown) -> prior over languages; replaceable (a bench or a test may watch it)
        self.prior: Callable[[str | None], dict[str, float]] = self.default_prior

    @classmethod
    def for_room(cls, model_languages: Sequence[str], source_lang: str, spoken: Iterable[str], **kwargs):
        """The decision among `source_lang`, or with "auto" among the room's `spoken` languages that the speech model
        knows (all of the model's when none are listed)."""
        candidates = lid.candidates(model_languages, list(spoken)) if source_lang == "auto" else [source_lang]
        if not candidates:
            raise ValueError(f"none of the spoken languages {list(spoken)} is known to the speech model")
        return cls(candidates, **kwargs)

    @property
    def fixed(self) -> str | None:
        """The only candidate, or None when there is a choice to make."""
        return self.candidates[0] if lid.fixed(len(self.candidates)) else None

    def default_prior(self, speaker_id: str | None) -> dict[str, float]:
        """The speaker's last language when known, else the previous turn's."""
        own = self.speaker_language(speaker_id) if speaker_id else None
        return lid.sticky_prior(own or self.last)

    def ready(self, utt: Utterance) -> bool:
        """Is there enough speech to detect the language (or is it locked already)?"""
        return utt.language is not None or utt.seconds >= lid.detect_min_s(len(self.candidates))

    def _choose(self, probs: Probabilities, prior: dict[str, float]) -> lid.Choice:
        return lid.choose(probs(), allowed=self.candidates, prior=prior)

    def _speaker_prior(self, utt: Utterance) -> dict[str, float]:
        return self.prior(utt.speaker["id"] if utt.speaker else None)

    def lock(self, utt: Utterance, samples: int, probs: Probabilities) -> str | None:
        """The turn's language for partials, or None while not confident: detected on the `samples` heard so far
        among the candidates, weighted by the prior, and locked once confident."""
        if utt.language is None:
            n = len(self.candidates)
            choice = self._choose(probs, self._speaker_prior(utt))
            if lid.should_lock(choice, utt.seconds, n):
                utt.language = choice.language
                utt.detected = (samples, choice.language)
                log.info("utterance %s: language %s (p=%.2f among %d, %.1f s), locked for the turn", utt.id,
                         choice.language, choice.probability, n, utt.seconds)
        return utt.language

    def settle(self, utt: Utterance, samples: int, probs: Probabilities, speech_samples: int | None = None) -> str:
        """The language of the utterance as a whole, on its `samples` of audio. A decision made on the same audio,
        or on at least `speech_samples` (the end-of-speech probe's), is reused. Does not change `utt.language`."""
        if (fixed := self.fixed) is not None:
            return fixed
        done = utt.detected
        if done is not None and (done[0] == samples or (speech_samples is not None and done[0] >= speech_samples)):
            return done[1]
        # hysteresis within the turn: the partials' language (itself chosen with the turn's prior) is kept unless the
        # whole utterance clearly says another; with no partial lock, the turn's prior as for the lock
        prior = lid.sticky_prior(utt.language) if utt.language is not None else self._speaker_prior(utt)
        choice = self._choose(probs, prior)
        utt.detected = (samples, choice.language)
        if utt.language is None:
            log.info("utterance %s: language %s at the final (among %d, %.1f s)", utt.id, choice.language,
                     len(self.candidates), utt.seconds)
        return choice.language
