"""The wheel is the product: built from this tree, installed into a fresh virtual environment, and used from there
as a user would, with no source tree to fall back on.

The fresh environment takes the third-party dependencies from the test environment (a path entry, so their own
`.pth` files, including this checkout's editable install, are not run) and gets the project only from the wheel.
Every command runs from an empty folder, so nothing resolves relative to the clone.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("wheel")
    dist = folder / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("iomt_gateway-*.whl")
    env_dir = folder / "venv"
    venv.create(env_dir, with_pip=False)
    purelib = Path(
        subprocess.run(
            [str(env_dir / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (purelib / "test-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(purelib), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # pip --target writes no console script: write the one the wheel declares, as an installer would.
    script = env_dir / "bin" / "iomt-gateway"
    script.write_text(f"#!{env_dir / 'bin' / 'python'}\nimport sys\nfrom gateway.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    work = folder / "work"
    work.mkdir()
    machine_config = folder / "etc"  # an empty /etc/iomt-gateway: the packaged defaults are what is found
    machine_config.mkdir()
    yield {"bin": script, "python": env_dir / "bin" / "python", "cwd": work, "etc": machine_config}
    shutil.rmtree(folder, ignore_errors=True)


def run(installed: dict[str, Any], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "IOMT_GATEWAY_CONFIG_DIR": str(installed["etc"]),
        "IOMT_PHYSIONET_DIR": str(installed["cwd"] / "no-recordings"),
        "PYTHONPATH": "",
    }
    return subprocess.run(
        [str(installed["bin"]), *args],
        cwd=installed["cwd"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def python(installed: dict[str, Any], code: str) -> str:
    """Run Python code in the fresh environment, from the empty folder; its standard output."""
    return subprocess.run(
        [str(installed["python"]), "-c", code], cwd=installed["cwd"], capture_output=True, text=True, check=True
    ).stdout


def test_the_installed_package_is_the_wheel_not_the_clone(installed: dict[str, Any]) -> None:
    where = python(installed, "import gateway, drivers; print(gateway.__file__, drivers.__file__)")
    assert str(ROOT) not in where


def test_the_wheel_ships_its_default_configs_and_profiles(installed: dict[str, Any]) -> None:
    listing = python(
        installed,
        "from gateway.core.settings import PACKAGE_DEFAULTS_DIR as d; "
        "print(sorted(str(p.relative_to(d)) for p in d.rglob('*.toml')))",
    )
    for name in ("gateway.toml", "demo.toml", "modbus/medication_fridge.toml"):
        assert name in listing


@pytest.mark.parametrize(
    "args",
    [("status",), ("devices",), ("alarms",), ("buffer", "stats"), ("audit", "verify")],
)
def test_technician_commands_find_the_default_config(installed: dict[str, Any], args: tuple[str, ...]) -> None:
    """No --config: the packaged gateway.toml is read (the daemon is not running, so the commands fail, on the
    socket or the state directory, never on the configuration)."""
    result = run(installed, *args)
    assert result.returncode != 0
    assert "cannot read config file" not in result.stderr
    assert "Traceback" not in result.stderr
    if "config error" in result.stderr:  # the store's key is a systemd credential, readable by the service only
        assert "credential" in result.stderr and "config error: buffer.key_file" in result.stderr


def test_the_packaged_config_validates(installed: dict[str, Any]) -> None:
    packaged = python(installed, "from gateway.config import DEFAULT_CONFIG_PATH; print(DEFAULT_CONFIG_PATH)").strip()
    result = run(installed, "config", "validate", packaged, "--no-secrets")
    assert result.returncode == 0, result.stderr


def test_the_demo_runs_from_the_wheel(installed: dict[str, Any]) -> None:
    result = run(installed, "demo", "--duration", "8", "--json", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["values_lost"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ("qrs",),
        ("hl7", "--seconds", "1"),
        ("modbus", "--seconds", "1"),
        ("footprint",),
        ("pipeline",),
        ("buffer", "--backlog-mb", "16"),
        ("sync", "--devices", "2", "--backlog-s", "60"),
        ("soak", "--minutes", "0.25", "--dicom-mb", "8"),
        ("bridge", "--gateways", "3", "--workers", "1"),
    ],
)
def test_each_bench_runs_from_the_wheel(installed: dict[str, Any], args: tuple[str, ...]) -> None:
    result = run(installed, "bench", *args, "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    figures = json.loads(result.stdout)
    assert "error" not in figures
    if args[0] == "pipeline":  # its contract keys, checked here rather than by a second run from the clone
        assert figures["samples_per_s_per_core"] > 0 and figures["alarm_latency_p99_ms"] is not None
        assert figures["alarms_measured"] > 50
        assert figures["ecg_leads"] == 2 and figures["models"] == ["ecg_beat_classifier"]


def test_a_bench_without_its_input_fails(installed: dict[str, Any]) -> None:
    result = run(installed, "bench", "alarms", "--json")
    assert result.returncode != 0
    assert "error" in json.loads(result.stdout)


def test_the_wheel_ships_the_scenario_library_and_plays_it(installed: dict[str, Any]) -> None:
    listed = run(installed, "hil", "run", "--list", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    names = {s["name"] for s in json.loads(listed.stdout)["scenarios"]}
    assert len(names) >= 15 and "ventricular_tachycardia" in names
    report = installed["cwd"] / "report.xml"
    result = run(installed, "hil", "run", "fridge-door", "--junit", str(report), "--json", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    summary = json.loads(result.stdout)
    assert (summary["passed"], summary["failed"]) == (1, 0)
    assert report.read_text().count("<testcase") == 4
