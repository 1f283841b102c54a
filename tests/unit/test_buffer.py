"""The encrypted buffer: sealed rows, priority reads, wrong keys and tampering detected, versioned schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.buffer import Buffer
from gateway.buffer.store import SCHEMA_VERSION, _Store
from gateway.core.backlog import NewRecord
from gateway.core.errors import BufferKeyError, IntegrityError
from gateway.core.model import Lane
from gateway.storage.keys import generate_key_file, load_keyring


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "buffer.key"
    generate_key_file(path)
    return path


async def test_rows_are_read_highest_priority_first_then_oldest(tmp_path: Path, key_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", load_keyring(key_path))
    try:
        await buffer.append([NewRecord(Lane.WAVEFORMS, "ecg", b"w1", 1), NewRecord(Lane.NUMERICS, "ox", b"n1", 1)])
        await buffer.append([NewRecord(Lane.ALARMS, "ox", b"a1", 1), NewRecord(Lane.NUMERICS, "ox", b"n2", 1)])
        rows = await buffer.read({}, 10)
        assert [r.payload for r in rows] == [b"a1", b"n1", b"n2", b"w1"]
        cursor = {Lane.ALARMS: rows[0].seq, Lane.NUMERICS: rows[1].seq}
        assert [r.payload for r in await buffer.read(cursor, 10)] == [b"n2", b"w1"]
        await buffer.delete([r.seq for r in rows[:2]])
        stats = {s.lane: s for s in await buffer.stats()}
        assert stats[Lane.ALARMS].rows == 0 and stats[Lane.NUMERICS].rows == 1 and stats[Lane.WAVEFORMS].rows == 1
    finally:
        await buffer.close()


async def test_nothing_readable_without_the_key_and_wrong_key_refused(tmp_path: Path, key_path: Path) -> None:
    db = tmp_path / "b.db"
    buffer = await Buffer.open(db, load_keyring(key_path))
    await buffer.append([NewRecord(Lane.NUMERICS, "ox", b"MARKER-SPO2-97.3-pt-ZX81Q", 1)])
    await buffer.close()
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(db) + suffix)
        if path.exists():
            assert b"MARKER" not in path.read_bytes()
    other = tmp_path / "other.key"
    generate_key_file(other)
    with pytest.raises(BufferKeyError, match="does not match"):
        await Buffer.open(db, load_keyring(other))


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE records SET lane = 0 WHERE seq = 1",  # moved to another lane
        "UPDATE records SET device = 'other' WHERE seq = 1",  # relabelled
        "edit one ciphertext byte",
        # swapped: row 1 gets row 2's ciphertext and nonce
        "UPDATE records SET sealed = (SELECT sealed FROM records WHERE seq = 2), "
        "nonce = (SELECT nonce FROM records WHERE seq = 2) WHERE seq = 1",
    ],
)
async def test_tampered_row_is_detected_quarantined_and_skipped(tmp_path: Path, key_path: Path, tamper: str) -> None:
    db = tmp_path / "b.db"
    buffer = await Buffer.open(db, load_keyring(key_path))
    await buffer.append([NewRecord(Lane.NUMERICS, "ox", b"first", 1), NewRecord(Lane.NUMERICS, "ox", b"second", 1)])
    await buffer.close()
    with sqlite3.connect(db) as conn:
        if tamper == "edit one ciphertext byte":
            sealed = bytearray(conn.execute("SELECT sealed FROM records WHERE seq = 1").fetchone()[0])
            sealed[2] ^= 0x01
            conn.execute("UPDATE records SET sealed = ? WHERE seq = 1", (bytes(sealed),))
        else:
            conn.execute(tamper)
    buffer = await Buffer.open(db, load_keyring(key_path))
    try:
        rows = await buffer.read({}, 10)
        assert [r.payload for r in rows] == [b"second"]
        assert buffer.quarantined == 1
    finally:
        await buffer.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT seq, reason FROM quarantine").fetchall() == [(1, "IntegrityError")]
        assert conn.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 1


async def test_opening_a_row_directly_raises_integrity_error(tmp_path: Path, key_path: Path) -> None:
    store = _Store(tmp_path / "b.db", load_keyring(key_path), "normal")
    try:
        store.append([NewRecord(Lane.NUMERICS, "ox", b"x", 1)])
        seq, key_id, nonce, sealed = store.db.execute("SELECT seq, key_id, nonce, sealed FROM records").fetchone()
        with pytest.raises(IntegrityError):
            store._open(Lane.ALARMS, "ox", seq, key_id, nonce, sealed)
    finally:
        store.close()


async def test_key_file_permissions_and_format_are_checked(tmp_path: Path, key_path: Path) -> None:
    key_path.chmod(0o644)
    with pytest.raises(BufferKeyError, match="group or others"):
        load_keyring(key_path)
    bad = tmp_path / "bad.key"
    bad.write_text("k1 not-base64!\n")
    bad.chmod(0o600)
    with pytest.raises(BufferKeyError, match="base64"):
        load_keyring(bad)
    with pytest.raises(BufferKeyError, match="not found"):
        load_keyring(tmp_path / "absent.key")


async def test_schema_version_recorded_and_newer_database_refused(tmp_path: Path, key_path: Path) -> None:
    db = tmp_path / "b.db"
    buffer = await Buffer.open(db, load_keyring(key_path))
    await buffer.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(Exception, match="newer than this gateway"):
        await Buffer.open(db, load_keyring(key_path))
