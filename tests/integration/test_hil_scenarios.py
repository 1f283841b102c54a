"""The scenario runner (`iomt-gateway hil run`): every shipped scenario passes, a broken expectation is a readable
failing testcase, a scenario plays against a gateway already running in another process, and a file that is not
a scenario is refused with its reason."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gateway.admin import request
from hil.demo import free_loopback_port
from hil.runner.scenario import ScenarioError, load_scenario
from tests.conftest import Mosquitto, config_dict
from tests.support.configs import to_toml

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "hil" / "scenarios").glob("*.yaml"))
BROKEN = ROOT / "tests" / "fixtures" / "scenarios" / "broken_expectation.yaml"


def hil_run(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`iomt-gateway hil run ARGS` in a fresh interpreter, as a rig runs it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "hil", "run", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
        cwd=ROOT,
    )


def cases(report: Path) -> dict[str, ET.Element]:
    root = ET.parse(report).getroot()  # noqa: S314
    return {case.get("name", ""): case for case in root.iter("testcase")}


def test_the_library_covers_what_the_readme_promises() -> None:
    scenarios = [load_scenario(path) for path in SHIPPED]
    assert len(scenarios) >= 15
    kinds = {device.kind for s in scenarios for device in s.devices}
    assert kinds == {
        "ecg_patch",
        "pulse_oximeter",
        "cgm",
        "insulin_pump",
        "nonin_oximeter",
        "hl7_monitor",
        "medication_fridge",
        "dicom_modality",
    }
    alarms = {e.alarm.condition for s in scenarios for e in s.expect if e.alarm is not None}
    assert {
        "asystole",
        "ventricular_fibrillation",
        "ventricular_tachycardia",
        "extreme_bradycardia",
        "extreme_tachycardia",
    } <= alarms
    outcomes = {(e.command.outcome, e.command.reason) for s in scenarios for e in s.expect if e.command is not None}
    assert {o for o, _ in outcomes} == {"confirmed", "rejected", "failed", "outcome-unknown"}
    faults = {step.fault.kind for s in scenarios for step in s.timeline if step.fault is not None}
    assert faults == {"link_loss", "garbage", "broker_outage", "disk_full", "clock_jump"}


@pytest.mark.timeout(600)  # 19 scenarios of 20-35 s each, four at a time, beside the rest of the suite
def test_the_shipped_library_passes(tmp_path: Path) -> None:
    """The acceptance run, as a rig's CI runs it: every shipped scenario, four at a time, one JUnit report."""
    report = tmp_path / "report.xml"
    result = hil_run(*map(str, SHIPPED), "--jobs", "4", "--junit", str(report), timeout_s=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    root = ET.parse(report).getroot()  # noqa: S314
    suites = {suite.get("name") for suite in root.iter("testsuite")}
    assert len(suites) == len(SHIPPED)
    assert (root.get("failures"), root.get("errors")) == ("0", "0")
    assert int(root.get("tests", "0")) >= 3 * len(SHIPPED)


def test_a_broken_expectation_is_a_readable_failing_testcase(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    result = hil_run(str(BROKEN), str(SHIPPED[0].parent / "fridge_door.yaml"), "--junit", str(report), "--json")
    assert result.returncode == 1, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert (summary["passed"], summary["failed"], summary["expectations_failed"]) == (1, 1, 1)

    root = ET.parse(report).getroot()  # noqa: S314
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("6", "1", "0")
    by_name = cases(report)
    good = by_name["device.door_open on fridge-1 active within 4 s of 3 s (gateway)"]
    assert [child.tag for child in good] == ["system-out"]
    broken = by_name["door alarm at 20 s (broken on purpose)"]
    assert broken.get("classname") == "hil.broken-expectation"
    failure = broken.find("failure")
    assert failure is not None
    # The reason in words, then the timeline around the window the expectation was about.
    assert failure.get("message") == (
        "device.door_open was not active on the gateway between 20 and 22 s; it was active at 3.0-end s "
        "(the scenario ends at 9 s, before that window)"
    )
    text = failure.text or ""
    assert "timeline:" in text
    assert "scenario  end" in text  # the window is after the end: the report shows how the run ended


def test_a_file_that_is_not_a_scenario_is_an_error_testcase_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text(BROKEN.read_text().replace("door_open: true", "door_opn: true"))
    unreadable = tmp_path / "not-yaml.yaml"
    unreadable.write_text("name: [unclosed\n")
    report = tmp_path / "report.xml"
    result = hil_run(str(bad), str(unreadable), "--junit", str(report))
    assert result.returncode == 1
    errors = [case.find("error") for case in ET.parse(report).getroot().iter("testcase")]  # noqa: S314
    messages = [e.get("message") for e in errors if e is not None]
    assert messages == [
        "device fridge-1 (medication_fridge) has no setting 'door_opn' (has: door_open)",
        f"{unreadable}: not YAML (line 2, column 1): expected ',' or ']', but got '<stream end>'",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "name: x\ndescription: d\nduration_s: 5\ndevices: []\nexpect: []\n",
            "expect: Tuple should have at least 1 item",
        ),
        (
            "name: x\ndescription: d\nduration_s: 5\ndevices: [{id: a, kind: toaster}]\n"
            "expect: [{nothing_lost: true}]\n",
            "devices.0.kind: Input should be",
        ),
        (
            "name: x\ndescription: d\nduration_s: 5\ndevices: [{id: a, kind: cgm}]\n"
            "timeline: [{at_s: 1, set: {device: b, reading: LO}}]\nexpect: [{nothing_lost: true}]\n",
            "names an unknown device 'b'",
        ),
        (
            "name: x\ndescription: d\nduration_s: 5\ndevices: [{id: a, kind: cgm}]\n"
            "timeline: [{at_s: 9, fault: {kind: broker_outage}}]\nexpect: [{nothing_lost: true}]\n",
            "after the end",
        ),
        (
            "name: x\ndescription: d\nduration_s: 5\ndevices: [{id: a, kind: cgm}]\n"
            "timeline: [{at_s: 1, fault: {kind: link_loss}}]\nexpect: [{nothing_lost: true}]\n",
            "a link_loss fault needs a device",
        ),
        (
            "name: x\ndescription: d\nduration_s: 5\ndevices: [{id: a, kind: cgm}]\n"
            "expect: [{command: {name: c, outcome: confirmed}}]\n",
            "names no command of the timeline",
        ),
    ],
)
def test_scenario_mistakes_are_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match="not a scenario") as caught:
        load_scenario(path)
    assert problem in caught.value.message


