"""The rig's real transports without real hardware, and every `iomt-gateway hil sim` program as a process.

No radio or serial adapter in CI, so each real-rig transport is opened from its config the way a rig opens it,
with the hardware swapped for the nearest real thing: a bumble controller served over a TCP HCI transport
(`tcp-client:` on the simulator's side, as a UART or USB controller would be reached), with the gateway's
production BLE session on the same link through bleak; ptys opened by path through pyserial as serial ports;
real TCP addresses for Modbus and MLLP; a real DICOM Storage SCP.  The gateway side is the product's own driver
wherever one exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bumble.controller import Controller
from bumble.device import Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink, Transport

from drivers.base import Driver
from drivers.ble import plxs
from drivers.ble.bleak_link import BleakGattLink
from drivers.ble.session import BleSession
from drivers.dicom.ecg import decode_ecg
from drivers.dicom.validate import validate_dataset
from drivers.modbus.driver import ModbusDeviceDriver
from drivers.modbus.profile import load_profile
from drivers.serial.driver import SerialDeviceDriver
from gateway.core.model import Event, Observation
from hil.ble_sim import SimInsulinPump, SimPulseOximeter
from hil.bleak_bumble import BumbleBleakClient, BumbleBleakScanner
from hil.demo import free_loopback_port
from hil.modbus_sim import MedicationFridge
from hil.rig import (
    MllpAddress,
    ModbusTcpAddress,
    SerialPortConfig,
    open_ble_host,
    open_serial,
    parse_modbus_address,
    serve_modbus,
)
from hil.serial_sim import Faults, NoninOximeter, NullModem
from hil.standalone.hl7 import Hl7Simulator
from tests.support.pki import make_pki

SPO2 = "MDC_PULS_OXIM_SAT_O2"
ART_SYS = "MDC_PRESS_BLD_ART_SYS"
FRIDGE_TEMP = "MDC_TEMP_ROOM"


class Sink:
    """The gateway's side of a driver: every event it emits."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, event: Event) -> None:
        self.events.append(event)

    def emit_nowait(self, event: Event) -> None:
        self.events.append(event)

    def values(self, ref: str) -> list[float]:
        return [e.value for e in self.events if isinstance(e, Observation) and e.quantity.reference_id == ref]


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)
    assert condition(), what


@contextlib.asynccontextmanager
async def _driving(driver: Driver | BleSession, sink: Sink) -> AsyncIterator[None]:
    """The product's driver running against the simulator, stopped on exit."""
    task = asyncio.create_task(driver.run(sink), name="gateway-driver")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        # A serial driver closes its port without waiting; pyserial-asyncio finishes closing in a task of its own.
        async with asyncio.timeout(5):
            while any("_call_connection_lost" in repr(t.get_coro()) for t in asyncio.all_tasks()):
                await asyncio.sleep(0.02)


# -- a BLE controller behind a TCP HCI transport ---------------------------------------------------------------
@dataclass
class HciRig:
    """A bumble controller on a LocalLink served at `spec` over TCP (what a USB or UART controller is to a
    rig), and the gateway's adapter on the same link: whatever the peripheral host advertises there, the
    gateway hears and connects to over the link, as over the air."""

    spec: str
    adapter: Device
    served: Transport

    def drop(self) -> None:
        """Close the controller's end of the HCI connection, as a controller pulled out would."""
        connection = self.served.sink.transport  # type: ignore[attr-defined] # the accepted connection, if any
        if connection is not None:
            connection.close()

    async def released(self) -> None:
        """Until the last host's HCI connection has gone (bumble's TCP server serves one host at a time, and
        forgets the next one if the last one's end arrives after it)."""
        async with asyncio.timeout(5):
            while self.served.sink.transport is not None:  # type: ignore[attr-defined]
                await asyncio.sleep(0.02)

    def link(self, address: str) -> BleakGattLink:
        """The gateway's production GATT link (bleak, scanning first) through the adapter."""
        return BleakGattLink(
            address,
            client_backend=BumbleBleakClient,
            scanner_backend=BumbleBleakScanner,
            backend_kwargs={"bumble_device": self.adapter},
        )


