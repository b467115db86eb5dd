"""When an utterance is finished (pure; no model): do not finalise fragments.

The VAD ends a segment at every pause longer than its hangover, including pauses inside a sentence ("the budget
for ... next year"). Cutting there loses the context Whisper needs for the words on either side. So a pause ends
the utterance only when the text so far ends a sentence or the pause grows long; the maximum segment length still
forces a final in a monologue. Partials keep flowing while an utterance is held open.

Whisper ends almost every clip with a full stop, fragments included: on espeak-ng fragments the probability of
'.' after "The budget for next year" (0.43) is no lower than after whole sentences (0.13-0.68). So a full stop
alone cannot tell; a text whose last word cannot end a sentence (an article, a preposition, a conjunction: "The
budget for.") is unfinished whatever its punctuation, "..." trails off, and a full stop after fewer than
MIN_SENTENCE_WORDS words ("Please turn off.", "Lunch is served.") is more often a cut-off phrase than a sentence:
holding it costs at most the pause (latency), finalising a fragment costs words (accuracy).
"""

from __future__ import annotations

import re

# sentence-final punctuation in the scripts Whisper writes (Latin, CJK, Arabic, Devanagari, Ethiopic)
_SENTENCE_END = re.compile(r"[.!?…。！？؟।።]['\"”’»)\]]*\s*$")
_NOT_AN_END = re.compile(r"(?:\.\.\.|…)\s*$")  # "and then..." trails off: Whisper writes this for an unfinished phrase
_WORD = re.compile(r"[\w'’-]+")
MIN_SENTENCE_WORDS = 5  # a full stop after fewer words does not end the utterance by itself ('?' and '!' do)
# Words that cannot end a sentence: articles, prepositions, conjunctions, possessives (languages with a route)
DANGLING = frozenset("""
a an the and or but nor so because if that which who whose whom of for to in on at by with from into about than as
my your his her its our their this these is are was were will would can could should must has have had be been very
o os um uma uns umas e ou mas nem porque se que de do da dos das em no na nos nas por pelo pela para com sem ao à meu
minha seu sua nosso nossa este esta esse essa é são foi muito
el la los las un una unos unas y o pero ni porque si que de del en por para con sin al mi tu su nuestro este esta es
le les une des et ou mais donc car si que qui de du au aux en dans sur par pour avec sans mon ton son notre ce cette est
der die das ein eine einen dem den und oder aber denn wenn dass von zu im mit für auf an bei aus nach mein sein unser ist
il lo gli uno e o ma se che di del della dei in su per con senza al alla mio suo nostro questo questa è
""".split())


def ends_sentence(text: str) -> bool:
    """True when `text` ends with a question or exclamation mark, or with a full stop after at least
    MIN_SENTENCE_WORDS words the last of which can end a sentence (an ellipsis does not count)."""
    text = text.strip()
    if not _SENTENCE_END.search(text) or _NOT_AN_END.search(text):
        return False
    if text.rstrip("'\"”’») ]")[-1:] in "?!？！؟":
        return True  # Whisper writes '?' and '!' when it hears them; only its full stop is a default
    words = _WORD.findall(text.casefold())
    return len(words) >= MIN_SENTENCE_WORDS and words[-1] not in DANGLING


def finished(text: str, pause_s: float, hold_s: float) -> bool:
    """Is the utterance over after a pause of `pause_s` (silence since the last speech)? Yes when the text ends a
    sentence, when the pause reached `hold_s`, or always when holding is off (`hold_s` <= 0)."""
    return hold_s <= 0 or pause_s >= hold_s or ends_sentence(text)
