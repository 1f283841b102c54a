"""The BLE session: connect, identify, subscribe, decode, notice a silent link, and compose the profile's features.

One session serves one configured device (it is that device's `Driver`).  `run` returns only by raising: a
lost or silent link is a TransportError, and the supervisor reconnects with backoff.  Decoding errors are logged
and counted, never fatal: one bad notification must not cost the connection.  Notifications already received
when the link drops or the gateway stops are still decoded and handed to the pipeline: they are data the device
sent.  What a kind of device adds (stored-record backfill, pump status, pump commands) is a feature the profile
declares (drivers/ble/features.py); the session never asks which profile it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from drivers.base import CommandRefused, CommandTarget, EventSink, no_op
from drivers.ble import bas, cgms, device_info, ids
from drivers.ble.features import PumpCommander, PumpStatus, RecordBackfill, SessionFeature
from drivers.ble.link import GattLink, GattLinkFactory
from drivers.ble.profiles import PROFILES, Feature, ProfileState
from gateway.core.errors import InvalidFrame, TransportError
from gateway.core.logs import get_logger
from gateway.core.model import CONDITIONS_KEY, ConnectionState, DeviceStatus, Event, new_id, now_ns
from gateway.core.stats import DriverStats

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
NOTIFY_QUEUE_SIZE = 1024

Notification = tuple[str, bytes]


class BleSession:
    """Drives one BLE peripheral of a known profile."""

    def __init__(
        self,
        device_id: str,
        address: str,
        profile: str,
        link_factory: GattLinkFactory,
        *,
        silent_link_timeout_s: float = 10.0,
        trusted_time: Callable[[], int | None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.address = address
        self.profile = PROFILES[profile]
        self._link_factory = link_factory
        self._silent_timeout = silent_link_timeout_s
        # Where a device's clock is set from: None (untrusted now) means the clock is left alone.
        self._trusted_time = trusted_time if trusted_time is not None else now_ns
        self.stats = DriverStats()
        self.on_healthy: Callable[[], None] = no_op  # set by whoever supervises this driver
        self._link: GattLink | None = None
        # Kept across reconnections: where the CGM's records resume, the pump's E2E setting, ...
        self.state = ProfileState(device_id)
        declared = self.profile.features
        self.backfill = RecordBackfill(self, self.profile.records) if Feature.RECORD_BACKFILL in declared else None
        self.pump_status = PumpStatus(self) if Feature.PUMP_STATUS in declared else None
        self.commander = PumpCommander(self) if Feature.PUMP_COMMANDS in declared else None
        self.features: list[SessionFeature] = [f for f in (self.backfill, self.pump_status, self.commander) if f]

    @property
    def link(self) -> GattLink | None:
        return self._link

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.disconnected.is_set()

    @property
    def command_target(self) -> CommandTarget:
        """The pump's commander; for a device that takes no commands, a target that refuses every one."""
        return self.commander if self.commander is not None else _TakesNoCommands(self)

    async def run(self, sink: EventSink) -> None:
        link = self._link_factory(self.address)
        queue: asyncio.Queue[Notification] = asyncio.Queue(NOTIFY_QUEUE_SIZE)
        sink.emit_nowait(self.status(ConnectionState.CONNECTING))
        reason = "link_lost"
        try:
            await link.connect(CONNECT_TIMEOUT_S, pair=self.profile.bonding)
            await self._serve(link, sink, queue)
        except asyncio.CancelledError:
            reason = "stopped"  # the gateway stopped this driver on purpose: not a device fault
            raise
        finally:
            # Disconnect first, so no notification can arrive after the queue has been handed over.
            with contextlib.suppress(TransportError):
                await asyncio.shield(link.disconnect())
            while not queue.empty():
                for event in self._decode(*queue.get_nowait()):
                    sink.emit_nowait(event)
            sink.emit_nowait(self.status(ConnectionState.DISCONNECTED, detail={"reason": reason}))

    async def _serve(self, link: GattLink, sink: EventSink, queue: asyncio.Queue[Notification]) -> None:
        state = self.state
        crc: bool | None = None
        if link.has_characteristic(cgms.CGM_FEATURE):
            crc = state.cgm_e2e_crc = cgms.decode_cgm_feature(await link.read(cgms.CGM_FEATURE)).e2e_crc
        if link.has_characteristic(cgms.CGM_SESSION_START_TIME):
            raw = await link.read(cgms.CGM_SESSION_START_TIME)
            state.new_cgm_session(cgms.decode_cgm_session_start_time(raw, e2e_crc=crc))
        if link.has_characteristic(ids.IDD_FEATURES):
            state.idd_e2e = ids.decode_idd_features(await link.read(ids.IDD_FEATURES)).e2e_protection
        battery = None
        if link.has_characteristic(bas.BATTERY_LEVEL):
            battery = float(bas.decode_battery_level(await link.read(bas.BATTERY_LEVEL)))
        detail = await self._identity(link)
        if state.cgm_session_start_ns is not None:
            detail["sensor_session_start_ns"] = str(state.cgm_session_start_ns)
        await sink.emit(self.status(ConnectionState.CONNECTED, battery=battery, detail=detail, rssi=link.rssi_dbm))
        await self._set_clock(link, sink)

        def on_notify(uuid: str, data: bytes) -> None:
            try:
                queue.put_nowait((uuid, data))
            except asyncio.QueueFull:
                # The link delivers faster than the pipeline accepts: count and report the gap.
                self.stats.dropped_notifications += 1
                if self.stats.dropped_notifications == 1:
                    log.warning("notification queue full; dropping", device_id=self.device_id)

        for uuid in self.profile.notify:
            if link.has_characteristic(uuid, notify=True):
                await link.start_notify(uuid, on_notify)
        attached = [feature for feature in self.features if await feature.attach(link)]
        for uuid, data in self.profile.start_writes:
            if link.has_characteristic(uuid):
                await link.write(uuid, data, response=True)
        log.info("device connected", device_id=self.device_id, profile=self.profile.name, rssi_dbm=link.rssi_dbm)
        self.on_healthy()
        self._link = link

        lost = asyncio.ensure_future(link.disconnected.wait())
        getter: asyncio.Future[Notification] | None = None
        # Records stored while we were away come in as ordinary measurement notifications, while this loop runs.
        helpers = []
        for feature in attached:
            work = feature.while_connected(link, sink)
            if work is not None:
                helpers.append(asyncio.ensure_future(work))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, lost}, timeout=self._silent_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    item, getter = getter.result(), None
                    await self._emit_all(sink, self._decode(*item))
                    continue
                if lost in done:
                    # Hand over what arrived before the link dropped, then report the loss.
                    while not queue.empty():
                        await self._emit_all(sink, self._decode(*queue.get_nowait()))
                    raise TransportError("link lost", device_id=self.device_id)
                raise TransportError("link silent", device_id=self.device_id, interval_s=self._silent_timeout)
        finally:
            self._link = None
            lost.cancel()
            for helper in helpers:
                helper.cancel()
            if getter is not None:
                if getter.done() and not getter.cancelled():
                    # Taken off the queue just as we were stopped: still data the device sent.
                    for event in self._decode(*getter.result()):
                        sink.emit_nowait(event)
                else:
                    getter.cancel()
            for feature in attached:
                feature.detach()

    # -- connection set-up ---------------------------------------------------------------------------------------
    async def _identity(self, link: GattLink) -> dict[str, str]:
        """Device Information strings, as status detail (a device's identity, never the patient's)."""
        identity: dict[str, str] = {}
        for uuid, field in device_info.DIS_STRING_CHARACTERISTICS.items():
            if link.has_characteristic(uuid):
                try:
                    identity[field] = device_info.decode_dis_string(await link.read(uuid), field)
                except InvalidFrame as err:
                    log.warning("device information unreadable", device_id=self.device_id, **err.log_fields())
        return identity

    async def _set_clock(self, link: GattLink, sink: EventSink) -> None:
        """Set the device's clock through the Current Time Service, where it accepts writes, and only from
        trusted time: a gateway that booted without NTP would otherwise write its own wrong clock into a pump.
        When time cannot be trusted the device keeps its clock and a technical alarm says so."""
        if not link.has_characteristic(device_info.CURRENT_TIME):
            return
        trusted = self._trusted_time()
        conditions: tuple[str, ...] = ()
        if trusted is None:
            log.warning("device clock not set: the gateway's time is not trusted", device_id=self.device_id)
            conditions = ("clock_not_set",)
        else:
            try:
                await link.write(device_info.CURRENT_TIME, device_info.encode_current_time_from_ns(trusted))
                log.info("device clock set", device_id=self.device_id)
            except TransportError as err:
                # Writing Current Time is optional in CTS: a device that refuses keeps its clock and its link.
                log.warning("device clock not set", device_id=self.device_id, **err.log_fields())
        detail = {CONDITIONS_KEY: "complete", "conditions_source": "clock", "priority.clock_not_set": "low"}
        await sink.emit(self.status(ConnectionState.CONNECTED, detail=detail, errors=conditions))

    def _decode(self, uuid: str, data: bytes) -> Sequence[Event]:
        self.stats.notifications += 1
        try:
            return self.profile.notify[uuid](self.state, data)
        except InvalidFrame as err:
            self.stats.invalid_frames += 1
            # The device still holds a stored record: a feature may ask for it again.
            refetch = any(feature.record_corrupt(uuid) for feature in self.features)
            log.warning(
                "invalid frame dropped",
                device_id=self.device_id,
                count=self.stats.invalid_frames,
                refetch=refetch,
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

    def status(
        self,
        connection: ConnectionState,
        *,
        battery: float | None = None,
        detail: dict[str, str] | None = None,
        rssi: int | None = None,
        errors: tuple[str, ...] = (),
    ) -> DeviceStatus:
        return DeviceStatus(
            new_id(),
            self.device_id,
            connection,
            now_ns(),
            battery_pct=battery,
            rssi_dbm=rssi,
            errors=errors,
            detail=detail or {},
        )


class _TakesNoCommands:
    """The command target of a device whose profile declares no command feature: every command is refused
    before anything is sent, with the reason (rather than the device being unknown to the command service)."""

    def __init__(self, session: BleSession) -> None:
        self._session = session
        self.device_id = session.device_id

    @property
    def connected(self) -> bool:
        return self._session.connected

    def validate(self, command_type: str, parameters: dict[str, int | str]) -> None:
        raise CommandRefused(f"a {self._session.profile.name} takes no commands; nothing was sent")

    async def execute(self, command_type: str, parameters: dict[str, int | str], timeout_s: float) -> dict[str, str]:
        self.validate(command_type, parameters)
        return {}  # pragma: no cover - validate always refuses
