"""The streaming QRS detector: EC57 scoring on MIT-BIH record 100, chunk invariance, synthetic ECG."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge_ml.qrs import QrsDetector, score
from hil.physiology import SyntheticEcg
from edge_ml.wfdb import physionet_dir, read_annotations, read_record

DATA = physionet_dir()
needs_data = pytest.mark.skipif(not (DATA / "100.hea").exists(), reason=f"MIT-BIH record 100 not found in {DATA}")


def _detect(samples: np.ndarray, fs: float, chunk: int) -> list[int]:
    detector = QrsDetector(fs)
    out: list[int] = []
    for i in range(0, len(samples), chunk):
        out += detector.process(samples[i : i + chunk])
    return out + detector.finish()


def _synthetic(seconds: float = 60.0, fs: float = 250.0) -> tuple[np.ndarray, list[int], float]:
    ecg = SyntheticEcg(fs, heart_rate_bpm=75.0, seed=3, keep_beats=True)
    samples = ecg.next(round(seconds * fs)) / 1000.0  # mV
    beats = [round(t * fs) for t in ecg.all_beats or [] if 0 <= t * fs < len(samples)]
    return samples, beats, fs


def test_synthetic_ecg_beats_are_all_found() -> None:
    samples, beats, fs = _synthetic()
    tp, fp, fn = score(_detect(samples, fs, 250), beats, fs)
    assert fn <= 1 and fp == 0, (tp, fp, fn)  # the first beat may fall in the 2 s learning period


@pytest.mark.parametrize("source", ["synthetic", "mit-bih-100"])
def test_results_identical_for_any_chunking(source: str) -> None:
    if source == "synthetic":
        samples, _, fs = _synthetic(30.0)
    else:
        if not (DATA / "100.hea").exists():
            pytest.skip(f"MIT-BIH record 100 not found in {DATA}")
        record = read_record(DATA / "100")
        fs = record.rate_hz(0)
        samples = record.physical(0)[: round(40 * fs)]
    results = {chunk: _detect(samples, fs, chunk) for chunk in (1, 7, 250, 10_000)}
    assert results[1], "beats were found"
    assert results[1] == results[7] == results[250] == results[10_000]


@needs_data
def test_mit_bih_100_meets_ec57_targets() -> None:
    record = read_record(DATA / "100")
    fs = record.rate_hz(0)
    reference = [a.sample for a in read_annotations(DATA / "100.atr") if a.is_beat]
    tp, fp, fn = score(_detect(record.physical(0), fs, round(fs)), reference, fs)
    sensitivity, ppv = tp / (tp + fn), tp / (tp + fp)
    print(f"MIT-BIH 100: Se {sensitivity:.4%}, +P {ppv:.4%} ({tp} TP, {fp} FP, {fn} FN)")
    assert sensitivity >= 0.998 and ppv >= 0.998


def test_scoring_matches_within_150_ms_once() -> None:
    fs = 100.0
    assert score([100, 214, 300], [100, 200, 312], fs) == (3, 0, 0)
    assert score([100, 101], [100], fs) == (1, 1, 0)  # one detection per beat
    assert score([100], [100, 200], fs) == (1, 0, 1)
    assert score([130], [100], fs) == (0, 1, 1)  # 300 ms away: no match


@needs_data
def test_bench_qrs_reports_its_contract_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "qrs", "--json", "--record", str(DATA / "100")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["sensitivity"] >= 0.998 and figures["ppv"] >= 0.998 and figures["samples_per_s"] > 0


def test_bench_pipeline_reports_its_contract_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "pipeline", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout[result.stdout.index("{") :])
    assert figures["samples_per_s_per_core"] > 0 and figures["alarm_latency_p99_ms"] is not None
    assert figures["alarms_measured"] > 50
