"""Signed commands end to end: every forged, stale, replayed or unsafe command is refused with its own reason,
audited and reported uplink, and the device receives none of them; valid commands are delivered exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.commands.store import CommandStore
from gateway.config import Config, parse_config
from gateway.storage.keys import load_keyring
from hil.ble_sim import SimBleWorld, SimInsulinPump, SimPulseOximeter
from tests.conftest import Mosquitto, config_dict
from tests.support.commanding import Issuer, publish
from tests.support.configs import to_toml
from tests.support.harness import Running, running_gateway

PUMPS = ("pump-1", "pump-2", "pump-3", "pump-4")


def _config(tmp_path: Path, port: int, issuer: Issuer) -> Config:
    data = config_dict(tmp_path / "state", port)
    data["devices"] = [
        {"id": p, "transport": "ble", "profile": "insulin_pump", "address": f"sim:{p}"} for p in PUMPS
    ] + [{"id": "ox-1", "transport": "ble", "profile": "pulse_oximeter", "address": "sim:ox-1"}]
    base = {
        "allowed": ["bolus", "cancel_bolus", "temp_basal", "reconcile"],
        "max_commands_per_hour": 100,
        "max_bolus_mu": 5000,
        "dose_step_mu": 50,
        "max_basal_mu_per_h": 2000,
        "max_daily_mu": 100_000,
    }
    data["commands"] = {
        "enabled": True,
        "clock_skew_s": 30,
        "max_validity_s": 600,
        "response_timeout_s": 2,
        "issuers": issuer.issuers_config(),
        "devices": [
            {"device": "pump-1", **base, "dual_signature": ["temp_basal"]},
            {"device": "pump-2", **base, "min_bolus_interval_s": 2},
            {"device": "pump-3", **base, "max_daily_mu": 10_000},
            {"device": "pump-4", **base, "max_commands_per_hour": 2},
            {"device": "ox-1", "allowed": []},
        ],
    }
    return parse_config(data)


def _world(*, history: bool = True) -> SimBleWorld:
    """The pumps and the oximeter; `history=False`: pumps that do not expose their history, so an unknown
    outcome waits for an operator's signed reconcile (the manual path)."""
    world = SimBleWorld()
    for pump in PUMPS:
        world.add(SimInsulinPump(pump, history=history))
    world.add(SimPulseOximeter("ox-1"))
    return world


def _results(run: Running, command_id: str) -> list[dict[str, Any]]:
    """Results for a command id, including rejections of unverified messages that claimed it."""
    return [
        i
        for i in run.receiver.items.values()
        if i.get("command_id") == command_id or (i.get("detail") or {}).get("claimed_command_id") == command_id
    ]


FINAL = {"rejected", "confirmed", "failed", "expired", "outcome-unknown"}


async def _send(
    run: Running, port: int, envelope: dict[str, Any] | bytes, command_id: str | None = None, final: str | None = None
) -> dict[str, Any]:
    """Publish a command; wait for its final result at the receiver and return it."""
    await publish(port, envelope)
    if isinstance(envelope, bytes):  # unverifiable: the service names it after the message's hash
        cid = command_id or "unverified-" + hashlib.sha256(envelope).hexdigest()[:24]
    else:
        cid = command_id or envelope["command_id"]

    def final_results() -> list[dict[str, Any]]:
        return [r for r in _results(run, cid) if r["outcome"] in FINAL and r["outcome"] == (final or r["outcome"])]

    await run.wait_until(lambda: bool(final_results()), timeout_s=15)
    return final_results()[0]


