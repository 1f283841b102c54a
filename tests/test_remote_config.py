"""Remote configuration: signed, validated fully before applying, applied atomically, rolled back when the
gateway is unhealthy afterwards, and the outcome reported uplink."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import tomllib
from pathlib import Path
from typing import Any

from cloud_sync.receiver import ReferenceReceiver
from cloud_sync.uplink import SyncState
from gateway.commands.envelope import CONFIG_DOMAIN, sign
from gateway.config import parse_config
from gateway.runner import GatewayRunner
from tests.commanding import Issuer, publish_to
from tests.conftest import Mosquitto, config_dict, free_port
from tests.test_config import _toml


def _signed(
    issuer: Issuer, config: dict[str, Any], config_id: str, signers: tuple[str, ...] = ("ops-1", "ops-2")
) -> bytes:
    now = time.time_ns()
    body = {
        "v": 1,
        "gateway": "test-gw",
        "config_id": config_id,
        "config": config,
        "issued_at": now,
        "expires_at": now + 300 * 10**9,
    }
    keys = [(name, issuer.keys[name]) for name in signers]
    return json.dumps(sign(body, keys, CONFIG_DOMAIN)).encode()


async def test_bad_remote_configs_leave_or_restore_the_running_config(tmp_path: Path, mosquitto: Mosquitto) -> None:
    issuer = Issuer()
    document = config_dict(tmp_path / "state", mosquitto.port)
    document["devices"] = [document["devices"][1]]
    document["commands"] = {"enabled": True, "issuers": issuer.issuers_config()}
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(_toml(document))
    original = config_path.read_bytes()
    runner = GatewayRunner(config_path, parse_config(document), health_timeout_s=3.0)
    receiver = ReferenceReceiver("127.0.0.1", mosquitto.port, client_id=f"cfg-{time.time_ns()}")
    receiver.keep_items = True
    receiver_task = asyncio.create_task(receiver.run())
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))

    async def outcome(config_id: str) -> dict[str, Any]:
        final = {"rejected", "confirmed", "failed"}
        async with asyncio.timeout(15):
            while True:
                done = [
                    i
                    for i in receiver.items.values()
                    if config_id in (i.get("command_id"), (i.get("detail") or {}).get("claimed_command_id"))
                    and i["outcome"] in final
                ]
                if done:
                    return done[0]
                await asyncio.sleep(0.05)

    async def online() -> None:
        async with asyncio.timeout(30):
            while not (
                runner.gateway and runner.gateway.parts and runner.gateway.parts.uplink.state is SyncState.ONLINE
            ):
                await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(receiver.subscribed.wait(), 10)
        await online()

        # 1. Invalid: refused before anything is touched.
        invalid = copy.deepcopy(document)
        invalid["buffer"]["flush_intervall_ms"] = 10
        await publish_to(mosquitto.port, "config", _signed(issuer, invalid, "cfg-invalid"))
        result = await outcome("cfg-invalid")
        assert result["outcome"] == "rejected"
        assert result["reason"].startswith("invalid-config: buffer.flush_intervall_ms: unknown key")
        assert config_path.read_bytes() == original and runner.restarts == 0

        # A forged one is refused too, and so is one with a single signature (configuration takes two people),
        # and one that would switch off the very channel it came by.
        await publish_to(mosquitto.port, "config", _signed(Issuer(), document, "cfg-forged"))
        forged = await outcome("cfg-forged")
        assert forged["reason"] == "bad-signature" and forged["command_id"].startswith("unverified-")
        await publish_to(mosquitto.port, "config", _signed(issuer, document, "cfg-single", ("ops-1",)))
        assert (await outcome("cfg-single"))["reason"] == "insufficient-signatures"
        cutoff = copy.deepcopy(document)
        cutoff["commands"]["enabled"] = False
        await publish_to(mosquitto.port, "config", _signed(issuer, cutoff, "cfg-cutoff"))
        assert (await outcome("cfg-cutoff"))["reason"].startswith("invalid-config: it would cut off")
        assert config_path.read_bytes() == original and runner.restarts == 0

        # 2. Valid but unhealthy: a broker port nobody listens on. Applied, found unhealthy, rolled back.
        unhealthy = copy.deepcopy(document)
        unhealthy["mqtt"]["port"] = free_port()
        await publish_to(mosquitto.port, "config", _signed(issuer, unhealthy, "cfg-unhealthy"))
        result = await outcome("cfg-unhealthy")
        assert result["outcome"] == "failed" and result["reason"].startswith("rolled back")
        assert config_path.read_bytes() == original
        assert runner.restarts == 1
        await online()

        # 3. Valid and healthy: applied, and the file now holds it.
        better = copy.deepcopy(document)
        better["alarms"]["limits"][0]["low"] = 88
        await publish_to(mosquitto.port, "config", _signed(issuer, better, "cfg-good"))
        result = await outcome("cfg-good")
        assert (result["outcome"], result["reason"]) == ("confirmed", "applied")
        applied = tomllib.loads(config_path.read_text())
        assert applied["alarms"]["limits"][0]["low"] == 88
        assert parse_config(applied) == runner.config
    finally:
        stop.set()
        await task
        receiver_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver_task
