"""The meeting record: every final in every language, stored by meeting in SQLite under the state folder.

store.py   the database (meetings, finals; reads and writes)
writer.py  Archive: the bounded queue and writer thread the daemon feeds from its caption sink
export.py  SRT / WebVTT / minutes text / JSON lines from a stored meeting
cli.py     `appliance archive list|export`
"""

from pathlib import Path

from appliance.archive.store import DB_NAME, ArchiveError, ArchiveStore, Meeting, StoredFinal, open_store
from appliance.archive.writer import Archive

__all__ = ["Archive", "ArchiveError", "ArchiveStore", "Meeting", "StoredFinal", "open_store", "DB_NAME", "db_path"]


def db_path(state_dir: str | Path) -> Path:
    """Where the archive lives for a state folder."""
    return Path(state_dir) / DB_NAME