def test_the_schema_is_printed() -> None:
    result = hil_run("--schema")
    schema = json.loads(result.stdout)
    assert schema["title"] == "iomt-gateway HIL scenario"
    assert {"name", "description", "duration_s", "devices", "expect"} <= set(schema["required"])


async def test_a_scenario_plays_against_a_gateway_running_elsewhere(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The gateway runs in its own process (as on another box); the rig reaches it through its broker and admin
    socket, and its simulators sit where the gateway's configuration says the devices are."""
    hl7_port, modbus_port = free_loopback_port(), free_loopback_port()
    data = config_dict(tmp_path / "state", mosquitto.port)
    data["gateway"]["id"] = "ward-gw-7"
    data["devices"] = [
        {"id": "monitor-1", "transport": "serial", "profile": "hl7_pcd01", "address": f"listen://127.0.0.1:{hl7_port}"},
        {
            "id": "fridge-1",
            "transport": "modbus",
            "profile": "medication_fridge",
            "address": f"tcp://127.0.0.1:{modbus_port}",
            "poll_interval_s": 1.0,
        },
    ]
    config = tmp_path / "gateway.toml"
    config.write_text(to_toml(data))
    scenario = tmp_path / "remote.yaml"
    scenario.write_text(
        f"""
name: remote-ward
description: A monitor and a fridge on a gateway running elsewhere.
duration_s: 14
devices:
  - {{id: monitor-1, kind: hl7_monitor, address: "listen://127.0.0.1:{hl7_port}"}}
  - {{id: fridge-1, kind: medication_fridge, address: "tcp://127.0.0.1:{modbus_port}"}}
timeline:
  - {{at_s: 5, set: {{device: fridge-1, door_open: true}}}}
expect:
  - alarm: {{condition: device.door_open, device: fridge-1, after_s: 5, within_s: 4}}
  - delivered: {{device: monitor-1, quantity: MDC_ECG_HEART_RATE, within_s: 8}}
  - nothing_lost: true
"""
    )
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    socket = tmp_path / "state" / "admin.sock"
    try:
        deadline = time.monotonic() + 20
        while not (socket.exists() and (await request(socket, "status")).get("ok")):
            assert time.monotonic() < deadline, "the gateway did not start"
            await asyncio.sleep(0.2)
        report = tmp_path / "report.xml"
        result = await asyncio.to_thread(
            hil_run,
            str(scenario),
            "--admin-socket",
            str(socket),
            "--broker",
            f"127.0.0.1:{mosquitto.port}",
            "--gateway-id",
            "ward-gw-7",
            "--junit",
            str(report),
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert len(cases(report)) == 3
    finally:
        gateway.terminate()
        await gateway.wait()


async def test_rig_transports_serial_ports_and_an_rtu_line(tmp_path: Path) -> None:
    """The real-rig mode's serial path, without hardware: the Nonin simulator writes to one end of a null-modem
    pair of ptys opened by path through pyserial (as /dev/ttyUSB1 would be), the gateway reads the other end; the
    fridge serves Modbus RTU on a line of its own."""
    from hil.serial_sim import NullModem  # noqa: PLC0415

    async with NullModem() as cable:
        scenario = tmp_path / "rig.yaml"
        scenario.write_text(
            f"""
name: serial-rig
description: A Nonin oximeter on a serial cable and a fridge on an RS-485 line.
duration_s: 10
devices:
  - id: nonin-1
    kind: nonin_oximeter
    address: {cable.b.path}
    rig: {{serial: {{path: {cable.a.path}, baudrate: 9600}}}}
    initial: {{spo2_pct: 84}}
  - {{id: fridge-1, kind: medication_fridge, rig: {{modbus: "rtu://pty?baudrate=19200"}}}}
expect:
  - alarm: {{condition: MDC_PULS_OXIM_SAT_O2.low, device: nonin-1, within_s: 8}}
  - delivered: {{device: fridge-1, quantity: MDC_TEMP_ROOM, within_s: 8}}
  - nothing_lost: true
"""
        )
        result = await asyncio.to_thread(hil_run, str(scenario))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_a_ble_rig_whose_controller_cannot_be_opened_fails_with_the_reason(tmp_path: Path) -> None:
    scenario = tmp_path / "ble-rig.yaml"
    port = free_loopback_port()  # nothing listens there: no controller behind the transport
    scenario.write_text(
        f"""
name: ble-rig
description: A pulse oximeter on a controller served over TCP that is not there.
duration_s: 5
devices:
  - {{id: ox-1, kind: pulse_oximeter, rig: {{ble_transport: "tcp-client:127.0.0.1:{port}"}}}}
expect: [{{nothing_lost: true}}]
"""
    )
    report = tmp_path / "report.xml"
    result = hil_run(str(scenario), "--junit", str(report))
    assert result.returncode == 1
    error = next(iter(cases(report).values())).find("error")
    assert error is not None
    assert f"cannot open the HCI transport tcp-client:127.0.0.1:{port}" in (error.get("message") or "")


def test_a_broker_that_is_down_is_named_in_the_error(tmp_path: Path) -> None:
    port = free_loopback_port()  # nothing listens: the broker is down
    report = tmp_path / "report.xml"
    result = hil_run(
        "fridge-door",
        "--admin-socket",
        str(tmp_path / "none.sock"),
        "--broker",
        f"127.0.0.1:{port}",
        "--gateway-id",
        "gw",
        "--junit",
        str(report),
    )
    assert result.returncode == 1
    error = next(iter(cases(report).values())).find("error")
    assert error is not None
    assert error.get("message") == (
        f"the broker at 127.0.0.1:{port} did not take the test cloud's subscription within 15 s "
        "(is it running, and may this rig connect?)"
    )


def test_a_report_that_cannot_be_written_is_said_in_one_line(tmp_path: Path) -> None:
    missing = hil_run(str(BROKEN), "--junit", str(tmp_path / "no" / "such" / "report.xml"))
    assert missing.returncode == 2  # before anything plays
    assert missing.stderr.strip().splitlines() == [
        f"iomt-gateway hil run: cannot write the report to {tmp_path / 'no' / 'such' / 'report.xml'}: "
        "no such writable folder"
    ]
    full = hil_run(str(tmp_path / "not-there.yaml"), "--junit", "/dev/full")  # a full disk
    assert full.returncode == 1
    assert "FAIL  not-there" in full.stdout  # the results are printed all the same
    assert full.stderr.strip().splitlines()[-1] == (
        "iomt-gateway hil run: cannot write the report to /dev/full: No space left on device"
    )