@contextlib.asynccontextmanager
async def hci_rig() -> AsyncIterator[HciRig]:
    link = LocalLink()  # type: ignore[no-untyped-call]
    served = await open_transport("tcp-server:127.0.0.1:0")  # port 0: any free one
    server: asyncio.Server = served.server  # type: ignore[attr-defined]
    port = server.sockets[0].getsockname()[1]
    Controller("rig-controller", host_source=served.source, host_sink=served.sink, link=link)
    gateway = Controller("gateway-controller", link=link, public_address="F0:F0:F0:F0:F0:F0")
    adapter = Device(name="gateway", address=Address("F0:F0:F0:F0:F0:F0"), host=Host(gateway, AsyncPipeSink(gateway)))
    await adapter.power_on()
    try:
        rig = HciRig(f"tcp-client:127.0.0.1:{port}", adapter, served)
        yield rig
    finally:
        await adapter.power_off()
        rig.drop()
        server.close()  # bumble's tcp-server transport leaves its listening socket to its owner
        await served.close()
        await server.wait_closed()


async def test_ble_peripheral_on_a_controller_reached_by_transport_spec_serves_the_gateways_session() -> None:
    async with hci_rig() as rig, open_ble_host(rig.spec, SimPulseOximeter("ox-1")) as host:
        found = await BleakScanner.discover(  # type: ignore[call-overload] # bleak's overloads omit backend kwargs
            timeout=1.0, return_adv=True, backend=BumbleBleakScanner, bumble_device=rig.adapter
        )
        heard = {device.address: adv for device, adv in found.values()}
        assert heard[host.address].local_name == "ox-1"
        assert plxs.PULSE_OXIMETER_SERVICE in heard[host.address].service_uuids
        sink = Sink()
        async with _driving(BleSession("ox-1", host.address, "pulse_oximeter", rig.link), sink):
            await _until(lambda: len(sink.values(SPO2)) >= 2, 15, "SpO2 from the production BLE session")
        assert all(50 <= v <= 100 for v in sink.values(SPO2))
        assert host.peripheral.connections == 1 and host.values_on_air >= 2
        assert host.hci_lost is not None and not host.hci_lost.done()
    assert not host.device.powered_on, "stopped on exit"


async def test_a_lost_hci_transport_is_seen_and_the_host_still_stops_at_once() -> None:
    async with hci_rig() as rig:
        loop = asyncio.get_running_loop()
        async with open_ble_host(rig.spec, SimPulseOximeter("ox-2")) as host:
            assert host.hci_lost is not None
            rig.drop()
            async with asyncio.timeout(5):
                await host.hci_lost
            lost_at = loop.time()
        assert loop.time() - lost_at < 1.0, "no wait for a controller that cannot answer"


async def test_a_paired_pumps_keys_outlive_the_simulator_with_a_keystore(tmp_path: Path) -> None:
    keystore = tmp_path / "pump-1.json"
    async with hci_rig() as rig:
        pump = SimInsulinPump("pump-1")
        async with (
            open_ble_host(rig.spec, pump, keystore=keystore) as host,
            BleakClient(host.address, backend=BumbleBleakClient, bumble_device=rig.adapter, pair=True),
        ):
            connection = next(iter(host.device.connections.values()))
            assert connection.is_encrypted
            gateway_address = str(connection.peer_address)
        assert keystore.exists()
        await rig.released()
        async with open_ble_host(rig.spec, SimInsulinPump("pump-1"), keystore=keystore) as restarted:
            assert restarted.device.keystore is not None
            assert await restarted.device.keystore.get(gateway_address) is not None, "the bond survived the restart"


