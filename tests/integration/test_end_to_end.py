"""The first real data path: simulated BLE devices -> pipeline -> encrypted SQLite -> Mosquitto -> receiver."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.core.nomenclature import quantity
from tests.conftest import Mosquitto, make_config
from tests.support.harness import running_gateway


async def test_every_device_streams_to_the_receiver_exactly_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = make_config(tmp_path / "state", mosquitto.port)
    async with running_gateway(config) as run:
        await run.wait_until(lambda: all(run.receiver.stats.unique[d.id] > 3 for d in config.devices))
        await asyncio.sleep(1.0)
        await run.finish()
        for device in config.devices:
            counters = run.gateway.metrics.device(device.id)
            assert counters.received > 0, device.id
            assert counters.accepted == counters.received, device.id
            assert run.receiver.stats.unique[device.id] == counters.accepted, device.id
        assert run.receiver.stats.invalid_payloads == 0

    by_ref: dict[str, list[dict[str, object]]] = {}
    for item in run.receiver.items.values():
        if item["lane"] in ("numerics", "waveforms") and item.get("ref"):  # alarms carry a ref, not a unit
            by_ref.setdefault(str(item["ref"]), []).append(item)
    for ref in (
        "MDC_PULS_OXIM_SAT_O2",
        "MDC_ECG_HEART_RATE",
        "MDC_CONC_GLU_ISF",
        "MDC_INS_RESERVOIR",
        "MDC_ECG_ELEC_POTL",
    ):
        items = by_ref[ref]
        q = quantity(ref)
        assert all(i["code"] == q.code and i["unit"] == q.ucum for i in items), ref
        assert all(i["patient"] == "pt-ZX81Q" for i in items)
    spo2 = [float(i["value"]) for i in by_ref["MDC_PULS_OXIM_SAT_O2"]]  # type: ignore[arg-type]
    assert all(80 <= v <= 100 for v in spo2)
    glucose_times = [i["t_dev"] for i in by_ref["MDC_CONC_GLU_ISF"]]
    assert all(isinstance(t, int) for t in glucose_times), "CGM readings carry the device's own time"
    ecg = by_ref["MDC_ECG_ELEC_POTL"]
    assert all(i["rate_hz"] == 130.0 and isinstance(i["n"], int) and i["n"] > 0 for i in ecg)


async def test_buffer_is_empty_after_drain_and_rows_deleted_only_after_puback(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = make_config(tmp_path / "state", mosquitto.port)
    async with running_gateway(config) as run:
        await run.wait_until(lambda: run.gateway.metrics.publishes > 5)
        await run.finish()
        metrics = run.gateway.metrics
        assert metrics.rows_deleted == metrics.rows_written
        assert 0 < metrics.publishes <= metrics.rows_written  # a message carries one or more rows
