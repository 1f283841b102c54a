"""The box itself as the attacker: with write access to the state directory and no key, the command store is
restored from an older copy, deleted, back-dated, stripped of its replay memory, or an unknown outcome is
marked confirmed.  Each time the next dose-changing command is refused with its own reason and audited,
`audit verify` exits 1 naming what changed, harmless commands still work, and a signed resync restores doses."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Config
from hil.ble_sim import SimBleWorld, SimInsulinPump
from tests.conftest import Mosquitto
from tests.support.commanding import Issuer, pump_config
from tests.support.commanding import send as _send
from tests.support.configs import to_toml
from tests.support.harness import running_gateway

DUAL = ("ops-1", "ops-2")


def _config(tmp_path: Path, port: int, issuer: Issuer) -> Config:
    return pump_config(tmp_path, port, issuer, allowed=["bolus", "cancel_bolus", "reconcile"], max_daily_mu=25_000)


def _audit_verify(tmp_path: Path, config: Config, head: tuple[int, str] | None) -> subprocess.CompletedProcess[str]:
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(to_toml(config.model_dump(mode="json", exclude_none=True)))
    args = [sys.executable, "-m", "gateway", "audit", "verify", "--config", str(config_path), "--json"]
    if head is not None:
        args += ["--expect-head", f"{head[0]}:{head[1]}"]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


def _snapshot(db: Path, to: Path) -> None:
    """A consistent copy of the live store (what an attacker keeps to restore later)."""
    source, target = sqlite3.connect(db), sqlite3.connect(to)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def _tamper(kind: str, db: Path, snapshot: Path) -> None:
    if kind in ("restore-older", "delete"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if kind == "restore-older":
            shutil.copy(snapshot, db)
        return
    with sqlite3.connect(db) as conn:
        if kind == "back-date":
            conn.execute("UPDATE commands SET created_ns = created_ns - 2 * 86400 * 1000000000")
        elif kind == "drop-replay-memory":
            conn.execute("DROP TABLE seen")
        elif kind == "unknown-to-confirmed":
            assert conn.execute("UPDATE commands SET state = 'confirmed' WHERE state = 'outcome-unknown'").rowcount
    conn.close()


# Each attack, the reason the gateway gives, and what `audit verify` names.
ATTACKS = {
    "restore-older": ("state-untrusted:store-rolled-back", "store-rolled-back"),
    "delete": ("state-untrusted:store-missing", "store-missing"),
    "back-date": ("state-untrusted:command-state-edited", "created_ns"),
    "drop-replay-memory": ("state-untrusted:replay-memory-edited", "replay-memory-edited"),
    "unknown-to-confirmed": ("state-untrusted:command-state-edited", "state of"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_a_rolled_back_or_edited_store_refuses_doses_until_a_signed_resync(
    tmp_path: Path, mosquitto: Mosquitto, attack: str
) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    port = mosquitto.port
    db = tmp_path / "state" / "commands.sqlite3"
    snapshot = tmp_path / "older-copy.sqlite3"
    pump = SimInsulinPump("pump-1", history=False)  # its unknown outcome stays for the operator to reconcile
    world = SimBleWorld()
    world.add(pump)
    async with running_gateway(config, world=world) as run:
        await run.wait_connected("pump-1")
        first = await _send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 5000}))
        assert first["outcome"] == "confirmed"
        _snapshot(db, snapshot)
        if attack == "unknown-to-confirmed":
            pump.command_fault = "drop-after-write"
        second_envelope = issuer.envelope("pump-1", "bolus", {"amount_mu": 5000})
        second = await _send(run, port, issuer, second_envelope)
        assert second["outcome"] == ("outcome-unknown" if attack == "unknown-to-confirmed" else "confirmed")
        pump.command_fault = None
        await run.finish()
    acknowledged = issuer.head
    assert acknowledged is not None

    _tamper(attack, db, snapshot)
    reason, named = ATTACKS[attack]
    report = _audit_verify(tmp_path, config, acknowledged)
    assert report.returncode == 1, report.stdout + report.stderr
    problems = [p["problem"] for p in json.loads(report.stdout)["problems"]]
    assert any(named in p for p in problems), problems

    async with running_gateway(config, world=world) as run:
        await run.wait_connected("pump-1")
        delivered = list(pump.deliveries)
        # The cloud's next bolus (naming the last head it saw) is refused for the state's reason; a replay of
        # the second bolus after it is refused too.  Nothing reaches the pump.
        refused = await _send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}))
        assert (refused["outcome"], refused["reason"]) == ("rejected", reason)
        assert int(refused["detail"]["audit_seq"]) > 0, "the refusal is audited"
        replay = await _send(run, port, issuer, second_envelope)
        assert replay["outcome"] == "rejected"
        assert replay["reason"] in ("replayed", reason), replay
        assert pump.deliveries == delivered
        # Harmless commands still work.
        cancel = await _send(run, port, issuer, issuer.envelope("pump-1", "cancel_bolus", {"bolus_id": 1}))
        assert cancel["outcome"] == "confirmed"
        # A resync needs two issuers and must name this store's head.
        head = (int(refused["detail"]["audit_seq"]), refused["detail"]["audit_hash"])
        resync: dict[str, Any] = {
            "audit_seq": head[0],
            "audit_hash": head[1],
            "delivered_mu_24h": 10_000,
            "last_bolus_age_s": 0,
        }
        single = await _send(run, port, issuer, issuer.envelope("pump-1", "resync", resync))
        assert single["reason"] == "insufficient-signatures"
        wrong = {**resync, "audit_hash": "0" * 64}
        mismatch = await _send(run, port, issuer, issuer.envelope("pump-1", "resync", wrong, signers=DUAL))
        assert mismatch["reason"] == "resync-head-mismatch"
        ok = await _send(run, port, issuer, issuer.envelope("pump-1", "resync", resync, signers=DUAL))
        assert ok["outcome"] == "confirmed", ok
        if attack == "unknown-to-confirmed":
            # The chain still knows the second bolus's outcome is unknown: it blocks until reconciled.
            blocked = await _send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}))
            assert blocked["reason"] == "blocked-outcome-unknown"
            settle = {"command_id": second_envelope["command_id"], "outcome": "confirmed"}
            assert (await _send(run, port, issuer, issuer.envelope("pump-1", "reconcile", settle)))[
                "outcome"
            ] == "confirmed"
        # Service is back, within the limits: the resync says 10,000 mU went in today, counted on top of the chain.
        too_much = await _send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 5050}))
        assert too_much["reason"] in ("policy:daily-total", "policy:max-bolus")
        again = await _send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}))
        assert again["outcome"] == "confirmed", again
        assert pump.deliveries[len(delivered) :] == [(pump.deliveries[-1][0], 1.0)], "only the post-resync bolus"
        await run.finish()


async def test_a_signed_command_issued_before_the_resync_is_refused(tmp_path: Path, mosquitto: Mosquitto) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    port = mosquitto.port
    db = tmp_path / "state" / "commands.sqlite3"
    async with running_gateway(config) as run:
        await run.wait_connected("pump-1")
        assert (await _send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 500})))[
            "outcome"
        ] == "confirmed"
        await run.finish()
    held_back = issuer.envelope("pump-1", "bolus", {"amount_mu": 500})  # signed now, kept by an attacker
    _tamper("drop-replay-memory", db, db)
    async with running_gateway(config) as run:
        await run.wait_connected("pump-1")
        refused = await _send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 500}))
        resync = {
            "audit_seq": int(refused["detail"]["audit_seq"]),
            "audit_hash": refused["detail"]["audit_hash"],
            "delivered_mu_24h": 500,
            "last_bolus_age_s": 60,
        }
        assert (await _send(run, port, issuer, issuer.envelope("pump-1", "resync", resync, signers=DUAL)))[
            "outcome"
        ] == "confirmed"
        assert (await _send(run, port, issuer, held_back))["reason"] == "issued-before-resync"
        await run.finish()


def test_a_store_written_by_the_first_release_is_adopted_into_the_chain(tmp_path: Path) -> None:
    """Schema version 0 kept the replay memory outside the chain: its rows are adopted once, not distrusted."""
    import hashlib  # noqa: PLC0415
    import os  # noqa: PLC0415

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    from gateway.commands.store import SCHEMA_VERSION, CommandStore  # noqa: PLC0415
    from gateway.storage.keys import generate_key_file, load_keyring  # noqa: PLC0415

    generate_key_file(tmp_path / "k")
    keyring = load_keyring(tmp_path / "k")
    aead = AESGCM(keyring.active_key)
    db = tmp_path / "commands.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE seen (command_id TEXT PRIMARY KEY, received_ns INTEGER NOT NULL, expires_ns INTEGER NOT NULL)"
        " STRICT; CREATE TABLE commands (command_id TEXT PRIMARY KEY, device TEXT NOT NULL, type TEXT NOT NULL,"
        " state TEXT NOT NULL, created_ns INTEGER NOT NULL, updated_ns INTEGER NOT NULL, key_id TEXT NOT NULL,"
        " nonce BLOB NOT NULL, sealed BLOB NOT NULL) STRICT; CREATE TABLE audit (seq INTEGER PRIMARY KEY,"
        " prev_hash BLOB NOT NULL, hash BLOB NOT NULL, key_id TEXT NOT NULL, nonce BLOB NOT NULL,"
        " sealed BLOB NOT NULL) STRICT; CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " key_id TEXT NOT NULL, nonce BLOB NOT NULL, sealed BLOB NOT NULL) STRICT;"
    )
    # As the first release wrote them: the seen row, the command row, and a chain of plain transitions.
    conn.execute("INSERT INTO seen VALUES ('c1', 1, 2000000000000000000)")
    nonce = os.urandom(12)
    conn.execute(
        "INSERT INTO commands VALUES ('c1', 'pump-1', 'bolus', 'outcome-unknown', 7, 9, ?, ?, ?)",
        (keyring.active_id, nonce, aead.encrypt(nonce, b'{"amount_mu": 500}', b"command|c1")),
    )
    prev = bytes(32)
    for seq, state in enumerate(("received", "verified", "sent", "outcome-unknown"), start=1):
        data = json.dumps({"seq": seq, "command_id": "c1", "state": state, "t_gw": seq}, sort_keys=True).encode()
        digest = hashlib.sha256(prev + seq.to_bytes(8, "big") + data).digest()
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, data, b"audit|" + seq.to_bytes(8, "big"))
        conn.execute(
            "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)", (seq, prev, digest, keyring.active_id, nonce, sealed)
        )
        prev = digest
    head = json.dumps({"seq": 4, "hash": prev.hex()}).encode()
    nonce = os.urandom(12)
    conn.execute(
        "INSERT INTO audit_head VALUES (1, ?, ?, ?)",
        (keyring.active_id, nonce, aead.encrypt(nonce, head, b"audit-head")),
    )
    conn.commit()
    conn.close()

    store = CommandStore(db, keyring)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.verify_audit() == [] and store.state_problems() == []
        assert "c1" in store.state.seen and store.unresolved("pump-1", "bolus") == ["c1"]
        assert store.get("c1").parameters == {"amount_mu": 500}  # type: ignore[union-attr]
    finally:
        store.close()
    reopened = CommandStore(db, keyring)  # adopted once: the second open finds nothing to adopt or distrust
    try:
        assert reopened.state_problems() == [] and len(reopened.audit_records()) == 6
    finally:
        reopened.close()