async def test_rejection_matrix_and_valid_commands_exactly_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world = _world()
    port = mosquitto.port
    async with running_gateway(config, world=world) as run:
        await run.wait_until(lambda: all(run.gateway.parts.commands._targets[p].connected for p in PUMPS))  # type: ignore[union-attr]
        pump = world.peripherals["pump-1"]
        assert isinstance(pump, SimInsulinPump)

        async def expect(envelope: dict[str, Any] | bytes, reason: str, command_id: str | None = None) -> None:
            before = {p: len(world.peripherals[p].commands_received) for p in PUMPS}  # type: ignore[attr-defined]
            result = await _send(run, port, envelope, command_id)
            assert (result["outcome"], result["reason"]) == ("rejected", reason), result
            after = {p: len(world.peripherals[p].commands_received) for p in PUMPS}  # type: ignore[attr-defined]
            assert after == before, f"{reason}: the device must receive nothing"
            assert int(result["detail"]["audit_seq"]) > 0

        bolus = {"amount_mu": 1000}
        await expect(b"{not json", "malformed")
        # Malformed, but with a usable command id: the rejection is reported under it.
        await expect(json.dumps({"v": 1, "command_id": "x-1"}).encode(), "malformed", command_id="x-1")
        await expect(issuer.envelope("pump-1", "bolus", {"amount_mu": 1.5}), "malformed")  # floats are refused
        await expect(issuer.envelope("pump-1", "bolus", bolus, forge_with="rogue"), "bad-signature")
        await expect(issuer.envelope("pump-1", "bolus", bolus, signers=("rogue",)), "unknown-key")
        await expect(issuer.envelope("pump-1", "bolus", bolus, signers=("old",)), "revoked-key")
        await expect(issuer.envelope("pump-1", "bolus", bolus, issued_offset_s=-400, valid_s=300), "expired")
        await expect(issuer.envelope("pump-1", "bolus", bolus, issued_offset_s=120), "not-yet-valid")
        await expect(issuer.envelope("pump-1", "bolus", bolus, valid_s=3600), "validity-too-long")
        await expect(issuer.envelope("pump-9", "bolus", bolus), "unknown-device")
        await expect(issuer.envelope("ox-1", "bolus", bolus), "type-not-allowed")
        await expect(issuer.envelope("pump-1", "prime", {}), "type-not-allowed")
        await expect(
            issuer.envelope("pump-1", "temp_basal", {"rate_mu_per_h": 500, "duration_min": 30}),
            "insufficient-signatures",
        )
        # Every limit at its bound (accepted) and just past it (refused).
        ok = await _send(run, port, issuer.envelope("pump-1", "bolus", {"amount_mu": 5000}))
        assert ok["outcome"] == "confirmed" and ok["detail"]["bolus_id"] == "1"
        await expect(issuer.envelope("pump-1", "bolus", {"amount_mu": 5050}), "policy:max-bolus")
        await expect(issuer.envelope("pump-1", "bolus", {"amount_mu": 1025}), "policy:dose-resolution")
        await expect(issuer.envelope("pump-1", "bolus", {"units": 1}), "policy:bad-parameters")
        dual = ("ops-1", "ops-2")
        ok = await _send(
            run,
            port,
            issuer.envelope("pump-1", "temp_basal", {"rate_mu_per_h": 2000, "duration_min": 30}, signers=dual),
        )
        assert ok["outcome"] == "confirmed"
        await expect(
            issuer.envelope("pump-1", "temp_basal", {"rate_mu_per_h": 2050, "duration_min": 30}, signers=dual),
            "policy:max-basal",
        )
        await expect(
            issuer.envelope(
                "pump-1", "temp_basal", {"rate_mu_per_h": 500, "duration_min": 30}, signers=("ops-1", "ops-1")
            ),
            "insufficient-signatures",
        )
        assert (await _send(run, port, issuer.envelope("pump-2", "bolus", bolus)))["outcome"] == "confirmed"
        await expect(issuer.envelope("pump-2", "bolus", bolus), "policy:bolus-spacing")
        await asyncio.sleep(2.1)  # at the spacing bound
        assert (await _send(run, port, issuer.envelope("pump-2", "bolus", bolus)))["outcome"] == "confirmed"
        for _ in range(2):
            assert (await _send(run, port, issuer.envelope("pump-3", "bolus", {"amount_mu": 5000})))[
                "outcome"
            ] == "confirmed"  # 10,000 mU in 24 h: exactly the daily limit
        await expect(issuer.envelope("pump-3", "bolus", {"amount_mu": 50}), "policy:daily-total")
        for _ in range(2):
            assert (await _send(run, port, issuer.envelope("pump-4", "bolus", bolus)))["outcome"] == "confirmed"
        await expect(issuer.envelope("pump-4", "bolus", bolus), "policy:rate-limit")
        # Replay of an accepted command, and of a rejected one.
        accepted = issuer.envelope("pump-1", "bolus", {"amount_mu": 500})
        assert (await _send(run, port, accepted))["outcome"] == "confirmed"
        await publish(port, accepted)
        await run.wait_until(lambda: any(r["outcome"] == "rejected" for r in _results(run, accepted["command_id"])))
        assert [r["reason"] for r in _results(run, accepted["command_id"]) if r["outcome"] == "rejected"] == [
            "replayed"
        ]
        # A device that is not connected receives nothing and says so.
        world.peripherals["pump-4"].online = False
        world.peripherals["pump-4"].drop_links()
        await run.wait_until(lambda: not run.gateway.parts.commands._targets["pump-4"].connected)  # type: ignore[union-attr]
        await expect(issuer.envelope("pump-4", "cancel_bolus", {"bolus_id": 1}), "device-not-connected")

        # Valid commands were delivered exactly once, with the right doses, E2E-protected.
        assert pump.deliveries == [(1, 5.0), (2, 0.5)]
        assert world.peripherals["pump-2"].deliveries == [(1, 1.0), (2, 1.0)]  # type: ignore[attr-defined]
        assert pump.temp_basals == [(2.0, 30)]
        await run.finish()

    store = CommandStore(tmp_path / "state" / "commands.sqlite3", load_keyring(tmp_path / "state" / "buffer.key"))
    try:
        assert store.verify_audit() == []
        states = [r.body.get("state") for r in store.audit_records()]
        assert states.count("confirmed") == 9 and "rejected" in states
    finally:
        store.close()

    # The replay memory survives a restart.
    async with running_gateway(config, world=_world()) as run:
        await run.wait_connected("pump-1")
        result = await _send(run, port, accepted, final="rejected")
        assert result["reason"] == "replayed"
        await run.finish()


