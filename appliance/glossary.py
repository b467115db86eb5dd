"""The glossary: terms per language pair that translation must keep (do-not-translate) or force.

An entry is (source, target, term, translation): with no translation the term is kept as written
(names, acronyms, product names); with one, the term is always translated that way. Entries are validated
(empty terms, duplicates, a pair with no translation model are rejected with a message) and stored in
`glossary.json` under the state folder, written atomically. Translation enforces them with placeholders
(appliance/translate/enforce.py); recognition gets them as context through `prompt_terms(lang)`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

__all__ = ["Entry", "Glossary", "GlossaryError", "GlossaryStore", "validate", "prompt_terms", "install", "FILE_NAME"]

FILE_NAME = "glossary.json"
MAX_TERM_CHARS = 100
MAX_ENTRIES = 500


class GlossaryError(ValueError):
    """Glossary entries that do not validate; the message names each bad entry."""


@dataclass(frozen=True)
class Entry:
    source: str  # language the term is spoken in
    target: str  # caption language the rule applies to
    term: str
    translation: str = ""  # "" keeps the term as written (do not translate)

    @property
    def keep(self) -> bool:
        return not self.translation

    @property
    def output(self) -> str:
        """What the caption must show for the term."""
        return self.translation or self.term

    def to_dict(self) -> dict:
        return asdict(self)


def _entry(raw: object, n: int, problems: list[str]) -> Entry | None:
    if not isinstance(raw, dict):
        problems.append(f"entry {n}: must be an object with source, target, term and translation")
        return None
    unknown = set(raw) - {"source", "target", "term", "translation"}
    if unknown:
        problems.append(f"entry {n}: unknown keys {', '.join(sorted(unknown))}")
        return None
    values = {k: " ".join(str(raw.get(k) or "").split()) for k in ("source", "target", "term", "translation")}
    e = Entry(values["source"].lower(), values["target"].lower(), values["term"], values["translation"])
    if not e.term:
        problems.append(f"entry {n}: the term is empty")
        return None
    if len(e.term) > MAX_TERM_CHARS or len(e.translation) > MAX_TERM_CHARS:
        problems.append(f"entry {n}: '{e.term[:30]}…' is longer than {MAX_TERM_CHARS} characters")
        return None
    return e


def validate(raw_entries: Iterable[object], supported_pairs: Iterable[tuple[str, str]]) -> list[Entry]:
    """Entries from JSON-like dicts; raises GlossaryError naming every bad entry (numbered from 1)."""
    supported = set(supported_pairs)
    problems: list[str] = []
    entries: list[Entry] = []
    seen: dict[tuple[str, str, str], int] = {}
    raw_entries = list(raw_entries)
    if len(raw_entries) > MAX_ENTRIES:
        raise GlossaryError(f"at most {MAX_ENTRIES} glossary entries, not {len(raw_entries)}")
    for n, raw in enumerate(raw_entries, 1):
        e = _entry(raw, n, problems)
        if e is None:
            continue
        if (e.source, e.target) not in supported:
            pairs = ", ".join(f"{s}->{t}" for s, t in sorted(supported)) or "none (no translation model installed)"
            problems.append(f"entry {n}: {e.source or '?'}->{e.target or '?'} is not a supported language pair; "
                            f"supported: {pairs}")
            continue
        key = (e.source, e.target, e.term.casefold())
        if key in seen:
            problems.append(f"entry {n}: '{e.term}' ({e.source}->{e.target}) is a duplicate of entry {seen[key]}")
            continue
        seen[key] = n
        entries.append(e)
    if problems:
        raise GlossaryError("; ".join(problems))
    return entries


@dataclass(frozen=True)
class Glossary:
    entries: tuple[Entry, ...] = ()

    def for_pair(self, source: str, target: str) -> list[Entry]:
        """The entries of one pair, longest term first (so "European Union" wins over "Union")."""
        return sorted((e for e in self.entries if e.source == source and e.target == target),
                      key=lambda e: -len(e.term))

    def prompt_terms(self, lang: str) -> list[str]:
        """Terms someone may say in `lang`: glossary terms spoken in it and forced translations into it."""
        out: list[str] = []
        for e in self.entries:
            for word, spoken_in in ((e.term, e.source), (e.translation, e.target)):
                if word and spoken_in == lang and word not in out:
                    out.append(word)
        return out


class GlossaryStore:
    """The glossary file; `current()` re-reads it when it changed on disk (the panel saves, the pipeline reads)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._glossary = Glossary()

    def current(self) -> Glossary:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return Glossary()
        with self._lock:
            if stamp != self._stamp:
                self._glossary, self._stamp = self._read(), stamp
            return self._glossary

    def _read(self) -> Glossary:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [_entry(raw, n, []) for n, raw in enumerate(data.get("entries", []), 1)]
        except (OSError, ValueError, AttributeError) as exc:
            log.error("glossary %s cannot be read (%s): translating without it", self.path, exc)
            return Glossary()
        return Glossary(tuple(e for e in entries if e is not None))

    def save(self, raw_entries: Iterable[object], supported_pairs: Iterable[tuple[str, str]]) -> Glossary:
        """Validate and write atomically; a bad entry raises GlossaryError and the file stays as it was."""
        entries = validate(raw_entries, supported_pairs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"entries": [e.to_dict() for e in entries]}, ensure_ascii=False, indent=1) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return self.current()


_installed: GlossaryStore | None = None


def install(store: GlossaryStore | None) -> None:
    """Make `store` the glossary `prompt_terms` reads (the daemon does this at start)."""
    global _installed
    _installed = store


def store_for(state_dir: str | Path) -> GlossaryStore:
    return GlossaryStore(Path(state_dir) / FILE_NAME)


def prompt_terms(lang: str, glossary: Glossary | None = None) -> list[str]:
    """Terms for Whisper's prompt when recognising `lang` (from the installed glossary unless one is given)."""
    if glossary is None:
        glossary = _installed.current() if _installed is not None else Glossary()
    return glossary.prompt_terms(lang)
