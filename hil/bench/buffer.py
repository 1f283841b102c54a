"""The buffer benchmark: ingest rates into the encrypted buffer, storage density, and memory with a backlog.

- numeric_rows_per_s: Observations through the production pipeline (alarm rules, batching, JSON encoding,
  AES-256-GCM, SQLite WAL commit at the default synchronous mode), from emit to committed.
- waveform_samples_per_s / stored_bytes_per_ecg_sample: MIT-BIH record 100 (both leads, 360 Hz, sent as a
  bedside monitor would, in 0.25 s chunks) through the same path; stored bytes are the database file's size
  after a WAL checkpoint, divided by the samples (raw 16-bit samples would be 2.0).  Without the record,
  a synthetic ECG stands in and `ecg_source` says so.
- rss_mb / rss_growth_mb: resident memory while a backlog of `backlog_mb` is written and then read back
  through the uplink's windowed reads: memory must stay flat whatever the backlog.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.wfdb import WfdbError, physionet_dir, read_record
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmsSection
from gateway.core.backlog import NewRecord
from gateway.core.model import Event, Lane, Observation, WaveformChunk, new_id, now_ns
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import generate_key_file, load_keyring
from hil.physiology import SyntheticEcg

NUMERIC_ROWS = 300_000
CHUNK_S = 0.25
TARGETS = {
    "numeric_rows_per_s": (">=", 50_000),
    "waveform_samples_per_s": (">=", 2_000_000),
    "stored_bytes_per_ecg_sample": ("<=", 1.2),
}


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _pipeline(buffer: Buffer) -> Pipeline:
    return Pipeline(
        buffer, AlarmEngine(AlarmsSection()), Metrics(), gateway_id="bench", patients={}, flush_interval_s=0.2
    )


async def _ingest(buffer: Buffer, events: list[Event]) -> float:
    """Seconds from the first emit until the last event is committed."""
    pipeline = _pipeline(buffer)
    start = time.perf_counter()
    task = asyncio.create_task(pipeline.run())
    for event in events:
        await pipeline.emit(event)
    pipeline.close()
    await task
    return time.perf_counter() - start


def _numeric_events() -> list[Event]:
    refs = ("MDC_PULS_OXIM_SAT_O2", "MDC_PULS_OXIM_PULS_RATE", "MDC_ECG_HEART_RATE", "MDC_CONC_GLU_ISF")
    quantities = [quantity(r) for r in refs]
    t = now_ns()
    return [
        Observation(new_id(), f"dev-{i % 8}", quantities[i % 4], 60.0 + i % 40, t + i * 1000, t)
        for i in range(NUMERIC_ROWS)
    ]


def _ecg_events(record: Path | None) -> tuple[list[Event], int, str]:
    base = record or physionet_dir() / "100"
    leads: list[tuple[np.ndarray, float, float, float, str]] = []
    try:
        rec = read_record(base)
        for i, spec in enumerate(rec.signals[:2]):
            # Store ADC units with the record's calibration: physical uV = (adc - baseline) * 1000 / gain.
            leads.append((rec.data[i], rec.rate_hz(i), 1000.0 / spec.gain, float(spec.baseline), spec.description))
        source = f"WFDB record {base.name}"
    except WfdbError:
        ecg = SyntheticEcg(360.0)
        leads = [(ecg.next(650_000), 360.0, 1.0, 0.0, "synthetic")]
        source = "synthetic ECG (WFDB record not found)"
    refs = {"MLII": "MDC_ECG_ELEC_POTL_II", "V5": "MDC_ECG_ELEC_POTL_V5", "V1": "MDC_ECG_ELEC_POTL_V1"}
    events: list[Event] = []
    total = 0
    t0 = now_ns()
    for samples, rate, gain, offset, name in leads:
        q = quantity(refs.get(name, "MDC_ECG_ELEC_POTL"))
        step = round(rate * CHUNK_S)
        for start in range(0, len(samples), step):
            chunk = np.ascontiguousarray(samples[start : start + step], dtype=np.int32)
            t_dev = t0 + round(start * 1e9 / rate)
            events.append(WaveformChunk(new_id(), "monitor-1", q, chunk, rate, gain, offset, t_dev, now_ns()))
        total += len(samples)
    # Interleave the leads as a monitor would send them.
    events.sort(key=lambda e: (e.start_device_time_ns or 0) if isinstance(e, WaveformChunk) else 0)
    return events, total, source


async def _backlog(folder: Path, keyring_path: Path, backlog_mb: int) -> tuple[float, float]:
    """Write `backlog_mb` of rows, then read them all back in uplink-sized windows; (peak RSS, growth)."""
    buffer = await Buffer.open(folder / "backlog.db", load_keyring(keyring_path))
    try:
        payload = os.urandom(60_000)
        before = rss_mb()
        peak = before
        rows = backlog_mb * 1024 * 1024 // (len(payload) + 100)
        batch = [NewRecord(Lane.WAVEFORMS, "monitor-1", payload, 1)] * 16
        for _ in range(0, rows, len(batch)):
            await buffer.append(batch)
            peak = max(peak, rss_mb())
        cursors: dict[Lane, int] = {}
        while True:
            records = await buffer.read(cursors, 32)
            if not records:
                break
            cursors[Lane.WAVEFORMS] = records[-1].seq
            peak = max(peak, rss_mb())
        return peak, peak - before
    finally:
        await buffer.close()


def _file_bytes(folder: Path, name: str) -> int:
    """The database file plus whatever WAL and shared-memory files it left."""
    return sum(path.stat().st_size for path in folder.glob(f"{name}*"))


async def bench_buffer(record: Path | None = None, backlog_mb: int = 1024, **_: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="iomt-bench-", dir=os.environ.get("IOMT_BENCH_DIR")) as tmp:
        folder = Path(tmp)
        key = folder / "bench.key"
        generate_key_file(key)
        keyring = load_keyring(key)

        events = _numeric_events()
        buffer = await Buffer.open(folder / "numerics.db", keyring)
        elapsed = await _ingest(buffer, events)
        await buffer.close()
        figures["numeric_rows_per_s"] = round(len(events) / elapsed)
        del events

        waves, samples, source = _ecg_events(record)
        buffer = await Buffer.open(folder / "waveforms.db", keyring)
        elapsed = await _ingest(buffer, waves)
        await buffer.checkpoint()
        await buffer.close()
        stored = _file_bytes(folder, "waveforms.db")
        figures["waveform_samples_per_s"] = round(samples / elapsed)
        figures["stored_bytes_per_ecg_sample"] = round(stored / samples, 3)
        figures["ecg_samples"] = samples
        figures["ecg_source"] = source
        del waves

        peak, growth = await _backlog(folder, key, backlog_mb)
        figures["rss_mb"] = round(peak, 1)
        figures["rss_growth_mb"] = round(growth, 1)
        figures["backlog_mb"] = backlog_mb
    figures["synchronous"] = "normal"
    figures["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
    figures["targets_met"] = all(
        (figures[k] >= v) if op == ">=" else (figures[k] <= v) for k, (op, v) in TARGETS.items()
    )
    return figures
