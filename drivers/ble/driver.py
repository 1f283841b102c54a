"""The BLE device driver: connect, identify, subscribe, decode, and notice a silent link.

One driver instance serves one configured device.  `run` returns only by raising: a lost or silent link is a
TransportError, and the supervisor reconnects with backoff.  Decoding errors are logged and counted, never
fatal: one bad notification must not cost the connection.  Notifications already received when the link
drops or the gateway stops are still decoded and handed to the pipeline: they are data the device sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from drivers.base import DriverStats, EventSink
from drivers.ble import gatt
from drivers.ble.link import GattLink, GattLinkFactory
from drivers.ble.profiles import PROFILES, ProfileState
from gateway.errors import InvalidFrame, TransportError
from gateway.logs import get_logger
from gateway.model import ConnectionState, DeviceStatus, Event, new_id, now_ns
from gateway.supervisor import report_healthy

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
NOTIFY_QUEUE_SIZE = 1024

Notification = tuple[str, bytes]


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
        self.stats = DriverStats()

    async def run(self, sink: EventSink) -> None:
        link = self._link_factory(self.address)
        queue: asyncio.Queue[Notification] = asyncio.Queue(NOTIFY_QUEUE_SIZE)
        state = ProfileState(self.device_id)
        sink.emit_nowait(self._status(ConnectionState.CONNECTING))
        reason = "link_lost"
        try:
            await link.connect(CONNECT_TIMEOUT_S)
            await self._serve(link, sink, queue, state)
        except asyncio.CancelledError:
            reason = "stopped"  # the gateway stopped this driver on purpose: not a device fault
            raise
        finally:
            # Disconnect first, so no notification can arrive after the queue has been handed over.
            with contextlib.suppress(TransportError):
                await asyncio.shield(link.disconnect())
            while not queue.empty():
                for event in self._decode(state, *queue.get_nowait()):
                    sink.emit_nowait(event)
            sink.emit_nowait(self._status(ConnectionState.DISCONNECTED, detail={"reason": reason}))

    async def _serve(
        self, link: GattLink, sink: EventSink, queue: asyncio.Queue[Notification], state: ProfileState
    ) -> None:
        if link.has_characteristic(gatt.CGM_SESSION_START_TIME):
            state.cgm_session_start_ns = gatt.decode_cgm_session_start_time(
                await link.read(gatt.CGM_SESSION_START_TIME)
            )
        battery = None
        if link.has_characteristic(gatt.BATTERY_LEVEL):
            battery = float(gatt.decode_battery_level(await link.read(gatt.BATTERY_LEVEL)))
        await sink.emit(self._status(ConnectionState.CONNECTED, battery))

        def on_notify(uuid: str, data: bytes) -> None:
            try:
                queue.put_nowait((uuid, data))
            except asyncio.QueueFull:
                # The link delivers faster than the pipeline accepts: count and report the gap.
                self.stats.dropped_notifications += 1
                if self.stats.dropped_notifications == 1:
                    log.warning("notification queue full; dropping", device_id=self.device_id)

        for uuid in self.profile.notify:
            if link.has_characteristic(uuid):
                await link.start_notify(uuid, on_notify)
        for uuid, data in self.profile.start_writes:
            if link.has_characteristic(uuid):
                await link.write(uuid, data, response=True)
        log.info("device connected", device_id=self.device_id, profile=self.profile.name)
        report_healthy()

        lost = asyncio.ensure_future(link.disconnected.wait())
        getter: asyncio.Future[Notification] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, lost}, timeout=self._silent_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    await self._emit_all(sink, self._decode(state, *getter.result()))
                    continue
                if lost in done:
                    # Hand over what arrived before the link dropped, then report the loss.
                    while not queue.empty():
                        await self._emit_all(sink, self._decode(state, *queue.get_nowait()))
                    raise TransportError("link lost", device_id=self.device_id)
                raise TransportError("link silent", device_id=self.device_id, interval_s=self._silent_timeout)
        finally:
            lost.cancel()
            if getter is not None:
                getter.cancel()

    def _decode(self, state: ProfileState, uuid: str, data: bytes) -> Sequence[Event]:
        self.stats.notifications += 1
        try:
            return self.profile.notify[uuid](state, data)
        except InvalidFrame as err:
            self.stats.invalid_frames += 1
            log.warning(
                "invalid frame dropped",
                device_id=self.device_id,
                count=self.stats.invalid_frames,
                **err.log_fields(),
            )
            return ()

    @staticmethod
    async def _emit_all(sink: EventSink, events: Sequence[Event]) -> None:
        for index, event in enumerate(events):
            try:
                await sink.emit(event)
            except asyncio.CancelledError:
                # Stopped while waiting for room: the rest of this notification still goes in, in order.
                for rest in events[index:]:
                    sink.emit_nowait(rest)
                raise

    def _status(
        self, connection: ConnectionState, battery: float | None = None, detail: dict[str, str] | None = None
    ) -> DeviceStatus:
        return DeviceStatus(new_id(), self.device_id, connection, now_ns(), battery_pct=battery, detail=detail or {})
