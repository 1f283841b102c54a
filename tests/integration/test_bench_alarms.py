"""`iomt-gateway bench alarms`: the gateway's arrhythmia alarms against a monitor's, scored as the 2015
PhysioNet/CinC Challenge does, through the production pipeline (replay)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ml.wfdb import physionet_dir
from hil.bench.alarms import active_spans, score
from hil.physiology import SyntheticEcg, SyntheticPulse

DEV = physionet_dir().parent / "cinc2015-dev"
FS = 250


def _write_record(folder: Path, name: str, ecg_uv: np.ndarray, abp_mmhg: np.ndarray) -> None:
    """A Challenge-format record: format 16 with a 24-byte offset, two leads and arterial pressure."""
    lead_ii = np.round(ecg_uv).astype(np.int16)
    lead_v = np.round(-0.6 * ecg_uv).astype(np.int16)
    abp = np.round(abp_mmhg * 50.0).astype(np.int16)
    frames = np.stack([lead_ii, lead_v, abp], axis=1)
    (folder / f"{name}.mat").write_bytes(b"\0" * 24 + frames.astype("<i2").tobytes())
    (folder / f"{name}.hea").write_text(
        f"{name} 3 {FS} {len(frames)}\n"
        f"{name}.mat 16+24 1000/mV 16 0 0 0 0 II\n"
        f"{name}.mat 16+24 1000/mV 16 0 0 0 0 V\n"
        f"{name}.mat 16+24 50/mmHg 16 0 0 0 0 ABP\n"
    )


def _patient(vt_at_s: float | None, seconds: int = 302) -> tuple[np.ndarray, np.ndarray]:
    ecg = SyntheticEcg(float(FS), 80.0, seed=9)
    pulse = SyntheticPulse(ecg, pressure=True)
    leads, pressure = [], []
    for second in range(seconds):
        if vt_at_s is not None and second == int(vt_at_s):
            ecg.rhythm, ecg.heart_rate_bpm = "vt", 190.0
        leads.append(ecg.next(FS))
        pressure.append(pulse.next(FS))
    return np.concatenate(leads), np.concatenate(pressure)


def _bench(dataset: Path) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "alarms", "--dataset", str(dataset), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    return result.returncode, json.loads(result.stdout[result.stdout.index("{") :])


def test_synthetic_challenge_records_are_scored_with_the_contract_keys(tmp_path: Path) -> None:
    _write_record(tmp_path, "vtrue", *_patient(vt_at_s=293))
    _write_record(tmp_path, "vfalse", *_patient(vt_at_s=None))
    (tmp_path / "ALARMS").write_text("vtrue,Ventricular_Tachycardia,1\nvfalse,Ventricular_Tachycardia,0\n")
    code, figures = _bench(tmp_path)
    assert code == 0, figures
    for key in ("score", "tpr", "tnr", "per_type", "other_alarms_per_hour", "records", "records_per_s"):
        assert key in figures
    assert figures["per_type"] == {"ventricular_tachycardia": {"tp": 1, "fn": 0, "fp": 0, "tn": 1, "tpr": 1.0}}
    assert figures["score"] == 100.0 and figures["records"] == 2


def test_a_missing_dataset_or_alarm_list_is_an_error(tmp_path: Path) -> None:
    code, figures = _bench(tmp_path)
    assert code == 1 and "error" in figures
    (tmp_path / "ALARMS").write_text("absent,Asystole,1\n")
    code, figures = _bench(tmp_path)
    assert code == 1 and figures["missing"] == ["absent"]
    (tmp_path / "ALARMS").write_text("x,NotAnAlarm,1\n")
    code, figures = _bench(tmp_path)
    assert code == 1 and "ALARMS line 1" in str(figures["error"])


def test_scoring_follows_the_challenge() -> None:
    alarm = {"kind": "physiological", "condition": "asystole"}
    hit = [{**alarm, "state": "active", "t_s": 280.0}, {**alarm, "state": "cleared", "t_s": 286.0}]
    early = [{**alarm, "state": "active", "t_s": 200.0}, {**alarm, "state": "cleared", "t_s": 284.0}]
    assert active_spans(hit, "asystole", 300.0) == [(280.0, 286.0)]
    rows = [
        ("a", "asystole", True, hit, 300.0),  # TP
        ("b", "asystole", True, early, 300.0),  # FN: cleared before 285 s
        ("c", "asystole", False, hit, 300.0),  # FP
        ("d", "asystole", False, [], 300.0),  # TN
    ]
    figures = score(rows)
    assert figures["per_type"]["asystole"] == {"tp": 1, "fn": 1, "fp": 1, "tn": 1, "tpr": 0.5}
    assert figures["score"] == round(100 * 2 / (2 + 1 + 5), 2)
    assert figures["other_alarms_per_hour"] == round(3 / (4 * 300 / 3600), 2)  # 280, 280 and 200 s


@pytest.mark.skipif(not (DEV / "ALARMS").exists(), reason=f"PhysioNet/CinC 2015 records not found in {DEV}")
def test_real_icu_alarms_a_small_subset(tmp_path: Path) -> None:
    # The acceptance run is the whole development set (`iomt-gateway bench alarms --dataset DIR`, a couple of
    # minutes); here a few records of each kind.  a103l: the monitor's asystole was false (the patient kept a
    # pulse); the others are true alarms the gateway must agree with.
    chosen = {
        "a103l": "Asystole,0",
        "a142s": "Asystole,1",
        "v131l": "Ventricular_Tachycardia,1",
        "f450s": "Ventricular_Flutter_Fib,1",
        "t106s": "Tachycardia,1",
    }
    for name in chosen:
        for suffix in (".hea", ".mat"):
            (tmp_path / f"{name}{suffix}").symlink_to(DEV / f"{name}{suffix}")
    (tmp_path / "ALARMS").write_text("".join(f"{name},{label}\n" for name, label in chosen.items()))
    code, figures = _bench(tmp_path)
    assert code == 0, figures
    assert figures["missed"] == [] and figures["false_agreements"] == [], figures
    assert figures["score"] == 100.0
