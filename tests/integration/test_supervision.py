"""Supervision: a failing or killed driver restarts with backoff while every other device keeps flowing."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.core.errors import TransportError
from gateway.core.model import Lane
from gateway.core.reconnect import ReconnectPolicy, ReconnectState
from gateway.core.stats import Metrics
from gateway.supervisor import Supervisor
from tests.conftest import Mosquitto, make_config
from tests.support.harness import running_gateway

MEASUREMENT_LANES = {Lane.NUMERICS.topic_name, Lane.WAVEFORMS.topic_name}


def _measurements_since(items: Iterable[dict[str, Any]], t_ns: int) -> Counter[str]:
    return Counter(i["device"] for i in items if i["lane"] in MEASUREMENT_LANES and i["t_gw"] > t_ns)


async def test_killed_driver_restarts_and_other_devices_keep_arriving(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = make_config(tmp_path / "state", mosquitto.port)
    async with running_gateway(config) as run:
        await run.wait_until(lambda: all(run.receiver.stats.unique[d.id] > 2 for d in config.devices))
        supervisor = run.gateway.parts.supervisor  # type: ignore[union-attr]
        assert supervisor is not None

        # 1. Kill the ECG driver's task outright.
        killed_at = time.time_ns()
        supervisor.kill("driver:ecg-1")
        # 2. While it restarts, take the pulse oximeter's link down for a while too.
        oximeter = run.world.peripherals["ox-1"]
        oximeter.online = False
        oximeter.drop_links()
        await asyncio.sleep(2.0)
        # Measurements the devices produced after the kill (not statuses, not earlier data drained late).
        fresh = _measurements_since(run.receiver.items.values(), killed_at)
        assert fresh["cgm-1"] > 0 and fresh["pump-1"] > 0, fresh  # untouched devices kept streaming
        assert fresh["ecg-1"] > 0, fresh  # the killed driver is back and streaming
        assert supervisor.tasks["driver:ecg-1"].restarts >= 1
        during = {d.id: run.receiver.stats.unique[d.id] for d in config.devices}

        oximeter.online = True
        await run.wait_until(lambda: run.receiver.stats.unique["ox-1"] > during["ox-1"] + 2)
        assert supervisor.tasks["driver:ox-1"].restarts >= 1
        assert run.world.peripherals["ecg-1"].connections >= 2
        await run.finish()
        for device in config.devices:
            counters = run.gateway.metrics.device(device.id)
            assert run.receiver.stats.unique[device.id] == counters.accepted == counters.received

    # The outage raised a technical alarm for the oximeter, and it cleared when the link came back.
    conditions = [(a["device"], a["condition"], a["state"]) for a in run.receiver.alarms]
    assert ("ox-1", "device_disconnected", "active") in conditions
    assert ("ox-1", "device_disconnected", "cleared") in conditions


async def test_silent_link_is_noticed_and_reconnected(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = make_config(tmp_path / "state", mosquitto.port)
    data = config.model_dump()
    for device in data["devices"]:
        device["silent_link_timeout_s"] = 0.5
    config = type(config).model_validate(data)
    async with running_gateway(config) as run:
        await run.wait_until(lambda: run.receiver.stats.unique["pump-1"] > 1)
        pump = run.world.peripherals["pump-1"]
        pump.silent = True
        supervisor = run.gateway.parts.supervisor  # type: ignore[union-attr]
        assert supervisor is not None
        await run.wait_until(lambda: supervisor.tasks["driver:pump-1"].restarts >= 1, timeout_s=10)
        assert supervisor.tasks["driver:pump-1"].last_error == "TransportError"
        pump.silent = False
        seen = run.receiver.stats.unique["pump-1"]
        await run.wait_until(lambda: run.receiver.stats.unique["pump-1"] > seen + 1)
        await run.finish()


def test_backoff_grows_jittered_and_capped_and_jumps_to_max_when_hopeless() -> None:
    policy = ReconnectPolicy(initial_s=0.1, max_s=2.0)
    delays = [policy.failed() for _ in range(11)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert max(delays[-4:]) > 0.9  # grew towards the cap
    states = [policy.state]
    assert policy.succeeded() == 11
    states.append(policy.state)
    assert states == [ReconnectState.BACKING_OFF, ReconnectState.CONNECTED]
    assert policy.failed(hopeless=True) == 2.0  # e.g. a configuration error: retrying fast cannot fix it
    assert policy.first_failure


async def test_supervisor_restarts_a_crashing_task_and_logs_recovery_once() -> None:
    attempts = 0
    running = asyncio.Event()

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise TransportError("boom")
        running.set()
        await asyncio.sleep(3600)

    metrics = Metrics()
    async with asyncio.TaskGroup() as group:
        supervisor = Supervisor(group, metrics, initial_s=0.01, max_s=0.05)
        supervisor.start("flaky", flaky)
        await asyncio.wait_for(running.wait(), 5)
        assert supervisor.tasks["flaky"].restarts == 2
        assert metrics.restarts["flaky"] == 2
        await supervisor.stop()
