"""No measured value, patient identifier or key material ever reaches a log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

from gateway.core.errors import TransportError
from gateway.core.logs import REDACTED, get_logger
from hil.ble_sim import SimBleWorld, SimCgm, SimEcgPatch, SimInsulinPump, SimPulseOximeter
from hil.physiology import Trajectory
from tests.conftest import Mosquitto, make_config
from tests.support.harness import running_gateway

PATIENT = "pt-ZX81Q"
# Sentinel vitals: each simulator holds one distinctive value, so any leak of it is findable in the text.
SPO2, PULSE, GLUCOSE, RESERVOIR = 93.7, 61.3, 287, 163.9


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _leaks(text: str) -> list[str]:
    found = [PATIENT] if PATIENT in text else []
    for value in (SPO2, PULSE, GLUCOSE, RESERVOIR):
        if re.search(rf"(?<![\d.]){re.escape(str(value))}(?![\d])", text):
            found.append(str(value))
    return found


def test_unknown_keys_unsafe_types_and_foreign_text_are_redacted(captured_logs: io.StringIO) -> None:
    log = get_logger("test")
    log.info("reading", device_id="ox-1", value=SPO2, spo2=88, patient=PATIENT, key=b"\x01" * 32, payload="x")
    log.info("safe key, unsafe type", count=b"93.7", detail=[SPO2])
    try:
        raise ValueError(f"bad reading {SPO2} for {PATIENT}")
    except ValueError:
        log.warning("decode failed", exc_info=True)
    try:
        raise TransportError("link lost", device_id="ox-1")
    except TransportError:
        log.warning("link failed", exc_info=True)
    logging.getLogger("some.library").warning("payload %s from %s", str(SPO2), PATIENT)
    logging.getLogger("asyncio").error(f"Task exception was never retrieved: ValueError('{PATIENT}')")
    first, second, third, fourth, fifth, sixth = _lines(captured_logs)
    assert first["device_id"] == "ox-1"
    for key in ("value", "spo2", "patient", "key", "payload"):
        assert first[key] == REDACTED
    assert second["count"] == REDACTED and second["detail"] == REDACTED
    assert third["exc_type"] == "ValueError"
    assert "exc_detail" not in third
    assert fourth["exc_detail"] == "link lost"
    assert fifth["logger"] == "some.library" and "text withheld" in str(fifth["event"])
    assert sixth["logger"] == "asyncio"
    assert _leaks(captured_logs.getvalue()) == []


async def test_unhandled_task_exception_reaches_the_log_without_its_message(captured_logs: io.StringIO) -> None:
    loop = asyncio.get_running_loop()
    loop.call_exception_handler({"message": f"unhandled {PATIENT}", "exception": ValueError(f"{SPO2} {PATIENT}")})
    line = _lines(captured_logs)[-1]
    assert line["logger"] == "asyncio" and line["exc_type"] == "ValueError"
    assert _leaks(captured_logs.getvalue()) == []


def _sentinel_world() -> SimBleWorld:
    world = SimBleWorld()
    ecg = world.add(SimEcgPatch("ecg-1", heart_rate_bpm=77.0))
    ox = world.add(SimPulseOximeter("ox-1"))
    assert isinstance(ox, SimPulseOximeter)
    ox.spo2 = Trajectory(SPO2, 0.0)
    ox.pulse = Trajectory(PULSE, 0.0)
    cgm = world.add(SimCgm("cgm-1"))
    assert isinstance(cgm, SimCgm)
    cgm.glucose = Trajectory(GLUCOSE, 0.0)
    world.add(SimInsulinPump("pump-1", reservoir_iu=RESERVOIR, basal_iu_h=0.0))
    del ecg
    return world


async def test_data_path_logs_hold_no_vital_value_or_patient_id(
    tmp_path: Path, mosquitto: Mosquitto, captured_logs: io.StringIO
) -> None:
    config = make_config(tmp_path / "state", mosquitto.port)
    async with running_gateway(config, world=_sentinel_world()) as run:
        await run.wait_until(lambda: all(run.receiver.stats.unique[d.id] > 2 for d in config.devices))
        # Provoke the log lines that sit closest to data: invalid frames, link loss, restarts.
        run.world.peripherals["ox-1"].garbage_every = 2
        run.world.peripherals["cgm-1"].drop_links()
        run.gateway.parts.supervisor.kill("driver:ecg-1")  # type: ignore[union-attr]
        await asyncio.sleep(3.0)
        run.world.peripherals["ox-1"].garbage_every = 0
        await run.finish()

    # The sentinels really flowed through the gateway...
    values = {item.get("value") for item in run.receiver.items.values()}
    assert {SPO2, PULSE, float(GLUCOSE), RESERVOIR} <= values
    assert any(item.get("patient") == PATIENT for item in run.receiver.items.values())
    # ...the risky log lines were written...
    events = {str(line["event"]) for line in _lines(captured_logs)}
    assert {"invalid frame dropped", "task failed; restarting", "device connected"} <= events
    # ...and none of them carries a sentinel or the patient id.
    assert _leaks(captured_logs.getvalue()) == []
