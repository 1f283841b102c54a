"""The README's main job: `iomt-gateway demo --duration 20 --json` exits 0 with nothing lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_json_run_delivers_everything_and_raises_alarms() -> None:
    beside = Path(sys.executable).parent / "iomt-gateway"
    script = str(beside) if beside.exists() else shutil.which("iomt-gateway")
    assert script, "iomt-gateway is not installed (run scripts/test)"
    result = subprocess.run(
        [script, "demo", "--duration", "20", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    ble = {"ecg-patch-1", "pulse-ox-1", "cgm-1", "insulin-pump-1"}
    assert set(summary["devices"]) == ble | {"med-fridge-1", "bedside-monitor-1"}
    for device, figures in summary["devices"].items():
        assert figures["received"] > 0, device
        assert figures["delivered"] == figures["accepted"] == figures["received"], device
        assert figures["lost"] == 0, device
        if device in ble:  # the virtual radio counts what each peripheral put on air
            assert figures["notifications_received"] == figures["notifications_sent_by_device"] > 0, device
    assert summary["values_lost"] == 0
    assert summary["devices"]["ecg-patch-1"]["samples_delivered"] > 20 * 130 * 0.8
    # The scripted episodes raise their alarms: a desaturation and a low glucose, both high priority.
    assert "pulse-ox-1:MDC_PULS_OXIM_SAT_O2.low:high" in summary["alarms"]
    assert "cgm-1:MDC_CONC_GLU_ISF.low:high" in summary["alarms"]
    assert "med-fridge-1:device.door_open:low" in summary["alarms"], "the fridge's door was left open"
    assert summary["alarms_delivered"] == summary["alarms_raised"]
    # Patient data stays out of the diagnostics stream.
    assert "pt-7f3a9c" not in result.stderr and "pt-3c51e0" not in result.stderr
