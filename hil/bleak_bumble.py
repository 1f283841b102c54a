"""A bleak backend over bumble: the production BLE driver talks through bleak to a bumble host stack.

bleak's `backend=` hook takes a `BaseBleakClient` / `BaseBleakScanner` class; these two drive a bumble `Device`
(a full host stack: HCI, L2CAP, ATT, GATT client, SMP) in place of BlueZ/CoreBluetooth/WinRT.  The bumble
device sits on a controller, which in tests and HIL rigs is a virtual controller on a `LocalLink` shared with
simulated peripherals (hil.ble_radio), and could be a real USB or UART controller through bumble's transports.

Everything the driver does therefore runs the real procedures: advertising and scanning, connection set-up,
service/characteristic/descriptor discovery, CCCD writes for notifications and indications, reads,
writes with response, SMP pairing, and link loss seen as a disconnection event.

Pass the bumble device as a keyword: `BleakClient(address, backend=BumbleBleakClient, bumble_device=dev)` and
`BleakScanner(backend=BumbleBleakScanner, bumble_device=dev)`.  bumble errors are raised as `BleakError`,
as any bleak backend does, so the driver handles one family of exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_str
from bumble import core, gatt, gatt_client, hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer

ATT_MTU = 247

_PROPERTY_NAMES: dict[gatt.Characteristic.Properties, CharacteristicPropertyName] = {
    gatt.Characteristic.Properties.BROADCAST: "broadcast",
    gatt.Characteristic.Properties.READ: "read",
    gatt.Characteristic.Properties.WRITE_WITHOUT_RESPONSE: "write-without-response",
    gatt.Characteristic.Properties.WRITE: "write",
    gatt.Characteristic.Properties.NOTIFY: "notify",
    gatt.Characteristic.Properties.INDICATE: "indicate",
    gatt.Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES: "authenticated-signed-writes",
    gatt.Characteristic.Properties.EXTENDED_PROPERTIES: "extended-properties",
}

# One LE connection may be pending per controller at a time (HCI LE Create Connection): one lock per device.
_connect_locks: weakref.WeakKeyDictionary[Device, asyncio.Lock] = weakref.WeakKeyDictionary()
# A controller scans or not; several bleak scanners on one device share its scan (as BlueZ's discovery is shared).
_scanners: weakref.WeakKeyDictionary[Device, int] = weakref.WeakKeyDictionary()

_BUMBLE_ERRORS = (core.BaseBumbleError, hci.HCI_Error, core.ProtocolError, core.TimeoutError, ConnectionError)


def uuid_string(uuid: core.UUID) -> str:
    """bumble's UUID as bleak's normalised 128-bit lowercase string."""
    return normalize_uuid_str(uuid.to_hex_str("-"))


def _bumble_device(kwargs: dict[str, Any]) -> Device:
    device = kwargs.get("bumble_device")
    if not isinstance(device, Device):
        raise BleakError("the bumble backend needs bumble_device=<bumble.device.Device>")
    return device


T = TypeVar("T")
_finishing: set[asyncio.Task[Any]] = set()  # procedures whose caller was cancelled, kept until they end


async def _procedure(work: Coroutine[Any, Any, T]) -> T:
    """Run one bumble GATT procedure to its end even when the caller is cancelled (the caller still stops at
    once).  bumble's GATT client answers its pending-request future without checking whether it was cancelled,
    so a request cancelled while its answer is on the way (a gateway stopping mid-connection) made the loop log
    an InvalidStateError; a sent request cannot be unsent on a real radio either.  Used for the procedures of
    setting up a connection and for reads; writes and subscriptions are awaited directly, since the extra task
    hop here would let notifications that follow a write's response overtake it."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _finishing.add(task)
            task.add_done_callback(_finished)
        raise


def _finished(task: asyncio.Task[Any]) -> None:
    _finishing.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nobody waits for it any more (a timeout, a disconnection)


