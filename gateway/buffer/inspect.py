"""Read-only views of a buffer database for technicians: no key needed, nothing written.

Opened with SQLite's read-only URI mode, so it works next to the running daemon (WAL allows concurrent
readers) and without the service's key.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.core.errors import StorageError
from gateway.core.model import Lane


@dataclass(frozen=True)
class LaneSummary:
    lane: str
    rows: int
    items: int
    bytes: int
    oldest_age_s: float | None


@dataclass(frozen=True)
class BufferSummary:
    path: str
    schema_version: int
    file_bytes: int
    wal_bytes: int
    lanes: list[LaneSummary]
    quarantined_rows: int
    key_ids_in_use: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise StorageError("no buffer database at this path", path=str(path))
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise StorageError("cannot open buffer database read-only", path=str(path), error=type(err).__name__) from None


def summarize(path: Path) -> BufferSummary:
    """Per lane: rows, items, stored bytes and the age of the oldest row; plus file sizes and key ids."""
    db = _connect(path)
    try:
        now = time.time_ns()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        found = {
            lane: (rows, items or 0, size or 0, oldest)
            for lane, rows, items, size, oldest in db.execute(
                "SELECT lane, COUNT(*), SUM(items), SUM(size), MIN(created_ns) FROM records GROUP BY lane"
            )
        }
        quarantined = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] if version >= 2 else 0
        keys = sorted(row[0] for row in db.execute("SELECT DISTINCT key_id FROM records"))
    except sqlite3.Error as err:
        raise StorageError("buffer database unreadable", path=str(path), error=type(err).__name__) from None
    finally:
        db.close()
    lanes = []
    for lane in Lane:
        rows, items, size, oldest = found.get(int(lane), (0, 0, 0, None))
        lanes.append(LaneSummary(lane.topic_name, rows, items, size, None if oldest is None else (now - oldest) / 1e9))
    wal = Path(f"{path}-wal")
    return BufferSummary(
        str(path), version, path.stat().st_size, wal.stat().st_size if wal.exists() else 0, lanes, quarantined, keys
    )


def key_ids_in_use(path: Path) -> set[str]:
    """Key ids that sealed any row still in the buffer (records or quarantine)."""
    db = _connect(path)
    try:
        ids = {row[0] for row in db.execute("SELECT DISTINCT key_id FROM records")}
        if db.execute("PRAGMA user_version").fetchone()[0] >= 2:
            ids |= {row[0] for row in db.execute("SELECT DISTINCT key_id FROM quarantine")}
        return ids
    finally:
        db.close()
