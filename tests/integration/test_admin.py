"""The technician's tools against a running gateway: every admin command in table and --json form, access
control on the admin socket, Prometheus metrics after a known workload, and a support bundle without secrets
or patient values."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mosquitto, config_dict, free_port
from tests.support.configs import to_toml

PATIENT = "pt-ZX81Q"


def cli(*args: str, user: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=60, env={**os.environ, **(env or {})}
    )


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def daemon(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[dict[str, Any]]:
    data = config_dict(tmp_path / "state", mosquitto.port)
    # Like /run/iomt-gateway: a directory others may traverse, so only the socket's own mode decides.
    run_dir = Path(tempfile.mkdtemp(prefix="iomt-run-"))
    run_dir.chmod(0o755)
    data["admin"] = {"socket": str(run_dir / "admin.sock")}
    metrics_port = free_port()
    data["metrics"] = {"enabled": True, "port": metrics_port}
    data["logging"] = {"level": "info", "format": "json"}
    data["alarms"]["limits"][0]["low"] = 99.5  # every SpO2 reading is an alarm: something to acknowledge
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(to_toml(data))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socket_path = run_dir / "admin.sock"
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            assert time.monotonic() < deadline, "gateway did not start"
            assert process.poll() is None, "gateway exited"
            time.sleep(0.1)
        time.sleep(3.0)  # a known workload: a few seconds of four simulated devices
        yield {
            "config": config_path,
            "socket": socket_path,
            "metrics_port": metrics_port,
            "state": tmp_path / "state",
            "data": data,
        }
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_every_admin_command_in_table_and_json_form(daemon: dict[str, Any]) -> None:
    sock = ["--socket", str(daemon["socket"])]
    status = cli_json("status", *sock)
    assert status["gateway_id"] == "test-gw" and status["health"] == "ok" and status["sync"]["state"] == "online"
    assert set(status["drivers"]) == {f"driver:{d}" for d in ("ecg-1", "ox-1", "cgm-1", "pump-1")} | {"uplink"}
    assert set(status["buffer"]) == {"alarms", "command-results", "numerics", "device-status", "waveforms", "images"}
    table = cli("status", *sock)
    assert table.returncode == 0 and "test-gw" in table.stdout and "driver:ox-1" in table.stdout

    devices = cli_json("devices", "--config", str(daemon["config"]))  # found through the config as well
    by_id = {d["device"]: d for d in devices}
    assert by_id["ox-1"]["state"] == "connected" and by_id["ox-1"]["received"] > 0
    assert by_id["pump-1"]["battery_pct"] is not None and by_id["ox-1"]["last_seen_s"] < 10
    assert "pump-1" in cli("devices", *sock).stdout

    alarms = cli_json("alarms", *sock)
    spo2 = next(a for a in alarms if a["condition"] == "MDC_PULS_OXIM_SAT_O2.low")
    acked = cli_json("alarms", "ack", spo2["id"], *sock)
    assert acked["state"] == "acknowledged" and acked["id"] == spo2["id"]  # the alarm keeps its id
    silenced = cli_json("alarms", "silence", spo2["id"], *sock)  # the id listed before the ack still works
    assert silenced["state"] == "silenced" and silenced["id"] == spo2["id"]
    assert spo2["id"] in cli("alarms", "ack", spo2["id"], *sock).stdout
    relisted = {a["id"]: a for a in cli_json("alarms", *sock)}
    assert relisted[spo2["id"]]["state"] == "acknowledged"
    missing = cli("alarms", "ack", "no-such-alarm", *sock)
    assert missing.returncode == 1 and "no active alarm" in missing.stderr
    # Piped through a narrow terminal's settings, the table still holds every id whole.
    piped = cli("alarms", *sock, env={"COLUMNS": "60"}).stdout
    assert "MDC_PULS_OXIM_SAT_O2.low" in piped and spo2["id"] in piped, piped

    assert cli_json("sync", "now", *sock)["state"] == "online"
    synced = cli("sync", "now", *sock).stdout
    assert synced.startswith("sync: online") and "{" not in synced  # a sentence, not a Python dict
    logs = cli_json("logs", "--grep", "device connected", *sock)
    assert logs and all(isinstance(r, dict) and r["event"] == "device connected" for r in logs)
    assert "gateway started" in cli("logs", *sock).stdout
    # The socket from the environment, as the demo prints it.
    assert cli("status", "--json", env={"IOMT_GATEWAY_SOCKET": str(daemon["socket"])}).returncode == 0

    down = cli("status", "--socket", str(daemon["socket"].parent / "absent.sock"))
    assert down.returncode == 1 and "is the service running" in down.stderr


def test_metrics_after_a_known_workload(daemon: dict[str, Any]) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon['metrics_port']}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['iomt_device_values_received_total{device="ox-1"}'] > 0
    assert (
        values['iomt_device_values_accepted_total{device="ox-1"}']
        <= values['iomt_device_values_received_total{device="ox-1"}']
    )
    assert values["iomt_sync_online"] == 1.0
    assert values["iomt_sync_publishes_total"] > 0
    assert 'iomt_buffer_rows{lane="alarms"}' in values
    assert values["process_resident_memory_bytes"] > 10e6
    assert values["iomt_alarms_active"] >= 1
    status = cli_json("status", "--socket", str(daemon["socket"]))
    assert status["sync"]["publishes"] >= values["iomt_sync_publishes_total"]


def test_diag_bundle_holds_no_secret_or_patient_value(daemon: dict[str, Any], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.tar.gz"
    result = cli("diag", "bundle", "-o", str(bundle), "--socket", str(daemon["socket"]))
    assert result.returncode == 0, result.stderr
    with tarfile.open(bundle) as archive:
        names = archive.getnames()
        contents = {n: archive.extractfile(n).read().decode() for n in names if archive.extractfile(n)}  # type: ignore[union-attr]
    assert {"iomt-diag/config.json", "iomt-diag/logs.jsonl", "iomt-diag/metrics.txt"} <= set(names)
    everything = "\n".join(contents.values())
    key_line = (daemon["state"] / "buffer.key").read_text().split()[1]
    assert key_line not in everything and base64.b64decode(key_line).hex() not in everything
    assert PATIENT not in everything
    assert "[patient]" in contents["iomt-diag/config.json"]
    assert "[secret reference]" in contents["iomt-diag/config.json"]
    assert "iomt_device_values_received_total" in contents["iomt-diag/metrics.txt"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to act as another user")
def test_a_user_outside_the_group_is_refused(daemon: dict[str, Any]) -> None:
    user = "iomt-outsider"
    if subprocess.run(["id", user], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
    uid = pwd.getpwnam(user).pw_uid
    refused = cli("status", "--socket", str(daemon["socket"]), user=user)
    assert refused.returncode == 1 and "not allowed" in refused.stderr  # the socket file's mode: 0660
    # Even with the socket opened to everyone by mistake, the peer-credential check refuses the outsider.
    os.chmod(daemon["socket"], 0o666)  # noqa: S103 - the misconfiguration under test
    refused = cli("status", "--socket", str(daemon["socket"]), user=user)
    assert refused.returncode == 1 and "forbidden" in refused.stderr, (uid, refused.stderr)