class BumbleBleakClient(BaseBleakClient):
    """`BaseBleakClient` on a bumble central device."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        self._device = _bumble_device(kwargs)
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._mtu = 23
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return self._mtu

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        lock = _connect_locks.setdefault(self._device, asyncio.Lock())
        try:
            async with lock:
                connection = await self._device.connect(hci.Address(self.address), timeout=self._timeout)
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"connect to {self.address} failed: {err}") from err
        self._connection = connection
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            self._peer = Peer(connection)
            self._mtu = await _procedure(self._peer.request_mtu(ATT_MTU))
            if pair:
                await self.pair()
            self.services = await self._discover(self._peer)
        except BaseException:
            with contextlib.suppress(*_BUMBLE_ERRORS):
                await connection.disconnect()
            self._connection = None
            raise

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        try:
            await _procedure(peer.discover_services())
            collection = BleakGATTServiceCollection()
            for service_proxy in peer.services:
                await _procedure(service_proxy.discover_characteristics())
                service = BleakGATTService(service_proxy, service_proxy.handle, uuid_string(service_proxy.uuid))
                collection.add_service(service)
                for char_proxy in service_proxy.characteristics:
                    await _procedure(char_proxy.discover_descriptors())
                    properties = [name for flag, name in _PROPERTY_NAMES.items() if char_proxy.properties & flag]
                    characteristic = BleakGATTCharacteristic(
                        char_proxy,
                        char_proxy.handle,
                        uuid_string(char_proxy.uuid),
                        properties,
                        lambda: self._mtu - 3,
                        service,
                    )
                    collection.add_characteristic(characteristic)
                    for descriptor_proxy in char_proxy.descriptors:
                        collection.add_descriptor(
                            BleakGATTDescriptor(
                                descriptor_proxy,
                                descriptor_proxy.handle,
                                uuid_string(descriptor_proxy.type),
                                characteristic,
                            )
                        )
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"service discovery failed: {err}") from err
        return collection

    def _on_disconnection(self, _reason: int) -> None:
        self._connection = None
        self._peer = None
        self._subscriptions.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError("not connected")
        return self._peer

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        callback, self._disconnected_callback = self._disconnected_callback, None  # solicited: no callback
        try:
            await connection.disconnect()
        except _BUMBLE_ERRORS:
            pass  # already gone
        finally:
            self._disconnected_callback = callback
            self._connection = None
            self._peer = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        if self._connection is None:
            raise BleakError("not connected")
        try:
            await self._connection.pair()
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"pairing failed: {err}") from err

    async def unpair(self) -> None:
        raise BleakError("unpair is not supported by the bumble backend")

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require_peer()
        try:
            return bytearray(await _procedure(peer.read_value(characteristic.obj)))
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"read {characteristic.uuid} failed: {err}") from err

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        peer = self._require_peer()
        try:
            return bytearray(await _procedure(peer.read_value(descriptor.obj)))
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"read descriptor {descriptor.uuid} failed: {err}") from err

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        peer = self._require_peer()
        try:
            await peer.write_value(characteristic.obj, bytes(data), with_response=response)
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"write {characteristic.uuid} failed: {err}") from err

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        peer = self._require_peer()
        try:
            await peer.write_value(descriptor.obj, bytes(data), with_response=True)
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"write descriptor {descriptor.uuid} failed: {err}") from err

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        peer = self._require_peer()
        proxy: gatt_client.CharacteristicProxy[bytes] = characteristic.obj

        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        try:
            await peer.subscribe(proxy, subscriber, prefer_notify=True)
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"subscribe {characteristic.uuid} failed: {err}") from err
        self._subscriptions[characteristic.handle] = subscriber

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._require_peer()
        subscriber = self._subscriptions.pop(characteristic.handle, None)
        try:
            await peer.unsubscribe(characteristic.obj, subscriber)
        except _BUMBLE_ERRORS as err:
            raise BleakError(f"unsubscribe {characteristic.uuid} failed: {err}") from err


class BumbleBleakScanner(BaseBleakScanner):
    """`BaseBleakScanner` on a bumble device: passive LE scanning, advertisements as bleak reports them."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "passive",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._device = _bumble_device(kwargs)

    async def start(self) -> None:
        self.seen_devices = {}
        self._device.on(self._device.EVENT_ADVERTISEMENT, self._on_advertisement)
        users = _scanners.get(self._device, 0)
        _scanners[self._device] = users + 1
        if users == 0:
            try:
                await self._device.start_scanning(active=False, filter_duplicates=False)
            except _BUMBLE_ERRORS as err:
                await self.stop()
                raise BleakError(f"scan failed to start: {err}") from err

    async def stop(self) -> None:
        self._device.remove_listener(self._device.EVENT_ADVERTISEMENT, self._on_advertisement)
        users = _scanners.get(self._device, 1) - 1
        _scanners[self._device] = users
        if users == 0:
            with contextlib.suppress(*_BUMBLE_ERRORS):
                await self._device.stop_scanning()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        data = advertisement.data
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
        uuids: list[str] = []
        for kind in (
            AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        ):
            uuids.extend(uuid_string(u) for u in (data.get(kind) or ()))
        if not self.is_allowed_uuid(uuids):
            return
        manufacturer = data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA)
        tx_power = None if advertisement.tx_power == advertisement.TX_POWER_NOT_AVAILABLE else advertisement.tx_power
        adv = AdvertisementData(
            local_name=str(name) if name else None,
            manufacturer_data=dict([manufacturer]) if isinstance(manufacturer, tuple) else {},
            service_data={},
            service_uuids=uuids,
            tx_power=tx_power,
            rssi=advertisement.rssi,
            platform_data=(advertisement,),
        )
        address = str(advertisement.address).removesuffix("/P")
        device = self.create_or_update_device(address, address, adv.local_name, advertisement, adv)
        self.call_detection_callbacks(device, adv)
