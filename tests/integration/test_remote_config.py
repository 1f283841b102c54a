"""Remote configuration: signed, validated fully before applying, applied atomically, rolled back when the
gateway is unhealthy afterwards, and the outcome reported uplink."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_sync.receiver import ReferenceReceiver
from cloud_sync.uplink import SyncState
from gateway.config import parse_config
from gateway.runner import GatewayRunner
from tests.conftest import Mosquitto, config_dict, free_port
from tests.support.commanding import Issuer, publish_to, signed_config
from tests.support.configs import to_toml


@dataclass
class _Remote:
    """A gateway runner under test, the receiver that hears its results, and the issuer that signs configs."""

    runner: GatewayRunner
    receiver: ReferenceReceiver
    issuer: Issuer
    port: int

    async def send(
        self,
        document: dict[str, Any],
        config_id: str,
        signers: tuple[str, ...] = ("ops-1", "ops-2"),
        *,
        issuer: Issuer | None = None,
    ) -> dict[str, Any]:
        """Publish a configuration signed by `issuer` (this remote's by default); its final result."""
        signed = signed_config(issuer or self.issuer, document, config_id, signers)
        await publish_to(self.port, "config", signed)
        return await self.outcome(config_id)

    async def outcome(self, config_id: str) -> dict[str, Any]:
        final = {"rejected", "confirmed", "failed"}
        async with asyncio.timeout(15):
            while True:
                done = [
                    i
                    for i in self.receiver.items.values()
                    if config_id in (i.get("command_id"), (i.get("detail") or {}).get("claimed_command_id"))
                    and i["outcome"] in final
                ]
                if done:
                    return done[0]
                await asyncio.sleep(0.05)

    async def online(self) -> None:
        runner = self.runner
        async with asyncio.timeout(30):
            while not (
                runner.gateway and runner.gateway.parts and runner.gateway.parts.uplink.state is SyncState.ONLINE
            ):
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _remote(
    config_path: Path, document: dict[str, Any], issuer: Issuer, port: int, **runner_options: Any
) -> AsyncIterator[_Remote]:
    """A runner on `document` (written to `config_path`) and a receiver, stopped on the way out."""
    config_path.write_text(to_toml(document))
    runner = GatewayRunner(config_path, parse_config(document), **runner_options)
    receiver = ReferenceReceiver("127.0.0.1", port, client_id=f"cfg-{time.time_ns()}")
    receiver.keep_items = True
    receiver_task = asyncio.create_task(receiver.run())
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(receiver.subscribed.wait(), 10)
        yield _Remote(runner, receiver, issuer, port)
    finally:
        stop.set()
        await task
        receiver_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver_task


async def test_bad_remote_configs_leave_or_restore_the_running_config(tmp_path: Path, mosquitto: Mosquitto) -> None:
    issuer = Issuer()
    document = config_dict(tmp_path / "state", mosquitto.port)
    document["devices"] = [document["devices"][1]]
    document["commands"] = {"enabled": True, "issuers": issuer.issuers_config()}
    config_path = tmp_path / "gateway.toml"
    async with _remote(config_path, document, issuer, mosquitto.port, health_timeout_s=3.0) as remote:
        original = config_path.read_bytes()
        runner = remote.runner
        await remote.online()

        # 1. Invalid: refused before anything is touched.
        invalid = copy.deepcopy(document)
        invalid["buffer"]["flush_intervall_ms"] = 10
        result = await remote.send(invalid, "cfg-invalid")
        assert result["outcome"] == "rejected"
        assert result["reason"].startswith("invalid-config: buffer.flush_intervall_ms: unknown key")
        assert config_path.read_bytes() == original and runner.restarts == 0

        # A forged one is refused too, and so is one with a single signature (configuration takes two people),
        # and one that would switch off the very channel it came by.
        forged = await remote.send(document, "cfg-forged", issuer=Issuer())
        assert forged["reason"] == "bad-signature" and forged["command_id"].startswith("unverified-")
        assert (await remote.send(document, "cfg-single", ("ops-1",)))["reason"] == "insufficient-signatures"
        cutoff = copy.deepcopy(document)
        cutoff["commands"]["enabled"] = False
        assert (await remote.send(cutoff, "cfg-cutoff"))["reason"].startswith("invalid-config: it would cut off")
        assert config_path.read_bytes() == original and runner.restarts == 0

        # 2. Valid but unhealthy: a broker port nobody listens on. Applied, found unhealthy, rolled back.
        unhealthy = copy.deepcopy(document)
        unhealthy["mqtt"]["port"] = free_port()
        result = await remote.send(unhealthy, "cfg-unhealthy")
        assert result["outcome"] == "failed" and result["reason"].startswith("rolled back")
        assert config_path.read_bytes() == original
        assert runner.restarts == 1
        await remote.online()

        # 3. Valid and healthy: applied, and the file now holds it.
        better = copy.deepcopy(document)
        better["alarms"]["limits"][0]["low"] = 88
        result = await remote.send(better, "cfg-good")
        assert (result["outcome"], result["reason"]) == ("confirmed", "applied")
        applied = tomllib.loads(config_path.read_text())
        assert applied["alarms"]["limits"][0]["low"] == 88
        assert parse_config(applied) == runner.config


SAFETY = """
[gateway]
min_config_signatures = 2

[device_class.insulin_pump]
max_bolus_mu = 10000
max_basal_mu_per_h = 3000
min_bolus_interval_s = 900
max_daily_mu = 60000
min_signatures = 1
"""


async def test_configs_beyond_the_local_ceilings_are_refused_and_a_failed_write_keeps_the_gateway(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    from gateway.commands.ceilings import load_ceilings  # noqa: PLC0415
    from gateway.runner import previous_path  # noqa: PLC0415

    safety = tmp_path / "safety.toml"
    safety.write_text(SAFETY)
    safety.chmod(0o644)
    ceilings = load_ceilings(safety)
    issuer = Issuer()
    document = config_dict(tmp_path / "state", mosquitto.port)
    document["devices"] = [
        {"id": "pump-1", "transport": "ble", "profile": "insulin_pump", "address": "sim:pump-1"},
    ]
    pump_policy = {
        "device": "pump-1",
        "allowed": ["bolus"],
        "max_bolus_mu": 5000,
        "min_bolus_interval_s": 900,
        "max_daily_mu": 50_000,
    }
    document["commands"] = {"enabled": True, "issuers": issuer.issuers_config(), "devices": [pump_policy]}
    config_path = tmp_path / "gateway.toml"

    def variant(**policy: Any) -> dict[str, Any]:
        changed = copy.deepcopy(document)
        changed["commands"]["devices"][0].update(policy)
        return changed

    options = {"health_timeout_s": 5.0, "ceilings": ceilings}
    async with _remote(config_path, document, issuer, mosquitto.port, **options) as remote:
        original = config_path.read_bytes()
        runner = remote.runner
        fewer_signatures = copy.deepcopy(document)
        fewer_signatures["commands"]["config_signatures"] = 1
        no_devices = copy.deepcopy(document)
        no_devices["devices"] = []
        no_devices["commands"]["devices"] = []
        cases = {
            "cfg-100iu": (variant(max_bolus_mu=100_000), "max_bolus_mu raises the local ceiling of 10000"),
            "cfg-nospacing": (variant(min_bolus_interval_s=0), "min_bolus_interval_s lowers the local minimum"),
            "cfg-daily": (variant(max_daily_mu=100_000), "max_daily_mu raises the local ceiling"),
            "cfg-onesig": (fewer_signatures, "config_signatures below the local minimum of 2"),
            "cfg-nodevices": (no_devices, "it would remove every device"),
        }
        for config_id, (config, reason) in cases.items():
            result = await remote.send(config, config_id)
            assert result["outcome"] == "rejected", result
            assert result["reason"].startswith("unsafe-config") and reason in result["reason"], result["reason"]
        assert config_path.read_bytes() == original and runner.restarts == 0

        # A stricter policy is fine; but where the file cannot be written, the running gateway stays.
        previous_path(config_path).mkdir()  # the write of the previous copy fails (a directory is in the way)
        result = await remote.send(variant(max_bolus_mu=2000), "cfg-unwritable")
        assert result["outcome"] == "failed" and result["reason"].startswith("not applied: cannot write"), result
        assert config_path.read_bytes() == original and runner.restarts == 0
        assert runner.gateway is not None and runner.gateway.parts is not None
        assert runner.gateway.parts.uplink.state is SyncState.ONLINE


def test_a_safety_file_others_can_write_is_refused(tmp_path: Path) -> None:
    import pytest  # noqa: PLC0415

    from gateway.commands.ceilings import load_ceilings  # noqa: PLC0415
    from gateway.core.errors import ConfigError  # noqa: PLC0415

    safety = tmp_path / "safety.toml"
    safety.write_text(SAFETY)
    safety.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by nobody else"):
        load_ceilings(safety)
    safety.chmod(0o644)
    safety.write_text("[device_class.insulin_pump]\nmax_bolus_mu = -1\n")
    with pytest.raises(ConfigError, match="max_bolus_mu"):
        load_ceilings(safety)
    assert load_ceilings(tmp_path / "absent.toml").source == "built-in"
