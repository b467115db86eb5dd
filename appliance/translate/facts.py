"""`marian.json`: the model facts the translation runtime reads (written by the bergamot / marian_hf converters)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

FACTS = "marian.json"
DECODERS = ("ssru", "transformer")


class TranslationModelError(RuntimeError):
    """A translation model folder that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Shortlist:
    file: str
    first_num: int
    best_num: int
    shared_vocab: bool


@dataclass(frozen=True)
class MarianFacts:
    format: str  # bergamot | marian-hf
    decoder: str  # ssru | transformer
    source_lang: str
    target_lang: str
    dim: int
    heads: int
    decoder_layers: int
    vocab_size: int
    eos_id: int
    unk_id: int
    pad_id: int
    decoder_start_id: int
    zero_start_embedding: bool  # Marian feeds a zero embedding at step 0 instead of a start token
    source_spm: str
    target_spm: str
    vocab: str | None  # piece -> id JSON (Hugging Face Marian); None: ids are the sentencepiece ids
    max_positions: int
    max_length_factor: float
    allow_unk: bool
    shortlist: Shortlist | None
    files: dict = field(default_factory=dict)
    suppress_ids: tuple[int, ...] = ()  # never generated (e.g. the pad / decoder start token of OPUS-MT)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def read_facts(model_dir: Path) -> MarianFacts:
    path = Path(model_dir) / FACTS
    if not path.is_file():
        raise TranslationModelError(f"{model_dir} is not a translation model: missing {FACTS}; "
                                    "build it with `appliance models build` or `appliance models import`")
    try:
        raw = json.loads(path.read_text())
        shortlist = raw.get("shortlist")
        facts = MarianFacts(
            format=str(raw["format"]), decoder=str(raw["decoder"]), source_lang=str(raw["source_lang"]),
            target_lang=str(raw["target_lang"]), dim=int(raw["dim"]), heads=int(raw["heads"]),
            decoder_layers=int(raw["decoder_layers"]), vocab_size=int(raw["vocab_size"]), eos_id=int(raw["eos_id"]),
            unk_id=int(raw["unk_id"]), pad_id=int(raw["pad_id"]), decoder_start_id=int(raw["decoder_start_id"]),
            zero_start_embedding=bool(raw["zero_start_embedding"]), source_spm=str(raw["source_spm"]),
            target_spm=str(raw["target_spm"]), vocab=raw.get("vocab"), max_positions=int(raw["max_positions"]),
            max_length_factor=float(raw["max_length_factor"]), allow_unk=bool(raw["allow_unk"]),
            shortlist=Shortlist(str(shortlist["file"]), int(shortlist["first_num"]), int(shortlist["best_num"]),
                                bool(shortlist.get("shared_vocab", False))) if shortlist else None,
            files=dict(raw["files"]), suppress_ids=tuple(int(i) for i in raw.get("suppress_ids", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TranslationModelError(f"{path} is incomplete or invalid ({exc!r}); rebuild the model") from None
    if facts.decoder not in DECODERS:
        raise TranslationModelError(f"{path}: unknown decoder '{facts.decoder}' (expected {', '.join(DECODERS)}); "
                                    "rebuild the model with this appliance version")
    return facts
