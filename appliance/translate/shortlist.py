"""Bergamot binary lexical shortlist: which target words may appear, given the source words.

Layout (marian src/data/shortlist.h, BinaryShortlistGenerator): a 48-byte header (magic, checksum, firstNum,
bestNum, offset count, id count), then uint64 offsets per source word, then uint32 target ids. A sentence's
shortlist is the `firstNum` most frequent target ids, every source word's candidates, the source ids themselves
when the vocabulary is shared, padded to a multiple of eight with the lowest unused ids above `firstNum`.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable

import numpy as np

MAGIC = 0xF11A48D5013417F5
HEADER = 48


class Shortlist:
    def __init__(self, path: Path, vocab_size: int, *, shared_vocab: bool):
        data = Path(path).read_bytes()
        if len(data) < HEADER:
            raise ValueError(f"{path}: not a binary lexical shortlist (too short); rebuild the model")
        magic, _checksum, first, _best, n_offsets, n_ids = struct.unpack_from("<6Q", data, 0)
        if magic != MAGIC or len(data) != HEADER + 8 * n_offsets + 4 * n_ids:
            raise ValueError(f"{path}: not a valid binary lexical shortlist; rebuild the model")
        self.offsets = np.frombuffer(data, np.uint64, n_offsets, HEADER).astype(np.int64)
        self.ids = np.frombuffer(data, np.uint32, n_ids, HEADER + 8 * n_offsets).astype(np.int64)
        self.first_num = int(first)
        self.vocab_size = int(vocab_size)
        self.shared_vocab = shared_vocab

    def select(self, source_ids: Iterable[int]) -> np.ndarray:
        """Sorted target ids allowed for a sentence with these source ids."""
        chosen = np.zeros(self.vocab_size, dtype=bool)
        chosen[: min(self.first_num, self.vocab_size)] = True
        src = np.unique(np.fromiter(source_ids, dtype=np.int64))
        src = src[(src >= 0) & (src < self.vocab_size)]
        if self.shared_vocab:
            chosen[src] = True
        for s in src[src < len(self.offsets) - 1]:
            chosen[self.ids[self.offsets[s]:self.offsets[s + 1]]] = True
        missing = (-int(chosen.sum())) % 8
        if missing:
            free = np.flatnonzero(~chosen[self.first_num:])[:missing] + self.first_num
            chosen[free] = True
        return np.flatnonzero(chosen)
