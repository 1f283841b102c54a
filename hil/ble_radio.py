"""A virtual BLE radio: simulated health peripherals as real GATT servers on bumble, one link with the gateway.

`VirtualRadio` puts bumble virtual controllers on one `LocalLink`: one is the gateway's adapter, each other one
hosts a simulated peripheral (hil.ble_sim) as a bumble `Device` that advertises its services and runs a GATT
server with the Bluetooth SIG services of its profile (plus Battery and Device Information).  The gateway
reaches them through bleak with hil.bleak_bumble's backend, so the production driver performs real scanning,
connection, discovery, CCCD subscription, reads, writes, pairing and indications over ATT.

Device addresses in the config: `virtual:NAME` names a peripheral on the radio; its Bluetooth address works too.
Fault switches beyond the peripheral's own: `go_offline()` (out of range: disconnect, stop advertising) and
`go_online()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from bumble import gatt
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink, TransportSink, TransportSource

from drivers.ble import bas, cgms, device_info, hrs, idd_status, ids, plxs, pmd, racp
from drivers.ble.bleak_link import BleakGattLink
from drivers.ble.transport import ScannerBackend
from drivers.transport import DeviceSection
from gateway.core.errors import TransportError
from gateway.core.logs import get_logger
from hil.ble_sim import SimPeripheral, default_peripheral, default_peripherals
from hil.bleak_bumble import BumbleBleakClient, BumbleBleakScanner

log = get_logger(__name__)

# Which service each characteristic the simulators expose belongs to (Bluetooth SIG assigned numbers, Polar PMD).
SERVICE_OF: dict[str, str] = {
    hrs.HEART_RATE_MEASUREMENT: hrs.HEART_RATE_SERVICE,
    hrs.BODY_SENSOR_LOCATION: hrs.HEART_RATE_SERVICE,
    pmd.PMD_CONTROL_POINT: pmd.PMD_SERVICE,
    pmd.PMD_DATA: pmd.PMD_SERVICE,
    plxs.PLX_SPOT_CHECK_MEASUREMENT: plxs.PULSE_OXIMETER_SERVICE,
    plxs.PLX_CONTINUOUS_MEASUREMENT: plxs.PULSE_OXIMETER_SERVICE,
    plxs.PLX_FEATURES: plxs.PULSE_OXIMETER_SERVICE,
    cgms.CGM_MEASUREMENT: cgms.CGM_SERVICE,
    cgms.CGM_FEATURE: cgms.CGM_SERVICE,
    cgms.CGM_STATUS: cgms.CGM_SERVICE,
    cgms.CGM_SESSION_START_TIME: cgms.CGM_SERVICE,
    cgms.CGM_SESSION_RUN_TIME: cgms.CGM_SERVICE,
    cgms.CGM_SPECIFIC_OPS_CONTROL_POINT: cgms.CGM_SERVICE,
    racp.RECORD_ACCESS_CONTROL_POINT: cgms.CGM_SERVICE,
    ids.IDD_STATUS_CHANGED: ids.INSULIN_DELIVERY_SERVICE,
    idd_status.IDD_STATUS: ids.INSULIN_DELIVERY_SERVICE,
    ids.IDD_ANNUNCIATION_STATUS: ids.INSULIN_DELIVERY_SERVICE,
    ids.IDD_FEATURES: ids.INSULIN_DELIVERY_SERVICE,
    ids.IDD_STATUS_READER_CONTROL_POINT: ids.INSULIN_DELIVERY_SERVICE,
    ids.IDD_COMMAND_CONTROL_POINT: ids.INSULIN_DELIVERY_SERVICE,
    ids.IDD_COMMAND_DATA: ids.INSULIN_DELIVERY_SERVICE,
    ids.IDD_RECORD_ACCESS_CONTROL_POINT: ids.INSULIN_DELIVERY_SERVICE,
    ids.IDD_HISTORY_DATA: ids.INSULIN_DELIVERY_SERVICE,
    bas.BATTERY_LEVEL: bas.BATTERY_SERVICE,
    device_info.MANUFACTURER_NAME: device_info.DEVICE_INFORMATION_SERVICE,
    device_info.MODEL_NUMBER: device_info.DEVICE_INFORMATION_SERVICE,
    device_info.SERIAL_NUMBER: device_info.DEVICE_INFORMATION_SERVICE,
    device_info.FIRMWARE_REVISION: device_info.DEVICE_INFORMATION_SERVICE,
    device_info.CURRENT_TIME: device_info.CURRENT_TIME_SERVICE,
}
# Services open on any link; the rest need encryption when the peripheral requires it (IDS).
_OPEN_SERVICES = {bas.BATTERY_SERVICE, device_info.DEVICE_INFORMATION_SERVICE}
_P = gatt.Characteristic.Properties


def _uuid(text: str) -> UUID:
    if text.endswith("-0000-1000-8000-00805f9b34fb") and text.startswith("0000"):
        return UUID(text[4:8].upper())
    return UUID(text)


def _new_device(link: LocalLink, name: str, address: str) -> Device:
    controller = Controller(f"ctl-{name}", link=link, public_address=address)
    return Device(name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller)))


class PeripheralHost:
    """One simulated peripheral as a bumble GATT server that advertises; the peripheral's `PeripheralLink`.

    The bumble `Device` runs on any controller: a virtual one on a `LocalLink` (`on_link`, the virtual radio's),
    or whatever an HCI transport reaches (`on_hci`: a USB or UART controller, a controller behind TCP;
    hil.rig.open_ble_host opens one from a transport spec).  The peripheral advertises and connects from
    `address`, set as the device's random static address, so a real controller's own address never matters.
    """

    def __init__(self, device: Device, peripheral: SimPeripheral, address: str) -> None:
        self.peripheral = peripheral
        self.address = address
        self.device = device
        self.characteristics: dict[str, gatt.Characteristic[Any]] = {}
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=4096)
        self._tasks: list[asyncio.Task[None]] = []
        self._advertising = False
        self.sent: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=100_000)  # what went on air
        self.values_on_air = 0  # every value sent (`sent` keeps the latest)
        self.hci_lost: asyncio.Future[None] | None = None  # on an HCI transport: completes when it is lost
        self.device.add_services(self._services())
        self.device.on(self.device.EVENT_CONNECTION, self._on_connection)
        peripheral.links.add(self)

    @classmethod
    def on_link(cls, link: LocalLink, peripheral: SimPeripheral, address: str) -> PeripheralHost:
        """On a new virtual controller attached to `link` (the virtual radio)."""
        return cls(_new_device(link, peripheral.name, address), peripheral, address)

    @classmethod
    def on_hci(
        cls, source: TransportSource, sink: TransportSink, peripheral: SimPeripheral, address: str
    ) -> PeripheralHost:
        """On the controller at the other end of an HCI transport's source and sink (bumble.transport)."""
        return cls(Device.with_hci(peripheral.name, Address(address), source, sink), peripheral, address)

    def _services(self) -> list[gatt.Service]:
        p = self.peripheral
        grouped: dict[str, list[gatt.Characteristic[Any]]] = {}
        writable = p.writable | p.indicatable
        for uuid in sorted(p.characteristics() | p.writable):
            service = SERVICE_OF.get(uuid)
            if service is None:
                raise ValueError(f"no service known for characteristic {uuid}")
            properties = _P(0)
            permissions = gatt.Characteristic.Permissions(0)
            secure = p.requires_encryption and service not in _OPEN_SERVICES
            if uuid in p.readable:
                properties |= _P.READ
                permissions |= gatt.Characteristic.READ_REQUIRES_ENCRYPTION if secure else gatt.Characteristic.READABLE
            if uuid in p.notifiers or uuid in p.notifiable:
                properties |= _P.NOTIFY
            if uuid in p.indicatable:
                properties |= _P.INDICATE
            if uuid in writable:
                properties |= _P.WRITE
                permissions |= (
                    gatt.Characteristic.WRITE_REQUIRES_ENCRYPTION if secure else gatt.Characteristic.WRITEABLE
                )
            characteristic: gatt.Characteristic[Any] = gatt.Characteristic(
                _uuid(uuid),
                properties,
                permissions,
                gatt.CharacteristicValue(read=self._reader(uuid), write=self._writer(uuid)),
            )
            self.characteristics[uuid] = characteristic
            grouped.setdefault(service, []).append(characteristic)
        return [gatt.Service(_uuid(service), chars) for service, chars in grouped.items()]

    def _reader(self, uuid: str) -> Callable[[Connection], bytes]:
        def read(_connection: Connection) -> bytes:
            make = self.peripheral.readable.get(uuid)
            return make() if make is not None else b""

        return read

    def _writer(self, uuid: str) -> Callable[[Connection, bytes], None]:
        def write(_connection: Connection, value: bytes) -> None:
            self.peripheral.on_write(uuid, bytes(value))

        return write

    def _advertising_data(self) -> bytes:
        services = {SERVICE_OF[u] for u in self.characteristics} - _OPEN_SERVICES - {pmd.PMD_SERVICE}
        short = b"".join(_uuid(s).to_bytes() for s in sorted(services) if len(_uuid(s).to_bytes()) == 2)
        entries: list[tuple[int, bytes]] = [
            (AdvertisingData.FLAGS, bytes([0x06])),  # LE General Discoverable, BR/EDR not supported
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.peripheral.name.encode()[:20]),
        ]
        if short:
            entries.append((AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, short))
        return bytes(AdvertisingData(entries))

    # -- life cycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.device.power_on()
        await self.go_online()
        for uuid, notifier in self.peripheral.notifiers.items():
            self._tasks.append(asyncio.create_task(notifier(self._sender(uuid)), name=f"radio-{self.peripheral.name}"))
        self._tasks.append(asyncio.create_task(self._pump_outbox(), name=f"radio-{self.peripheral.name}-out"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.hci_lost is not None and self.hci_lost.done():
            self.peripheral.online = False
            return  # no controller to tell: the transport has gone
        await self.go_offline()
        with contextlib.suppress(Exception):
            await self.device.power_off()

    async def go_offline(self) -> None:
        """Out of range: stop advertising and drop every connection."""
        self.peripheral.online = False
        if self._advertising:
            self._advertising = False
            await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            with contextlib.suppress(Exception):
                await connection.disconnect()

    async def go_online(self) -> None:
        self.peripheral.online = True
        if not self._advertising:
            self._advertising = True
            await self.device.start_advertising(
                advertising_data=self._advertising_data(),
                auto_restart=True,
                advertising_interval_min=20,
                advertising_interval_max=20,
            )

    def _on_connection(self, _connection: Connection) -> None:
        self.peripheral.connections += 1
        self.peripheral.on_connect()

    # -- PeripheralLink -----------------------------------------------------------------------------------------
    def deliver(self, uuid: str, data: bytes) -> None:
        """A notification or indication the peripheral sends now (control point answers, RACP records)."""
        try:
            self._outbox.put_nowait((uuid, data))
        except asyncio.QueueFull:
            log.warning("simulated peripheral outbox full; notification dropped")

    def lose(self) -> None:
        """The link drops (the peripheral stays in range and will accept a new connection)."""
        for connection in list(self.device.connections.values()):
            task = asyncio.get_running_loop().create_task(connection.disconnect())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._tasks.append(task)

    def _subscribed(self, uuid: str) -> bool:
        characteristic = self.characteristics[uuid]
        return any(
            subscribers.get(characteristic.handle, b"\x00\x00") != b"\x00\x00"
            for subscribers in self.device.gatt_server.subscribers.values()
        )

    def _sender(self, uuid: str) -> Callable[[bytes], None]:
        counter = 0

        def send(data: bytes) -> None:
            nonlocal counter
            if not self._subscribed(uuid):
                return  # nobody listening: the value is not sent (a CGM keeps it in its records)
            counter += 1
            shaped = self.peripheral.shaped(data, counter)
            if shaped is not None:
                self.peripheral.notifications_sent += 1
                self.deliver(uuid, shaped)

        return send

    async def _pump_outbox(self) -> None:
        """Send in order; an indication waits for its confirmation before the next value goes out.  A value in
        flight when its connection drops is lost with it, as over the air: it never holds up the next connection
        waiting for a confirmation that cannot come."""
        while True:
            uuid, data = await self._outbox.get()
            characteristic = self.characteristics.get(uuid)
            if characteristic is None or not self._subscribed(uuid):
                continue
            self.sent.append((uuid, data))
            self.values_on_air += 1
            indicate = bool(characteristic.properties & _P.INDICATE)
            send = self.device.indicate_subscriber if indicate else self.device.notify_subscriber
            for connection in list(self.device.connections.values()):
                sending = asyncio.ensure_future(
                    connection.cancel_on_disconnection(send(connection, characteristic, data))
                )
                try:
                    await asyncio.wait({sending})
                except asyncio.CancelledError:
                    sending.cancel()
                    raise
                if sending.cancelled() or sending.exception() is not None:
                    log.debug("simulated peripheral send failed")


class VirtualRadio:
    """The gateway's adapter and simulated peripherals on one bumble LocalLink."""

    ADAPTER_ADDRESS = "F0:F0:F0:F0:F0:F0"

    def __init__(self) -> None:
        self.local_link = LocalLink()  # type: ignore[no-untyped-call]
        self.adapter = _new_device(self.local_link, "gateway", self.ADAPTER_ADDRESS)
        self.hosts: dict[str, PeripheralHost] = {}
        self._started = False
        self._starting = asyncio.Lock()

    @classmethod
    def for_devices(cls, devices: Iterable[DeviceSection]) -> VirtualRadio:
        """One default simulated peripheral per configured device with a `virtual:` address."""
        radio = cls()
        for peripheral in default_peripherals(devices, "virtual:"):
            radio.add(peripheral)
        return radio

    def add(self, peripheral: SimPeripheral) -> PeripheralHost:
        index = len(self.hosts) + 1
        host = PeripheralHost.on_link(self.local_link, peripheral, f"C0:00:00:00:{index >> 8:02X}:{index & 0xFF:02X}")
        self.hosts[peripheral.name] = host
        return host

    def host(self, name: str) -> PeripheralHost:
        return self.hosts[name]

    @property
    def peripherals(self) -> dict[str, SimPeripheral]:
        return {name: host.peripheral for name, host in self.hosts.items()}

    async def start(self) -> None:
        async with self._starting:
            if self._started:
                return
            await self.adapter.power_on()
            for host in self.hosts.values():
                await host.start()
            self._started = True

    async def stop(self) -> None:
        for host in self.hosts.values():
            await host.stop()
        with contextlib.suppress(Exception):
            await self.adapter.power_off()
        self._started = False

    async def __aenter__(self) -> VirtualRadio:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def resolve(self, address: str) -> str:
        """The Bluetooth address for `virtual:NAME` (or an address as given)."""
        if address.startswith("virtual:"):
            try:
                return self.hosts[address.removeprefix("virtual:")].address
            except KeyError:
                raise TransportError("no virtual peripheral with that name") from None
        return address

    def link(self, address: str) -> BleakGattLink:
        """The GattLinkFactory for the driver: bleak with the bumble backend, on this radio's adapter."""
        return _RadioLink(self, address)


class _RadioLink(BleakGattLink):
    """bleak over the radio's bumble adapter; the radio powers on with the first connection."""

    def __init__(self, radio: VirtualRadio, address: str) -> None:
        super().__init__(
            radio.resolve(address),
            client_backend=BumbleBleakClient,
            scanner_backend=BumbleBleakScanner,
            backend_kwargs={"bumble_device": radio.adapter},
        )
        self._radio = radio

    async def connect(self, timeout_s: float, *, pair: bool = False) -> None:
        await self._radio.start()
        await super().connect(timeout_s, pair=pair)


DEMO_DEVICES = (
    ("ecg-patch-1", "ecg_patch"),
    ("pulse-ox-1", "pulse_oximeter"),
    ("cgm-1", "cgm"),
    ("insulin-pump-1", "insulin_pump"),
)


def demo_radio() -> VirtualRadio:
    """A radio with one simulated device of each kind (for `devices scan --virtual` and trying things out)."""
    radio = VirtualRadio()
    for name, profile in DEMO_DEVICES:
        radio.add(default_peripheral(name, profile))
    return radio


class VirtualBackend:
    """`virtual:NAME` addresses: simulated peripherals on a virtual radio, reached through bleak over bumble.
    Registered as the `virtual` BLE backend (pyproject.toml's `iomt_gateway.ble_backends` entry points)."""

    def link_factory(self, devices: Sequence[DeviceSection]) -> Callable[[str], BleakGattLink]:
        return VirtualRadio.for_devices(devices).link

    @contextlib.asynccontextmanager
    async def scanner(self) -> AsyncIterator[ScannerBackend]:
        async with demo_radio() as radio:
            yield ScannerBackend(BumbleBleakScanner, {"bumble_device": radio.adapter})


BACKEND = VirtualBackend()
