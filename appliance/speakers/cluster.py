"""Online clustering of utterance embeddings into the room's speakers: a threshold and a running centroid each.

An utterance joins the speaker whose centroid is most similar (cosine) if that similarity reaches
`threshold`; otherwise it opens a new speaker S<n>. A joined utterance moves the centroid (a running mean of
unit vectors, capped so that a speaker's voice can drift slowly). Ids are never reused within the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.speakers.embedder import cosine

SHORT_MARGIN = 0.1  # a short utterance joins the nearest speaker down to this much below the threshold
CENTROID_MEMORY = 50  # the running mean weighs at most this many past utterances against a new one


@dataclass
class Speaker:
    id: str
    centroid: np.ndarray
    count: int = 1
    name: str | None = None
    language: str | None = None  # the language of the speaker's last final
    enrolled: bool = False

    def label(self) -> dict:
        """The `speaker` object of caption events."""
        return {"id": self.id, "name": self.name}

    def absorb(self, embedding: np.ndarray) -> None:
        weight = min(self.count, CENTROID_MEMORY)
        mean = self.centroid * weight + embedding
        self.centroid = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        self.count += 1


@dataclass
class Clusterer:
    threshold: float
    speakers: list[Speaker] = field(default_factory=list)
    next_number: int = 1

    def nearest(self, embedding: np.ndarray) -> tuple[Speaker | None, float]:
        best, best_sim = None, -1.0
        for sp in self.speakers:
            sim = cosine(sp.centroid, embedding)
            if sim > best_sim:
                best, best_sim = sp, sim
        return best, best_sim

    def match(self, embedding: np.ndarray) -> Speaker | None:
        """The known speaker this embedding belongs to, or None (nothing changes)."""
        best, sim = self.nearest(embedding)
        return best if best is not None and sim >= self.threshold else None

    def new_speaker(self, embedding: np.ndarray) -> Speaker:
        sp = Speaker(id=f"S{self.next_number}", centroid=_unit(embedding))
        self.next_number += 1
        self.speakers.append(sp)
        return sp

    def assign(self, embedding: np.ndarray, *, short: bool = False) -> Speaker:
        """Join the nearest speaker (moving its centroid) or open a new one. A `short` utterance (too little voice
        to trust) moves no centroid, and opens a new speaker only when it is far from every known one."""
        if short:
            best, sim = self.nearest(embedding)
            if best is not None and sim >= self.threshold - SHORT_MARGIN:
                return best
            return self.new_speaker(embedding)
        sp = self.match(embedding)
        if sp is not None:
            sp.absorb(embedding)
            return sp
        return self.new_speaker(embedding)

    def by_id(self, speaker_id: str) -> Speaker | None:
        return next((s for s in self.speakers if s.id == speaker_id), None)


def _unit(v: np.ndarray) -> np.ndarray:
    return (np.asarray(v, np.float32) / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)
