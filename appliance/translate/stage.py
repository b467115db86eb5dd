"""The translation stage: source captions -> caption events in every target language.

Each target has a route from the source language (appliance/routes.py): machine-translation hops, or Whisper's
translate task (its English comes with the source caption). Finals are translated with a beam; partials (their
stable prefix only, and only when it grows) greedily. A final's last machine-translation hop is checked by the
reverse-direction model where one is loaded (appliance/translate/roundtrip.py): its n-best is reranked by the round
trip, and when nothing agrees with the source the source text is published instead, marked untranslated. After a
final, a target that showed a translated partial but got no final gets an empty final (displays drop the stale
partial). Runs on the pipeline's translator thread, one caption at a time; it owns its state.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from appliance import guards
from appliance.routes import Route
from appliance.translate.roundtrip import RoundTripTranslator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceCaption:
    """Recognizer -> translator hand-over."""

    utt_id: str
    final: bool
    lang: str
    text: str  # full text (finals) or stable prefix (partials) to translate
    start: float
    end: float
    english: str | None  # Whisper's translate-task output when a route needs it (finals only)
    speech_end_wall: float
    asr_s: float
    emitted_mono: float = 0.0
    speaker: dict | None = None


class TranslationStage:
    """`translate(cap)` each source caption, then `retract(cap)` after a final.

    `routes(source)`: every target -> its Route (None: the source language itself, or no route); `emit(...)`: the pipeline's
    caption event writer (utt_id, final, lang, source_lang, text, start, end, latency, stable=, speaker=,
    untranslated=); `shown(utt_id, lang)`: whether a partial of that utterance is on display in that language;
    `stats`: the pipeline's Stats (its mt_* counters, `mt_ms`, `translated(source_lang, seconds)`)."""

    def __init__(self, *, translators: dict, routes: Callable[[str], dict[str, Route | None]],
                 emit: Callable[..., None], shown: Callable[[str, str], bool], stats, beam_size: int = 1,
                 guard: bool = True):
        self.translators = translators
        self.routes = routes
        self.emit = emit
        self.shown = shown
        self.stats = stats
        self.beam_size = beam_size  # finals; partials are greedy
        self.guard = guard  # check final translations with the reverse model where one is loaded
        self._roundtrip: dict[tuple[str, str], RoundTripTranslator] = {}
        self._last: dict[tuple[str, str], str] = {}  # (utterance, target) -> the source prefix last translated

    def retract(self, cap: SourceCaption) -> None:
        """After a final: every target that showed a translated partial and got no final gets an empty final,
        so displays drop the stale partial (a rejected source final or a rejected translation)."""
        for target in self.routes(cap.lang):
            key = (cap.utt_id, target)
            self._last.pop(key, None)
            if target != cap.lang and self.shown(cap.utt_id, target):
                self.emit(cap.utt_id, True, target, cap.lang, "", cap.start, cap.end, {})

    def _run_route(self, cap: SourceCaption, route: Route) -> tuple[str, bool]:
        """(translation, withheld) of `cap` along `route`. A final's last machine-translation hop is checked by the
        reverse model when one is loaded (n-best reranking; withheld when nothing agrees)."""
        text = cap.text
        for i, hop in enumerate(route):
            if hop.engine == "whisper":
                if cap.english is None:
                    return "", False
                text = cap.english
                continue
            reverse = self.translators.get((hop.target, hop.source))
            if cap.final and self.guard and reverse is not None and i == len(route) - 1:
                checker = self._roundtrip.setdefault((hop.source, hop.target), RoundTripTranslator(
                    self.translators[(hop.source, hop.target)], reverse, self.beam_size))
                checked = checker.translate(text)
                self.stats.mt_reranked += checked.reranked
                return checked.text, checked.withheld
            beam = self.beam_size if cap.final else 1  # partials are provisional: greedy keeps them cheap
            text = self.translators[(hop.source, hop.target)].translate([text], beam_size=beam)[0]
        return text, False

    def translate(self, cap: SourceCaption) -> None:
        if not cap.text:
            return  # an empty partial has nothing to show; an empty final is a retraction (retract)
        for target, route in self.routes(cap.lang).items():
            if not route:
                continue  # same language (published by the recognizer) or no route (reported at start)
            key = (cap.utt_id, target)
            if not cap.final and self._last.get(key) == cap.text:
                continue  # stable prefix unchanged: nothing new to show
            t0 = time.perf_counter()
            text, withheld = self._run_route(cap, route)
            mt_s = time.perf_counter() - t0
            if not text and not withheld:
                continue
            reason = guards.translation_rejection(cap.text, text) if route[-1].engine == "mt" and text else None
            if reason:
                self.stats.mt_rejected += 1
                log.info("translation %s->%s of utterance %s rejected (%s): %r", cap.lang, target, cap.utt_id, reason, text)
                if not cap.final:
                    continue
                withheld = True
            if withheld:  # nothing agreed with the source: show the source text, marked, never an invented sentence
                self.stats.mt_withheld += 1
                self.emit(cap.utt_id, True, target, cap.lang, cap.text, cap.start, cap.end,
                          {"asr": cap.asr_s, "mt": mt_s}, speaker=cap.speaker, untranslated=True)
                self._last.pop(key, None)
                continue
            if cap.final:
                self._last.pop(key, None)
            else:
                self._last[key] = cap.text
            # a translated partial comes from the source's stable prefix only; it is still provisional as a whole
            self.emit(cap.utt_id, cap.final, target, cap.lang, text, cap.start, cap.end, {"asr": cap.asr_s, "mt": mt_s},
                      stable=text if cap.final else "", speaker=cap.speaker)
            if cap.final:
                self.stats.mt_ms.append(mt_s * 1000)
                self.stats.translated(cap.lang, time.monotonic() - cap.emitted_mono)