# -- serial ports opened by path ---------------------------------------------------------------------------------
async def test_serial_simulators_on_ports_opened_by_path_reach_the_gateways_driver() -> None:
    """A null-modem pair of ptys as the cable: the simulators open one end by path through pyserial (a rig's
    /dev/ttyUSB0), the gateway's serial driver the other."""
    async with NullModem() as cable:
        async with open_serial(SerialPortConfig(path=cable.a.path, baudrate=9600)) as port:
            assert (port.where, port.settings) == (cable.a.path, "9600 8N1")
            oximeter = NoninOximeter(port)
            sender = asyncio.create_task(oximeter.run())
            sink = Sink()
            try:
                async with _driving(SerialDeviceDriver("ox-w", cable.b.path, "nonin_df2"), sink):
                    await _until(lambda: len(sink.values(SPO2)) >= 3, 15, "SpO2 from the Nonin simulator")
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
        assert set(sink.values(SPO2)) <= {97.0, 98.0}
        # The HL7 monitor on the same cable, waiting for each ACK the gateway's driver writes back.
        monitor = Hl7Simulator(
            SerialPortConfig(path=cable.a.path), Faults(), interval_s=0.2, ack_timeout_s=2.0, retries=0
        )
        sink = Sink()
        async with _driving(SerialDeviceDriver("mon-w", cable.b.path, "hl7_pcd01"), sink):
            sending = asyncio.create_task(monitor.run(lambda _text: None))
            try:
                await _until(lambda: monitor.acks["AA"] >= 3, 15, "ACKs back over the serial line")
            finally:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
        assert len(sink.values(ART_SYS)) >= 3
        assert monitor.ack_timeouts == 0


