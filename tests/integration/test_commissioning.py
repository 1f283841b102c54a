"""Commissioning: `devices scan` finds health devices over a real BLE stack; `devices add` edits the config safely."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.commissioning import add_device, scan
from gateway.config import load_config
from gateway.core.errors import ConfigError
from hil.ble_radio import DEMO_DEVICES, demo_radio
from hil.bleak_bumble import BumbleBleakScanner
from tests.conftest import config_dict
from tests.support.configs import to_toml


async def test_scan_reports_each_device_once_with_profile_rssi_and_progress() -> None:
    ticks: list[float] = []
    updates: list[str] = []
    async with demo_radio() as radio:
        found = await scan(
            1.0,
            backend=BumbleBleakScanner,
            backend_kwargs={"bumble_device": radio.adapter},
            on_found=lambda f: updates.append(f.address),
            on_tick=ticks.append,
        )
    assert {(f.name, f.profile) for f in found} == set(DEMO_DEVICES)
    assert {f.address for f in found} == {h.address for h in radio.hosts.values()}
    assert all(f.rssi_dbm < 0 and f.advertisements >= 1 for f in found)
    assert ticks[-1] == 1.0 and len(ticks) > 3, "the progress display is fed while scanning"
    assert set(updates) == {f.address for f in found}


def test_scan_command_prints_json_for_the_virtual_radio() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "devices", "scan", "--virtual", "--duration", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(out.stdout)
    assert sorted((f["name"], f["profile"]) for f in found) == sorted(DEMO_DEVICES)


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text("# ward 7 gateway: keep this comment\n" + to_toml(config_dict(tmp_path / "state", 1883)))
    path.chmod(0o640)
    return path


def test_add_appends_a_valid_device_and_keeps_comments_and_mode(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    add_device(path, device_id="bp-7", address="C0:00:00:00:00:09", profile="blood_pressure", patient="pt-7")
    assert path.read_text().startswith("# ward 7 gateway: keep this comment\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    config = load_config(path, check_secrets=False)
    added = next(d for d in config.devices if d.id == "bp-7")
    assert (added.address, added.profile, added.patient) == ("C0:00:00:00:00:09", "blood_pressure", "pt-7")


@pytest.mark.parametrize(
    ("device_id", "address", "profile", "message"),
    [
        ("ecg-1", "C0:00:00:00:00:09", "cgm", "already configured"),  # id taken
        ("cgm-9", "sim:cgm-1", "cgm", "already configured"),  # address taken
        ("cgm-9", "not-an-address", "cgm", "address"),
        ("cgm-9", "C0:00:00:00:00:09", "toaster", "profile"),
        ("bad id!", "C0:00:00:00:00:09", "cgm", "id"),
    ],
)
def test_add_refuses_a_bad_device_and_leaves_the_file_untouched(
    tmp_path: Path, device_id: str, address: str, profile: str, message: str
) -> None:
    path = _config_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=message):
        add_device(path, device_id=device_id, address=address, profile=profile)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".gateway.toml.*")), "no temporary file left behind"


def test_add_command_exit_codes(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    base = [sys.executable, "-m", "gateway", "devices", "add", "--config", str(path)]
    ok = subprocess.run(
        [*base, "--id", "ox-9", "--address", "C0:00:00:00:00:0A", "--profile", "pulse_oximeter"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert any(d["id"] == "ox-9" for d in tomllib.loads(path.read_text())["devices"])
    missing = subprocess.run([*base, "--id", "ox-10"], capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "--address" in missing.stderr
    duplicate = subprocess.run(
        [*base, "--id", "ox-9", "--address", "C0:00:00:00:00:0B", "--profile", "pulse_oximeter"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert duplicate.returncode == 2 and "already configured" in duplicate.stderr
