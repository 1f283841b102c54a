"""The QRS benchmark: score the streaming detector on a WFDB record with reference beat labels.

Scored as ANSI/AAMI EC57 does: a detection matches a reference beat within 150 ms; Se = TP/(TP+FN),
+P = TP/(TP+FP); non-beat annotations are not beats.  The whole record is scored (EC57 allows leaving out
the first five minutes; we do not).  The record is streamed in one-second chunks, as a monitor would send it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge_ml.qrs import QrsDetector, score
from hil.wfdb import WfdbError, physionet_dir, read_annotations, read_record

TARGETS = {"sensitivity": (">=", 0.998), "ppv": (">=", 0.998)}


async def bench_qrs(record: Path | None = None, annotator: str = "atr", **_: Any) -> dict[str, Any]:
    base = record or physionet_dir() / "100"
    try:
        rec = read_record(base)
        reference = [a.sample for a in read_annotations(base.with_suffix(f".{annotator}")) if a.is_beat]
    except WfdbError as err:
        return {"error": err.message, "record": str(base)}
    fs = rec.rate_hz(0)
    samples = rec.physical(0)
    chunk = max(1, round(fs))
    detector = QrsDetector(fs)
    detections: list[int] = []
    start = time.perf_counter()
    for i in range(0, len(samples), chunk):
        detections += detector.process(samples[i : i + chunk])
    detections += detector.finish()
    elapsed = time.perf_counter() - start
    # Reference labels count frames; a multi-frequency record's ECG has several samples per frame.
    per_frame = rec.signals[0].samples_per_frame
    reference = [r * per_frame for r in reference]
    tp, fp, fn = score(detections, reference, fs)
    figures: dict[str, Any] = {
        "sensitivity": round(tp / (tp + fn), 5) if tp + fn else None,
        "ppv": round(tp / (tp + fp), 5) if tp + fp else None,
        "samples_per_s": round(len(samples) / elapsed),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "reference_beats": len(reference),
        "record": base.name,
        "lead": rec.signals[0].description,
        "sample_rate_hz": fs,
        "window_ms": 150,
    }
    figures["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
    figures["targets_met"] = all(figures[k] is not None and figures[k] >= v for k, (_, v) in TARGETS.items())
    return figures
