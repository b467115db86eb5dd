"""Whisper's byte-level BPE tokenizer (tokenizer.json via `tokenizers`) plus the special-token ids from whisper.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Specials:
    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_lm: int
    sot_prev: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int


class WhisperTokenizer:
    def __init__(self, tokenizer_json: Path, specials: dict, languages: dict[str, int], multilingual: bool):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_json))
        self.specials = Specials(**{k: int(v) for k, v in specials.items() if k in Specials.__dataclass_fields__})
        self.languages = dict(languages)  # code -> token id, Whisper's order
        self.multilingual = multilingual
        self.language_of = {v: k for k, v in self.languages.items()}

    def prompt(self, language: str | None, task: str) -> list[int]:
        """<|startoftranscript|> [<|lang|> <|task|>] <|notimestamps|> (multilingual); SOT + no-timestamps (English-only)."""
        s = self.specials
        if not self.multilingual:
            return [s.sot, s.no_timestamps]
        return [s.sot, self.languages[language], s.translate if task == "translate" else s.transcribe, s.no_timestamps]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([i for i in ids if i < self.specials.eot], skip_special_tokens=True)