async def test_link_drop_after_sending_makes_outcome_unknown_and_blocks_until_reconciled(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world = _world(history=False)
    port = mosquitto.port
    pump = world.peripherals["pump-1"]
    assert isinstance(pump, SimInsulinPump)
    async with running_gateway(config, world=world) as run:
        targets = run.gateway.parts.commands._targets  # type: ignore[union-attr]
        await run.wait_until(lambda: targets["pump-1"].connected)
        pump.command_fault = "drop-after-write"
        first = issuer.envelope("pump-1", "bolus", {"amount_mu": 2000})
        result = await _send(run, port, first)
        assert result["outcome"] == "outcome-unknown"
        assert pump.deliveries == [(1, 2.0)], "the pump did deliver: that is why the outcome is not 'failed'"
        pump.command_fault = None
        await run.wait_until(lambda: targets["pump-1"].connected)  # reconnected
        second = await _send(run, port, issuer.envelope("pump-1", "bolus", {"amount_mu": 2000}))
        assert (second["outcome"], second["reason"]) == ("rejected", "blocked-outcome-unknown")
        assert len(pump.deliveries) == 1, "no second dose"
        # Reconciliation from the device's history (here: the pump delivered bolus 1), signed by an operator.
        reconcile = issuer.envelope("pump-1", "reconcile", {"command_id": first["command_id"], "outcome": "confirmed"})
        assert (await _send(run, port, reconcile))["outcome"] == "confirmed"
        settled = [r for r in _results(run, first["command_id"]) if r["outcome"] == "confirmed"]
        assert settled and settled[0]["reason"].startswith("reconciled by")
        third = await _send(run, port, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}))
        assert third["outcome"] == "confirmed"
        assert pump.deliveries == [(1, 2.0), (2, 1.0)]
        await run.finish()


