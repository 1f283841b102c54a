"""Storage faults degrade, never kill: a full disk, a locked database, a full disk at start-up, an edited row.

Each fault is real: a tmpfs of a few MB that another process fills to 100 %, another process holding SQLite's
exclusive lock, a row edited with the sqlite3 module.  During the fault the gateway keeps running, raises the
high-priority technical alarm `buffer_unavailable`, keeps publishing alarms on the local channel, holds what it
received in memory within its bound, and commits it once the disk is back: no alarm is lost.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cloud_sync.mqtt import MqttClient
from gateway.buffer import Buffer
from gateway.config import parse_config
from gateway.core.backlog import NewRecord
from gateway.core.model import Alarm, Lane
from gateway.storage.keys import generate_key_file, load_keyring
from tests.conftest import Mosquitto, config_dict
from tests.support.harness import Running, bench_figures, in_background, running_gateway
from tests.support.storage_faults import database_locked, fill, small_filesystem


@asynccontextmanager
async def nurse_station(port: int) -> AsyncIterator[list[dict[str, Any]]]:
    """What a ward display subscribed to the local alarm channel sees, in order."""
    seen: list[dict[str, Any]] = []
    async with MqttClient("127.0.0.1", port, client_id=f"nurse-{time.time_ns()}") as client:
        await client.subscribe("iomt/local/test-gw/alarms/#", qos=1)

        async def listen() -> None:
            async for message in client.messages:
                seen.append(json.loads(bytes(message.payload)))

        async with in_background(listen()):
            yield seen


def _config(state_dir: Path, port: int) -> dict[str, Any]:
    data = config_dict(state_dir, port)
    data["devices"] = data["devices"][:2]  # an ECG patch (waveforms) and an oximeter
    data["alarms"]["local"] = {"host": "127.0.0.1", "port": port}
    data["buffer"]["min_free_disk_mb"] = 0  # the fault under test is the disk filling, not the quota
    return data


def _raised(run: Running) -> list[Alarm]:
    alarms: list[Alarm] = []
    run.gateway.parts.pipeline.alarm_listeners.append(alarms.append)  # type: ignore[union-attr]
    return alarms


def _states(seen: list[dict[str, Any]], condition: str) -> list[str]:
    return [a["state"] for a in seen if a["condition"] == condition]


async def _until(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _drop_oximeter_link(run: Running, seen: list[dict[str, Any]]) -> None:
    """A device alarm while storage is down: the oximeter's link drops (device_disconnected, then cleared)."""
    before = len(_states(seen, "device_disconnected"))
    run.world.peripherals["ox-1"].drop_links()
    await _until(lambda: len(_states(seen, "device_disconnected")) >= before + 2)


async def _every_alarm_reaches_the_cloud(run: Running, raised: list[Alarm]) -> None:
    await run.finish()
    ids = {a.id for a in raised}
    delivered = {i for i, item in run.receiver.items.items() if item["lane"] == "alarms"}
    assert ids and ids <= delivered, f"{len(ids - delivered)} alarms lost"


