"""The buffer's promises under crashes, at rest, when full, and across versions and key rotations."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.buffer.inspect import key_ids_in_use, summarize
from gateway.buffer.store import associated_data
from gateway.config import AlarmsSection
from gateway.core.backlog import NewRecord
from gateway.core.errors import BufferKeyError
from gateway.core.model import (
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    Lane,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
)
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import generate_key_file, load_keyring, prune_key_file, rotate_key_file
from gateway.storage.sqlite import schema_scripts, split_sql
from tests.support.crash_ingest import value_id

CYCLES = 20


async def _all_items(db: Path, key: Path) -> list[dict[str, object]]:
    buffer = await Buffer.open(db, load_keyring(key))
    try:
        items: list[dict[str, object]] = []
        for record in await buffer.read({}, 10_000_000):
            items.extend(json.loads(record.payload)["items"])
        return items
    finally:
        await buffer.close()


async def test_sigkill_at_random_instants_loses_nothing_accepted(tmp_path: Path) -> None:
    db, key = tmp_path / "crash.db", tmp_path / "crash.key"
    generate_key_file(key)
    rng = random.Random(20261126)
    reported: dict[int, int] = {}
    for cycle in range(CYCLES):
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.crash_ingest",
            str(db),
            str(key),
            str(cycle),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert child.stdout is not None
        accepted = 0
        try:
            async with asyncio.timeout(30):
                first = await child.stdout.readline()  # ingesting at full speed now
                accepted = int(first.split()[1])
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            child.send_signal(signal.SIGKILL)
            rest = await child.stdout.read()
        finally:
            if child.returncode is None:
                child.kill()
            await child.wait()
        for line in rest.decode().splitlines():
            if line.startswith("ACCEPTED "):
                accepted = int(line.split()[1])
        reported[cycle] = accepted
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", cycle

    ids = Counter(str(item["id"]) for item in await _all_items(db, key))
    duplicated = [i for i, n in ids.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} values stored twice"
    for cycle, accepted in reported.items():
        assert accepted > 0, cycle
        missing = [i for i in range(accepted) if value_id(cycle, i) not in ids]
        assert not missing, f"cycle {cycle}: {len(missing)} accepted values missing"
    print(f"crash test: {CYCLES} SIGKILLs, {sum(reported.values())} accepted values, all present once")


async def test_no_plaintext_value_patient_id_or_sample_on_disk(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    db = tmp_path / "marker.db"
    buffer = await Buffer.open(db, load_keyring(key))
    patient = "pt-MARKER-4711"
    marker_value = 123.456789
    marker_samples = np.array([0x13572468, -0x2468ACE, 0x0BADF00D] * 400, dtype=np.int32)
    pipeline = Pipeline(
        buffer,
        AlarmEngine(AlarmsSection()),
        Metrics(),
        gateway_id="gw",
        patients={"ox-1": patient, "ecg-1": patient},
        flush_interval_s=0.01,
    )
    task = asyncio.create_task(pipeline.run())
    for _ in range(2000):
        await pipeline.emit(
            Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), marker_value, None, now_ns())
        )
    await pipeline.emit(
        WaveformChunk(new_id(), "ecg-1", quantity("MDC_ECG_ELEC_POTL"), marker_samples, 130.0, 1.0, 0.0, 0, now_ns())
    )

    def scan(*, wal_expected: bool) -> None:
        files = [p for p in tmp_path.iterdir() if p.name.startswith("marker.db")]
        if wal_expected:
            assert any(p.name.endswith("-wal") and p.stat().st_size > 0 for p in files), "WAL holds data"
        for path in files:
            data = path.read_bytes()
            for needle in (
                patient.encode(),
                b"123.456789",
                struct.pack("<d", marker_value),
                marker_samples[:3].tobytes(),
                b"MDC_PULS_OXIM",
                b"150456",
            ):
                assert needle not in data, (path.name, needle)

    await asyncio.sleep(0.2)
    scan(wal_expected=True)  # while open: the WAL holds the newest pages
    pipeline.close()
    await task
    await buffer.close()
    scan(wal_expected=False)  # after close (checkpointed into the main file)


async def test_full_budget_evicts_waveforms_and_keeps_every_alarm(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    budget = 400_000
    buffer = await Buffer.open(tmp_path / "evict.db", load_keyring(key), max_bytes=budget)
    metrics = Metrics()
    pipeline = Pipeline(
        buffer,
        AlarmEngine(AlarmsSection()),
        metrics,
        gateway_id="gw",
        patients={},
        flush_interval_s=0.01,
        waveform_record_s=1.0,
    )
    task = asyncio.create_task(pipeline.run())
    rng = np.random.default_rng(1)
    q = quantity("MDC_ECG_ELEC_POTL")
    t = 0
    for _ in range(400):  # ~1.4 MB of hard-to-compress waveform: far over budget
        samples = rng.integers(-30000, 30000, 500).astype(np.int32)
        await pipeline.emit(WaveformChunk(new_id(), "ecg-1", q, samples, 500.0, 1.0, 0.0, t, now_ns()))
        t += 1_000_000_000
    alarms = [
        Alarm(
            new_id(),
            "ox-1",
            "MDC_PULS_OXIM_SAT_O2.low",
            AlarmKind.PHYSIOLOGICAL,
            AlarmPriority.HIGH,
            AlarmState.ACTIVE,
            now_ns(),
            quantity("MDC_PULS_OXIM_SAT_O2"),
        )
        for _ in range(3000)
    ]
    for alarm in alarms:
        await pipeline.emit(alarm)
    pipeline.close()
    await task

    items = await _all_items(tmp_path / "evict.db", key)
    stored_alarm_ids = {i["id"] for i in items if i.get("condition") == "MDC_PULS_OXIM_SAT_O2.low"}
    assert stored_alarm_ids == {a.id for a in alarms}, "every alarm kept"
    waveform_items = sum(int(i.get("chunks", 0)) for i in items if "rate_hz" in i)  # type: ignore[call-overload]
    assert waveform_items < 400, "waveforms were evicted"
    assert metrics.evicted_items["waveforms"] == 400 - waveform_items
    assert metrics.evicted_items["alarms"] == 0
    # The eviction was reported as a technical alarm that is itself stored for sync, with its counts.
    reports = [i for i in items if i.get("condition") == "buffer_evicting"]
    assert reports and reports[0]["state"] == "active" and reports[0]["kind"] == "technical"
    summary = summarize(tmp_path / "evict.db")
    lanes = {lane.lane: lane for lane in summary.lanes}
    assert lanes["alarms"].rows > 0
    # Alarms alone may exceed the budget (they are never evicted); everything evictable went first.
    assert lanes["waveforms"].bytes <= budget


async def test_database_written_by_schema_v1_opens_and_migrates(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    keyring = load_keyring(key)
    db = tmp_path / "v1.db"
    version, script = schema_scripts("gateway.buffer")[0]
    assert version == 1
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in split_sql(script):
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
        aead = AESGCM(keyring.active_key)
        for seq in (1, 2):
            nonce = bytes(12 - 1) + bytes([seq])
            sealed = aead.encrypt(nonce, b"payload %d" % seq, associated_data(Lane.NUMERICS, "ox", seq, "k1"))
            conn.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, int(Lane.NUMERICS), "ox", "k1", nonce, sealed, 1, now_ns()),
            )
    buffer = await Buffer.open(db, keyring)
    try:
        assert [r.payload for r in await buffer.read({}, 10)] == [b"payload 1", b"payload 2"]
        assert buffer.total_bytes > 0  # sizes back-filled by the migration
        await buffer.append([NewRecord(Lane.NUMERICS, "ox", b"payload 3", 1)])
    finally:
        await buffer.close()
    assert summarize(db).schema_version == 2


async def test_key_rotation_keeps_old_rows_readable_and_prune_keeps_needed_keys(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    db = tmp_path / "rot.db"
    buffer = await Buffer.open(db, load_keyring(key))
    await buffer.append([NewRecord(Lane.NUMERICS, "ox", b"old", 1)])
    await buffer.close()
    assert rotate_key_file(key) == "k2"
    buffer = await Buffer.open(db, load_keyring(key))
    await buffer.append([NewRecord(Lane.NUMERICS, "ox", b"new", 1)])
    rows = await buffer.read({}, 10)
    assert [r.payload for r in rows] == [b"old", b"new"]
    assert key_ids_in_use(db) == {"k1", "k2"}
    assert prune_key_file(key, key_ids_in_use(db)) == []  # k1 still seals a row
    await buffer.delete([rows[0].seq])  # the old row was synced
    await buffer.close()
    assert prune_key_file(key, key_ids_in_use(db)) == ["k1"]
    assert set(load_keyring(key).keys) == {"k2"}
    # Losing a key that rows still need is a clear start-up error, never silent.
    buffer = await Buffer.open(db, load_keyring(key))
    await buffer.append([NewRecord(Lane.NUMERICS, "ox", b"x", 1)])
    await buffer.close()
    other = tmp_path / "other"
    generate_key_file(other, key_id="k9")
    with pytest.raises(BufferKeyError):
        await Buffer.open(db, load_keyring(other))


def test_buffer_stats_cli_reads_without_the_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key_file(key)

    async def fill() -> None:
        buffer = await Buffer.open(tmp_path / "s.db", load_keyring(key))
        await buffer.append([NewRecord(Lane.ALARMS, "ox", b"a", 1), NewRecord(Lane.WAVEFORMS, "ecg", b"w" * 100, 7)])
        await buffer.close()

    asyncio.run(fill())
    key.unlink()  # a technician without the key can still see the backlog
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "buffer", "stats", "--db", str(tmp_path / "s.db"), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    lanes = {lane["lane"]: lane for lane in stats["lanes"]}
    assert lanes["alarms"]["rows"] == 1 and lanes["waveforms"]["items"] == 7
    assert lanes["waveforms"]["oldest_age_s"] >= 0 and lanes["numerics"]["oldest_age_s"] is None
    table = subprocess.run(
        [sys.executable, "-m", "gateway", "buffer", "stats", "--db", str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert table.returncode == 0 and "waveforms" in table.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "gateway", "buffer", "stats", "--db", str(tmp_path / "no.db")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert missing.returncode == 1 and "no buffer database" in missing.stderr


def test_bench_buffer_reports_its_contract_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "buffer", "--json", "--backlog-mb", "32"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ("numeric_rows_per_s", "waveform_samples_per_s", "stored_bytes_per_ecg_sample", "rss_mb"):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key


async def test_free_disk_below_floor_stops_growth_like_a_full_budget(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    db = tmp_path / "floor.db"
    # A floor no disk can meet: what the file cannot absorb in its free pages is freed from the lowest lanes.
    buffer = await Buffer.open(db, load_keyring(key), min_free_disk_bytes=1 << 62)
    try:
        numeric = await buffer.append([NewRecord(Lane.NUMERICS, "ox", b"n" * 1000, 1)])
        assert numeric.eviction.by_lane == {Lane.NUMERICS: 1}  # nothing older to make room: the row itself goes
        alarms = [await buffer.append([NewRecord(Lane.ALARMS, "ox", b"a" * 3000, 1)]) for _ in range(20)]
        assert all(a.eviction.rows == 0 for a in alarms)  # never evicted; over quota when the file had to grow
        assert any(a.eviction.over_quota for a in alarms)
        both = await buffer.append(
            [NewRecord(Lane.WAVEFORMS, "ecg", b"w" * 3000, 1), NewRecord(Lane.NUMERICS, "ox", b"n" * 3000, 1)]
        )
        assert next(iter(both.eviction.by_lane)) is Lane.WAVEFORMS  # lowest lane first
        assert {r.lane for r in await buffer.read({}, 100)} == {Lane.ALARMS}
        await buffer.checkpoint()
        size = db.stat().st_size
        for _ in range(50):  # far more than the file holds: it does not grow, the waveforms make room
            await buffer.append([NewRecord(Lane.WAVEFORMS, "ecg", b"w" * 3000, 1)])
        await buffer.checkpoint()
        assert db.stat().st_size <= size + 2 * 4096
        # Rows the uplink delivered and deleted leave free pages: a commit that fits in them evicts nothing.
        delivered = [r.seq for r in await buffer.read({}, 100) if r.lane is Lane.ALARMS]
        await buffer.delete(delivered[:10])
        fits = await buffer.append([NewRecord(Lane.WAVEFORMS, "ecg", b"w" * 3000, 1)])
        assert fits.eviction.rows == 0
    finally:
        await buffer.close()
