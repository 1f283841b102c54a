"""The QRS benchmark: score the streaming detector on records with reference beat labels.

Scored as ANSI/AAMI EC57 does, the whole record: a detection matches a reference beat within 150 ms;
Se = TP/(TP+FN), +P = TP/(TP+FP); non-beat annotations are not beats; ventricular flutter and fibrillation
episodes (between the `[` and `]` annotations) are left out of beat-by-beat scoring, as EC57 and WFDB's bxb do
(the detector's behaviour there is the fibrillation alarm's business).  Each record is streamed in one-second
chunks, as a monitor would send it, through the detector on its first lead.

`--record PATH` scores one record; `--records DIR` scores every record with .atr labels in DIR, leaving out the
usual paced records (102, 104, 107, 217), and reports gross figures (all beats of all records pooled) with
per-record errors.  Records are scored in parallel, one process per core.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_ml.qrs import QrsDetector, score
from edge_ml.wfdb import WfdbError, physionet_dir, read_annotations, read_record
from hil.physiology import SyntheticEcg

TARGETS = {"sensitivity": (">=", 0.997), "ppv": (">=", 0.997)}
GROSS_TARGETS = {"gross_sensitivity": (">=", 0.997), "gross_ppv": (">=", 0.997)}
PACED = frozenset({"102", "104", "107", "217"})
VF_ON, VF_OFF = 32, 33  # `[` and `]`


def score_record(base: Path, annotator: str = "atr") -> dict[str, Any]:
    """EC57 figures of the detector on one record's first lead (WfdbError when it cannot be read)."""
    rec = read_record(base)
    annotations = read_annotations(base.with_suffix(f".{annotator}"))
    # Reference labels count frames; a multi-frequency record's ECG has several samples per frame.
    per_frame = rec.signals[0].samples_per_frame
    excluded = [(a * per_frame, b * per_frame) for a, b in _fibrillation(annotations)]
    reference = [a.sample * per_frame for a in annotations if a.is_beat]
    figures = score_signal(rec.physical(0), rec.rate_hz(0), reference, excluded)
    return {"record": base.name, "lead": rec.signals[0].description, **figures}


def score_signal(
    samples: npt.NDArray[np.float64], fs: float, reference: list[int], excluded: list[tuple[int, int]]
) -> dict[str, Any]:
    """EC57 figures of the detector streamed over one signal in one-second chunks, against reference beats."""
    chunk = max(1, round(fs))
    detector = QrsDetector(fs)
    detections: list[int] = []
    start = time.perf_counter()
    for i in range(0, len(samples), chunk):
        detections += [d.index for d in detector.process(samples[i : i + chunk])]
    detections += [d.index for d in detector.finish()]
    elapsed = time.perf_counter() - start

    def scored(indices: list[int]) -> list[int]:
        return [i for i in indices if not any(lo <= i <= hi for lo, hi in excluded)]

    tp, fp, fn = score(scored(detections), scored(reference), fs)
    return {
        "sample_rate_hz": fs,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "reference_beats": tp + fn,
        "samples": len(samples),
        "seconds": elapsed,
    }


SYNTHETIC_S = 1800  # half an hour, as long as an MIT-BIH record
SYNTHETIC_RATE_HZ = 360.0


def _synthetic() -> dict[str, Any]:
    ecg = SyntheticEcg(SYNTHETIC_RATE_HZ, keep_beats=True)
    samples = ecg.next(round(SYNTHETIC_S * SYNTHETIC_RATE_HZ)) / 1000.0  # microvolts -> millivolts
    reference = [round(t * SYNTHETIC_RATE_HZ) for t in ecg.all_beats or []]
    figures = score_signal(samples, SYNTHETIC_RATE_HZ, reference, [])
    return {"record": "synthetic (PhysioNet record 100 not found)", "lead": "synthetic", **figures}


def _fibrillation(annotations: list[Any]) -> list[tuple[int, int]]:
    spans, start = [], None
    for a in annotations:
        if a.code == VF_ON:
            start = a.sample
        elif a.code == VF_OFF and start is not None:
            spans.append((start, a.sample))
            start = None
    return spans


def _judge(figures: dict[str, Any], targets: dict[str, tuple[str, float]]) -> None:
    figures["targets"] = {k: f"{op} {v}" for k, (op, v) in targets.items()}
    figures["targets_met"] = all(figures[k] is not None and figures[k] >= v for k, (_, v) in targets.items())


async def bench_qrs(
    record: Path | None = None, records: Path | None = None, annotator: str = "atr", **_: Any
) -> dict[str, Any]:
    if records is not None:
        return await _bench_folder(records, annotator)
    base = record or physionet_dir() / "100"
    if record is None and not base.with_suffix(".hea").exists():
        one = _synthetic()  # a new box without the recordings: its own capacity, on a signal with known beats
    else:
        try:
            one = score_record(base, annotator)
        except WfdbError as err:
            return {"error": err.message, "record": str(base)}
    tp, fp, fn = one["true_positives"], one["false_positives"], one["false_negatives"]
    figures: dict[str, Any] = {
        "sensitivity": round(tp / (tp + fn), 5) if tp + fn else None,
        "ppv": round(tp / (tp + fp), 5) if tp + fp else None,
        "samples_per_s": round(one["samples"] / one["seconds"]),
        **{k: one[k] for k in ("true_positives", "false_positives", "false_negatives", "reference_beats")},
        "record": one["record"],
        "lead": one["lead"],
        "sample_rate_hz": one["sample_rate_hz"],
        "window_ms": 150,
    }
    _judge(figures, TARGETS)
    return figures


def _records_in(folder: Path, annotator: str) -> tuple[list[Path], list[str]]:
    """(records to score, paced records left out) of a folder."""
    labelled = [p for p in folder.glob(f"*.{annotator}") if p.with_suffix(".hea").is_file()]
    bases = sorted(p.with_suffix("") for p in labelled if p.stem not in PACED)
    return bases, sorted(p.stem for p in labelled if p.stem in PACED)


async def _bench_folder(folder: Path, annotator: str) -> dict[str, Any]:
    bases, paced = await asyncio.to_thread(_records_in, folder, annotator)
    if not bases:
        return {"error": f"no records with .{annotator} labels in this folder", "records_dir": str(folder)}
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(pool, score_record, base, annotator) for base in bases)
            )
        except WfdbError as err:
            return {"error": err.message, "records_dir": str(folder)}
    tp = sum(r["true_positives"] for r in results)
    fp = sum(r["false_positives"] for r in results)
    fn = sum(r["false_negatives"] for r in results)
    elapsed = time.perf_counter() - started
    figures: dict[str, Any] = {
        "gross_sensitivity": round(tp / (tp + fn), 5) if tp + fn else None,
        "gross_ppv": round(tp / (tp + fp), 5) if tp + fp else None,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "records": len(results),
        "per_record": {
            r["record"]: {"false_positives": r["false_positives"], "false_negatives": r["false_negatives"]}
            for r in results
        },
        "excluded_paced": paced,
        "samples_per_s": round(sum(r["samples"] for r in results) / sum(r["seconds"] for r in results)),
        "wall_s": round(elapsed, 1),
        "window_ms": 150,
    }
    _judge(figures, GROSS_TARGETS)
    return figures
