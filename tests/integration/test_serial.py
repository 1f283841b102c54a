"""Wired devices through the gateway: a Nonin oximeter and an HL7 monitor on real ptys, HL7 senders over TCP/MLLP.

Faults are injected on the wire (garbage, truncated frames, corrupted checksums): every good frame still
arrives with the values the simulator sent, every bad one is counted, and HL7 senders get the right ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from drivers.serial import hl7
from drivers.serial.framing import MllpFramer, mllp_wrap
from gateway.config import Config, parse_config
from gateway.core.nomenclature import quantity
from hil.demo import free_loopback_port
from hil.serial_sim import Faults, Hl7Monitor, NoninOximeter, PtyPort
from tests.conftest import Mosquitto, config_dict
from tests.support.harness import Running, running_gateway


def _config(tmp_path: Path, port: int, **device: Any) -> Config:
    data = config_dict(tmp_path / "state", port)
    data["devices"] = [{"id": "bed-1", "transport": "serial", "patient": "pt-W7", **device}]
    return parse_config(data)


def _subsequence(received: list[tuple[int, ...]], sent: list[tuple[int, ...]]) -> list[int]:
    """Where each received item sits in `sent`, matching in order (fails if `received` is not a subsequence)."""
    positions, start = [], 0
    for item in received:
        index = sent.index(item, start)  # ValueError: received something not sent, or out of order
        positions.append(index)
        start = index + 1
    return positions


def _numerics(run: Running, ref: str) -> list[dict[str, Any]]:
    return [i for i in run.receiver.items.values() if i.get("ref") == ref and i["lane"] == "numerics"]


async def test_nonin_oximeter_on_a_pty_survives_line_faults(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = PtyPort()
    oximeter = NoninOximeter(port, faults=Faults(garbage_every=5, truncate_every=7, corrupt_every=11))
    config = _config(tmp_path, mosquitto.port, profile="nonin_df2", address=port.path)
    try:
        async with running_gateway(config) as run:
            sender = asyncio.create_task(oximeter.run())
            await run.wait_until(lambda: len(oximeter.sent) >= 30, 30)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await asyncio.sleep(0.5)
            await run.finish()
            stats = run.gateway.metrics.drivers["bed-1"]
    finally:
        port.close()
    spo2 = _numerics(run, "MDC_PULS_OXIM_SAT_O2")
    assert spo2 and all(i["unit"] == quantity("MDC_PULS_OXIM_SAT_O2").ucum for i in spo2)
    waves = sorted(
        (i for i in run.receiver.items.values() if i.get("ref") == "MDC_PULS_OXIM_PLETH"), key=lambda i: i["t_gw"]
    )
    received = [tuple(int(v) for v in np.asarray(w["samples"])) for w in waves]
    intact = [pleth for _, _, pleth in oximeter.sent]
    # Every packet that arrived is one the oximeter sent intact, in order; a damaged one never arrives.
    positions = _subsequence(received, intact)
    assert len(received) >= 0.8 * len(intact), "only packets next to a fault may be lost to resynchronisation"
    assert sorted(float(i["value"]) for i in spo2) == sorted(float(oximeter.sent[p][0]) for p in positions), (
        "SpO2 values are the ones in the packets that arrived"
    )
    assert stats.invalid_frames >= 5, "every damaged run was counted"
    assert all(i["patient"] == "pt-W7" for i in spo2)


async def test_hl7_monitor_on_a_pty_gets_every_message_through_and_acknowledged(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    port = PtyPort()
    monitor = Hl7Monitor(interval_s=0.1, faults=Faults(garbage_every=4, truncate_every=6))
    config = _config(tmp_path, mosquitto.port, profile="hl7_pcd01", address=port.path)
    framer = MllpFramer()
    try:
        async with running_gateway(config) as run:
            sender = asyncio.create_task(monitor.run_on(port, None))

            def collect_acks() -> int:
                for frame in framer.feed(port.read_available()):
                    monitor.record_ack(frame)
                return len(monitor.acks)

            await run.wait_until(lambda: collect_acks() >= 20, 30)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await run.wait_until(lambda: collect_acks() >= len(monitor.sent), 10)
            await run.finish()
    finally:
        port.close()
    assert set(monitor.acks) == set(monitor.sent), "every intact message was acknowledged, none other"
    assert set(monitor.acks.values()) == {"AA"}
    expected = sorted((ref, value) for values in monitor.sent.values() for ref, value in values)
    got = sorted(
        (str(i["ref"]), float(i["value"]))
        for ref in ("MDC_PRESS_BLD_ART_SYS", "MDC_PRESS_BLD_ART_DIA", "MDC_PRESS_BLD_ART_MEAN", "MDC_ECG_HEART_RATE")
        for i in _numerics(run, ref)
    )
    assert got == expected
    assert all(i["unit"] == "mm[Hg]" for i in _numerics(run, "MDC_PRESS_BLD_ART_SYS"))


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    framer = MllpFramer()
    while True:
        frames = framer.feed(await asyncio.wait_for(reader.read(4096), 10))
        if frames:
            return frames[0]


def _msa(ack: bytes) -> list[str]:
    segment = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    return segment.decode().split("|")


async def test_hl7_listener_acks_aa_ae_ar_and_resyncs_after_garbage(tmp_path: Path, mosquitto: Mosquitto) -> None:
    listen = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, profile="hl7_pcd01", address=f"listen://127.0.0.1:{listen}")
    monitor = Hl7Monitor()
    async with running_gateway(config) as run:
        for _ in range(100):
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", listen)
                break
            await asyncio.sleep(0.05)
        try:
            control_id, good = monitor.message((120.0, 80.0, 93.0, 72.0))
            assert _msa(await _exchange(reader, writer, mllp_wrap(good)))[1:3] == ["AA", control_id]

            # A numeric that is not a number: the message parses, the application refuses it (AE).
            bad_id, bad = monitor.message((121.0, 81.0, 94.0, 73.0))
            not_number = bad.replace(b"|121|", b"|12x1|") if b"|121|" in bad else bad.replace(b"|121.0|", b"|12x1|")
            ack = _msa(await _exchange(reader, writer, mllp_wrap(not_number)))
            assert ack[1:3] == ["AE", bad_id]

            # Not HL7 at all, and an unsupported version: rejected (AR).
            assert _msa(await _exchange(reader, writer, mllp_wrap(b"hello, this is not HL7")))[1] == "AR"
            old_id, old = monitor.message((122.0, 82.0, 95.0, 74.0))
            assert _msa(await _exchange(reader, writer, mllp_wrap(old.replace(b"|2.6|", b"|2.1|"))))[1:3] == [
                "AR",
                old_id,
            ]

            # Garbage and a truncated frame on the line, then a good message: the framer resyncs (AA).
            last_id, last = monitor.message((123.0, 83.0, 96.0, 75.0))
            noise = b"\x00\xffNOISE" + mllp_wrap(good)[:40]
            assert _msa(await _exchange(reader, writer, noise + mllp_wrap(last)))[1:3] == ["AA", last_id]
        finally:
            writer.close()
        await run.wait_until(lambda: len(_numerics(run, "MDC_ECG_HEART_RATE")) >= 2, 10)
        # The monitor hung up and nobody else sends: the gateway says so (a technical alarm), it does not go quiet.
        await run.wait_until(
            lambda: any(
                a["condition"] == "device_disconnected" and a["state"] == "active" for a in run.receiver.alarms
            ),
            10,
        )
        await run.finish()
    heart_rates = sorted(float(i["value"]) for i in _numerics(run, "MDC_ECG_HEART_RATE"))
    assert heart_rates == [72.0, 75.0], "only the accepted messages' observations are stored"
    stats = run.gateway.metrics.drivers["bed-1"]
    assert stats.invalid_frames >= 1


def test_hl7_parse_of_an_oru_is_pure_and_typed() -> None:
    raw = hl7.build_oru(
        [hl7.OruObservation("MDC_PULS_OXIM_SAT_O2", 97.0, "1.1.3.1")],
        control_id="X1",
        timestamp=datetime(2026, 11, 26, 12, 0, tzinfo=UTC),
    )
    message = hl7.parse(raw)
    (obs,) = hl7.observations(message, "bed-1")
    assert (obs.quantity.reference_id, obs.value) == ("MDC_PULS_OXIM_SAT_O2", 97.0)


def test_bench_hl7_reports_its_contract_keys() -> None:
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", "hl7", "--json", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert isinstance(figures["messages_per_s"], int) and figures["messages_per_s"] > 0
    assert figures["accepted_fraction"] == 1.0
