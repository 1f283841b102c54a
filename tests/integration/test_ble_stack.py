"""The production BLE driver over a real BLE stack: bleak (backend=) over bumble, GATT servers on a virtual radio.

Nothing here is a mock of the driver's transport: every value goes through advertising, connection, service
discovery, CCCD writes, ATT notifications/indications, SMP pairing and disconnection events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bleak import BleakClient, BleakScanner

from drivers.ble import bas, cgms, hrs, idd_status, ids, plxs, pmd, racp
from gateway.config import Config, parse_config
from gateway.core.nomenclature import quantity
from hil.ble_radio import VirtualRadio
from hil.ble_sim import SimCgm, SimEcgPatch, SimInsulinPump, SimPulseOximeter
from hil.bleak_bumble import BumbleBleakClient, BumbleBleakScanner
from tests.conftest import DEVICES, Mosquitto, config_dict
from tests.support.commanding import Issuer, publish
from tests.support.harness import Running, running_gateway


def _virtual_config(tmp_path: Path, port: int, **overrides: Any) -> Config:
    data = config_dict(tmp_path / "state", port, **overrides)
    data["devices"] = [{**d, "address": str(d["address"]).replace("sim:", "virtual:")} for d in DEVICES]
    return parse_config(data)


def _radio() -> VirtualRadio:
    radio = VirtualRadio()
    radio.add(SimEcgPatch("ecg-1"))
    radio.add(SimPulseOximeter("ox-1"))
    radio.add(SimCgm("cgm-1", time_scale=60.0))
    radio.add(SimInsulinPump("pump-1"))
    return radio


def _items(run: Running, device: str, ref: str) -> list[dict[str, Any]]:
    return [
        i
        for i in run.receiver.items.values()
        if i["device"] == device and i.get("ref") == ref and i["lane"] in ("numerics", "waveforms")
    ]


def _sent(radio: VirtualRadio, name: str, uuid: str) -> list[bytes]:
    return [data for u, data in radio.host(name).sent if u == uuid]


async def _go_quiet(radio: VirtualRadio, names: Iterable[str]) -> None:
    """Take the peripherals out of range, so what they sent is final before the gateway drains."""
    for name in names:
        await radio.host(name).go_offline()
    await asyncio.sleep(0.3)


async def test_scan_sees_every_peripheral_with_its_health_service_and_rssi() -> None:
    async with _radio() as radio:
        # bleak's overloads do not list a backend's own keyword arguments (bumble_device).
        found = await BleakScanner.discover(  # type: ignore[call-overload]
            timeout=1.0, return_adv=True, backend=BumbleBleakScanner, bumble_device=radio.adapter
        )
        by_name = {adv.local_name: (device, adv) for device, adv in found.values()}
        assert set(by_name) == {"ecg-1", "ox-1", "cgm-1", "pump-1"}
        assert hrs.HEART_RATE_SERVICE in by_name["ecg-1"][1].service_uuids
        assert plxs.PULSE_OXIMETER_SERVICE in by_name["ox-1"][1].service_uuids
        assert cgms.CGM_SERVICE in by_name["cgm-1"][1].service_uuids
        assert ids.INSULIN_DELIVERY_SERVICE in by_name["pump-1"][1].service_uuids
        assert all(adv.rssi < 0 for _, adv in by_name.values())
        assert by_name["cgm-1"][0].address == radio.host("cgm-1").address


async def test_pump_characteristics_need_pairing_and_the_paired_link_is_encrypted() -> None:
    async with _radio() as radio:
        address = radio.host("pump-1").address
        async with BleakClient(address, backend=BumbleBleakClient, bumble_device=radio.adapter) as client:
            # Battery and Device Information are open; the Insulin Delivery Service is not.
            assert (await client.read_gatt_char(bas.BATTERY_LEVEL))[0] <= 100
            with pytest.raises(Exception, match=r"(?i)encryption|authentication"):
                await client.write_gatt_char(ids.IDD_COMMAND_CONTROL_POINT, b"\x00\x00", response=True)
        async with BleakClient(address, backend=BumbleBleakClient, bumble_device=radio.adapter, pair=True):
            connection = next(iter(radio.host("pump-1").device.connections.values()))
            assert connection.is_encrypted


async def test_every_peripheral_streams_through_the_stack_to_the_receiver(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = _virtual_config(tmp_path, mosquitto.port)
    radio = _radio()
    async with running_gateway(config, world=radio) as run:
        await run.wait_until(lambda: all(run.receiver.stats.unique[d.id] > 6 for d in config.devices), 30)
        await _go_quiet(radio, radio.hosts)
        await run.finish()
        for device in config.devices:
            counters = run.gateway.metrics.device(device.id)
            assert counters.accepted == counters.received > 0, device.id
            assert run.receiver.stats.unique[device.id] == counters.accepted, device.id

    # Every value the peripherals put on air arrives, with its MDC code and UCUM unit.
    def check_units(device: str, ref: str) -> list[dict[str, Any]]:
        items = _items(run, device, ref)
        q = quantity(ref)
        assert items and all(i["code"] == q.code and i["unit"] == q.ucum for i in items), ref
        return items

    spo2_sent = [plxs.decode_plx_continuous(f).spo2_pct for f in _sent(radio, "ox-1", plxs.PLX_CONTINUOUS_MEASUREMENT)]
    spo2 = check_units("ox-1", "MDC_PULS_OXIM_SAT_O2")
    assert sorted(float(i["value"]) for i in spo2) == sorted(spo2_sent)

    hr_sent = [
        hrs.decode_heart_rate_measurement(f).heart_rate_bpm for f in _sent(radio, "ecg-1", hrs.HEART_RATE_MEASUREMENT)
    ]
    assert sorted(float(i["value"]) for i in check_units("ecg-1", "MDC_ECG_HEART_RATE")) == sorted(map(float, hr_sent))

    frames = [pmd.decode_pmd_ecg_frame(f) for f in _sent(radio, "ecg-1", pmd.PMD_DATA)]
    ecg = sorted(check_units("ecg-1", "MDC_ECG_ELEC_POTL"), key=lambda i: int(i["t_dev"]))
    received_samples = np.concatenate([np.asarray(i["samples"]) for i in ecg])
    assert np.array_equal(received_samples, np.concatenate([f.samples_uv for f in frames]))

    cgm = radio.host("cgm-1").peripheral
    assert isinstance(cgm, SimCgm)
    glucose = check_units("cgm-1", "MDC_CONC_GLU_ISF")
    by_time = {int(i["t_dev"]): float(i["value"]) for i in glucose}
    expected = {cgm.session_start_ns + r.time_offset_min * 60_000_000_000: r.glucose_mg_dl for r in cgm.records}
    assert by_time == expected

    reservoir = check_units("pump-1", "MDC_INS_RESERVOIR")
    sent_reservoir = [
        idd_status.decode_idd_status(f, e2e=True).reservoir_remaining_iu
        for f in _sent(radio, "pump-1", idd_status.IDD_STATUS)
    ]
    assert sorted(float(i["value"]) for i in reservoir) == sorted(sent_reservoir)

    statuses = [i for i in run.receiver.items.values() if i.get("connection") == "connected"]
    identified = [s for s in statuses if s.get("detail", {}).get("manufacturer_name")]
    assert {s["device"] for s in identified} == {d.id for d in config.devices}
    assert all(isinstance(s.get("rssi_dbm"), int) for s in identified)
    # The devices that keep time (Current Time Service) had their drifted clocks set by the gateway.
    for name in ("cgm-1", "pump-1"):
        offset = radio.host(name).peripheral.clock_offset_s
        assert offset is not None and abs(offset) < 2.0, name


async def test_cgm_out_of_range_for_two_minutes_is_backfilled_through_racp(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = _virtual_config(tmp_path, mosquitto.port)
    config = config.model_copy(update={"devices": [d for d in config.devices if d.id == "cgm-1"]})
    radio = VirtualRadio()
    cgm = SimCgm("cgm-1", interval_min=1, time_scale=60.0)  # one device minute per real second
    radio.add(cgm)
    host = radio.host("cgm-1")
    async with running_gateway(config, world=radio) as run:
        await run.wait_until(lambda: len(_items(run, "cgm-1", "MDC_CONC_GLU_ISF")) >= 3, 30)
        await host.go_offline()
        offline_from = len(cgm.records)
        await asyncio.sleep(2.0 * 60 / cgm.time_scale + 0.2)  # two minutes of the sensor's clock
        missed = len(cgm.records) - offline_from
        await host.go_online()
        await run.wait_until(lambda: cgm.connections >= 2 and len(cgm.racp_requests) >= 2, 30)
        await run.wait_until(lambda: len(_items(run, "cgm-1", "MDC_CONC_GLU_ISF")) >= len(cgm.records), 30)
        await _go_quiet(radio, ["cgm-1"])
        await run.finish()

    assert missed >= 2
    # After the reconnect the gateway asked only for what came after the newest record it had.
    resume = cgm.racp_requests[-1]
    assert resume.opcode == racp.RacpOpcode.REPORT_STORED_RECORDS
    assert resume.operator == racp.RacpOperator.GREATER_THAN_OR_EQUAL
    assert resume.operand[0] <= offline_from * cgm.interval_min
    offsets = sorted(
        (int(i["t_dev"]) - cgm.session_start_ns) // 60_000_000_000 for i in _items(run, "cgm-1", "MDC_CONC_GLU_ISF")
    )
    assert offsets == [r.time_offset_min for r in cgm.records], "no gap and no duplicate at the receiver"


async def test_verified_bolus_reaches_the_pump_over_ids_with_e2e_and_its_delivery_comes_back(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    issuer = Issuer()
    data = config_dict(tmp_path / "state", mosquitto.port)
    data["devices"] = [{"id": "pump-1", "transport": "ble", "profile": "insulin_pump", "address": "virtual:pump-1"}]
    data["commands"] = {
        "enabled": True,
        "clock_skew_s": 30,
        "max_validity_s": 600,
        "response_timeout_s": 5,
        "issuers": issuer.issuers_config(),
        "devices": [
            {
                "device": "pump-1",
                "allowed": ["bolus"],
                "max_commands_per_hour": 10,
                "max_bolus_mu": 5000,
                "dose_step_mu": 50,
                "max_basal_mu_per_h": 2000,
                "max_daily_mu": 100_000,
            }
        ],
    }
    config = parse_config(data)
    radio = VirtualRadio()
    pump = SimInsulinPump("pump-1")
    radio.add(pump)
    async with running_gateway(config, world=radio) as run:
        await run.wait_until(lambda: run.gateway.parts.commands._targets["pump-1"].connected, 30)  # type: ignore[union-attr]
        envelope = issuer.envelope("pump-1", "bolus", {"amount_mu": 1500})
        await publish(mosquitto.port, envelope)

        def results() -> list[dict[str, Any]]:
            return [i for i in run.receiver.items.values() if i.get("command_id") == envelope["command_id"]]

        await run.wait_until(lambda: any(r["outcome"] == "confirmed" for r in results()), 30)
        # The command went over the gateway's paired, encrypted link (checked while it is up).
        links = list(radio.host("pump-1").device.connections.values())
        assert links and all(link.is_encrypted for link in links)

        # The pump signals Status Changed; the gateway reads it through the Status Reader CP and resets the flags.
        def delivered() -> list[str]:
            return [
                str(i["detail"]["bolus_delivered_iu"])
                for i in run.receiver.items.values()
                if i["device"] == "pump-1" and "bolus_delivered_iu" in (i.get("detail") or {})
            ]

        await run.wait_until(lambda: "1.5" in delivered() and bool(pump.status_resets), 30)
        # The pump's own alarm (an occlusion) is a high-priority technical alarm until confirmed at the pump.
        pump.annunciate(ids.AnnunciationType.OCCLUSION_DETECTED)

        def occlusion() -> list[dict[str, Any]]:
            return [a for a in run.receiver.alarms if a["condition"] == "device.pump_occlusion_detected"]

        await run.wait_until(lambda: any(a["state"] == "active" for a in occlusion()), 30)
        pump.confirm_annunciation()
        await run.wait_until(lambda: any(a["state"] == "cleared" for a in occlusion()), 30)
        await run.finish()

    # The write on the IDD Command Control Point carried a valid E2E-CRC and the first E2E-Counter value.
    writes = [data for uuid, data in pump.writes if uuid == ids.IDD_COMMAND_CONTROL_POINT]
    assert len(writes) == 1
    command, counter = ids.decode_command(writes[0], e2e=True)  # raises InvalidFrame on a bad CRC
    assert isinstance(command, ids.SetBolus) and command.fast_amount_iu == 1.5
    assert counter == ids.E2ECounter().next()
    assert pump.deliveries == [(1, 1.5)]
    confirmed = next(r for r in results() if r["outcome"] == "confirmed")
    assert confirmed["detail"]["bolus_id"] == "1", "the pump's own answer is the command result"
    assert all(a["priority"] == "high" and a["kind"] == "technical" for a in occlusion())
    assert any(ids.StatusChangedFlag.ACTIVE_BOLUS_STATUS_CHANGED in flags for flags in pump.status_resets)


async def test_dropped_and_silent_links_are_noticed_and_reconnected(tmp_path: Path, mosquitto: Mosquitto) -> None:
    data = config_dict(tmp_path / "state", mosquitto.port)
    data["devices"] = [
        {
            "id": "ox-1",
            "transport": "ble",
            "profile": "pulse_oximeter",
            "address": "virtual:ox-1",
            "silent_link_timeout_s": 1.5,
        }
    ]
    config = parse_config(data)
    radio = VirtualRadio()
    oximeter = SimPulseOximeter("ox-1")
    host = radio.add(oximeter)
    async with running_gateway(config, world=radio) as run:
        await run.wait_until(lambda: oximeter.connections == 1 and run.received("ox-1") > 2, 30)
        host.lose()  # the link drops (supervision timeout): the gateway sees a disconnection event
        await run.wait_until(lambda: oximeter.connections == 2, 30)
        oximeter.silent = True  # connected but sending nothing: only the watchdog can notice
        await asyncio.sleep(2.5)
        oximeter.silent = False
        await run.wait_until(lambda: oximeter.connections >= 3, 30)
        before = run.received("ox-1")
        await run.wait_until(lambda: run.received("ox-1") > before + 1, 30)
        await _go_quiet(radio, ["ox-1"])
        await run.finish()
    disconnects = [
        i["detail"].get("reason") for i in run.receiver.items.values() if i.get("connection") == "disconnected"
    ]
    assert disconnects.count("link_lost") >= 2, disconnects


async def test_corrupt_cgm_records_are_fetched_again_and_none_is_missing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    config = _virtual_config(tmp_path, mosquitto.port)
    config = config.model_copy(update={"devices": [d for d in config.devices if d.id == "cgm-1"]})
    radio = VirtualRadio()
    cgm = SimCgm("cgm-1", interval_min=1, time_scale=120.0)
    cgm.garbage_every = 3  # every third live record arrives as garbage (fails its size and E2E-CRC checks)
    radio.add(cgm)
    async with running_gateway(config, world=radio) as run:
        await run.wait_until(lambda: len(cgm.records) >= 10, 30)
        await run.wait_until(lambda: len(_items(run, "cgm-1", "MDC_CONC_GLU_ISF")) >= len(cgm.records) - 1, 30)
        await _go_quiet(radio, ["cgm-1"])
        await run.finish()
        driver_stats = run.gateway.metrics.drivers["cgm-1"]
    assert driver_stats.invalid_frames >= 3
    offsets = sorted(
        (int(i["t_dev"]) - cgm.session_start_ns) // 60_000_000_000 for i in _items(run, "cgm-1", "MDC_CONC_GLU_ISF")
    )
    assert offsets == [r.time_offset_min for r in cgm.records], "every corrupted record was fetched again"
    assert len(cgm.racp_requests) >= 1 + driver_stats.invalid_frames // 2