async def test_disk_filled_by_another_writer_degrades_keeps_local_alarms_and_recovers(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    with small_filesystem(tmp_path / "disk", 8) as disk:
        config = parse_config(_config(disk / "state", mosquitto.port))
        async with nurse_station(mosquitto.port) as seen, running_gateway(config, receiver_port=mosquitto.port) as run:
            raised = _raised(run)
            await run.wait_until(lambda: run.gateway.metrics.rows_written > 3)
            filler = fill(disk)
            await _until(lambda: "active" in _states(seen, "buffer_unavailable"))
            alarm = next(a for a in seen if a["condition"] == "buffer_unavailable")
            assert (alarm["priority"], alarm["kind"], alarm["device"]) == ("high", "technical", "test-gw")
            await _drop_oximeter_link(run, seen)  # alarms keep flowing locally while nothing can be stored
            assert not run.task.done()
            filler.unlink()
            await _until(lambda: "cleared" in _states(seen, "buffer_unavailable"))
            episode = [a for a in seen if a["condition"] == "buffer_unavailable"]
            assert len({a["alarm_id"] for a in episode}) == 1, "raise and clear name one alarm"
            assert run.gateway.metrics.storage_failures > 0
            await _every_alarm_reaches_the_cloud(run, raised)
            assert run.gateway.metrics.shed_items.total() == 0  # the outage fitted in the memory bound


async def test_database_locked_by_another_process_degrades_and_recovers(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = parse_config(_config(tmp_path / "state", mosquitto.port))
    async with nurse_station(mosquitto.port) as seen, running_gateway(config, receiver_port=mosquitto.port) as run:
        raised = _raised(run)
        await run.wait_until(lambda: run.gateway.metrics.rows_written > 3)
        with database_locked(config.state_dir / config.buffer.path, 12.0) as locker:  # 12 s, as seen on a ward
            await _until(lambda: "active" in _states(seen, "buffer_unavailable"))
            await _drop_oximeter_link(run, seen)
            assert not run.task.done()
            await asyncio.to_thread(locker.wait, 30)
        await _until(lambda: "cleared" in _states(seen, "buffer_unavailable"))
        await _every_alarm_reaches_the_cloud(run, raised)


async def test_start_on_a_full_disk_comes_up_degraded_then_stores(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with small_filesystem(tmp_path / "disk", 4) as disk:
        state = disk / "state"
        config = parse_config(_config(state, mosquitto.port))
        filler = fill(disk)
        async with nurse_station(mosquitto.port) as seen, running_gateway(config, receiver_port=mosquitto.port) as run:
            raised = _raised(run)
            await _until(lambda: "active" in _states(seen, "buffer_unavailable"))
            assert run.gateway.metrics.rows_written == 0
            filler.unlink()
            await _until(lambda: "cleared" in _states(seen, "buffer_unavailable"))
            await run.wait_until(lambda: run.gateway.metrics.rows_written > 3)
            await _every_alarm_reaches_the_cloud(run, raised)


async def test_a_row_naming_an_unknown_key_is_quarantined_at_start_not_fatal(tmp_path: Path) -> None:
    key = tmp_path / "buffer.key"
    generate_key_file(key)
    db = tmp_path / "b.db"
    buffer = await Buffer.open(db, load_keyring(key))
    await buffer.append([NewRecord(Lane.ALARMS, "ox", b"first", 1), NewRecord(Lane.ALARMS, "ox", b"second", 1)])
    await buffer.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE records SET key_id = 'k7' WHERE seq = 1")  # an edit: no key is needed to do it
    buffer = await Buffer.open(db, load_keyring(key))
    try:
        assert [r.payload for r in await buffer.read({}, 10)] == [b"second"]
        assert buffer.quarantined == 1
    finally:
        await buffer.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT seq, reason FROM quarantine").fetchall() == [(1, "unknown_key")]


def test_bench_soak_reports_its_contract_keys() -> None:
    """A short soak (every fault, a 12 MB object instead of 300 MB): the contract keys, and nothing lost."""
    figures = bench_figures("soak", "--minutes", "0.5", "--dicom-mb", "12", timeout_s=170)
    for key in ("rss_mb_max", "rss_growth_mb", "values_lost", "alarms_lost", "crashes"):
        assert isinstance(figures[key], int | float), key
    assert figures["values_lost"] == 0 and figures["alarms_lost"] == 0 and figures["crashes"] == 0
    assert figures["dicom_big_status"] == "0x0000" and figures["hl7_messages_acknowledged"] > 0
    assert set(figures["faults"]) | {s.split(":")[0] for s in figures["faults_skipped"]} == {
        "broker_outage",
        "disk_full",
        "hl7_slot_flood",
        "large_dicom",
    }
