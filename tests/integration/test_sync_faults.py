"""Sync through every fault a home or ward throws at it: broker down, broker down mid-drain, network cut.

Acceptance: at the end the receiver holds every value exactly once (0 lost, 0 duplicates after de-duplication),
and an alarm raised while a large backlog drains reaches the receiver ahead of the backlog.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cloud_sync.uplink import SyncState
from gateway.buffer import Buffer
from gateway.config import parse_config
from gateway.core.backlog import NewRecord
from gateway.core.model import Lane, Observation, new_id, now_ns
from gateway.core.nomenclature import quantity
from gateway.core.wire import encode_batch
from gateway.storage.keys import load_keyring
from hil.ble_sim import SimBleWorld, SimPulseOximeter
from hil.physiology import Trajectory
from tests.conftest import config_dict, start_mosquitto
from tests.support.harness import Running, running_gateway
from tests.support.netfault import CuttableProxy

BROKER_OUTAGE_S = 30.0


async def test_no_loss_no_duplicate_through_outages_and_network_cuts(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = start_mosquitto(tmp_path / "broker", persistence=True)
    proxy = CuttableProxy(broker.port)
    await proxy.start()
    data = config_dict(tmp_path / "state", proxy.port)
    # Small messages and a low rate cap make the drain take long enough to be interrupted.
    data["mqtt"] |= {"max_publishes_per_s": 8.0, "max_message_bytes": 8192, "keepalive_s": 5}
    config = parse_config(data)
    try:
        async with running_gateway(config, receiver_port=broker.port) as run:
            uplink = run.gateway.parts.uplink  # type: ignore[union-attr]
            metrics = run.gateway.metrics
            await run.wait_until(lambda: all(run.receiver.stats.unique[d.id] > 2 for d in config.devices))

            # 1. The broker goes away for 30 s while the devices keep streaming.
            broker.stop()
            await run.wait_until(lambda: uplink.state is not SyncState.ONLINE, timeout_s=15)
            await asyncio.sleep(BROKER_OUTAGE_S)
            backlog = await _backlog(run)
            assert backlog > 20, "the outage built a backlog"

            # 2. It comes back; while the backlog drains, it goes away again.
            broker.start()
            published = metrics.publishes
            await run.wait_until(lambda: metrics.publishes >= published + 3, timeout_s=30)
            assert await _backlog(run) > 0, "still draining"
            broker.stop()
            await asyncio.sleep(3.0)
            broker.start()

            # 3. The network is cut with the broker running (no FIN: the gateway must notice by itself).
            await run.wait_until(lambda: uplink.state is SyncState.ONLINE, timeout_s=30)
            await asyncio.sleep(1.0)
            proxy.cut()
            await asyncio.sleep(8.0)
            proxy.restore()
            await asyncio.sleep(3.0)
            await run.finish(drain_s=60)

        duplicates = sum(run.receiver.stats.duplicates.values())
        print(
            f"fault test: backlog {backlog} rows after the outage, {metrics.reconnects} reconnects, "
            f"{duplicates} duplicates dropped by the receiver"
        )
        for device in config.devices:
            counters = metrics.device(device.id)
            assert counters.accepted == counters.received, device.id
            assert run.receiver.stats.unique[device.id] == counters.accepted, device.id
        assert metrics.reconnects >= 3
    finally:
        await proxy.close()
        broker.stop()


async def test_alarm_overtakes_a_large_backlog(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = start_mosquitto(tmp_path / "broker")
    data = config_dict(tmp_path / "state", broker.port)
    data["mqtt"] |= {"max_publishes_per_s": 20.0, "max_message_bytes": 16384}
    data["devices"] = [data["devices"][1]]
    config = parse_config(data)
    # A backlog of 3000 numerics rows from earlier (e.g. a long outage), already in the buffer.
    buffer = await Buffer.open(config.state_dir / config.buffer.path, load_keyring(Path(config.buffer.key_file)))
    q = quantity("MDC_PULS_OXIM_PULS_RATE")
    backlog_rows = 3000
    for _ in range(0, backlog_rows, 500):
        await buffer.append(
            [
                NewRecord(
                    Lane.NUMERICS,
                    "old-ox",
                    encode_batch(
                        "test-gw",
                        "old-ox",
                        None,
                        Lane.NUMERICS,
                        [Observation(new_id(), "old-ox", q, 70.0, None, now_ns()) for _ in range(20)],
                    ),
                    20,
                )
                for _ in range(500)
            ]
        )
    await buffer.close()
    world = SimBleWorld()
    oximeter = world.add(SimPulseOximeter("ox-1"))
    assert isinstance(oximeter, SimPulseOximeter)
    try:
        async with running_gateway(config, world=world, drain_s=0.5) as run:
            await run.wait_until(lambda: run.receiver.stats.unique["old-ox"] > 100)  # draining
            oximeter.spo2 = Trajectory(84.0, 0.0)  # desaturation: a high-priority alarm after 1 s
            await run.wait_until(
                lambda: any(a["condition"].endswith("SAT_O2.low") for a in run.receiver.alarms), timeout_s=30
            )
            alarm = next(a for a in run.receiver.alarms if a["condition"].endswith("SAT_O2.low"))
            old_delivered = run.receiver.stats.unique["old-ox"]
            latency_ms = (alarm["received_ns"] - alarm["t_gw"]) / 1e6
            print(
                f"alarm latency during a {backlog_rows}-row drain: {latency_ms:.1f} ms; "
                f"{old_delivered} of {backlog_rows * 20} backlog values delivered by then"
            )
            assert old_delivered < backlog_rows * 20, "the alarm arrived ahead of the backlog"
            run.stop.set()
            await run.task
    finally:
        broker.stop()


async def test_wall_clock_jump_neither_reorders_nor_drops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An NTP step (here: the wall clock jumps back an hour mid-stream) must not reorder or lose data.

    Buffer order is the row sequence and every timer is monotonic, so the jump shows only in the values'
    gateway times.
    """
    (tmp_path / "broker").mkdir()
    broker = start_mosquitto(tmp_path / "broker")
    config = parse_config(config_dict(tmp_path / "state", broker.port))
    real_time_ns = time.time_ns
    offset = 0

    def jumped_time_ns() -> int:
        return real_time_ns() + offset

    monkeypatch.setattr(time, "time_ns", jumped_time_ns)
    try:
        async with running_gateway(config) as run:
            await run.wait_until(lambda: all(run.receiver.stats.unique[d.id] > 2 for d in config.devices))
            offset = -3600 * 10**9
            await asyncio.sleep(2.0)
            offset = 0  # and forward again
            await asyncio.sleep(1.0)
            await run.finish()
        for device in config.devices:
            counters = run.gateway.metrics.device(device.id)
            assert run.receiver.stats.unique[device.id] == counters.accepted == counters.received, device.id
        items = [i for i in run.receiver.items.values() if i["device"] == "ox-1" and i["lane"] == "numerics"]
        times = [int(i["t_gw"]) for i in items]
        assert min(times) < max(times) - 3000 * 10**9, "the jump really happened (visible in the gateway times)"
        # Arrival order is buffer order: the values from before, during and after the jump arrived in that order.
        jumped = [t < times[0] - 1800 * 10**9 for t in times]
        first, last = jumped.index(True), len(jumped) - 1 - jumped[::-1].index(True)
        assert all(jumped[first : last + 1]), "values from the jumped hour arrived together, in sequence"
    finally:
        broker.stop()


def test_bench_sync_reports_its_contract_keys() -> None:
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "sync", "--json", "--devices", "5", "--backlog-s", "60"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in (
        "drain_x_realtime",
        "wire_bytes_per_ecg_sample",
        "publishes_per_s",
        "alarm_latency_p50_ms",
        "alarm_latency_p99_ms",
    ):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    assert figures["values_received"] == figures["values_accepted"]  # nothing lost, nothing doubled


async def _backlog(run: Running) -> int:
    """Rows waiting in the running gateway's buffer."""
    parts = run.gateway.parts
    assert parts is not None
    return sum(lane.rows for lane in await parts.buffer.stats())