def _store_with_records(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    state = tmp_path / "state"
    state.mkdir()
    from gateway.storage.keys import generate_key_file  # noqa: PLC0415

    generate_key_file(state / "buffer.key")
    store = CommandStore(state / "commands.sqlite3", load_keyring(state / "buffer.key"))
    for i in range(n):
        store.append_audit({"command_id": f"c{i}", "state": "received"})
    assert store.verify_audit() == []
    store.close()
    return state / "commands.sqlite3", state / "buffer.key"


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "truncate", "forge-head"])
def test_audit_verify_reports_each_kind_of_tampering(tmp_path: Path, tamper: str) -> None:
    db, key = _store_with_records(tmp_path)
    with sqlite3.connect(db) as conn:
        if tamper == "edit":
            sealed = bytearray(conn.execute("SELECT sealed FROM audit WHERE seq = 3").fetchone()[0])
            sealed[5] ^= 1
            conn.execute("UPDATE audit SET sealed = ? WHERE seq = 3", (bytes(sealed),))
        elif tamper == "delete":
            conn.execute("DELETE FROM audit WHERE seq = 3")
        elif tamper == "reorder":
            conn.execute("UPDATE audit SET seq = 100 WHERE seq = 3")
            conn.execute("UPDATE audit SET seq = 3 WHERE seq = 4")
            conn.execute("UPDATE audit SET seq = 4 WHERE seq = 100")
        elif tamper == "truncate":
            conn.execute("DELETE FROM audit WHERE seq = 6")
        else:
            sealed = bytearray(conn.execute("SELECT sealed FROM audit_head").fetchone()[0])
            sealed[0] ^= 1
            conn.execute("UPDATE audit_head SET sealed = ?", (bytes(sealed),))
    store = CommandStore(db, load_keyring(key))
    problems = store.verify_audit()
    store.close()
    assert problems, tamper
    expected = {
        "edit": "edited",
        "delete": "missing",
        "reorder": "does not open",
        "truncate": "cut off the end",
        "forge-head": "head edited",
    }[tamper]
    assert any(expected in p.problem for p in problems), problems

    # The technician's command says the same, and exits 1.
    data = config_dict(tmp_path / "state", 1883)
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(to_toml(data))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--config", str(config_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert not report["intact"] and report["problems"]


def test_audit_verify_passes_an_intact_chain(tmp_path: Path) -> None:
    _store_with_records(tmp_path)
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(to_toml(config_dict(tmp_path / "state", 1883)))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--config", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "6 audit records: chain intact" in result.stdout


async def test_hostile_messages_never_stop_the_gateway_nor_fake_a_rejection(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world = _world()
    port = mosquitto.port
    async with running_gateway(config, world=world) as run:
        targets = run.gateway.parts.commands._targets  # type: ignore[union-attr]
        await run.wait_until(lambda: targets["pump-1"].connected)
        real = issuer.envelope("pump-1", "bolus", {"amount_mu": 1000})
        hostile = [
            b"[" * 60_000,  # recursion bomb
            b'{"v": 1, "n": ' + b"9" * 5000 + b"}",  # integer bomb
            json.dumps({**real, "parameters": {"note": "\ud800"}}).encode(),  # lone surrogate
            json.dumps(real).encode().replace(b'"v": 1', b'"v": 1, "v": 1'),  # duplicate key
            json.dumps(real, ensure_ascii=False).encode().replace(b"pump-1", "pümp-1".encode()),  # non-ASCII
            json.dumps({**real, "v": True}).encode(),  # a boolean is not a version
        ]
        for payload in hostile:
            result = await _send(run, port, payload)
            assert result["outcome"] == "rejected" and result["command_id"].startswith("unverified-"), result
        # A malformed message claiming the real command's id is reported as unverified, never under that id...
        fake = json.dumps({"command_id": real["command_id"], "v": 1}).encode()
        result = await _send(run, port, fake)
        assert result["command_id"].startswith("unverified-")
        assert result["detail"]["claimed_command_id"] == real["command_id"]
        # ...and the real command still goes through, once.
        ok = await _send(run, port, real, final="confirmed")
        assert ok["command_id"] == real["command_id"]
        pump = world.peripherals["pump-1"]
        assert isinstance(pump, SimInsulinPump) and pump.deliveries == [(1, 1.0)]
        # Signed for another gateway: refused here.
        other = issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, gateway="other-gw")
        assert (await _send(run, port, other))["reason"] == "wrong-gateway"
        # A bolus id the wire format cannot carry is refused by policy, before anything is sent.
        big = issuer.envelope("pump-1", "cancel_bolus", {"bolus_id": 70_000})
        assert (await _send(run, port, big))["reason"] == "policy:bad-parameters"
        assert len(pump.commands_received) == 1
        await run.finish()


