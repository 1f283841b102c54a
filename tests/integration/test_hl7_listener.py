"""The MLLP listener cannot be held: idle or foreign connections never lock a monitor out, and what the monitor
sends is kept even when some of its observations are not mapped.

Real sockets throughout: the flood comes from other loopback addresses (127.0.0.2...), each connection
trickling a byte at a time as an attacker would to defeat a read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from drivers.serial.framing import MllpFramer, mllp_wrap
from gateway.config import parse_config
from gateway.core.model import Alarm
from hil.demo import free_loopback_port
from hil.serial_sim import Hl7Monitor
from tests.conftest import Mosquitto, config_dict
from tests.support.harness import Running, in_background, running_gateway
from tests.support.pki import make_pki

DEVICE = "bed-9"


def _config(tmp_path: Path, port: int, listen: int, **device: Any) -> Any:
    data = config_dict(tmp_path / "state", port)
    data["devices"] = [
        {
            "id": DEVICE,
            "transport": "serial",
            "profile": "hl7_pcd01",
            "address": f"listen://127.0.0.1:{listen}",
            "patient": "pt-W9",
            **device,
        }
    ]
    return parse_config(data)


async def _connect(port: int, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Any:
    for _ in range(100):
        with contextlib.suppress(OSError):
            return await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0), ssl=tls, server_hostname="127.0.0.1" if tls else None
            )
        await asyncio.sleep(0.05)
    raise AssertionError("listener not reachable")


async def _ack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> str:
    """Send one message, return MSA-1 of its ACK ("" when the gateway closed the connection instead)."""
    writer.write(mllp_wrap(raw))
    await writer.drain()
    framer = MllpFramer()
    while True:
        data = await asyncio.wait_for(reader.read(4096), 10)
        if not data:
            return ""
        for frame in framer.feed(data):
            msa = next(s for s in frame.split(b"\r") if s.startswith(b"MSA"))
            return msa.split(b"|")[1].decode()


@contextlib.asynccontextmanager
async def _flood(port: int, sources: list[str]) -> AsyncIterator[list[asyncio.StreamWriter]]:
    """One idle connection per source, each trickling a byte every 0.2 s (a read timeout never fires)."""
    writers: list[asyncio.StreamWriter] = []
    for source in sources:
        _, writer = await _connect(port, source)
        writers.append(writer)

    async def trickle() -> None:
        while True:
            for writer in writers:
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write(b"M")
            await asyncio.sleep(0.2)

    try:
        async with in_background(trickle()):
            yield writers
    finally:
        for writer in writers:
            writer.close()


def _spo2_message(monitor: Hl7Monitor) -> bytes:
    _, raw = monitor.message((120.0, 80.0, 93.0, 72.0))
    return raw


async def test_idle_connections_cannot_lock_out_the_monitor(tmp_path: Path, mosquitto: Mosquitto) -> None:
    listen = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, listen, idle_timeout_s=4.0, silent_after_s=1.5)  # stale after 2 s
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        heard: list[Alarm] = []
        run.gateway.parts.pipeline.alarm_listeners.append(heard.append)  # type: ignore[union-attr]
        # Eight strangers take every slot and hold it with a byte at a time.
        async with _flood(listen, [f"127.0.0.{n}" for n in range(2, 10)]):
            flooded = asyncio.get_running_loop().time()
            await asyncio.sleep(0.3)
            assert len(_driver(run).slots.held) == 8
            # No data, whatever the link state: the gateway says so.
            await run.wait_until(lambda: any(a.condition == "device_silent" for a in heard), 10)
            # Once the strangers are stale (no completed message for 2 s), the monitor takes a slot from them.
            await asyncio.sleep(max(0.0, flooded + 2.3 - asyncio.get_running_loop().time()))
            assert len(_driver(run).slots.held) == 8
            reader, writer = await _connect(listen)
            try:
                assert await _ack(reader, writer, _spo2_message(Hl7Monitor())) == "AA"
            finally:
                writer.close()
            await run.wait_until(lambda: [a.state for a in heard if a.condition == "device_silent"][-1] == "cleared")
            # Bytes are not messages: every trickling stranger is closed by the idle timeout.
            await run.wait_until(lambda: not _driver(run).slots.held, 10)
        assert _driver(run).slots.replaced >= 1
        await run.finish()


async def test_a_reconnecting_monitor_replaces_its_own_stale_connection(tmp_path: Path, mosquitto: Mosquitto) -> None:
    listen = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, listen, max_connections_per_source=1)
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        _, stale = await _connect(listen)  # half-open from the monitor's point of view: it has moved on
        await asyncio.sleep(0.2)
        reader, writer = await _connect(listen)
        try:
            assert await _ack(reader, writer, _spo2_message(Hl7Monitor())) == "AA"
        finally:
            writer.close()
            stale.close()
        assert _driver(run).slots.replaced == 1
        await run.finish()


async def test_allow_lists_refuse_other_addresses_and_facilities(tmp_path: Path, mosquitto: Mosquitto) -> None:
    listen = free_loopback_port()
    config = _config(
        tmp_path, mosquitto.port, listen, allowed_sources=["127.0.0.1/32"], allowed_facilities=["ICU-EAST"]
    )
    monitor = Hl7Monitor()
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        reader, writer = await _connect(listen, "127.0.0.5")
        assert await asyncio.wait_for(reader.read(100), 5) == b"", "closed at once"
        writer.close()
        reader, writer = await _connect(listen)
        try:
            foreign = _spo2_message(monitor)  # MSH-4 empty: not an allowed facility
            assert await _ack(reader, writer, foreign) == "AR"
            ours = _spo2_message(monitor).replace(b"^EUI-64||||", b"^EUI-64|ICU-EAST|||", 1)
            assert await _ack(reader, writer, ours) == "AA"
        finally:
            writer.close()
        assert _driver(run).slots.refused == {"source_not_allowed": 1}
        await run.finish()
    rates = [i for i in run.receiver.items.values() if i.get("ref") == "MDC_ECG_HEART_RATE"]
    assert len(rates) == 1, "only the allowed facility's message is kept"


async def test_mllp_over_tls_with_client_certificates(tmp_path: Path, mosquitto: Mosquitto) -> None:
    pki = make_pki(tmp_path / "pki")
    listen = free_loopback_port()
    config = _config(
        tmp_path,
        mosquitto.port,
        listen,
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
    )
    monitor_tls = ssl.create_default_context(cafile=str(pki.ca))
    monitor_tls.load_cert_chain(pki.client_cert, pki.client_key)
    anonymous = ssl.create_default_context(cafile=str(pki.ca))
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        reader, writer = await _connect(listen, tls=monitor_tls)
        try:
            assert await _ack(reader, writer, _spo2_message(Hl7Monitor())) == "AA"
        finally:
            writer.close()
        for context in (anonymous, None):  # no client certificate; plaintext
            try:
                reader, writer = await _connect(listen, tls=context)
                answer = await _ack(reader, writer, _spo2_message(Hl7Monitor()))
                writer.close()
            except (ssl.SSLError, ConnectionError):
                answer = ""
            assert answer == ""
        await run.finish()


async def test_unmapped_observations_cost_only_themselves(tmp_path: Path, mosquitto: Mosquitto) -> None:
    listen = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, listen)
    monitor = Hl7Monitor()
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        reader, writer = await _connect(listen)
        try:
            for _ in range(3):  # a monitor that also sends a term the gateway does not map, in every message
                raw = _spo2_message(monitor).replace(b"150035^MDC_PRESS_BLD_ART_MEAN", b"150087^MDC_PRESS_BLD_VEN_CENT")
                assert await _ack(reader, writer, raw) == "AA"
        finally:
            writer.close()
        await run.finish()
    kept = {i["ref"] for i in run.receiver.items.values() if i["lane"] == "numerics"}
    assert {"MDC_PRESS_BLD_ART_SYS", "MDC_PRESS_BLD_ART_DIA", "MDC_ECG_HEART_RATE"} <= kept
    assert run.gateway.metrics.drivers[DEVICE].unmapped_codes == {"150087^MDC_PRESS_BLD_VEN_CENT": 3}


def _driver(run: Running) -> Any:
    return run.gateway.drivers[DEVICE]


async def test_stopping_with_a_monitor_connected_is_quiet(
    tmp_path: Path, mosquitto: Mosquitto, captured_logs: io.StringIO
) -> None:
    """A deliberate stop is no disconnection and no error: the connection's task ends cleanly (Ctrl-C in the demo)."""
    listen = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, listen)
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        heard: list[Alarm] = []
        run.gateway.parts.pipeline.alarm_listeners.append(heard.append)  # type: ignore[union-attr]
        reader, writer = await _connect(listen)
        try:
            assert await _ack(reader, writer, _spo2_message(Hl7Monitor())) == "AA"
            await run.finish()
        finally:
            writer.close()
    errors = [line for line in captured_logs.getvalue().splitlines() if '"level": "error"' in line]
    assert errors == []
    assert [a.condition for a in heard if a.condition == "device_disconnected"] == []
