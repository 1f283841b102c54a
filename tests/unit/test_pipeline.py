"""The pipeline: order, backpressure, group commit, and what happens when the buffer refuses a commit."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

import gateway.pipeline as pipeline_module
from gateway import storage_health
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmsSection
from gateway.core.backlog import Store
from gateway.core.errors import StorageError
from gateway.core.model import ConnectionState, DeviceStatus, Event, Lane, Observation, new_id, now_ns
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import generate_key_file, load_keyring
from tests.support.fakes import FaultyStore


async def _open(tmp_path: Path) -> FaultyStore:
    key = tmp_path / "k"
    generate_key_file(key)
    return FaultyStore(await Buffer.open(tmp_path / "b.db", load_keyring(key)))


def _obs(i: int) -> Observation:
    return Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 90.0 + i % 10, None, now_ns())


async def _items(buffer: FaultyStore) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for record in await buffer.read({}, 10_000):
        out.extend(json.loads(record.payload)["items"])
    return out


def _pipeline(buffer: Store, metrics: Metrics, *, queue_size: int = 10_000, max_batch_items: int = 512) -> Pipeline:
    return Pipeline(
        buffer,
        AlarmEngine(AlarmsSection()),
        metrics,
        gateway_id="gw",
        patients={},
        flush_interval_s=0.02,
        queue_size=queue_size,
        max_batch_items=max_batch_items,
    )


async def test_order_is_kept_between_emit_and_emit_nowait(tmp_path: Path) -> None:
    buffer = await _open(tmp_path)
    metrics = Metrics()
    pipeline = _pipeline(buffer, metrics)
    task = asyncio.create_task(pipeline.run())
    events: list[Event] = []
    for i in range(50):
        event: Event = _obs(i) if i % 5 else DeviceStatus(new_id(), "ox-1", ConnectionState.CONNECTED, now_ns())
        events.append(event)
        if i % 5:
            await pipeline.emit(event)
        else:
            pipeline.emit_nowait(event)
    pipeline.close()
    await task
    numerics = [i["id"] for i in await _items(buffer) if "code" in i]
    assert numerics == [e.id for e in events if isinstance(e, Observation)]
    assert metrics.device("ox-1").accepted == metrics.device("ox-1").received == 50
    await buffer.close()


async def test_backpressure_bounds_the_queue(tmp_path: Path) -> None:
    buffer = await _open(tmp_path)
    metrics = Metrics()
    pipeline = _pipeline(buffer, metrics, queue_size=16, max_batch_items=2)
    buffer.commit_delay_s = 1.0  # slow commits: the queue must stop growing meanwhile
    task = asyncio.create_task(pipeline.run())

    async def produce() -> None:
        for i in range(200):
            await pipeline.emit(_obs(i))

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.3)
    assert not producer.done()
    assert pipeline.backlog <= 16 + 2 * 8
    assert metrics.device("ox-1").received == pipeline.backlog  # counted only once queued
    buffer.commit_delay_s = 0.0
    await producer
    pipeline.close()
    await task
    assert metrics.device("ox-1").accepted == 200
    await buffer.close()


async def test_failed_commit_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    buffer = await _open(tmp_path)
    buffer.failures_left = 3
    metrics = Metrics()
    pipeline = _pipeline(buffer, metrics)
    task = asyncio.create_task(pipeline.run())
    for i in range(20):
        await pipeline.emit(_obs(i))
    pipeline.close()
    await task
    items = await _items(buffer)
    assert sum(1 for item in items if "condition" not in item) == 20
    assert [(i["condition"], i["state"]) for i in items if "condition" in i] == [
        ("buffer_unavailable", "active"),
        ("buffer_unavailable", "cleared"),
    ]
    assert metrics.device("ox-1").accepted == 20
    assert metrics.storage_failures == 3
    await buffer.close()


async def test_buffer_refusing_at_shutdown_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "CLOSE_DEADLINE_S", 0.3)
    monkeypatch.setattr(storage_health, "RETRY_MAX_S", 0.05)
    buffer = await _open(tmp_path)
    metrics = Metrics()
    pipeline = _pipeline(buffer, metrics)
    task = asyncio.create_task(pipeline.run())
    buffer.failures_left = 10**9
    for i in range(10):
        await pipeline.emit(_obs(i))
    pipeline.close()
    with pytest.raises(StorageError) as err:
        await task
    assert err.value.fields["items"] == 11  # the ten values and the buffer_unavailable alarm
    assert metrics.device("ox-1").accepted == 0
    await buffer.close()


async def test_alarm_is_committed_at_once(tmp_path: Path) -> None:
    buffer = await _open(tmp_path)
    metrics = Metrics()
    alarms = AlarmEngine(
        AlarmsSection.model_validate({"limits": [{"quantity": "MDC_PULS_OXIM_SAT_O2", "low": 90, "priority": "high"}]})
    )
    pipeline = Pipeline(buffer, alarms, metrics, gateway_id="gw", patients={}, flush_interval_s=60.0)
    task = asyncio.create_task(pipeline.run())
    await asyncio.sleep(0.05)
    await pipeline.emit(Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 80.0, None, now_ns()))
    async with asyncio.timeout(5):
        await pipeline.stored.wait()  # long before the 60 s flush interval
    lanes = {s.lane: s.rows for s in await buffer.stats()}
    assert lanes[Lane.ALARMS] == 1
    pipeline.close()
    await task
    await buffer.close()


async def test_a_failing_alarm_listener_is_logged_and_the_alarm_still_stored(
    tmp_path: Path, captured_logs: io.StringIO
) -> None:
    """A listener (the demo's view, a HIL rig's timeline) that raises must not stop the pipeline: found by the
    scenario runner, whose first listener raised and took the whole gateway down with it."""
    buffer = await _open(tmp_path)
    alarms = AlarmEngine(
        AlarmsSection.model_validate({"limits": [{"quantity": "MDC_PULS_OXIM_SAT_O2", "low": 90, "priority": "high"}]})
    )
    pipeline = Pipeline(buffer, alarms, Metrics(), gateway_id="gw", patients={}, flush_interval_s=0.02)
    heard: list[str] = []

    def broken(_alarm: object) -> None:
        raise TypeError("a listener's own bug")

    pipeline.alarm_listeners += [broken, lambda alarm: heard.append(alarm.condition)]
    task = asyncio.create_task(pipeline.run())
    await pipeline.emit(Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 80.0, None, now_ns()))
    async with asyncio.timeout(5):
        await pipeline.stored.wait()
    assert not task.done()
    assert heard == ["MDC_PULS_OXIM_SAT_O2.low"]  # the listeners after the broken one still hear it
    assert {s.lane: s.rows for s in await buffer.stats()}[Lane.ALARMS] == 1
    assert "alarm listener failed" in captured_logs.getvalue()
    pipeline.close()
    await task
    await buffer.close()


async def test_every_stored_batch_fits_one_uplink_message(tmp_path: Path) -> None:
    buffer = await _open(tmp_path)
    pipeline = Pipeline(
        buffer,
        AlarmEngine(AlarmsSection()),
        Metrics(),
        gateway_id="gw",
        patients={},
        flush_interval_s=0.02,
        max_batch_items=5000,
        max_payload_bytes=20_000,
    )
    task = asyncio.create_task(pipeline.run())
    for i in range(3000):
        await pipeline.emit(_obs(i))
    pipeline.close()
    await task
    rows = await buffer.read({}, 10_000)
    assert all(len(r.payload) <= 20_000 for r in rows)
    assert sum(r.items for r in rows) == 3000
    await buffer.close()


async def test_while_the_buffer_refuses_alarms_keep_flowing_and_memory_stays_bounded(tmp_path: Path) -> None:
    buffer = await _open(tmp_path)
    buffer.failures_left = 10**9
    metrics = Metrics()
    alarms = AlarmEngine(
        AlarmsSection.model_validate({"limits": [{"quantity": "MDC_PULS_OXIM_SAT_O2", "low": 90, "priority": "high"}]})
    )
    bound = 200 * storage_health.EVENT_OVERHEAD_BYTES
    pipeline = Pipeline(
        buffer, alarms, metrics, gateway_id="gw", patients={}, flush_interval_s=0.02, memory_bound_bytes=bound
    )
    heard: list[str] = []
    pipeline.alarm_listeners.append(lambda alarm: heard.append(f"{alarm.condition}:{alarm.state}"))
    task = asyncio.create_task(pipeline.run())
    await pipeline.emit(_obs(0))
    await asyncio.sleep(0.1)  # its commit fails: the episode starts
    for i in range(1, 2000):  # ten times what the bound holds; never waits for the failing buffer
        await pipeline.emit(_obs(i))
    await pipeline.emit(Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 80.0, None, now_ns()))
    await asyncio.sleep(0.1)
    assert heard == ["buffer_unavailable:active", "MDC_PULS_OXIM_SAT_O2.low:active"]
    assert pipeline.held_bytes <= bound
    assert metrics.shed_items["numerics"] > 0 and not metrics.shed_items["alarms"]
    buffer.failures_left = 0
    pipeline.close()
    await task
    assert heard[-1] == "buffer_unavailable:cleared"
    stored = await _items(buffer)
    assert sum(1 for item in stored if "condition" in item) == 3  # every alarm, none shed
    assert metrics.device("ox-1").accepted + metrics.shed_items["numerics"] == 2002  # 2001 values, 1 alarm
    await buffer.close()


async def test_the_loop_waits_for_a_slow_commit_instead_of_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = await _open(tmp_path)
    buffer.commit_delay_s = 0.3  # fifteen flush intervals: each flush falls due while the commit is in flight
    pipeline = _pipeline(buffer, Metrics())
    turns = 0
    idle = Pipeline._idle

    async def counted(self: Pipeline, next_flush: float, next_escalation: float) -> None:
        nonlocal turns
        turns += 1
        await idle(self, next_flush, next_escalation)

    monkeypatch.setattr(Pipeline, "_idle", counted)
    task = asyncio.create_task(pipeline.run())
    await pipeline.emit(_obs(0))
    async with asyncio.timeout(5):
        await pipeline.stored.wait()
    turns_to_commit = turns
    pipeline.close()
    await task
    await buffer.close()
    # An event, a flush, the commit's end and the odd once-a-second check: a handful of turns, not a busy loop.
    assert turns_to_commit < 10
