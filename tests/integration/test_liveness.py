"""Every configured device has a liveness alarm: device_silent when no data came for its interval, cleared on data."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.alarms import AlarmEngine
from gateway.config import AlarmsSection, parse_config
from gateway.core.model import Alarm, AlarmPriority, AlarmState, ConnectionState, DeviceStatus, Observation, new_id
from gateway.core.nomenclature import quantity
from gateway.liveness import LivenessMonitor, liveness_rules
from tests.conftest import Mosquitto, config_dict
from tests.support.harness import running_gateway

DAY_S = 24 * 3600.0

S = 10**9


def _every_transport(tmp_path: Path) -> dict[str, object]:
    data = config_dict(tmp_path / "state", 1883)
    data["devices"] = [
        {"id": "ox", "transport": "ble", "profile": "pulse_oximeter", "address": "sim:ox"},
        {"id": "cgm", "transport": "ble", "profile": "cgm", "address": "sim:cgm", "silent_priority": "high"},
        {"id": "bp", "transport": "ble", "profile": "blood_pressure", "address": "sim:bp"},
        {"id": "fridge", "transport": "modbus", "profile": "medication_fridge", "address": "tcp://127.0.0.1:5020"},
        {"id": "mon", "transport": "serial", "profile": "hl7_pcd01", "address": "listen://127.0.0.1:2575"},
        {
            "id": "us",
            "transport": "dicom",
            "profile": "storage_scp",
            "address": "listen://127.0.0.1:11112",
            "allowed_calling_aes": ["US_CART_3"],
        },
        {"id": "mon2", "transport": "serial", "profile": "hl7_pcd01", "address": "/dev/ttyUSB1", "silent_after_s": 5},
    ]
    return data


def test_every_configured_device_has_a_rule_whatever_its_transport(tmp_path: Path) -> None:
    config = parse_config(_every_transport(tmp_path), check_secrets=False)
    rules = liveness_rules(config.devices)
    assert set(rules) == {d.id for d in config.devices}
    seconds = {device: rule.silent_after_ns / S for device, rule in rules.items()}
    assert seconds == {
        "ox": 15.0,
        "cgm": 660.0,  # two missed five-minute readings
        "bp": DAY_S,  # a spot-check device: a day without a reading
        "fridge": 10.0,  # three polls, at least 10 s
        "mon": 60.0,
        "us": DAY_S,
        "mon2": 5.0,  # configured
    }
    assert rules["cgm"].priority is AlarmPriority.HIGH and rules["ox"].priority is AlarmPriority.MEDIUM


def _spo2(t_ns: int) -> Observation:
    return Observation(new_id(), "ox", quantity("MDC_PULS_OXIM_SAT_O2"), 97.0, None, t_ns)


def test_device_silent_is_raised_once_after_the_interval_and_cleared_by_data(tmp_path: Path) -> None:
    config = parse_config(_every_transport(tmp_path), check_secrets=False)
    engine = AlarmEngine(AlarmsSection())
    engine.liveness = LivenessMonitor({"ox": liveness_rules(config.devices)["ox"]}, started_ns=0)
    assert engine.check_liveness(10 * S) == []
    assert engine.evaluate(_spo2(12 * S)) == []  # data in time
    assert engine.check_liveness(26 * S) == []  # 14 s since the last datum
    # A link that is up says nothing about data: a status does not count.
    engine.evaluate(DeviceStatus(new_id(), "ox", ConnectionState.CONNECTED, 27 * S))
    raised = engine.check_liveness(28 * S)
    assert [(a.condition, a.state, a.priority, a.kind.value) for a in raised] == [
        ("device_silent", AlarmState.ACTIVE, AlarmPriority.MEDIUM, "technical")
    ]
    assert engine.check_liveness(40 * S) == []  # raised once, not every check
    cleared = engine.evaluate(_spo2(41 * S))
    assert [(a.condition, a.state) for a in cleared] == [("device_silent", AlarmState.CLEARED)]


async def test_a_connected_device_that_stops_sending_raises_device_silent(tmp_path: Path, mosquitto: Mosquitto) -> None:
    data = config_dict(tmp_path / "state", mosquitto.port)
    data["devices"] = [{**data["devices"][1], "silent_after_s": 1.5, "silent_link_timeout_s": 600}]
    config = parse_config(data)
    async with running_gateway(config, receiver_port=mosquitto.port, drain_s=5) as run:
        heard: list[Alarm] = []
        run.gateway.parts.pipeline.alarm_listeners.append(heard.append)  # type: ignore[union-attr]
        await run.wait_until(lambda: run.received("ox-1") > 5)
        oximeter = run.world.peripherals["ox-1"]
        oximeter.silent = True  # the link stays up (no reconnect for 600 s); only the data stops
        await run.wait_until(lambda: any(a.condition == "device_silent" for a in heard), timeout_s=10)
        assert not any(a.condition == "device_disconnected" for a in heard)
        oximeter.silent = False
        await run.wait_until(lambda: [a.state for a in heard if a.condition == "device_silent"][-1] == "cleared")
        await asyncio.sleep(0)
        await run.finish()
        delivered = {item["condition"] for item in run.receiver.items.values() if item["lane"] == "alarms"}
        assert "device_silent" in delivered
