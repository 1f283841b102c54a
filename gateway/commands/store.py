"""The command store: replay memory, command states, and the hash-chained audit log, sealed at rest.

A SQLite file beside the buffer (`commands.sqlite3`), sealed with the buffer's keys, written with
`synchronous=FULL`: a command decision must survive a power cut, not only a crash.  Commands are rare, so the
store runs on the event loop's thread; each call is one short transaction.

Audit chain: record n stores hash_n = SHA-256(hash_{n-1} || n || body_n), body_n sealed with AES-256-GCM
(associated data: its sequence number).  An edited body fails to open; an edited, deleted or reordered
record breaks the chain; the sealed head (last sequence number and hash) reveals records cut off the end.

**The chain is the state.**  Every change of the replay memory (`seen`) and of a command's state is a chain
record, written in the same transaction as the table row.  At open the chain is verified and folded into the
state the service decides on (`ChainState`); the `seen` and `commands` tables are only an index that must
agree with it, so an edited, deleted or back-dated row is found (`state_problems`) instead of believed.  What
the chain cannot show by itself (the whole file restored from an older copy, or deleted) is found by the head
the cloud acknowledged: each command result carries the audit head, and the cloud's next command names the
last head it saw (`head_problem`).

Schema versions (PRAGMA user_version): 0, the first release (tables only, `seen` rows not in the chain);
1, the chain carries the state.  Opening a version-0 file adopts its rows into the chain once (the file is
trusted as it stood when this version first opened it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.clock import TimePoint
from gateway.core.errors import StorageError
from gateway.storage.keys import Keyring
from gateway.storage.sqlite import SqliteStore, schema_scripts, split_sql

GENESIS = bytes(32)
_SEQ = struct.Struct(">Q")


# Chain events besides command transitions (the body's "event" field).
SEEN = "seen"  # a command id entered the replay memory
ADOPTED = "adopted"  # a version-0 row taken into the chain at migration
UNTRUSTED = "state-untrusted"  # the stored state was found rolled back or edited
RESYNC = "resync"  # a signed resync restored dose-changing commands for one device
SETTLE = "settle"  # a step of settling an outcome-unknown command from the device's own history


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
    created: TimePoint
    history_from: int | None = None  # where the device's history stood when it was sent (to settle it from)


@dataclass(frozen=True)
class AuditProblem:
    seq: int | None
    problem: str


@dataclass(frozen=True)
class Baseline:
    """What a signed resync told about one device: counted for every limit from then on."""

    at: TimePoint
    delivered_mu_24h: int
    last_bolus_age_ns: int
    not_before_ns: int  # commands issued before the resync are refused (their replay memory may be lost)


@dataclass
class ChainState:
    """The command state as the audit chain tells it: what the service decides on."""

    seen: dict[str, int] = field(default_factory=dict)
    commands: dict[str, StoredCommand] = field(default_factory=dict)
    last_seq: int = 0
    last_hash: bytes = GENESIS
    acked: tuple[int, str] | None = None  # the newest audit head the cloud named
    signed: tuple[int, TimePoint] | None = None  # the newest issuer-signed time, and when it was verified
    untrusted: str | None = None
    resynced: dict[str, Baseline] = field(default_factory=dict)

    def apply(self, seq: int, digest: bytes, body: dict[str, Any]) -> None:
        """Fold one record into the state."""
        self.last_seq, self.last_hash = seq, digest
        at = TimePoint.from_dict(body)
        event = body.get("event")
        if event == SEEN:
            self.seen[str(body["command_id"])] = int(body.get("expires_ns", 0))
            signed = body.get("signed_ns")
            if isinstance(signed, int) and (self.signed is None or signed > self.signed[0]):
                self.signed = (signed, at)
            acked = body.get("acked")
            if isinstance(acked, list) and len(acked) == 2:
                self.acked = (int(acked[0]), str(acked[1]))
        elif event == ADOPTED:
            if "expires_ns" in body:
                self.seen[str(body["command_id"])] = int(body["expires_ns"])
            else:
                created = TimePoint(int(body["created_ns"]), 0, "")
                self.commands[str(body["command_id"])] = StoredCommand(
                    str(body["command_id"]),
                    str(body["device"]),
                    str(body["type"]),
                    str(body["stored_state"]),
                    created.wall_ns,
                    dict(body.get("parameters") or {}),
                    created,
                )
        elif event == UNTRUSTED:
            self.untrusted = str(body.get("reason"))
            self.resynced = {}
        elif event == RESYNC:
            self.resynced[str(body["device"])] = Baseline(
                at, int(body["delivered_mu_24h"]), int(body["last_bolus_age_ns"]), int(body["not_before_ns"])
            )
        tracked = body.get("tracked")
        if isinstance(tracked, list) and len(tracked) == 4:
            command_id, device, type_, state = (str(x) for x in tracked)
            parameters = body.get("parameters")
            known = self.commands.get(command_id)
            if known is None and isinstance(parameters, dict):
                self.commands[command_id] = StoredCommand(
                    command_id, device, type_, state, at.wall_ns, dict(parameters), at
                )
            elif known is not None:
                history_from = body.get("history_from")
                self.commands[command_id] = dataclasses.replace(
                    known,
                    state=state,
                    history_from=history_from if isinstance(history_from, int) else known.history_from,
                )

    def unresolved(self, device: str, type_: str) -> list[str]:
        return [
            c.command_id
            for c in self.commands.values()
            if c.device == device and c.type == type_ and c.state in ("outcome-unknown", "sent")
        ]


class CommandStore(SqliteStore):
    SCHEMA_PACKAGE = "gateway.commands"
    WHAT = "command store"

    def __init__(self, path: Path, keyring: Keyring) -> None:
        super().__init__(path, keyring)
        try:
            self.connect("full")  # a command decision must survive a power cut, not only a crash
            existed = (
                self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit'").fetchone()
                is not None
            )
            self._version_0_rows = existed  # a file with tables and no version is a version-0 file
            self.migrate()
            # The tables are an index of the chain: one dropped is recreated empty (every statement of the
            # schema is IF NOT EXISTS), and the check against the chain then reports the edit.
            for _, script in schema_scripts(self.SCHEMA_PACKAGE):
                for statement in split_sql(script):
                    self.db.execute(statement)
        except sqlite3.Error as err:
            raise StorageError("cannot open command store", path=str(path), error=type(err).__name__) from None
        self.fresh = not existed  # created by this process: an acknowledged head beyond it means "deleted"
        self.state = ChainState()
        self.chain_problems = self.verify_audit()
        for record in self._records():
            self.state.apply(record.seq, record.hash, record.body)

    # -- transactions ----------------------------------------------------------------------------------------
    def _commit_record(self, body: dict[str, Any], rows: Callable[[], None] | None = None) -> AuditRecord:
        """Append `body` to the chain together with the table rows it records (`rows`), in one transaction, then
        fold it into the state: the chain and the index never disagree."""
        with self.transaction():
            if rows is not None:
                rows()
            record = self._append(body)
        self.state.apply(record.seq, record.hash, record.body)
        return record

    # -- migration -------------------------------------------------------------------------------------------
    def schema_applied(self, version: int) -> None:
        if version == 1 and self._version_0_rows:
            self._adopt_version_0()

    def _adopt_version_0(self) -> None:
        """Take a version-0 file's rows into the chain (inside the migration's transaction), so that from now on
        the chain alone is the state."""
        seen = self.db.execute("SELECT command_id, expires_ns FROM seen ORDER BY rowid").fetchall()
        rows = self.db.execute(
            "SELECT command_id, device, type, state, created_ns, key_id, nonce, sealed FROM commands ORDER BY rowid"
        ).fetchall()
        for command_id, expires in seen:
            self._append({"event": ADOPTED, "command_id": command_id, "expires_ns": expires})
        for cid, device, type_, state, created, key_id, nonce, sealed in rows:
            parameters = json.loads(self.unseal(key_id, nonce, sealed, b"command|" + cid.encode()))
            self._append(
                {
                    "event": ADOPTED,
                    "command_id": cid,
                    "device": device,
                    "type": type_,
                    "stored_state": state,
                    "created_ns": created,
                    "parameters": parameters,
                }
            )

    # -- replay memory ---------------------------------------------------------------------------------------
    def remember(
        self,
        command_id: str,
        expires_ns: int,
        at: TimePoint,
        *,
        signed_ns: int | None = None,
        acked: tuple[int, str] | None = None,
    ) -> bool:
        """Record a command id as seen; False if it was seen before (a replay), even before a restart.

        The chain record also keeps the issuer's signed time (a floor for the clock) and the audit head the
        issuer named (what the cloud acknowledged)."""
        if command_id in self.state.seen:
            return False
        body: dict[str, Any] = {"event": SEEN, "command_id": command_id, "expires_ns": expires_ns, **at.as_dict()}
        if signed_ns is not None:
            body["signed_ns"] = signed_ns
        if acked is not None:
            body["acked"] = [acked[0], acked[1]]

        def row() -> None:
            self.db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?, ?)", (command_id, at.wall_ns, expires_ns))

        self._commit_record(body, row)
        return True

    # -- command states --------------------------------------------------------------------------------------
    def _write_state(
        self, command_id: str, device: str, type_: str, state: str, parameters: dict[str, Any] | None, now: int
    ) -> None:
        if parameters is not None and command_id not in self.state.commands:
            key_id, nonce, sealed = self.seal(json.dumps(parameters).encode(), b"command|" + command_id.encode())
            self.db.execute(
                "INSERT OR REPLACE INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (command_id, device, type_, state, now, now, key_id, nonce, sealed),
            )
        else:
            self.db.execute(
                "UPDATE commands SET state = ?, updated_ns = ? WHERE command_id = ?", (state, now, command_id)
            )

    def in_states(self, *states: str) -> list[tuple[str, str, str, str]]:
        """(command id, device, type, state) of commands in any of `states` (for recovery at start-up)."""
        return [(c.command_id, c.device, c.type, c.state) for c in self.state.commands.values() if c.state in states]

    def commands_of(self, device: str) -> list[StoredCommand]:
        """Every command to `device` the chain knows, oldest first."""
        return sorted((c for c in self.state.commands.values() if c.device == device), key=lambda c: c.created.wall_ns)

    def get(self, command_id: str) -> StoredCommand | None:
        return self.state.commands.get(command_id)

    def unresolved(self, device: str, type_: str) -> list[str]:
        """Ids of commands of this type to this device whose outcome is unknown (they block re-issue).

        `sent` counts as unknown too: a command left there (a stop or crash mid-command) is as uncertain."""
        return self.state.unresolved(device, type_)

    # -- audit -----------------------------------------------------------------------------------------------
    def append_audit(
        self,
        body: dict[str, Any],
        *,
        state: tuple[str, str, str, str] | None = None,
        parameters: dict[str, Any] | None = None,
        at: TimePoint | None = None,
    ) -> AuditRecord:
        """Append one record to the chain, move the sealed head and (optionally) set the command's state
        (command id, device, type, state), all in one transaction: the log and the state never disagree."""
        body = dict(body)
        if at is not None:
            body.update(at.as_dict())
        if state is not None:
            body["tracked"] = list(state)
            if parameters is not None:
                body["parameters"] = parameters
        if state is None:
            return self._commit_record(body)
        now = int(body.get("t_gw") or 0)
        return self._commit_record(body, lambda: self._write_state(*state, parameters, now))

    def _append(self, body: dict[str, Any]) -> AuditRecord:
        """Append inside the caller's transaction."""
        last = self.db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        record = {"seq": seq, **body}
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        digest = chain_hash(prev, seq, data)
        key_id, nonce, sealed = self.seal(data, b"audit|" + _SEQ.pack(seq))
        self.db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)", (seq, prev, digest, key_id, nonce, sealed))
        head = json.dumps({"seq": seq, "hash": digest.hex()}).encode()
        head_key, head_nonce, head_sealed = self.seal(head, b"audit-head")
        self.db.execute("INSERT OR REPLACE INTO audit_head VALUES (1, ?, ?, ?)", (head_key, head_nonce, head_sealed))
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
                data = self.unseal(key_id, nonce, sealed, b"audit|" + _SEQ.pack(seq))
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
            head = json.loads(self.unseal(head_key, head_nonce, head_sealed, b"audit-head"))
        except StorageError:
            problems.append(AuditProblem(None, "audit head edited (does not open)"))
            return problems
        if head["seq"] > last_seq:
            problems.append(AuditProblem(last_seq + 1, f"records {last_seq + 1} to {head['seq']} cut off the end"))
        elif head["seq"] == last_seq and head["hash"] != last_hash.hex():
            problems.append(AuditProblem(last_seq, "last record does not match the head"))
        return problems

    def _records(self) -> list[AuditRecord]:
        """The records that open, in order (a record that does not open is a chain problem, reported apart)."""
        out = []
        for seq, digest, key_id, nonce, sealed in self.db.execute(
            "SELECT seq, hash, key_id, nonce, sealed FROM audit ORDER BY seq"
        ):
            try:
                body = json.loads(self.unseal(key_id, nonce, sealed, b"audit|" + _SEQ.pack(seq)))
            except StorageError:
                continue
            out.append(AuditRecord(seq, digest, body))
        return out

    def audit_records(self) -> list[AuditRecord]:
        return self._records()

    def hash_at(self, seq: int) -> bytes | None:
        row = self.db.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- trust -----------------------------------------------------------------------------------------------
    def state_problems(self) -> list[str]:
        """Where the `seen` and `commands` tables disagree with the chain (an edit the chain did not make)."""
        problems: list[str] = []
        if self.chain_problems:
            problems.append("audit-chain-broken")
        seen = dict(self.db.execute("SELECT command_id, expires_ns FROM seen").fetchall())
        if seen != self.state.seen:
            missing = len(self.state.seen.keys() - seen.keys())
            extra = len(seen.keys() - self.state.seen.keys())
            changed = sum(1 for k in seen.keys() & self.state.seen.keys() if seen[k] != self.state.seen[k])
            problems.append(f"replay-memory-edited ({missing} missing, {extra} unknown, {changed} changed)")
        rows = {
            r[0]: r
            for r in self.db.execute(
                "SELECT command_id, device, type, state, created_ns, key_id, nonce, sealed FROM commands"
            )
        }
        expected = self.state.commands
        edits: list[str] = []
        if rows.keys() != expected.keys():
            edits.append(f"{len(expected.keys() - rows.keys())} missing, {len(rows.keys() - expected.keys())} unknown")
        for command_id in sorted(rows.keys() & expected.keys()):
            _, device, type_, state, created, key_id, nonce, sealed = rows[command_id]
            known = expected[command_id]
            try:
                parameters = json.loads(self.unseal(key_id, nonce, sealed, b"command|" + command_id.encode()))
            except StorageError:
                parameters = None
            for column, found, wanted in (
                ("device", device, known.device),
                ("type", type_, known.type),
                ("state", state, known.state),
                ("created_ns", created, known.created_ns),
                ("parameters", parameters, known.parameters),
            ):
                if found != wanted:
                    edits.append(f"{column} of {command_id}")
        if edits:
            problems.append("command-state-edited (" + ", ".join(edits[:5]) + ")")
        return problems

    def head_problem(self, seq: int, digest_hex: str) -> str | None:
        """Whether this store holds the audit head the cloud last saw (seq, hash): rolled back, forked, or fine."""
        if seq > self.state.last_seq:
            return "store-missing" if self.fresh else "store-rolled-back"
        if seq == 0:
            return None
        held = self.hash_at(seq)
        if held is None or held.hex() != digest_hex:
            return "store-replaced"  # a different history up to the acknowledged head: another copy
        return None

    def distrust(self, reason: str, at: TimePoint) -> AuditRecord:
        """Record that the stored state cannot be trusted, and rebuild the tables from the chain (one
        transaction), so the same edit is not found again at the next start: it is now in the chain."""
        return self._commit_record({"event": UNTRUSTED, "reason": reason, **at.as_dict()}, self._rebuild_tables)

    def resync(self, device: str, baseline: Baseline, command_id: str) -> AuditRecord:
        body = {
            "event": RESYNC,
            "command_id": command_id,
            "device": device,
            "delivered_mu_24h": baseline.delivered_mu_24h,
            "last_bolus_age_ns": baseline.last_bolus_age_ns,
            "not_before_ns": baseline.not_before_ns,
            **baseline.at.as_dict(),
        }
        return self.append_audit(body)

    def _rebuild_tables(self) -> None:
        self.db.execute("DELETE FROM seen")
        self.db.executemany(
            "INSERT INTO seen VALUES (?, ?, ?)", [(cid, 0, expires) for cid, expires in self.state.seen.items()]
        )
        self.db.execute("DELETE FROM commands")
        for c in self.state.commands.values():
            key_id, nonce, sealed = self.seal(json.dumps(c.parameters).encode(), b"command|" + c.command_id.encode())
            self.db.execute(
                "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (c.command_id, c.device, c.type, c.state, c.created_ns, c.created_ns, key_id, nonce, sealed),
            )


SCHEMA_VERSION = CommandStore.schema_version()
