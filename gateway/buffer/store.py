"""The SQLite store behind the buffer: versioned schema, sealed rows, priority reads, batched commits.

All database work runs on one dedicated thread (the connection never crosses threads), so a commit's fsync
never stalls the event loop.  Callers use the async methods; each is one transaction.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from cryptography.exceptions import InvalidTag

from gateway.core.backlog import AppendResult, Eviction, LaneStats, NewRecord, StoredRecord
from gateway.core.errors import BufferKeyError, StorageError, StorageUnavailable
from gateway.core.logs import get_logger
from gateway.core.model import Lane
from gateway.storage.keys import Keyring
from gateway.storage.sqlite import NONCE_BYTES, SqliteStore

T = TypeVar("T")
log = get_logger(__name__)

_KEY_CHECK_PLAINTEXT = b"iomt-gateway buffer key check v1"
TAG_BYTES = 16
ROW_OVERHEAD_BYTES = 64  # seq, lane, device, key id, counters and SQLite's cell header, roughly


# SQLite result codes (primary, before the extended suffix) that say "not now", not "broken": a full disk, a lock
# held by another process, an I/O error, a file that cannot be opened or written at the moment.
_TRANSIENT = frozenset(
    {"SQLITE_FULL", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY"}
)


def storage_error(message: str, err: sqlite3.Error | OSError, **fields: Any) -> StorageError:
    """Translate a sqlite3 or OS error: StorageUnavailable when it is transient, StorageError otherwise."""
    if isinstance(err, OSError):
        return StorageUnavailable(message, error=errno_name(err), **fields)
    name = getattr(err, "sqlite_errorname", None) or type(err).__name__
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    kind = StorageUnavailable if primary in _TRANSIENT else StorageError
    return kind(message, error=name, **fields)


def errno_name(err: OSError) -> str:
    import errno  # noqa: PLC0415 - only on this error path

    return errno.errorcode.get(err.errno or 0, type(err).__name__)


def associated_data(lane: int, device: str, seq: int, key_id: str) -> bytes:
    """The row identity bound into the GCM tag: a row moved, renumbered or relabelled fails to open."""
    return f"iomt-row-v1|{lane}|{device}|{seq}|{key_id}".encode()


EVICTION_ORDER = (Lane.IMAGES, Lane.WAVEFORMS, Lane.DEVICE_STATUS, Lane.NUMERICS)  # never alarms, commands


class _Store(SqliteStore):
    """Synchronous core; used only from the buffer's own thread."""

    SCHEMA_PACKAGE = "gateway.buffer"
    WHAT = "buffer database"

    def __init__(
        self,
        path: Path,
        keyring: Keyring,
        synchronous: Literal["full", "normal"],
        max_bytes: int = 1 << 62,
        min_free_disk_bytes: int = 0,
    ) -> None:
        super().__init__(path, keyring)
        self.max_bytes = max_bytes
        self.min_free_disk_bytes = min_free_disk_bytes
        self.quarantined = 0
        self.total_bytes = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise storage_error("cannot create the buffer's folder", err, path=str(path.parent)) from None
        try:
            self.connect(synchronous, check_same_thread=False)  # the buffer's thread, not the opener's
        except sqlite3.Error as err:
            raise storage_error("cannot open buffer database", err, path=str(path)) from None
        try:
            self.db.execute("PRAGMA foreign_keys=ON")
            self.migrate()
            self._check_keys()
            row = self.db.execute("SELECT COALESCE(MAX(seq), 0), COALESCE(SUM(size), 0) FROM records").fetchone()
            self.page_size = int(self.db.execute("PRAGMA page_size").fetchone()[0])
        except sqlite3.Error as err:
            self.db.close()
            raise storage_error("cannot open buffer database", err, path=str(path)) from None
        except BaseException:
            self.db.close()
            raise
        self._next_seq: int = row[0] + 1
        self.total_bytes = int(row[1])

    def _check_keys(self) -> None:
        stored = {
            key_id: (nonce, sealed)
            for key_id, nonce, sealed in self.db.execute("SELECT key_id, nonce, sealed FROM key_check")
        }
        in_use = {row[0] for row in self.db.execute("SELECT DISTINCT key_id FROM records")}
        missing = in_use - set(self._aead)
        # A key this database sealed with (it has a key check) but the key file lost: the rows are intact and
        # a restored key file reads them, so refuse to start rather than set a whole backlog aside.
        lost = missing & set(stored)
        if lost:
            raise BufferKeyError(
                "rows in the buffer were sealed with a key the key file does not hold", key_id=sorted(lost)[0]
            )
        # A key id this database never had: the row was edited (no key is needed to do that).  Quarantine it.
        for key_id in sorted(missing - lost):
            seqs = [r[0] for r in self.db.execute("SELECT seq FROM records WHERE key_id = ?", (key_id,))]
            for seq in seqs:
                self._quarantine(seq, "unknown_key")
        for key_id, (nonce, sealed) in stored.items():
            aead = self._aead.get(key_id)
            if aead is None:
                continue
            try:
                aead.decrypt(nonce, sealed, b"key-check|" + key_id.encode())
            except InvalidTag:
                raise BufferKeyError(
                    "buffer key does not match the database (wrong key file?)", key_id=key_id
                ) from None
        for key_id, aead in self._aead.items():
            if key_id not in stored:
                nonce = os.urandom(NONCE_BYTES)
                sealed = aead.encrypt(nonce, _KEY_CHECK_PLAINTEXT, b"key-check|" + key_id.encode())
                self.db.execute("INSERT INTO key_check VALUES (?, ?, ?)", (key_id, nonce, sealed))

    def append(self, records: Sequence[NewRecord]) -> AppendResult:
        """Seal and insert the records, evicting old low-priority rows to stay within the quota, in one transaction."""
        key_id = self.keyring.active_id
        now = time.time_ns()
        rows = []
        seqs = []
        added = 0
        for record in records:
            seq = self._next_seq
            self._next_seq += 1
            _, nonce, sealed = self.seal(record.payload, associated_data(record.lane, record.device, seq, key_id))
            size = len(sealed) + NONCE_BYTES + ROW_OVERHEAD_BYTES
            rows.append((seq, int(record.lane), record.device, key_id, nonce, sealed, record.items, now, size))
            seqs.append(seq)
            added += size
        eviction = Eviction()
        try:
            with self.transaction():
                need = self._quota_need(added)
                self._evict(need, eviction)  # first: the new rows then reuse the pages this frees (no growth)
                self.db.executemany(
                    "INSERT INTO records (seq, lane, device, key_id, nonce, sealed, items, created_ns, size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._evict(need, eviction)  # then the new rows themselves, if nothing older could make room
                eviction.over_quota = eviction.bytes < need
        except sqlite3.Error as err:
            self._next_seq = seqs[0] if seqs else self._next_seq
            raise storage_error("buffer write failed", err, rows=len(rows)) from None
        self.total_bytes += added - eviction.bytes
        return AppendResult(seqs, eviction)

    def _free_disk_bytes(self) -> int:
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return 1 << 62
        return stat.f_bavail * stat.f_frsize

    def _quota_need(self, added: int) -> int:
        """Bytes a commit adding `added` must evict: over the quota, or, with free disk below its floor, what the
        file's free pages cannot absorb.  Free pages come from rows the uplink delivered and deleted, so a disk
        filled by another writer for a while costs nothing while the uplink keeps delivering; when they run out,
        the oldest rows of the lowest lanes make room and the file stops growing.
        """
        need = self.total_bytes + added - self.max_bytes
        if self._free_disk_bytes() < self.min_free_disk_bytes:
            room_inside = self.db.execute("PRAGMA freelist_count").fetchone()[0] * self.page_size
            need = max(need, added - room_inside)
        return need

    def _evict(self, need: int, eviction: Eviction) -> None:
        """Inside the commit's transaction: delete the oldest rows of the lowest lanes until `need` bytes are freed.

        Alarms and command results are never evicted; if they alone exceed the quota, they are kept and the
        eviction reports `over_quota`.
        """
        for lane in EVICTION_ORDER:
            while eviction.bytes < need:
                victims = self.db.execute(
                    "SELECT seq, size, items FROM records WHERE lane = ? ORDER BY seq LIMIT 256", (int(lane),)
                ).fetchall()
                if not victims:
                    break
                chosen = []
                for seq, size, items in victims:
                    chosen.append((seq,))
                    eviction.add(lane, size, items)
                    if eviction.bytes >= need:
                        break
                self.db.executemany("DELETE FROM records WHERE seq = ?", chosen)
            if eviction.bytes >= need:
                break

    def read(self, after: dict[Lane, int], limit: int) -> list[StoredRecord]:
        """Up to `limit` rows, highest-priority lane first, oldest first, after each lane's cursor.

        A row that fails authentication is moved to the quarantine table (counted in `quarantined`) and
        skipped, so one bad row cannot stall the uplink.
        """
        out: list[StoredRecord] = []
        for lane in Lane:
            if len(out) >= limit:
                break
            cursor = self.db.execute(
                "SELECT seq, device, key_id, nonce, sealed, items, created_ns FROM records "
                "WHERE lane = ? AND seq > ? ORDER BY seq LIMIT ?",
                (int(lane), after.get(lane, 0), limit - len(out)),
            )
            for row in cursor.fetchall():
                if (record := self._record(lane, row)) is not None:
                    out.append(record)
        return out

    def _record(self, lane: Lane, row: tuple[int, str, str, bytes, bytes, int, int]) -> StoredRecord | None:
        """A row (seq, device, key_id, nonce, sealed, items, created_ns) opened; None when it could not be
        opened, in which case it has been quarantined."""
        seq, device, key_id, nonce, sealed, items, created_ns = row
        try:
            payload = self._open(lane, device, seq, key_id, nonce, sealed)
        except StorageError as err:
            self._quarantine(seq, type(err).__name__)
            return None
        return StoredRecord(seq, lane, device, payload, items, created_ns)

    def read_message(self, after: dict[Lane, int], max_bytes: int, max_rows: int) -> list[StoredRecord]:
        """Rows for one uplink message: the highest-priority lane that has rows after its cursor, oldest
        first, as many as fit in `max_bytes` of payload (at least one) and `max_rows`.

        Sizes come from the row metadata, so rows that do not fit are not decrypted.
        """
        for lane in Lane:
            candidates = self.db.execute(
                "SELECT seq, device, key_id, nonce, sealed, items, created_ns FROM records "
                "WHERE lane = ? AND seq > ? ORDER BY seq LIMIT ?",
                (int(lane), after.get(lane, 0), max_rows),
            ).fetchall()
            out: list[StoredRecord] = []
            total = 0
            for row in candidates:
                size = len(row[4]) - TAG_BYTES  # the sealed payload's length, known without decrypting
                if out and total + size > max_bytes:
                    break
                if (record := self._record(lane, row)) is not None:
                    out.append(record)
                    total += size
            if out:
                return out
        return []

    def _open(self, lane: Lane, device: str, seq: int, key_id: str, nonce: bytes, sealed: bytes) -> bytes:
        aad = associated_data(lane, device, seq, key_id)
        return self.unseal(key_id, nonce, sealed, aad, lane=lane.name.lower())

    def _quarantine(self, seq: int, reason: str) -> None:
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO quarantine SELECT seq, lane, device, key_id, nonce, sealed, items, "
                "created_ns, ?, ? FROM records WHERE seq = ?",
                (reason, time.time_ns(), seq),
            )
            freed = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM records WHERE seq = ?", (seq,)).fetchone()[0]
            self.db.execute("DELETE FROM records WHERE seq = ?", (seq,))
        self.total_bytes -= freed
        self.quarantined += 1

    def delete(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        freed = 0
        try:
            with self.transaction():
                for start in range(0, len(seqs), 500):
                    part = list(seqs[start : start + 500])
                    marks = ",".join("?" * len(part))
                    # Only "?" placeholders are formatted into these statements; the values are bound.
                    total = f"SELECT COALESCE(SUM(size), 0) FROM records WHERE seq IN ({marks})"  # noqa: S608
                    freed += self.db.execute(total, part).fetchone()[0]
                    self.db.execute(f"DELETE FROM records WHERE seq IN ({marks})", part)  # noqa: S608
        except sqlite3.Error as err:
            raise storage_error("buffer delete failed", err, rows=len(seqs)) from None
        self.total_bytes -= freed

    def stats(self) -> list[LaneStats]:
        now = time.time_ns()
        found = {
            lane: (rows, items, size, oldest)
            for lane, rows, items, size, oldest in self.db.execute(
                "SELECT lane, COUNT(*), SUM(items), SUM(size), MIN(created_ns) FROM records GROUP BY lane"
            )
        }
        out = []
        for lane in Lane:
            rows, items, size, oldest = found.get(int(lane), (0, 0, 0, None))
            out.append(LaneStats(lane, rows, items or 0, size or 0, None if oldest is None else (now - oldest) / 1e9))
        return out

    def checkpoint(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class Buffer:
    """Async facade over the store; every call runs on the buffer's single database thread.

    A buffer opened with `degraded_start=True` whose database cannot be opened for a transient reason (a full
    disk, another process holding the lock, an I/O error) still returns: every call first retries the open and
    raises StorageUnavailable while it fails, so the gateway runs degraded instead of crash-looping under
    systemd.  A wrong key or a database from a newer gateway is still an error at once (a broken install).
    """

    def __init__(self, store: _Store | None, executor: ThreadPoolExecutor, opener: Any = None) -> None:
        self._store = store
        self._executor = executor
        self._opener = opener
        self.path: Path = store.path if store is not None else opener.args[0]

    @classmethod
    async def open(
        cls,
        path: Path,
        keyring: Keyring,
        synchronous: Literal["full", "normal"] = "normal",
        *,
        max_bytes: int = 1 << 62,
        min_free_disk_bytes: int = 0,
        degraded_start: bool = False,
    ) -> Buffer:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="buffer-db")
        opener = partial(_Store, path, keyring, synchronous, max_bytes, min_free_disk_bytes)
        try:
            store = await asyncio.get_running_loop().run_in_executor(executor, opener)
        except StorageUnavailable:
            if not degraded_start:
                executor.shutdown(wait=True)
                raise
            return cls(None, executor, opener)
        except BaseException:
            executor.shutdown(wait=True)
            raise
        if store.quarantined:
            log.warning("buffer rows naming an unknown key quarantined", rows=store.quarantined, reason="unknown_key")
        return cls(store, executor, opener)

    @property
    def is_open(self) -> bool:
        return self._store is not None

    def _ready(self) -> _Store:
        """On the database thread: the store, opening it first if a degraded start left it closed."""
        if self._store is None:
            self._store = self._opener()
            log.info("buffer database opened after a degraded start", rows=self._store.quarantined)
        return self._store

    async def _run(self, method: str, *args: Any) -> Any:
        def call() -> Any:
            store = self._ready()
            try:
                return getattr(store, method)(*args)
            except sqlite3.Error as err:  # reads and quarantine moves: translated like writes
                raise storage_error("buffer operation failed", err, operation=method) from None

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def append(self, records: Sequence[NewRecord]) -> AppendResult:
        """Seal and commit the records in one transaction; durable (per the synchronous mode) on return."""
        result: AppendResult = await self._run("append", records)
        return result

    @property
    def total_bytes(self) -> int:
        return self._store.total_bytes if self._store is not None else 0

    async def read(self, after: dict[Lane, int], limit: int) -> list[StoredRecord]:
        """See `_Store.read`: rows that fail authentication are quarantined, counted and skipped."""
        result: list[StoredRecord] = await self._run("read", dict(after), limit)
        return result

    async def read_message(self, after: dict[Lane, int], max_bytes: int, max_rows: int = 512) -> list[StoredRecord]:
        """See `_Store.read_message`: the rows of one uplink message, all of one lane."""
        result: list[StoredRecord] = await self._run("read_message", dict(after), max_bytes, max_rows)
        return result

    @property
    def quarantined(self) -> int:
        return self._store.quarantined if self._store is not None else 0

    async def delete(self, seqs: Sequence[int]) -> None:
        await self._run("delete", list(seqs))

    async def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (for measurements and backups)."""
        await self._run("checkpoint")

    async def stats(self) -> list[LaneStats]:
        result: list[LaneStats] = await self._run("stats")
        return result

    async def close(self) -> None:
        def close() -> None:
            if self._store is not None:
                self._store.close()

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


SCHEMA_VERSION = _Store.schema_version()
