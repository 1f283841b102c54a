"""The uplink against a real Mosquitto: a refused publish keeps its row; a clean stop says offline."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt

from gateway.model import Lane
from hil.ble_sim import SimBleWorld, SimPulseOximeter
from hil.physiology import Trajectory
from tests.conftest import Mosquitto, make_config, start_mosquitto
from tests.harness import running_gateway


async def test_publish_refused_by_broker_acl_keeps_the_row(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    # Anonymous clients may publish numerics and status, and read everything; alarms are not allowed.
    acl.write_text(
        "topic readwrite iomt/v1/+/state\ntopic write iomt/v1/+/up/numerics/#\n"
        "topic write iomt/v1/+/up/device-status/#\ntopic read iomt/v1/#\n"
    )
    broker = start_mosquitto(tmp_path, f"acl_file {acl}\n")
    try:
        config = make_config(tmp_path / "state", broker.port)
        config = type(config).model_validate({**config.model_dump(), "devices": [config.devices[1].model_dump()]})
        world = SimBleWorld()
        oximeter = world.add(SimPulseOximeter("ox-1"))
        assert isinstance(oximeter, SimPulseOximeter)
        oximeter.spo2 = Trajectory(85.0, 0.0)  # below the 90 % limit: a high-priority alarm after 1 s
        async with running_gateway(config, world=world, drain_s=0.5) as run:
            metrics = run.gateway.metrics
            await run.wait_until(lambda: metrics.publish_refused > 0 and run.receiver.stats.unique["ox-1"] > 3)
            stats = {s.lane: s.rows for s in await run.gateway.parts.buffer.stats()}  # type: ignore[union-attr]
            assert stats[Lane.ALARMS] >= 1, "the refused alarm is still in the buffer"
            assert run.receiver.stats.by_lane["alarms"] == 0
            assert run.receiver.stats.by_lane["numerics"] > 0  # the rest still flows
            run.stop.set()
            await run.task
    finally:
        broker.stop()


async def test_clean_stop_publishes_offline_state(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = make_config(tmp_path / "state", mosquitto.port)
    async with running_gateway(config) as run:
        await run.wait_until(lambda: run.gateway.metrics.publishes > 2)
        await run.finish()
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"state-{time.time_ns()}") as client:
        await client.subscribe("iomt/v1/test-gw/state", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.retain
    assert json.loads(bytes(message.payload))["state"] == "offline"  # type: ignore[arg-type]
