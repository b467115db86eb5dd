"""Translator: sentencepiece in, ONNX encoder + decoder steps, greedy or beam search, sentencepiece out.

No torch here: numpy, onnxruntime and sentencepiece only. Each text is translated as one sequence, as the
reference Bergamot engine does; only texts longer than MAX_SOURCE_TOKENS are split, at sentence ends.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

_GLUED_SENTENCE = re.compile(r"(?<=[a-zà-ÿ])([.!?])(?=[A-ZÀ-Þ])")


def respace(text: str) -> str:
    """The tiny Bergamot models often glue sentences ("trimestral.O orçamento"): put the space back."""
    return _GLUED_SENTENCE.sub(r"\1 ", text)

from appliance.translate.facts import MarianFacts, TranslationModelError, read_facts
from appliance.translate.graphs import Graphs
from appliance.translate.search import FullScorer, ShortlistScorer, beam, beam_nbest, greedy
from appliance.translate.shortlist import Shortlist

log = logging.getLogger(__name__)

MAX_SOURCE_TOKENS = 256  # longer texts are split at sentence ends (and then hard-cut) before translation
BATCH = 16  # sentences decoded together (sorted by length to limit padding)
MAX_BEAM = 8
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+")


class Translator:
    def __init__(self, model_dir: Path, facts: MarianFacts, graphs: Graphs, source_sp, target_sp,
                 vocab: dict[str, int] | None, shortlist: Shortlist | None):
        self.model_dir = model_dir
        self.facts = facts
        self._graphs = graphs
        self._source_sp, self._target_sp = source_sp, target_sp
        self._vocab = vocab
        self._pieces = {i: p for p, i in vocab.items()} if vocab else None
        self._shortlist = shortlist
        self._suppress = tuple(sorted({*facts.suppress_ids, *(() if facts.allow_unk else (facts.unk_id,))}))
        self._lock = threading.Lock()  # one translation at a time per instance (sessions are shared)
        self.placement: list = []  # placement.Placement of each graph, made by load()

    @classmethod
    def load(cls, model_dir: str | Path, providers: Sequence[str] = ("cpu",), threads: int = 0,
             profile: bool | None = None) -> "Translator":
        """Open a built translation model folder (marian.json + ONNX graphs + sentencepiece) and warm it up.
        `profile`: profile the warm-up for the placement report (default: when an accelerator runs the model)."""
        import sentencepiece as spm

        from appliance.providers import accelerated

        profile = accelerated(providers) if profile is None else profile

        model_dir = Path(model_dir)
        facts = read_facts(model_dir)
        for name in (facts.source_spm, facts.target_spm):
            if not (model_dir / name).is_file():
                raise TranslationModelError(f"{model_dir}: missing {name}; rebuild the model")
        source_sp = spm.SentencePieceProcessor(model_file=str(model_dir / facts.source_spm))
        target_sp = source_sp if facts.target_spm == facts.source_spm else \
            spm.SentencePieceProcessor(model_file=str(model_dir / facts.target_spm))
        vocab = json.loads((model_dir / facts.vocab).read_text()) if facts.vocab else None
        shortlist = None
        if facts.shortlist is not None:
            try:
                shortlist = Shortlist(model_dir / facts.shortlist.file, facts.vocab_size,
                                      shared_vocab=facts.shortlist.shared_vocab)
            except (OSError, ValueError) as exc:
                raise TranslationModelError(f"{model_dir}: {exc}") from None
        graphs = Graphs(model_dir, facts, tuple(providers), threads, profile)
        translator = cls(model_dir, facts, graphs, source_sp, target_sp, vocab, shortlist)
        for _ in range(2 if profile else 1):  # warm-up: first runs allocate and optimise (or compile, profiled)
            translator.translate(["Hello."])
        translator.placement = graphs.placement(model_dir.name)
        log.info("loaded %s (%s -> %s, %s decoder)", model_dir.name, facts.source_lang, facts.target_lang,
                 facts.decoder)
        return translator

    @property
    def source_lang(self) -> str:
        return self.facts.source_lang

    @property
    def target_lang(self) -> str:
        return self.facts.target_lang

    # ---------------------------------------------------------------------------------- text <-> ids

    def encode(self, text: str) -> list[int]:
        """Source token ids of one text, EOS appended."""
        if self._vocab is None:
            ids = self._source_sp.encode(text)
        else:
            unk = self.facts.unk_id
            ids = [self._vocab.get(p, unk) for p in self._source_sp.encode(text, out_type=str)]
        return ids + [self.facts.eos_id]

    def decode(self, ids: list[int]) -> str:
        if self._pieces is None:
            text = self._target_sp.decode(ids)
        else:
            text = self._target_sp.decode_pieces([self._pieces.get(i, "") for i in ids])
        return respace(text)

    def _chunks(self, text: str) -> list[list[int]]:
        ids = self.encode(text)
        if len(ids) <= MAX_SOURCE_TOKENS:
            return [ids]
        chunks: list[list[int]] = []
        for sentence in _SENTENCE_END.split(text):
            body = self.encode(sentence)[:-1]
            for i in range(0, len(body), MAX_SOURCE_TOKENS - 1):
                chunks.append(body[i:i + MAX_SOURCE_TOKENS - 1] + [self.facts.eos_id])
        return chunks

    # ---------------------------------------------------------------------------------- translation

    def translate(self, texts: list[str], beam_size: int = 1) -> list[str]:
        """Translate each text; empty or blank texts give ''."""
        if isinstance(texts, str):
            raise TypeError("translate() takes a list of texts, not one string; wrap it: translate([text])")
        if not 1 <= beam_size <= MAX_BEAM:
            raise ValueError(f"beam_size must be between 1 and {MAX_BEAM}, got {beam_size}")
        jobs: list[tuple[int, list[int]]] = []
        for i, text in enumerate(texts):
            if text and text.strip():
                jobs.extend((i, chunk) for chunk in self._chunks(text))
        outputs = self.translate_ids([ids for _, ids in jobs], beam_size=beam_size)
        parts: list[list[str]] = [[] for _ in texts]
        for (i, _), out in zip(jobs, outputs):
            parts[i].append(self.decode(out))
        return [" ".join(p for p in ps if p) for ps in parts]

    def translate_nbest(self, text: str, beam_size: int) -> list[tuple[str, float]]:
        """Distinct candidate translations of one text from a beam of `beam_size`, best first, with their
        length-normalised log-probabilities. A text long enough to be split gives one candidate (the joined best)."""
        chunks = self._chunks(text) if text and text.strip() else []
        if len(chunks) != 1:
            return [(t, 0.0) for t in self.translate([text], beam_size=beam_size) if t]
        with self._lock:
            hyps = self._decode_batch(chunks, beam_size, None, nbest=True)[0]
        out: dict[str, float] = {}
        for score, ids in hyps:
            out.setdefault(self.decode(ids), score)
        return [(t, s) for t, s in out.items() if t.strip()]

    def translate_ids(self, sources: list[list[int]], beam_size: int = 1,
                      max_new_tokens: int | None = None) -> list[list[int]]:
        """Target ids (no EOS) for each source id sequence (EOS included); sorted into length batches."""
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        results: list[list[int]] = [[] for _ in sources]
        with self._lock:
            for start in range(0, len(order), BATCH):
                idx = order[start:start + BATCH]
                outs = self._decode_batch([sources[i] for i in idx], beam_size, max_new_tokens)
                for i, out in zip(idx, outs):
                    results[i] = out
        return results

    def _max_len(self, n_source: int, max_new_tokens: int | None) -> int:
        limit = self.facts.max_positions - 1
        if max_new_tokens is not None:
            return max(1, min(max_new_tokens, limit))
        return max(1, min(int(math.ceil(self.facts.max_length_factor * n_source)), limit))

    def _decode_batch(self, batch: list[list[int]], beam_size: int, max_new_tokens: int | None, nbest: bool = False):
        f = self.facts
        batch = [ids[: f.max_positions] for ids in batch]
        lengths = np.array([len(ids) for ids in batch], np.int64)
        tokens = np.full((len(batch), int(lengths.max())), f.pad_id, np.int64)
        for row, ids in enumerate(batch):
            tokens[row, : len(ids)] = ids
        state = self._graphs.start(self._graphs.encode(tokens, lengths))
        if self._shortlist is not None and self._graphs.rows is not None:
            scorer = ShortlistScorer(self._graphs, [self._shortlist.select(ids) for ids in batch], self._suppress)
        else:
            scorer = FullScorer(self._graphs, f.vocab_size, self._suppress)
        max_len = [self._max_len(len(ids), max_new_tokens) for ids in batch]
        if nbest:
            return beam_nbest(self._graphs, state, scorer, max_len, f.decoder_start_id, f.eos_id, max(beam_size, 2))
        if beam_size == 1:
            return greedy(self._graphs, state, scorer, max_len, f.decoder_start_id, f.eos_id)
        return beam(self._graphs, state, scorer, max_len, f.decoder_start_id, f.eos_id, beam_size)


def smoke_test(model_dir: str | Path, providers: Sequence[str] = ("cpu",)) -> list:
    """Load the model and translate one short sentence; raises when anything is wrong. Returns the graphs' placement."""
    translator = Translator.load(model_dir, providers, threads=1, profile=True)
    out = translator.translate(["Good morning, everyone."])
    if not out or not out[0].strip():
        raise TranslationModelError(f"{model_dir}: smoke translation produced no text; rebuild the model")
    return translator.placement