async def test_hl7_monitor_over_mllp_with_tls_and_a_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    listener_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    listener_tls.load_cert_chain(pki.server_cert, pki.server_key)
    listener_tls.verify_mode = ssl.CERT_REQUIRED
    port = free_loopback_port()
    address = MllpAddress.parse(f"127.0.0.1:{port}", tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
    monitor = Hl7Simulator(address, Faults(), interval_s=0.1, ack_timeout_s=2.0, retries=0)
    sink = Sink()
    driver = SerialDeviceDriver("mon-tls", f"listen://127.0.0.1:{port}", "hl7_pcd01", ssl_context=listener_tls)
    async with _driving(driver, sink):
        sending = asyncio.create_task(monitor.run(lambda _text: None))
        try:
            await _until(lambda: monitor.acks["AA"] >= 3, 15, "ACKs over MLLP/TLS")
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
    assert monitor.connections == 1 and len(sink.values(ART_SYS)) >= 3


# -- Modbus at real addresses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["tcp", "rtu"])
async def test_modbus_fridge_served_at_its_address_is_polled_by_the_gateways_driver(line: str) -> None:
    fridge = MedicationFridge(unit_id=3, setpoint_c=4.0)
    address = ModbusTcpAddress(host="127.0.0.1", port=0) if line == "tcp" else parse_modbus_address("rtu://pty")
    async with serve_modbus(address, [fridge]) as serving:
        assert serving.gateway_address.startswith(f"{line}://")
        driver = ModbusDeviceDriver(
            "fridge", serving.gateway_address, load_profile("medication_fridge"), unit_id=3, interval_s=0.2
        )
        sink = Sink()
        async with _driving(driver, sink):
            await _until(lambda: len(sink.values(FRIDGE_TEMP)) >= 3, 15, "fridge temperatures")
    assert all(abs(t - 4.0) <= 0.5 for t in sink.values(FRIDGE_TEMP))
    assert fridge.reads >= 3


# -- each `hil sim` program as a process -------------------------------------------------------------------------
def _script() -> str:
    beside = Path(sys.executable).parent / "iomt-gateway"
    script = str(beside) if beside.exists() else shutil.which("iomt-gateway")
    assert script, "iomt-gateway is not installed (run scripts/test)"
    return script


@dataclass
class SimProcess:
    """One `iomt-gateway hil sim ...` process: its stderr lines as they come, its JSON summary at exit."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reading: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str) -> SimProcess:
        process = await asyncio.create_subprocess_exec(
            _script(),
            "hil",
            "sim",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        sim = cls(process)
        sim._reading = asyncio.create_task(sim._read(), name="sim-stderr")
        return sim

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    async def announced(self, needle: str, timeout_s: float = 20.0) -> str:
        """The first stderr line holding `needle` (the simulator saying where it can be reached)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                assert self.process.returncode is None, "\n".join(self.lines)
                await asyncio.sleep(0.05)

    async def finish(self, sig: signal.Signals | None = None, timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:
        """Signal it (or let --duration end it); its exit code and JSON summary, after checking it said nothing
        a clean exit does not say."""
        if sig is not None:
            self.process.send_signal(sig)
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            out = await self.process.stdout.read()
            code = await self.process.wait()
            if self._reading is not None:
                await self._reading
        stderr = "\n".join(self.lines)
        assert not [line for line in self.lines if "Traceback" in line or "CancelledError" in line], stderr
        summary: dict[str, Any] = json.loads(out)
        return code, summary

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reading is not None:
            await self._reading


@contextlib.asynccontextmanager
async def hil_sim(*args: str) -> AsyncIterator[SimProcess]:
    sim = await SimProcess.start(*args)
    try:
        yield sim
    finally:
        await sim.kill()


async def test_hil_sim_ble_advertises_on_the_given_hci_transport_and_ctrl_c_ends_it() -> None:
    async with (
        hci_rig() as rig,
        hil_sim("ble", "--device", "pulse_oximeter:ox-sim", "--transport", rig.spec, "--json") as sim,
    ):
        line = await sim.announced("advertising as")
        address = line.split("advertising as ")[1].split()[0]
        sink = Sink()
        async with _driving(BleSession("ox-sim", address, "pulse_oximeter", rig.link), sink):
            await _until(lambda: len(sink.values(SPO2)) >= 2, 20, "SpO2 over the link from the standalone peripheral")
            code, summary = await sim.finish(signal.SIGINT)
    assert code == 130
    assert summary["stopped"] == "interrupted"
    (peripheral,) = summary["peripherals"]
    assert (peripheral["name"], peripheral["address"], peripheral["transport"]) == ("ox-sim", address, rig.spec)
    assert peripheral["connections"] == 1
    assert peripheral["notifications"] >= len(sink.values(SPO2)) >= 2


async def test_hil_sim_nonin_on_a_new_pty_is_read_by_the_gateway_and_ctrl_c_ends_it() -> None:
    async with hil_sim("nonin", "--format", "7", "--json") as sim:
        line = await sim.announced("gateway device: address")
        path = line.split('address = "')[1].split('"')[0]
        assert path.startswith("/dev/pts/")
        sink = Sink()
        async with _driving(SerialDeviceDriver("ox-pty", path, "nonin_df7"), sink):
            await _until(lambda: len(sink.values(SPO2)) >= 3, 15, "SpO2 from the standalone Nonin")
        code, summary = await sim.finish(signal.SIGINT)
    assert code == 130
    assert (summary["stopped"], summary["port"], summary["data_format"]) == ("interrupted", path, 7)
    assert summary["packets_sent"] >= 3 and summary["frames_sent"] == 25 * summary["packets_sent"]


async def test_hil_sim_hl7_over_mllp_gets_an_ack_for_every_message_and_stops_at_its_duration() -> None:
    port = free_loopback_port()
    sink = Sink()
    async with _driving(SerialDeviceDriver("mon-tcp", f"listen://127.0.0.1:{port}", "hl7_pcd01"), sink):
        await asyncio.sleep(0.3)  # the listener binds
        async with hil_sim(
            "hl7", "--connect", f"127.0.0.1:{port}", "--interval", "0.2", "--duration", "3", "--json"
        ) as sim:
            await sim.announced(f"to 127.0.0.1:{port}")
            code, summary = await sim.finish()
    assert code == 0
    assert (summary["stopped"], summary["transport"], summary["connections"]) == ("duration", "tcp", 1)
    assert summary["acks"]["AA"] >= 8
    assert summary["acks_received"] + summary["unacknowledged"] == summary["messages"], (
        "only the last may be unanswered"
    )
    assert summary["unacknowledged"] <= 1 and summary["ack_timeouts"] == 0
    assert len(sink.values(ART_SYS)) == summary["acks"]["AA"]


async def test_hil_sim_hl7_on_a_pty_gets_acks_back_and_sigterm_ends_it() -> None:
    async with hil_sim("hl7", "--pty", "--interval", "0.2", "--json") as sim:
        line = await sim.announced("gateway device: address")
        path = line.split('address = "')[1].split('"')[0]
        sink = Sink()
        async with _driving(SerialDeviceDriver("mon-pty", path, "hl7_pcd01"), sink):
            await _until(lambda: len(sink.values(ART_SYS)) >= 5, 15, "pressures over the pty")
            await asyncio.sleep(0.5)  # the ACK of the last one on its way back
            code, summary = await sim.finish(signal.SIGTERM)
    assert code == 0, "SIGTERM is an orderly stop"
    assert (summary["stopped"], summary["transport"], summary["target"]) == ("terminated", "serial", path)
    assert summary["acks"]["AA"] >= 5


async def test_hil_sim_modbus_serves_the_fridge_at_its_address_until_its_duration() -> None:
    port = free_loopback_port()
    async with hil_sim("modbus", "--listen", f"127.0.0.1:{port}", "--unit", "2", "--duration", "4", "--json") as sim:
        line = await sim.announced("gateway device: address")
        address = line.split('address = "')[1].split('"')[0]
        assert address == f"tcp://127.0.0.1:{port}"
        driver = ModbusDeviceDriver("fridge", address, load_profile("medication_fridge"), unit_id=2, interval_s=0.2)
        sink = Sink()
        async with _driving(driver, sink):
            await _until(lambda: len(sink.values(FRIDGE_TEMP)) >= 3, 15, "fridge temperatures over Modbus TCP")
        code, summary = await sim.finish()
    assert code == 0 and summary["stopped"] == "duration"
    assert summary["units"][0]["unit_id"] == 2 and summary["reads"] >= 3


@dataclass
class StorageScp:
    """A pynetdicom Storage SCP: what it was sent, by SOP Instance UID."""

    port: int
    received: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def storage_scp() -> Any:
    from pydicom.uid import TwelveLeadECGWaveformStorage, UltrasoundImageStorage  # noqa: PLC0415
    from pynetdicom import AE, evt  # noqa: PLC0415

    scp = StorageScp(free_loopback_port())

    def stored(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        scp.received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    ae = AE(ae_title="IOMT_GW")
    for sop_class in (TwelveLeadECGWaveformStorage, UltrasoundImageStorage):
        ae.add_supported_context(sop_class, "1.2.840.10008.1.2.1")
    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=[(evt.EVT_C_STORE, stored)])
    assert server is not None  # block=False: the server runs in its own thread
    try:
        yield scp
    finally:
        server.shutdown()


async def test_hil_sim_dicom_sends_generated_objects_that_a_gateway_would_accept() -> None:
    with storage_scp() as scp:
        async with hil_sim("dicom", "--to", f"127.0.0.1:{scp.port}", "--count", "2", "--json") as sim:
            code, summary = await sim.finish()
    assert code == 0, summary
    assert (summary["stopped"], summary["stored"], summary["statuses"]) == ("finished", 4, {"0x0000": 4})
    assert summary["sent_by_kind"] == {"ecg": 2, "image": 2}
    assert len(scp.received) == 4, "new UIDs for every object"
    for ds in scp.received.values():
        validate_dataset(ds)  # what the gateway's intake checks before it stores an object
    leads = [decode_ecg(ds) for ds in scp.received.values() if ds.Modality == "ECG"]
    assert [len(channels) for channels in leads] == [12, 12]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["ble", "--device", "cgm:a", "--device", "cgm:b", "--transport", "usb:0"], 2, "one controller per device"),
        (["ble", "--device", "cgm:a", "--transport", "bluetooth:0"], 2, "unknown HCI transport"),
        (["hl7", "--connect", "127.0.0.1:{closed}", "--connect-timeout", "0.5"], 1, "cannot connect to 127.0.0.1"),
        (["dicom", "--to", "127.0.0.1:{closed}"], 1, "no association with 127.0.0.1"),
        (["nonin", "--port", "/dev/no-such-tty"], 1, "cannot open serial port /dev/no-such-tty"),
        (["modbus", "--listen", "127.0.0.1:http"], 2, "use HOST:PORT"),
        (["modbus", "--port", "/dev/no-such-tty"], 1, "cannot open the Modbus RTU line /dev/no-such-tty"),
    ],
)
async def test_hil_sim_errors_are_one_line_and_an_exit_code(args: list[str], code: int, says: str) -> None:
    closed = free_loopback_port()  # nothing listens there
    name = args[0]
    async with hil_sim(*[a.format(closed=closed) for a in args], "--json") as sim:
        exit_code, summary = await sim.finish()
    assert exit_code == code
    assert summary["stopped"] == "failed" and says in summary["error"]
    errors = [line for line in sim.lines if line.startswith(f"iomt-gateway hil sim {name}: error: ")]
    assert len(errors) == 1 and says in errors[0], sim.lines
