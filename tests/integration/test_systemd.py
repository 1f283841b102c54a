"""The unit file as a distribution would ship it: it verifies, and its hardening scores OK or better."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "iomt-gateway.service"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (scripts/test installs it)"
)


def _installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's entry point, as `pip install` would place it."""
    entry = Path(sys.executable).parent / "iomt-gateway"
    unit = tmp_path / "iomt-gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/iomt-gateway/bin/iomt-gateway", str(entry)))
    return unit


def test_unit_verifies(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iomt-gateway.service:" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_unit_hardening_scores_ok_or_better(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_installed_copy(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for iomt-gateway\.service: ([0-9.]+) (\w+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    exposure, verdict = float(match.group(1)), match.group(2)
    print(f"systemd-analyze security: exposure {exposure} {verdict}")
    assert exposure <= 4.0 and verdict in ("OK", "SAFE")


def test_unit_has_the_required_settings() -> None:
    text = UNIT.read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "LoadCredential=",
        "StateDirectory=iomt-gateway",
    ):
        assert setting in text, setting


def test_the_configuration_the_gateway_rewrites_is_where_the_sandbox_lets_it_write() -> None:
    """Remote configuration rewrites --config: under ProtectSystem=strict only the state directory (and
    ReadWritePaths) is writable, and the safety ceilings must not be."""
    text = UNIT.read_text()
    start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    config = re.search(r"--config (\S+)", start)
    safety = re.search(r"--safety-file (\S+)", start)
    assert config and safety, start
    state_dir = "/var/lib/" + re.search(r"^StateDirectory=(\S+)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    writable = [state_dir] + [
        p for line in text.splitlines() if line.startswith("ReadWritePaths=") for p in line.split("=", 1)[1].split()
    ]
    assert any(config.group(1).startswith(w + "/") for w in writable), (config.group(1), writable)
    assert not any(safety.group(1).startswith(w + "/") for w in writable)
