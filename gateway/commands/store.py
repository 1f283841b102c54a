"""The command store: replay memory, command states, and the hash-chained audit log, sealed at rest.

A SQLite file beside the buffer (`commands.sqlite3`), sealed with the buffer's keys, written with
`synchronous=FULL`: a command decision must survive a power cut, not only a crash.  Commands are rare, so the
store runs on the event loop's thread; each call is one short transaction.

Audit chain: record n stores hash_n = SHA-256(hash_{n-1} || n || body_n), body_n sealed with AES-256-GCM
(associated data: its sequence number).  An edited body fails to open; an edited, deleted or reordered
record breaks the chain; the sealed head (last sequence number and hash) reveals records cut off the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.buffer.keys import Keyring
from gateway.errors import StorageError

GENESIS = bytes(32)
_SEQ = struct.Struct(">Q")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen (command_id TEXT PRIMARY KEY, received_ns INTEGER NOT NULL,"
    " expires_ns INTEGER NOT NULL) STRICT",
    "CREATE TABLE IF NOT EXISTS commands (command_id TEXT PRIMARY KEY, device TEXT NOT NULL, type TEXT NOT NULL,"
    " state TEXT NOT NULL, created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, key_id TEXT NOT NULL,"
    " nonce BLOB NOT NULL, sealed BLOB NOT NULL) STRICT",
    "CREATE INDEX IF NOT EXISTS commands_by_device ON commands (device, created_ns)",
    "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, prev_hash BLOB NOT NULL, hash BLOB NOT NULL,"
    " key_id TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL) STRICT",
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), key_id TEXT NOT NULL,"
    " nonce BLOB NOT NULL, sealed BLOB NOT NULL) STRICT",
)


def chain_hash(prev: bytes, seq: int, body: bytes) -> bytes:
    return hashlib.sha256(prev + _SEQ.pack(seq) + body).digest()


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    hash: bytes
    body: dict[str, Any]


@dataclass(frozen=True)
class StoredCommand:
    command_id: str
    device: str
    type: str
    state: str
    created_ns: int
    parameters: dict[str, Any]


@dataclass(frozen=True)
class AuditProblem:
    seq: int | None
    problem: str


class CommandStore:
    def __init__(self, path: Path, keyring: Keyring) -> None:
        self.path = path
        self._keyring = keyring
        self._aead = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                self.db.execute(statement)
        except sqlite3.Error as err:
            raise StorageError("cannot open command store", path=str(path), error=type(err).__name__) from None

    def close(self) -> None:
        self.db.close()

    # -- sealing ---------------------------------------------------------------------------------------------
    def _seal(self, data: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        key_id = self._keyring.active_id
        nonce = os.urandom(12)
        return key_id, nonce, self._aead[key_id].encrypt(nonce, data, aad)

    def _open(self, key_id: str, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        aead = self._aead.get(key_id)
        if aead is None:
            raise StorageError("command store sealed with a key the key file does not hold", key_id=key_id)
        try:
            return aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise StorageError("command store record failed authentication", key_id=key_id) from None

    # -- replay memory ---------------------------------------------------------------------------------------
    def remember(self, command_id: str, expires_ns: int) -> bool:
        """Record a command id as seen; False if it was seen before (a replay), even before a restart."""
        try:
            self.db.execute("INSERT INTO seen VALUES (?, ?, ?)", (command_id, time.time_ns(), expires_ns))
        except sqlite3.IntegrityError:
            return False
        return True

    # -- command states --------------------------------------------------------------------------------------
    def _write_state(
        self, command_id: str, device: str, type_: str, state: str, parameters: dict[str, Any] | None
    ) -> None:
        now = time.time_ns()
        if parameters is not None:
            key_id, nonce, sealed = self._seal(json.dumps(parameters).encode(), b"command|" + command_id.encode())
            self.db.execute(
                "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(command_id) DO UPDATE SET"
                " state = excluded.state, updated_ns = excluded.updated_ns",
                (command_id, device, type_, state, now, now, key_id, nonce, sealed),
            )
        else:
            self.db.execute(
                "UPDATE commands SET state = ?, updated_ns = ? WHERE command_id = ?", (state, now, command_id)
            )

    def in_states(self, *states: str) -> list[tuple[str, str, str, str]]:
        """(command id, device, type, state) of commands in any of `states` (for recovery at start-up)."""
        marks = ",".join("?" * len(states))
        query = f"SELECT command_id, device, type, state FROM commands WHERE state IN ({marks})"  # noqa: S608
        return [(r[0], r[1], r[2], r[3]) for r in self.db.execute(query, states)]

    def commands_since(self, device: str, since_ns: int) -> list[StoredCommand]:
        rows = self.db.execute(
            "SELECT command_id, device, type, state, created_ns, key_id, nonce, sealed FROM commands"
            " WHERE device = ? AND created_ns >= ? ORDER BY created_ns",
            (device, since_ns),
        ).fetchall()
        return [
            StoredCommand(
                cid, dev, typ, state, created, json.loads(self._open(key_id, nonce, sealed, b"command|" + cid.encode()))
            )
            for cid, dev, typ, state, created, key_id, nonce, sealed in rows
        ]

    def get(self, command_id: str) -> StoredCommand | None:
        row = self.db.execute(
            "SELECT command_id, device, type, state, created_ns, key_id, nonce, sealed FROM commands"
            " WHERE command_id = ?",
            (command_id,),
        ).fetchone()
        if row is None:
            return None
        cid, dev, typ, state, created, key_id, nonce, sealed = row
        return StoredCommand(
            cid, dev, typ, state, created, json.loads(self._open(key_id, nonce, sealed, b"command|" + cid.encode()))
        )

    def unresolved(self, device: str, type_: str) -> list[str]:
        """Ids of commands of this type to this device whose outcome is unknown (they block re-issue).

        `sent` counts as unknown too: a command left there (a stop or crash mid-command) is as uncertain."""
        rows = self.db.execute(
            "SELECT command_id FROM commands WHERE device = ? AND type = ? AND state IN ('outcome-unknown', 'sent')",
            (device, type_),
        )
        return [r[0] for r in rows]

    # -- audit -----------------------------------------------------------------------------------------------
    def append_audit(
        self,
        body: dict[str, Any],
        *,
        state: tuple[str, str, str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record to the chain, move the sealed head and (optionally) set the command's state
        (command id, device, type, state), all in one transaction: the log and the state never disagree."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if state is not None:
                self._write_state(*state, parameters)
            last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            record = {"seq": seq, **body}
            data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            digest = chain_hash(prev, seq, data)
            key_id, nonce, sealed = self._seal(data, b"audit|" + _SEQ.pack(seq))
            self.db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)", (seq, prev, digest, key_id, nonce, sealed))
            head = json.dumps({"seq": seq, "hash": digest.hex()}).encode()
            head_key, head_nonce, head_sealed = self._seal(head, b"audit-head")
            self.db.execute(
                "INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?, ?)", (head_key, head_nonce, head_sealed)
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return AuditRecord(seq, digest, record)

    def verify_audit(self) -> list[AuditProblem]:
        """Every problem in the chain: edited, deleted, reordered or truncated records, or a forged head."""
        problems: list[AuditProblem] = []
        prev, expected_seq = GENESIS, 1
        last_seq, last_hash = 0, GENESIS
        for seq, stored_prev, digest, key_id, nonce, sealed in self.db.execute(
            "SELECT seq, prev_hash, hash, key_id, nonce, sealed FROM audit ORDER BY seq"
        ):
            if seq != expected_seq:
                problems.append(AuditProblem(expected_seq, f"records {expected_seq} to {seq - 1} are missing"))
            try:
                data = self._open(key_id, nonce, sealed, b"audit|" + _SEQ.pack(seq))
            except StorageError:
                problems.append(AuditProblem(seq, "record edited or moved (does not open)"))
                prev, expected_seq, last_seq, last_hash = digest, seq + 1, seq, digest
                continue
            if stored_prev != prev:
                problems.append(AuditProblem(seq, "chain broken: previous hash does not match (deleted or reordered)"))
            if chain_hash(stored_prev, seq, data) != digest:
                problems.append(AuditProblem(seq, "record hash does not match its content"))
            if json.loads(data).get("seq") != seq:
                problems.append(AuditProblem(seq, "record carries another sequence number (reordered)"))
            prev, expected_seq, last_seq, last_hash = digest, seq + 1, seq, digest
        head_row = self.db.execute("SELECT key_id, nonce, sealed FROM audit_head").fetchone()
        if head_row is None:
            if last_seq:
                problems.append(AuditProblem(None, "audit head missing"))
            return problems
        try:
            head_key, head_nonce, head_sealed = head_row
            head = json.loads(self._open(head_key, head_nonce, head_sealed, b"audit-head"))
        except StorageError:
            problems.append(AuditProblem(None, "audit head edited (does not open)"))
            return problems
        if head["seq"] > last_seq:
            problems.append(AuditProblem(last_seq + 1, f"records {last_seq + 1} to {head['seq']} cut off the end"))
        elif head["seq"] == last_seq and head["hash"] != last_hash.hex():
            problems.append(AuditProblem(last_seq, "last record does not match the head"))
        return problems

    def audit_records(self) -> list[AuditRecord]:
        out = []
        for seq, digest, key_id, nonce, sealed in self.db.execute(
            "SELECT seq, hash, key_id, nonce, sealed FROM audit ORDER BY seq"
        ):
            out.append(
                AuditRecord(seq, digest, json.loads(self._open(key_id, nonce, sealed, b"audit|" + _SEQ.pack(seq))))
            )
        return out
