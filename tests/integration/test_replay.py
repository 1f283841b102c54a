"""`iomt-gateway replay`: any WFDB record through the pipeline, alarms printed with time, kind and priority."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ml.wfdb import physionet_dir
from hil.physiology import SyntheticEcg
from tests.support.wfdb_files import write_format_212

DATA = physionet_dir()


def _replay(path: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "replay", str(path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_record_whose_heart_stops_raises_asystole_at_the_right_time(tmp_path: Path) -> None:
    fs = 250
    ecg = (SyntheticEcg(fs, 72.0, seed=5).next(30 * fs) / 5).astype(np.int32)  # 200 adu/mV, baseline 0
    rng = np.random.default_rng(1)
    ecg[20 * fs :] = np.round(rng.standard_normal(10 * fs)).astype(np.int32)  # standstill: amplifier noise
    write_format_212(tmp_path / "stop.dat", ecg, np.zeros_like(ecg))
    (tmp_path / "stop.hea").write_text(
        f"stop 2 {fs} {len(ecg)}\nstop.dat 212 200 12 0 0 0 0 II\nstop.dat 212 200 12 0 0 0 0 RESP\n"
    )
    result = _replay(tmp_path / "stop")
    alarms = result["alarms"]
    assert isinstance(alarms, list)
    asystole = [a for a in alarms if a["condition"] == "asystole" and a["state"] == "active"]
    assert len(asystole) == 1 and asystole[0]["priority"] == "high" and asystole[0]["kind"] == "physiological"
    assert 23 <= asystole[0]["t_s"] <= 26  # last beat just before 20 s, then 4 s without a QRS
    assert result["signals"] == [
        {"name": "II", "quantity": "MDC_ECG_ELEC_POTL_II", "rate_hz": 250.0},
        {"name": "RESP", "quantity": "MDC_IMPED_TTHOR", "rate_hz": 250.0},
    ]


@pytest.mark.skipif(not (DATA / "100.hea").exists(), reason=f"PhysioNet records not found in {DATA}")
def test_mit_bih_100_sinus_rhythm_raises_no_alarm() -> None:
    result = _replay(DATA / "100")
    assert result["alarms"] == []
    assert result["duration_s"] == 1805.0 or result["duration_s"] == 1805.6


@pytest.mark.skipif(not (DATA / "mixedsignals.hea").exists(), reason=f"PhysioNet records not found in {DATA}")
def test_a_record_with_missing_samples_gives_lead_off_not_asystole() -> None:
    pytest.importorskip("soundfile")
    result = _replay(DATA / "mixedsignals")
    conditions = {a["condition"] for a in result["alarms"]}  # type: ignore[attr-defined]
    assert "ecg_lead_off" in conditions and "asystole" not in conditions
    assert {s["quantity"] for s in result["signals"]} == {  # type: ignore[attr-defined]
        "MDC_ECG_ELEC_POTL_II",
        "MDC_ECG_ELEC_POTL_III",
        "MDC_ECG_ELEC_POTL",  # the monitor's "V": a chest lead, which one unsaid
        "MDC_PRESS_BLD_ART_ABP",
        "MDC_PULS_OXIM_PLETH",
        "MDC_IMPED_TTHOR",
    }
