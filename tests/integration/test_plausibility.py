"""Sensor-fault codes and physically impossible values become technical alarms, not data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmsSection, parse_config
from gateway.core.model import Alarm, Observation, new_id, now_ns
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import generate_key_file, load_keyring
from hil.modbus_sim import MedicationFridge, ModbusSimServer
from tests.conftest import Mosquitto, config_dict
from tests.support.harness import running_gateway


async def test_a_modbus_sensor_fault_code_is_a_technical_alarm_not_a_temperature(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    fridge = MedicationFridge(unit_id=1)
    healthy = fridge.values["cabinet_temperature"]
    async with ModbusSimServer([fridge]) as server:
        data = config_dict(tmp_path / "state", mosquitto.port)
        data["devices"] = [
            {
                "id": "fridge-1",
                "transport": "modbus",
                "profile": "medication_fridge",
                "address": server.address,
                "poll_interval_s": 0.2,
            }
        ]
        async with running_gateway(parse_config(data)) as run:
            await run.wait_until(lambda: run.receiver.stats.unique["fridge-1"] > 5, 30)
            fridge.values["cabinet_temperature"] = lambda _t: 3276.7  # the register reads 0x7FFF
            await run.wait_until(lambda: _alarm_states(run, "device.sensor_fault.cabinet_temperature") == ["active"])
            fridge.values["cabinet_temperature"] = healthy
            await run.wait_until(lambda: "cleared" in _alarm_states(run, "device.sensor_fault.cabinet_temperature"))
            await run.finish()
    temperatures = [float(i["value"]) for i in run.receiver.items.values() if i.get("ref") == "MDC_TEMP_ROOM"]
    assert temperatures and max(temperatures) < 20.0, "0x7FFF was never stored as 3276.7 Cel"


def _alarm_states(run: object, condition: str) -> list[str]:
    return [a["state"] for a in run.receiver.alarms if a["condition"] == condition]  # type: ignore[attr-defined]


async def test_impossible_values_raise_a_technical_alarm_and_are_not_stored(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    buffer = await Buffer.open(tmp_path / "b.db", load_keyring(key))
    metrics = Metrics()
    alarms = AlarmEngine(
        AlarmsSection.model_validate({"limits": [{"quantity": "MDC_PULS_OXIM_SAT_O2", "low": 90, "priority": "high"}]})
    )
    pipeline = Pipeline(buffer, alarms, metrics, gateway_id="gw", patients={}, flush_interval_s=0.02)
    heard: list[Alarm] = []
    pipeline.alarm_listeners.append(heard.append)
    task = asyncio.create_task(pipeline.run())
    spo2 = quantity("MDC_PULS_OXIM_SAT_O2")
    for value in (97.0, 127.0, float("nan"), -4.0, 96.0):
        await pipeline.emit(Observation(new_id(), "ox-1", spo2, value, None, now_ns()))
    pipeline.close()
    await task
    assert [(a.condition, a.state.value, a.kind.value) for a in heard] == [
        ("implausible.MDC_PULS_OXIM_SAT_O2", "active", "technical"),
        ("implausible.MDC_PULS_OXIM_SAT_O2", "cleared", "technical"),
    ], "one episode; -4 % is not a desaturation, so no SpO2 limit alarm either"
    stored = [
        item["value"]
        for record in await buffer.read({}, 100)
        for item in json.loads(record.payload)["items"]
        if "value" in item
    ]
    assert stored == [97.0, 96.0]
    assert metrics.implausible_values == 3
    await buffer.close()
