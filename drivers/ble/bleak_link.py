"""The production GattLink: bleak.

`BleakGattLink` adapts a `bleak.BleakClient` to the driver's `GattLink` interface and turns every bleak or OS
failure into a `TransportError`, so the supervisor's reconnect-with-backoff handles them all alike.  Before
connecting it waits for the device's advertisement (as BlueZ needs anyway), which also gives the RSSI the
driver reports.

`backend` is bleak's own hook: None picks the platform stack (BlueZ on a gateway); tests and HIL rigs pass
hil.bleak_bumble's backend with `bumble_device=` in `backend_kwargs`, and the same code runs over bumble.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from drivers.ble.link import NotifyCallback
from gateway.core.errors import TransportError
from gateway.core.logs import get_logger

log = get_logger(__name__)

_FAILURES = (BleakError, TimeoutError, OSError, EOFError)


class BleakGattLink:
    """One connection to one peripheral through bleak; implements drivers.ble.link.GattLink."""

    def __init__(
        self,
        address: str,
        *,
        client_backend: type[BaseBleakClient] | None = None,
        scanner_backend: type[BaseBleakScanner] | None = None,
        backend_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.disconnected = asyncio.Event()
        self.rssi_dbm: int | None = None
        self._client_backend = client_backend
        self._scanner_backend = scanner_backend
        self._kwargs = backend_kwargs or {}
        self._client: BleakClient | None = None

    def _is_mine(self, device: BLEDevice, advertisement: AdvertisementData) -> bool:
        if device.address.upper() != self.address.upper():
            return False
        self.rssi_dbm = advertisement.rssi
        return True

    async def connect(self, timeout_s: float, *, pair: bool = False) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                scanner_kwargs = dict(self._kwargs)
                if self._scanner_backend is not None:
                    scanner_kwargs["backend"] = self._scanner_backend
                found = await BleakScanner.find_device_by_filter(self._is_mine, timeout=timeout_s, **scanner_kwargs)
                if found is None:
                    raise TransportError("device not advertising")
                client = BleakClient(
                    found,
                    disconnected_callback=lambda _client: self.disconnected.set(),
                    timeout=timeout_s,
                    pair=pair,
                    backend=self._client_backend,
                    **self._kwargs,
                )
                await client.connect()
        except _FAILURES as err:
            raise TransportError("connect failed", error=type(err).__name__) from err
        self._client = client

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await client.disconnect()
        except _FAILURES as err:
            raise TransportError("disconnect failed", error=type(err).__name__) from err
        finally:
            self.disconnected.set()

    def _connected(self) -> BleakClient:
        if self._client is None or self.disconnected.is_set():
            raise TransportError("not connected")
        return self._client

    async def read(self, uuid: str) -> bytes:
        try:
            return bytes(await self._connected().read_gatt_char(uuid))
        except _FAILURES as err:
            raise TransportError("read failed", error=type(err).__name__) from err

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        try:
            await self._connected().write_gatt_char(uuid, data, response=response)
        except _FAILURES as err:
            raise TransportError("write failed", error=type(err).__name__) from err

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        def on_value(_characteristic: object, data: bytearray) -> None:
            callback(uuid, bytes(data))

        try:
            await self._connected().start_notify(uuid, on_value)
        except _FAILURES as err:
            raise TransportError("subscribe failed", error=type(err).__name__) from err

    def has_characteristic(self, uuid: str, *, notify: bool = False) -> bool:
        client = self._client
        characteristic = None if client is None else client.services.get_characteristic(uuid)
        if characteristic is None:
            return False
        return not notify or bool({"notify", "indicate"} & set(characteristic.properties))
