"""The BLE device driver: connect, identify, subscribe, decode, and notice a silent link.

One driver instance serves one configured device.  `run` returns only by raising: a lost or silent link is a
TransportError, and the supervisor reconnects with backoff.  Decoding errors are logged and counted, never
fatal: one bad notification must not cost the connection.
"""

from __future__ import annotations

import asyncio
import contextlib

from drivers.base import EventSink
from drivers.ble import gatt
from drivers.ble.link import GattLink, GattLinkFactory
from drivers.ble.profiles import PROFILES, ProfileState
from gateway.errors import InvalidFrame, TransportError
from gateway.logs import get_logger
from gateway.model import ConnectionState, DeviceStatus, new_id, now_ns

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
NOTIFY_QUEUE_SIZE = 1024


class BleDeviceDriver:
    """Drives one BLE peripheral of a known profile."""

    def __init__(
        self,
        device_id: str,
        address: str,
        profile: str,
        link_factory: GattLinkFactory,
        *,
        silent_link_timeout_s: float = 10.0,
    ) -> None:
        self.device_id = device_id
        self.address = address
        self.profile = PROFILES[profile]
        self._link_factory = link_factory
        self._silent_timeout = silent_link_timeout_s
        self.invalid_frames = 0
        self.overflowed_notifications = 0

    async def run(self, sink: EventSink) -> None:
        link = self._link_factory(self.address)
        sink.emit_nowait(self._status(ConnectionState.CONNECTING))
        reason = "link_lost"
        try:
            await link.connect(CONNECT_TIMEOUT_S)
            await self._serve(link, sink)
        except asyncio.CancelledError:
            reason = "stopped"  # the gateway stopped this driver on purpose: not a device fault
            raise
        finally:
            with contextlib.suppress(TransportError):
                await asyncio.shield(link.disconnect())
            sink.emit_nowait(self._status(ConnectionState.DISCONNECTED, detail={"reason": reason}))

    async def _serve(self, link: GattLink, sink: EventSink) -> None:
        state = ProfileState(self.device_id)
        if link.has_characteristic(gatt.CGM_SESSION_START_TIME):
            state.cgm_session_start_ns = gatt.decode_cgm_session_start_time(
                await link.read(gatt.CGM_SESSION_START_TIME)
            )
        battery = None
        if link.has_characteristic(gatt.BATTERY_LEVEL):
            battery = float(gatt.decode_battery_level(await link.read(gatt.BATTERY_LEVEL)))
        await sink.emit(self._status(ConnectionState.CONNECTED, battery))

        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(NOTIFY_QUEUE_SIZE)

        def on_notify(uuid: str, data: bytes) -> None:
            try:
                queue.put_nowait((uuid, data))
            except asyncio.QueueFull:
                # The link delivers faster than the pipeline accepts; count it so the gap is visible.
                self.overflowed_notifications += 1

        for uuid in self.profile.notify:
            if link.has_characteristic(uuid):
                await link.start_notify(uuid, on_notify)
        for uuid, data in self.profile.start_writes:
            if link.has_characteristic(uuid):
                await link.write(uuid, data, response=True)
        log.info("device connected", device_id=self.device_id, profile=self.profile.name)

        lost = asyncio.ensure_future(link.disconnected.wait())
        getter: asyncio.Future[tuple[str, bytes]] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, lost}, timeout=self._silent_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    if lost in done:
                        raise TransportError("link lost", device_id=self.device_id)
                    raise TransportError("link silent", device_id=self.device_id, interval_s=self._silent_timeout)
                uuid, data = getter.result()
                try:
                    events = self.profile.notify[uuid](state, data)
                except InvalidFrame as err:
                    self.invalid_frames += 1
                    log.warning(
                        "invalid frame dropped", device_id=self.device_id, count=self.invalid_frames, **err.log_fields()
                    )
                    continue
                for event in events:
                    await sink.emit(event)
        finally:
            lost.cancel()
            if getter is not None:
                getter.cancel()

    def _status(
        self, connection: ConnectionState, battery: float | None = None, detail: dict[str, str] | None = None
    ) -> DeviceStatus:
        return DeviceStatus(new_id(), self.device_id, connection, now_ns(), battery_pct=battery, detail=detail or {})
