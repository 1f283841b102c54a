"""The uplink against a real Mosquitto: a refused publish keeps its row; a clean stop says offline; a stop at
any moment, even one that lands with the broker's answer to a subscribe, ends the gateway (the client's own
tests, tests/integration/test_mqtt_client.py, stop single calls at every instant)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from cloud_sync.mqtt import MqttClient
from cloud_sync.uplink import SyncState
from drivers.registry import Backends
from gateway.config import parse_config
from gateway.core.model import Lane
from gateway.daemon import Gateway
from hil.ble_sim import SimBleWorld, SimPulseOximeter
from hil.physiology import Trajectory
from tests.conftest import Mosquitto, config_dict, make_config, start_mosquitto
from tests.support.commanding import Issuer
from tests.support.harness import running_gateway


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
    async with MqttClient("127.0.0.1", mosquitto.port, client_id=f"state-{time.time_ns()}") as client:
        await client.subscribe("iomt/v1/test-gw/state", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.retain
    assert json.loads(bytes(message.payload))["state"] == "offline"


async def test_a_stop_at_any_moment_of_the_start_ends_the_gateway(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The gateway with commands (so the uplink subscribes to its downlink topics) is stopped at successive
    instants after it comes online, through its subscribes and first publishes: every stop ends it.  Over aiomqtt
    (asyncio.wait_for on Python 3.11) some of these stops met a SUBACK or PUBACK, the stop was lost and the
    shutdown waited forever."""
    issuer = Issuer()
    for attempt in range(40):
        document = config_dict(tmp_path / f"state-{attempt}", mosquitto.port)
        document["devices"] = [document["devices"][1]]
        document["commands"] = {"enabled": True, "issuers": issuer.issuers_config()}
        config = parse_config(document)
        gateway = Gateway(config, Backends({"ble": SimBleWorld.for_devices(config.devices).link}))
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop), name=f"gateway-{attempt}")
        async with asyncio.timeout(30):
            while not (gateway.parts and gateway.parts.uplink.state is SyncState.ONLINE):
                await asyncio.sleep(0)
        await asyncio.sleep(attempt * 0.0005)
        stop.set()
        # Only a detector for a hang (the stop takes milliseconds); the assertion is that it ends at all.
        done, _ = await asyncio.wait({task}, timeout=60)
        assert done, f"the gateway stopped {attempt * 0.5} ms after coming online never ended"
        await task
