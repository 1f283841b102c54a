"""The README's main job: `iomt-gateway demo --duration 20 --json` exits 0 with nothing lost; and the demo
stops cleanly whenever Ctrl-C comes, in the live view too."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from fcntl import ioctl
from pathlib import Path

import pytest


def _script() -> str:
    beside = Path(sys.executable).parent / "iomt-gateway"
    script = str(beside) if beside.exists() else shutil.which("iomt-gateway")
    assert script, "iomt-gateway is not installed (run scripts/test)"
    return script


def _artefacts(text: str) -> list[str]:
    """What a clean stop never prints: tracebacks, cancellations, error-level log lines."""
    markers = ("Traceback", "CancelledError", '"level": "error"', "[error")
    return [line for line in text.splitlines() if any(m in line for m in markers)]


@pytest.mark.slow
def test_demo_json_run_delivers_everything_and_raises_alarms() -> None:
    script = _script()
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
    # The end of --duration is a deliberate stop: no device is taken for lost.
    assert not [a for a in summary["alarms"] if "device_disconnected" in a], summary["alarms"]
    assert "admin socket: " in result.stderr  # where the technician's commands reach the demo's gateway
    assert _artefacts(result.stderr) == []
    # Patient data stays out of the diagnostics stream.
    assert "pt-7f3a9c" not in result.stderr and "pt-3c51e0" not in result.stderr


@pytest.mark.parametrize("instant_s", [0.3, 1.0, 2.5])
def test_ctrl_c_while_starting_ends_quietly(instant_s: float) -> None:
    """While loading and starting (the very first instants included): no traceback, no error, a plain exit."""
    process = subprocess.Popen(
        [_script(), "demo", "--duration", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(instant_s)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert _artefacts(out + err) == [], err[-3000:]
    if process.returncode == 130:  # before the demo took charge: nothing had started
        assert err.strip().endswith("iomt-gateway: interrupted"), err[-500:]
    else:  # the demo had started: an orderly stop and its summary
        assert process.returncode == 0, err[-3000:]
        assert json.loads(out[out.index("{") :])["values_lost"] == 0


def test_ctrl_c_in_the_live_view_at_80x24_stops_cleanly() -> None:
    """In a real terminal (a pty, 80x24): Ctrl-C once the view is up ends with a last frame that says
    'stopped', the summary, and nothing else on the way out."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo, in the terminal
        os.execvpe(_script(), [_script(), "demo", "--duration", "60"], {**os.environ, "COLUMNS": "80", "LINES": "24"})  # noqa: S606 - the demo itself, no shell
    ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    output = b""
    deadline = time.monotonic() + 40
    interrupted = False
    try:
        while time.monotonic() < deadline:
            if not interrupted and b"Ctrl-C stops" in output and output.count(b"Alarms") >= 2:
                os.kill(pid, signal.SIGINT)
                interrupted = True
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # the child has gone: the pty is closed
                    break
                if not data:
                    break
                output += data
    finally:
        if not interrupted or time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # without terminal controls
    assert interrupted, text[-2000:]
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert _artefacts(text) == [], text[-3000:]
    assert "stopped" in text and '"values_lost": 0' in text
