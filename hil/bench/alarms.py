"""The alarm benchmark: the gateway's arrhythmia alarms against a bedside monitor's, on real ICU recordings.

`iomt-gateway bench alarms --dataset DIR` reads DIR/ALARMS (`record,type,1|0`: the type of alarm a monitor
raised at 300 s of the record, and whether experts judged it true), replays every record causally through the
production pipeline (`gateway.replay`: every ECG lead, pleth and arterial pressure, the beat classifier, the
rules), and scores it as the PhysioNet/CinC Challenge 2015 does:

- the gateway *agrees* with the monitor when an alarm of the monitor's type is active at any moment in
  [285, 302] s of record time;
- TP = true alarm and agrees, FN = true and silent, FP = false and agrees, TN = false and silent;
- `score` = 100 (TP + TN) / (TP + TN + FP + 5 FN): a missed true alarm costs five false ones.

Also: `tpr`, `tnr`, `per_type` (tp, fn, fp, tn per type), `other_alarms_per_hour` (physiological alarms going
active outside the window, per hour of recording), `records`, `records_per_s`.  Records are replayed in
parallel, one process per core.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from edge_ml.alarm_set import CONDITIONS

WINDOW_S = (285.0, 302.0)
MONITOR_TYPES = {
    "Asystole": "asystole",
    "Bradycardia": "extreme_bradycardia",
    "Tachycardia": "extreme_tachycardia",
    "Ventricular_Tachycardia": "ventricular_tachycardia",
    "Ventricular_Flutter_Fib": "ventricular_fibrillation",
}
TARGETS = {"score": (">=", 85.0), "tpr": (">=", 0.95)}


def active_spans(alarms: list[dict[str, Any]], condition: str, end_s: float) -> list[tuple[float, float]]:
    """[start, end) spans in record time during which `condition` was active."""
    spans: list[tuple[float, float]] = []
    since: float | None = None
    for alarm in alarms:
        if alarm["condition"] != condition:
            continue
        if alarm["state"] == "active" and since is None:
            since = alarm["t_s"]
        elif alarm["state"] == "cleared" and since is not None:
            spans.append((since, alarm["t_s"]))
            since = None
    if since is not None:
        spans.append((since, end_s))
    return spans


def _replay_one(path: str) -> dict[str, Any]:
    from gateway.replay import replay  # noqa: PLC0415 - in the worker process

    return asyncio.run(replay(Path(path)))


def read_alarm_list(dataset: Path) -> list[tuple[str, str, bool]]:
    """(record, gateway condition, true alarm) from DATASET/ALARMS; ValueError names a bad line."""
    rows = []
    for number, line in enumerate((dataset / "ALARMS").read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or parts[1] not in MONITOR_TYPES or parts[2] not in {"0", "1"}:
            raise ValueError(f"ALARMS line {number}: expected record,type,0|1")
        rows.append((parts[0], MONITOR_TYPES[parts[1]], parts[2] == "1"))
    return rows


def score(results: list[tuple[str, str, bool, list[dict[str, Any]], float]]) -> dict[str, Any]:
    """Challenge scoring of (record, condition, truth, alarms raised, duration) rows."""
    per_type = {c: {"tp": 0, "fn": 0, "fp": 0, "tn": 0} for c in CONDITIONS}
    other = 0
    hours = 0.0
    for _, condition, truth, alarms, duration in results:
        spans = active_spans(alarms, condition, duration)
        agrees = any(start <= WINDOW_S[1] and end >= WINDOW_S[0] for start, end in spans)
        key = ("tp" if agrees else "fn") if truth else ("fp" if agrees else "tn")
        per_type[condition][key] += 1
        other += sum(
            1
            for a in alarms
            if a["kind"] == "physiological" and a["state"] == "active" and not WINDOW_S[0] <= a["t_s"] <= WINDOW_S[1]
        )
        hours += duration / 3600.0
    tp, fn, fp, tn = (sum(t[k] for t in per_type.values()) for k in ("tp", "fn", "fp", "tn"))
    denominator = tp + tn + fp + 5 * fn
    return {
        "score": round(100.0 * (tp + tn) / denominator, 2) if denominator else None,
        "tpr": round(tp / (tp + fn), 4) if tp + fn else None,
        "tnr": round(tn / (tn + fp), 4) if tn + fp else None,
        "per_type": {
            c: {**v, "tpr": round(v["tp"] / (v["tp"] + v["fn"]), 4) if v["tp"] + v["fn"] else None}
            for c, v in per_type.items()
            if any(v.values())
        },
        "other_alarms_per_hour": round(other / hours, 2) if hours else None,
    }


async def bench_alarms(dataset: Path | None = None, **_: Any) -> dict[str, Any]:
    if dataset is None:
        return {"error": "bench alarms needs --dataset DIR (Challenge-format records and an ALARMS file)"}
    try:
        rows = read_alarm_list(dataset)
    except (OSError, ValueError) as err:
        return {"error": f"cannot read the alarm list: {err}", "dataset": str(dataset)}
    missing = [name for name, _, _ in rows if not (dataset / f"{name}.hea").is_file()]
    if missing:
        return {"error": "records listed in ALARMS are missing", "missing": missing[:10], "dataset": str(dataset)}
    started = time.perf_counter()
    workers = os.cpu_count() or 1
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        replays = await asyncio.gather(
            *(loop.run_in_executor(pool, _replay_one, str(dataset / name)) for name, _, _ in rows)
        )
    elapsed = time.perf_counter() - started
    results = [
        (name, condition, truth, replayed.get("alarms", []), float(replayed.get("duration_s", 0.0)))
        for (name, condition, truth), replayed in zip(rows, replays, strict=True)
    ]
    figures = score(results)
    figures |= {
        "records": len(rows),
        "records_per_s": round(len(rows) / elapsed, 2),
        "workers": workers,
        "window_s": list(WINDOW_S),
        "missed": sorted(name for name, c, truth, a, d in results if truth and not _agrees(a, c, d)),
        "false_agreements": sorted(name for name, c, truth, a, d in results if not truth and _agrees(a, c, d)),
    }
    figures["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
    figures["targets_met"] = all(figures[k] is not None and figures[k] >= v for k, (_, v) in TARGETS.items())
    return figures


def _agrees(alarms: list[dict[str, Any]], condition: str, duration: float) -> bool:
    return any(s <= WINDOW_S[1] and e >= WINDOW_S[0] for s, e in active_spans(alarms, condition, duration))
