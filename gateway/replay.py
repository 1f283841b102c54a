"""`iomt-gateway replay PATH`: stream a WFDB record through the pipeline as a simulated bedside monitor.

Every ECG lead of the record, and its pleth, arterial pressure and respiration waves, become WaveformChunks of
one second each, in record time, fed to the production pipeline (the rhythm analysis of every signal with the
beat classifier, the alarm rules, batching, the encrypted buffer in a temporary directory): what replay
measures is what a patient on the gateway gets.  The alarms it raises are listed with their time in the
record, kind and priority: a way to check the alarm logic against any recording, offline.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_ml.beats import MODEL_NAME
from edge_ml.runtime import ModelError, bundled, load_model
from edge_ml.wfdb import Record, read_record
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmsSection
from gateway.core.model import Alarm, WaveformChunk, new_id
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import generate_key_file, load_keyring

DEVICE = "replay-monitor"
START_NS = 1_700_000_000 * 10**9  # record time zero on the gateway clock (any fixed instant will do)

# Signal names as PhysioNet records spell them.  "V" and "MCL" (a monitor's one chest lead, which one
# unsaid) have no lead of their own in 11073-10101: they go out as the unspecified lead.
SIGNALS = {
    "mlii": "MDC_ECG_ELEC_POTL_II",
    "ii": "MDC_ECG_ELEC_POTL_II",
    "i": "MDC_ECG_ELEC_POTL_I",
    "iii": "MDC_ECG_ELEC_POTL_III",
    "avr": "MDC_ECG_ELEC_POTL_AVR",
    "avl": "MDC_ECG_ELEC_POTL_AVL",
    "avf": "MDC_ECG_ELEC_POTL_AVF",
    "v1": "MDC_ECG_ELEC_POTL_V1",
    "v2": "MDC_ECG_ELEC_POTL_V2",
    "v3": "MDC_ECG_ELEC_POTL_V3",
    "v4": "MDC_ECG_ELEC_POTL_V4",
    "v5": "MDC_ECG_ELEC_POTL_V5",
    "v6": "MDC_ECG_ELEC_POTL_V6",
    "v": "MDC_ECG_ELEC_POTL",
    "mcl": "MDC_ECG_ELEC_POTL",
    "mcl1": "MDC_ECG_ELEC_POTL",
    "ecg": "MDC_ECG_ELEC_POTL",
    "abp": "MDC_PRESS_BLD_ART_ABP",
    "art": "MDC_PRESS_BLD_ART_ABP",
    "pleth": "MDC_PULS_OXIM_PLETH",
    "ppg": "MDC_PULS_OXIM_PLETH",
    "resp": "MDC_IMPED_TTHOR",
}


def channels(record: Record) -> list[tuple[int, str]]:
    """(signal index, MDC reference id) of every signal the gateway knows, each quantity once."""
    out: list[tuple[int, str]] = []
    for i, spec in enumerate(record.signals):
        ref = SIGNALS.get(spec.description.strip().lower())
        if ref is not None and ref not in {r for _, r in out}:
            out.append((i, ref))
    return out


def beat_model() -> Any:
    """The bundled beat classifier, or None (the rules then stand in) when it cannot be loaded."""
    try:
        return load_model(bundled(MODEL_NAME))
    except ModelError:
        return None


async def replay(path: Path, alarms: AlarmsSection | None = None, model: Any = None) -> dict[str, Any]:
    """Replay one record; its signals, the alarms raised (record time), and the samples per second."""
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
            beat_model=model if model is not None else beat_model(),
        )

        def collect(alarm: Alarm) -> None:
            raised.append(
                {
                    "t_s": round((alarm.gateway_time_ns - START_NS) / 1e9, 2),
                    "condition": alarm.condition,
                    "kind": alarm.kind.value,
                    "priority": alarm.priority.value,
                    "state": alarm.state.value,
                    **({"lead": alarm.detail["lead"]} if "lead" in alarm.detail else {}),
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
                chunk[chunk == record.invalid_value(index)] = spec.baseline
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
