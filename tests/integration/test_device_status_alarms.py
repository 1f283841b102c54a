"""Device statuses that matter become alarms, by meaning: a CGM's LO reading (physiological, high priority, the
reading kept, coded), a sensor malfunction and an expired sensor session (technical), end to end over the real
BLE stack (bleak over bumble); and the pulse oximeter's measurement and sensor status bits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from drivers.ble import cgms, plxs
from drivers.ble.profiles import ProfileState, on_cgm, on_plx_continuous
from gateway.config import parse_config
from gateway.core.model import DeviceStatus, Observation
from hil.ble_radio import VirtualRadio
from hil.ble_sim import SimCgm
from tests.conftest import Mosquitto, config_dict
from tests.support.harness import Running, running_gateway


def _alarms(run: Running, condition: str) -> list[dict[str, Any]]:
    return [a for a in run.receiver.alarms if a["condition"] == condition]


async def test_cgm_lo_malfunction_and_expired_session_raise_their_alarms_over_bumble(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    data = config_dict(tmp_path / "state", mosquitto.port)
    data["devices"] = [
        {"id": "cgm-1", "transport": "ble", "profile": "cgm", "address": "virtual:cgm-1", "patient": "pt-Q"}
    ]
    config = parse_config(data)
    radio = VirtualRadio()
    cgm = SimCgm("cgm-1", time_scale=120.0)  # a record every half second
    radio.add(cgm)
    async with running_gateway(config, world=radio) as run:
        await run.wait_until(lambda: run.received("cgm-1") > 3, 30)
        # LO: the sensor's reading is below what it can measure.
        cgm.reading = -math.inf
        await run.wait_until(
            lambda: any(a["state"] == "active" for a in _alarms(run, "glucose_below_device_range")), 30
        )
        lo = _alarms(run, "glucose_below_device_range")[0]
        assert (lo["kind"], lo["priority"]) == ("physiological", "high")
        await run.wait_until(
            lambda: any(
                i.get("special") == "-inf" for i in run.receiver.items.values() if i.get("ref") == "MDC_CONC_GLU_ISF"
            ),
            30,
        )
        cgm.reading = None
        await run.wait_until(
            lambda: any(a["state"] == "cleared" for a in _alarms(run, "glucose_below_device_range")), 30
        )
        # A sensor malfunction, then the session's end (the sensor expired).
        cgm.sensor_status = 1 << 3
        await run.wait_until(
            lambda: any(a["state"] == "active" for a in _alarms(run, "device.cgm_sensor_malfunction")), 30
        )
        assert _alarms(run, "device.cgm_sensor_malfunction")[0]["kind"] == "technical"
        cgm.sensor_status = 1 << 0
        await run.wait_until(
            lambda: any(a["state"] == "active" for a in _alarms(run, "device.cgm_session_stopped")), 30
        )
        await run.wait_until(
            lambda: any(a["state"] == "cleared" for a in _alarms(run, "device.cgm_sensor_malfunction")), 30
        )
        await run.finish()


def test_cgm_records_fetched_late_do_not_speak_for_now_and_special_values_are_kept() -> None:
    state = ProfileState("cgm-1", cgm_session_start_ns=10**18)
    newest = cgms.encode_cgm_measurement(cgms.CgmMeasurement(math.inf, 10, 0), e2e_crc=False)
    events = on_cgm(state, newest)
    glucose = [e for e in events if isinstance(e, Observation)]
    assert len(glucose) == 1 and glucose[0].value == math.inf, "HI is kept, coded"
    status = [e for e in events if isinstance(e, DeviceStatus)]
    assert status[0].errors == ("glucose_above_device_range",)
    older = cgms.encode_cgm_measurement(cgms.CgmMeasurement(100.0, 5, 1 << 3), e2e_crc=False)  # via RACP, late
    assert not [e for e in on_cgm(state, older) if isinstance(e, DeviceStatus)]


def test_pulse_oximeter_status_bits_become_conditions_and_invalid_values_are_not_stored() -> None:
    state = ProfileState("ox-1")
    frame = plxs.encode_plx_continuous(plxs.PlxContinuousMeasurement(97.0, 70.0, None, 1 << 15, (1 << 13) | (1 << 5)))
    events = on_plx_continuous(state, frame)
    assert not [e for e in events if isinstance(e, Observation)], "the oximeter says the measurement is invalid"
    (status,) = [e for e in events if isinstance(e, DeviceStatus)]
    assert set(status.errors) == {"plx_invalid_measurement", "plx_sensor_displaced", "plx_low_perfusion"}
    assert status.detail["priority.plx_low_perfusion"] == "low"
    clean = plxs.encode_plx_continuous(plxs.PlxContinuousMeasurement(97.0, 70.0, None, 0, 0))
    events = on_plx_continuous(state, clean)
    assert len([e for e in events if isinstance(e, Observation)]) == 2
    assert [e.errors for e in events if isinstance(e, DeviceStatus)] == [()]