async def test_reconciled_failure_still_counts_towards_the_daily_limit(tmp_path: Path, mosquitto: Mosquitto) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world = _world(history=False)
    pump = world.peripherals["pump-3"]  # daily limit 10,000 mU
    assert isinstance(pump, SimInsulinPump)
    port = mosquitto.port
    async with running_gateway(config, world=world) as run:
        targets = run.gateway.parts.commands._targets  # type: ignore[union-attr]
        await run.wait_until(lambda: targets["pump-3"].connected)
        pump.command_fault = "drop-after-write"
        first = issuer.envelope("pump-3", "bolus", {"amount_mu": 5000})
        assert (await _send(run, port, first))["outcome"] == "outcome-unknown"
        pump.command_fault = None
        await run.wait_until(lambda: targets["pump-3"].connected)
        settle = issuer.envelope("pump-3", "reconcile", {"command_id": first["command_id"], "outcome": "failed"})
        assert (await _send(run, port, settle))["outcome"] == "confirmed"
        assert (await _send(run, port, issuer.envelope("pump-3", "bolus", {"amount_mu": 5000})))[
            "outcome"
        ] == "confirmed"
        third = await _send(run, port, issuer.envelope("pump-3", "bolus", {"amount_mu": 5000}))
        assert third["reason"] == "policy:daily-total", "the 'failed' first bolus (which was delivered) still counts"
        assert [amount for _, amount in pump.deliveries] == [5.0, 5.0]
        await run.finish()


def test_commands_left_half_way_by_a_crash_are_settled_at_start(tmp_path: Path) -> None:
    from gateway.commands.service import CommandService  # noqa: PLC0415
    from gateway.config import CommandsSection  # noqa: PLC0415
    from gateway.storage.keys import generate_key_file  # noqa: PLC0415

    generate_key_file(tmp_path / "k")
    store = CommandStore(tmp_path / "c.db", load_keyring(tmp_path / "k"))
    store.append_audit({"command_id": "a"}, state=("a", "pump-1", "bolus", "verified"), parameters={"amount_mu": 1})
    store.append_audit({"command_id": "a"}, state=("a", "pump-1", "bolus", "sent"))
    store.append_audit(
        {"command_id": "b"},
        state=("b", "pump-1", "temp_basal", "verified"),
        parameters={"rate_mu_per_h": 50, "duration_min": 30},
    )

    class Collect:
        def __init__(self) -> None:
            self.events: list[Any] = []

        async def emit(self, event: Any) -> None:
            self.events.append(event)

        def emit_nowait(self, event: Any) -> None:
            self.events.append(event)

    sink = Collect()
    CommandService(CommandsSection(), store, {}, sink, gateway_id="gw")
    assert store.get("a").state == "outcome-unknown"  # type: ignore[union-attr]
    assert store.get("b").state == "failed"  # type: ignore[union-attr]
    assert store.unresolved("pump-1", "bolus") == ["a"]
    assert [(e.command_id, e.outcome.value) for e in sink.events] == [("a", "outcome-unknown"), ("b", "failed")]
    assert store.verify_audit() == []
    store.close()
