"""`iomt-gateway replay PATH`: stream a WFDB record through the pipeline as a simulated bedside monitor.

The record's ECG (and its pleth and arterial pressure, when it has them) becomes WaveformChunks of one
second each, in record time, fed to the production pipeline (alarm rules, ECG analysis with the beat model,
batching, the encrypted buffer in a temporary directory).  The alarms it raises are printed with their time
in the record, kind and priority: a way to check the alarm logic against any recording, offline.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.runtime import bundled, load_model
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer, generate_key_file, load_keyring
from gateway.config import AlarmsSection
from gateway.metrics import Metrics
from gateway.model import Alarm, WaveformChunk, new_id
from gateway.nomenclature import quantity
from gateway.pipeline import Pipeline
from hil.wfdb import Record, read_record

DEVICE = "replay-monitor"
START_NS = 1_700_000_000 * 10**9  # record time zero on the gateway clock (any fixed instant will do)

ECG_LEADS = {
    "mlii": "MDC_ECG_ELEC_POTL_II",
    "ii": "MDC_ECG_ELEC_POTL_II",
    "i": "MDC_ECG_ELEC_POTL_I",
    "iii": "MDC_ECG_ELEC_POTL_III",
    "v1": "MDC_ECG_ELEC_POTL_V1",
    "v5": "MDC_ECG_ELEC_POTL_V5",
    "mcl1": "MDC_ECG_ELEC_POTL",
    "ecg": "MDC_ECG_ELEC_POTL",
}
OTHER = {
    "abp": "MDC_PRESS_BLD_ART_ABP",
    "art": "MDC_PRESS_BLD_ART_ABP",
    "pleth": "MDC_PULS_OXIM_PLETH",
    "ppg": "MDC_PULS_OXIM_PLETH",
}


def channels(record: Record) -> list[tuple[int, str]]:
    """(signal index, MDC reference id): the first ECG lead, and pleth/pressure when present."""
    out: list[tuple[int, str]] = []
    for i, spec in enumerate(record.signals):
        name = spec.description.strip().lower()
        if name in ECG_LEADS and not any(ref.startswith("MDC_ECG_ELEC_POTL") for _, ref in out):
            out.append((i, ECG_LEADS[name]))
        elif name in OTHER and OTHER[name] not in {ref for _, ref in out}:
            out.append((i, OTHER[name]))
    return out


async def replay(path: Path, alarms: AlarmsSection | None = None) -> dict[str, Any]:
    record = read_record(path)
    selected = channels(record)
    if not selected:
        return {"record": path.name, "error": "no ECG, pleth or pressure signal in this record"}
    raised: list[dict[str, Any]] = []
    samples = 0
    with tempfile.TemporaryDirectory(prefix="iomt-replay-") as tmp:
        key = Path(tmp) / "k"
        generate_key_file(key)
        buffer = await Buffer.open(Path(tmp) / "replay.db", load_keyring(key))
        engine = AlarmEngine(alarms or AlarmsSection(), {DEVICE: "replay"})
        pipeline = Pipeline(
            buffer,
            engine,
            Metrics(),
            gateway_id="replay",
            patients={DEVICE: None},
            beat_model=load_model(bundled("ecg_beat_autoencoder")),
        )

        def collect(alarm: Alarm) -> None:
            raised.append(
                {
                    "t_s": round((alarm.gateway_time_ns - START_NS) / 1e9, 2),
                    "condition": alarm.condition,
                    "kind": alarm.kind.value,
                    "priority": alarm.priority.value,
                    "state": alarm.state.value,
                }
            )

        pipeline.alarm_listeners.append(collect)
        task = asyncio.create_task(pipeline.run())
        started = time.perf_counter()
        duration = min(len(record.data[i]) / record.rate_hz(i) for i, _ in selected)
        for second in range(int(duration)):
            for index, ref in selected:
                rate = record.rate_hz(index)
                lo, hi = round(second * rate), round((second + 1) * rate)
                spec = record.signals[index]
                chunk = np.array(record.data[index][lo:hi], dtype=np.int32)
                # WFDB's "no sample" value: the monitor had nothing here; send its baseline (0 mV, a flat line).
                chunk[chunk == record.invalid_value(index)] = record.signals[index].baseline
                q = quantity(ref)
                # ADC units with the record's calibration: physical = (adc - baseline) / gain, in uV for ECG.
                scale = 1000.0 / spec.gain if q.ucum == "uV" else 1.0 / spec.gain
                t = START_NS + second * 10**9
                await pipeline.emit(
                    WaveformChunk(new_id(), DEVICE, q, chunk, rate, scale, float(spec.baseline), t, t + 10**9)
                )
                samples += len(chunk)
        pipeline.close()
        await task
        elapsed = time.perf_counter() - started
        await buffer.close()
    return {
        "record": path.name,
        "duration_s": round(duration, 1),
        "signals": [
            {"name": record.signals[i].description, "quantity": ref, "rate_hz": record.rate_hz(i)}
            for i, ref in selected
        ],
        "alarms": raised,
        "samples_per_s": round(samples / elapsed) if elapsed else None,
    }
