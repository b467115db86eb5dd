"""The room's known speakers on disk: `<state_dir>/speakers-<room>.json` (names, centroids, counts, last language).

Stored locally only, never published: the caption events carry only the id and the display name. Written
atomically (temporary file + rename). A file that cannot be read is set aside as
`speakers-<room>.json.corrupt-<unix time>` with a warning, and the room starts with no known speakers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from appliance.speakers.cluster import Clusterer, Speaker
from appliance.speakers.embedder import EMBEDDING_DIM
from appliance.private_file import write_private

log = logging.getLogger(__name__)

STORE_VERSION = 1


class StoreError(ValueError):
    pass


def store_path(state_dir: str | os.PathLike, room: str) -> Path:
    return Path(state_dir) / f"speakers-{room}.json"


def _speaker(d: dict) -> Speaker:
    centroid = np.asarray(d["centroid"], dtype=np.float32)
    if centroid.shape != (EMBEDDING_DIM,) or not np.all(np.isfinite(centroid)):
        raise StoreError(f"speaker {d.get('id')!r}: centroid is not {EMBEDDING_DIM} finite numbers")
    if not isinstance(d["id"], str) or not d["id"]:
        raise StoreError("a speaker without an id")
    name = d.get("name")
    if name is not None and not isinstance(name, str):
        raise StoreError(f"speaker {d['id']}: name is not text")
    return Speaker(id=d["id"], centroid=centroid, count=int(d.get("count", 1)), name=name,
                   language=d.get("language"), enrolled=bool(d.get("enrolled", False)))


def parse(text: str, threshold: float) -> Clusterer:
    try:
        data = json.loads(text)
        if data.get("version") != STORE_VERSION:
            raise StoreError(f"version {data.get('version')!r}, expected {STORE_VERSION}")
        speakers = [_speaker(d) for d in data["speakers"]]
        return Clusterer(threshold, speakers, max(int(data.get("next_number", 1)), len(speakers) + 1))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreError(str(exc)) from None


def dump(clusterer: Clusterer) -> str:
    return json.dumps({
        "version": STORE_VERSION, "next_number": clusterer.next_number,
        "speakers": [{"id": s.id, "name": s.name, "count": s.count, "language": s.language, "enrolled": s.enrolled,
                      "centroid": [round(float(x), 6) for x in s.centroid]} for s in clusterer.speakers],
    }, indent=1)


def load(path: Path, threshold: float) -> Clusterer:
    """The stored speakers, or none (missing file; unreadable file set aside with a warning)."""
    if not path.is_file():
        return Clusterer(threshold)
    try:
        return parse(path.read_text(encoding="utf-8"), threshold)
    except (OSError, UnicodeDecodeError, StoreError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(path, aside)
        except OSError as move_exc:
            log.warning("speaker store %s is unreadable (%s) and could not be set aside (%s); starting with no "
                        "known speakers", path, exc, move_exc)
        else:
            log.warning("speaker store %s is unreadable (%s); set aside as %s, starting with no known speakers",
                        path, exc, aside)
        return Clusterer(threshold)


def save(path: Path, clusterer: Clusterer) -> None:
    write_private(path, dump(clusterer))  # voice prints are personal data: readable by the appliance user only
