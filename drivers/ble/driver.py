"""The BLE device driver: connect, identify, subscribe, decode, and notice a silent link.

One driver instance serves one configured device.  `run` returns only by raising: a lost or silent link is a
TransportError, and the supervisor reconnects with backoff.  Decoding errors are logged and counted, never
fatal: one bad notification must not cost the connection.  Notifications already received when the link
drops or the gateway stops are still decoded and handed to the pipeline: they are data the device sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from drivers.base import CommandRefused, EventSink, OutcomeUnknown, Settlement, no_op
from drivers.ble import device_info, gatt, idd_history, ids
from drivers.ble.link import GattLink, GattLinkFactory
from drivers.ble.profiles import PROFILES, ProfileState
from drivers.ble.pump_history import HistoryRead, settle_bolus
from drivers.ble.sfloat import decode_sfloat, encode_sfloat
from gateway.core.errors import InvalidFrame, TransportError
from gateway.core.logs import get_logger
from gateway.core.model import CONDITIONS_KEY, ConnectionState, DeviceStatus, Event, new_id, now_ns
from gateway.core.stats import DriverStats

log = get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
RACP_TIMEOUT_S = 30.0  # a CGM sends two weeks of 5-minute records in well under this
REFETCH_ATTEMPTS = 3
NOTIFY_QUEUE_SIZE = 1024
MAX_HISTORY_RECORDS = 4096  # one history report; more is a report that decides nothing (never a growing list)

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
        self._command_lock = asyncio.Lock()
        self._response: asyncio.Future[bytes] | None = None
        self._counter = ids.E2ECounter()
        self._tracker = ids.E2ECounterTracker()
        # Kept across reconnections: where the CGM's records resume (the RACP request after a reconnect).
        self._state = ProfileState(device_id)
        self._racp_answer: asyncio.Future[bytes] | None = None
        self._refetch_wanted = asyncio.Event()
        self._reader_counter = ids.E2ECounter()
        self._reader_answer: asyncio.Future[bytes] | None = None
        self._reader_lock = asyncio.Lock()
        self._status_changed = ids.StatusChangedFlag(0)
        self._status_changed_event = asyncio.Event()
        self.status_resets = 0  # Status Changed flags acknowledged through the Status Reader CP
        self._refetch_since: int | None = None
        self._last_refetch: int | None = None
        self.records_requested = 0  # RACP procedures started (for tests and the admin API)
        # The pump's own history (IDD RACP + IDD History Data), read to settle an outcome-unknown command.
        self._history_ready = False  # this connection offers it
        self._history_lock = asyncio.Lock()
        self._history_counter = ids.E2ECounter()
        self._history_tracker = ids.E2ECounterTracker()
        self._history_answer: asyncio.Future[bytes] | None = None
        self._history_records: list[idd_history.HistoryRecord] | None = None  # the running report's records
        self._history_problems = 0
        self._connection_listeners: list[Callable[[str], None]] = []

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.disconnected.is_set()

    async def run(self, sink: EventSink) -> None:
        link = self._link_factory(self.address)
        queue: asyncio.Queue[Notification] = asyncio.Queue(NOTIFY_QUEUE_SIZE)
        state = self._state
        sink.emit_nowait(self._status(ConnectionState.CONNECTING))
        reason = "link_lost"
        try:
            await link.connect(CONNECT_TIMEOUT_S, pair=self.profile.bonding)
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
        crc: bool | None = None
        if link.has_characteristic(gatt.CGM_FEATURE):
            crc = state.cgm_e2e_crc = gatt.decode_cgm_feature(await link.read(gatt.CGM_FEATURE)).e2e_crc
        if link.has_characteristic(gatt.CGM_SESSION_START_TIME):
            raw = await link.read(gatt.CGM_SESSION_START_TIME)
            state.new_cgm_session(gatt.decode_cgm_session_start_time(raw, e2e_crc=crc))
        if link.has_characteristic(gatt.IDD_FEATURES):
            state.idd_e2e = ids.decode_idd_features(await link.read(gatt.IDD_FEATURES)).e2e_protection
        battery = None
        if link.has_characteristic(gatt.BATTERY_LEVEL):
            battery = float(gatt.decode_battery_level(await link.read(gatt.BATTERY_LEVEL)))
        detail = await self._identity(link)
        if state.cgm_session_start_ns is not None:
            detail["sensor_session_start_ns"] = str(state.cgm_session_start_ns)
        await sink.emit(self._status(ConnectionState.CONNECTED, battery, detail, rssi=link.rssi_dbm))
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
        if self.profile.name == "insulin_pump" and link.has_characteristic(ids.IDD_COMMAND_CONTROL_POINT):
            # Control point responses answer our own writes: they go to the waiting command, not the pipeline.
            await link.start_notify(ids.IDD_COMMAND_CONTROL_POINT, self._on_control_point)
            self._counter, self._tracker = ids.E2ECounter(), ids.E2ECounterTracker()
        reader = self.profile.name == "insulin_pump" and link.has_characteristic(
            ids.IDD_STATUS_READER_CONTROL_POINT, notify=True
        )
        if reader:
            await link.start_notify(ids.IDD_STATUS_READER_CONTROL_POINT, self._on_status_reader)
            self._reader_counter = ids.E2ECounter()
            if link.has_characteristic(gatt.IDD_STATUS_CHANGED, notify=True):
                await link.start_notify(gatt.IDD_STATUS_CHANGED, self._on_status_changed)
        racp = self.profile.record_access and link.has_characteristic(gatt.RECORD_ACCESS_CONTROL_POINT, notify=True)
        if racp:
            await link.start_notify(gatt.RECORD_ACCESS_CONTROL_POINT, self._on_racp)
        self._history_ready = (
            self.profile.delivery_history
            and link.has_characteristic(idd_history.IDD_RECORD_ACCESS_CONTROL_POINT, notify=True)
            and link.has_characteristic(idd_history.IDD_HISTORY_DATA, notify=True)
        )
        if self._history_ready:
            await link.start_notify(idd_history.IDD_HISTORY_DATA, self._on_history_record)
            await link.start_notify(idd_history.IDD_RECORD_ACCESS_CONTROL_POINT, self._on_history_racp)
            self._history_counter = ids.E2ECounter()
        for uuid, data in self.profile.start_writes:
            if link.has_characteristic(uuid):
                await link.write(uuid, data, response=True)
        log.info("device connected", device_id=self.device_id, profile=self.profile.name, rssi_dbm=link.rssi_dbm)
        self.on_healthy()
        self._link = link
        for listener in self._connection_listeners:
            listener(self.device_id)

        lost = asyncio.ensure_future(link.disconnected.wait())
        getter: asyncio.Future[Notification] | None = None
        # Records stored while we were away come in as ordinary measurement notifications, while this loop runs.
        helpers = [asyncio.ensure_future(self._keep_records_complete(link, state))] if racp else []
        if reader:
            helpers.append(asyncio.ensure_future(self._follow_pump_status(link, sink, state)))
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, lost}, timeout=self._silent_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    item, getter = getter.result(), None
                    await self._emit_all(sink, self._decode(state, *item))
                    continue
                if lost in done:
                    # Hand over what arrived before the link dropped, then report the loss.
                    while not queue.empty():
                        await self._emit_all(sink, self._decode(state, *queue.get_nowait()))
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
                    for event in self._decode(state, *getter.result()):
                        sink.emit_nowait(event)
                else:
                    getter.cancel()
            if self._response is not None and not self._response.done():
                self._response.set_exception(OutcomeUnknown("link lost while waiting for the device's answer"))
            if self._history_answer is not None and not self._history_answer.done():
                self._history_answer.set_exception(TransportError("link lost", device_id=self.device_id))

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
        await sink.emit(self._status(ConnectionState.CONNECTED, detail=detail, errors=conditions))

    # -- stored records (RACP) -------------------------------------------------------------------------------
    def _on_racp(self, _uuid: str, data: bytes) -> None:
        if self._racp_answer is not None and not self._racp_answer.done():
            self._racp_answer.set_result(bytes(data))

    async def _keep_records_complete(self, link: GattLink, state: ProfileState) -> None:
        """Fetch what was missed while away, then again after any record that arrived corrupted.

        A corrupted record (bad E2E-CRC, malformed) is fetched again through RACP from the newest good record
        on; records already passed on are not passed on twice.  A record still corrupt after
        REFETCH_ATTEMPTS tries in a row is reported lost (log line) rather than asked for forever.
        """
        since = None if state.cgm_last_offset_min is None else state.cgm_last_offset_min + 1
        if self._refetch_since is not None:  # a corrupt record the last connection did not get to fetch again
            since = min(self._refetch_since, since if since is not None else self._refetch_since)
            self._refetch_since = None
        self._refetch_wanted.clear()
        attempts = 0
        while True:
            await self._fetch_stored_records(link, since)
            while True:
                await self._refetch_wanted.wait()
                self._refetch_wanted.clear()
                since, self._refetch_since = self._refetch_since, None
                attempts = attempts + 1 if since == self._last_refetch else 1
                self._last_refetch = since
                if attempts <= REFETCH_ATTEMPTS:
                    break
                log.error(
                    "stored record lost: corrupt on every fetch", device_id=self.device_id, since_offset_min=since
                )

    def _want_refetch(self, state: ProfileState) -> None:
        since = 0 if state.cgm_last_offset_min is None else state.cgm_last_offset_min + 1
        self._refetch_since = since if self._refetch_since is None else min(self._refetch_since, since)
        self._refetch_wanted.set()

    async def _fetch_stored_records(self, link: GattLink, since: int | None) -> None:
        """Ask for every record from time offset `since` on (all records when None)."""
        request = gatt.racp_report_all() if since is None else gatt.racp_report_records_since(since)
        self._racp_answer = asyncio.get_running_loop().create_future()
        self.records_requested += 1
        try:
            await link.write(gatt.RECORD_ACCESS_CONTROL_POINT, request, response=True)
            async with asyncio.timeout(RACP_TIMEOUT_S):
                answer = gatt.decode_racp_response(await self._racp_answer)
        except TimeoutError:
            log.warning("stored records: no RACP answer in time", device_id=self.device_id, since_offset_min=since)
            return
        except (TransportError, InvalidFrame) as err:
            fields = err.log_fields() if isinstance(err, InvalidFrame) else {}
            log.warning("stored records: RACP failed", device_id=self.device_id, error=type(err).__name__, **fields)
            return
        finally:
            self._racp_answer = None
        code = answer.response_code
        outcome = "none_missed" if code == gatt.RacpResponseCode.NO_RECORDS_FOUND else _racp_code_name(code)
        log.info("stored records fetched", device_id=self.device_id, since_offset_min=since, outcome=outcome)

    # -- insulin pump status: Status Changed, and the Status Reader Control Point -------------------------------
    def _on_status_reader(self, _uuid: str, data: bytes) -> None:
        if self._reader_answer is not None and not self._reader_answer.done():
            self._reader_answer.set_result(bytes(data))

    def _on_status_changed(self, _uuid: str, data: bytes) -> None:
        try:
            flags, _counter = ids.decode_status_changed(data, e2e=self._state.idd_e2e)
        except InvalidFrame as err:
            self.stats.invalid_frames += 1
            log.warning("invalid frame dropped", device_id=self.device_id, **err.log_fields())
            return
        self._status_changed |= flags
        self._status_changed_event.set()

    async def _read_status(self, link: GattLink, request: ids.StatusReaderRequest) -> ids.StatusReaderResponse:
        """One Status Reader CP procedure (with E2E): write the request, wait for its indication."""
        async with self._reader_lock:
            self._reader_answer = asyncio.get_running_loop().create_future()
            try:
                frame = ids.encode_status_reader_request(
                    request, counter=self._reader_counter.next() if self._state.idd_e2e else None
                )
                await link.write(ids.IDD_STATUS_READER_CONTROL_POINT, frame, response=True)
                async with asyncio.timeout(RACP_TIMEOUT_S):
                    raw = await self._reader_answer
            finally:
                self._reader_answer = None
        response, _counter = ids.decode_status_reader_response(raw, e2e=self._state.idd_e2e)
        return response

    async def _follow_pump_status(self, link: GattLink, sink: EventSink, state: ProfileState) -> None:
        """Report insulin delivered and on board, and acknowledge the pump's Status Changed flags.

        At connection and whenever the pump signals a change: Get Delivered Insulin and Get Insulin On Board go
        into the status detail, then Reset Status clears the flags that were seen (the IDS procedure).  A
        failure here is logged and retried at the next change; it never costs the connection.
        """
        self._status_changed_event.set()  # a first report at connection
        while True:
            await self._status_changed_event.wait()
            self._status_changed_event.clear()
            flags, self._status_changed = self._status_changed, ids.StatusChangedFlag(0)
            detail: dict[str, str] = {}
            try:
                delivered = await self._read_status(link, ids.GetDeliveredInsulin())
                if isinstance(delivered, ids.DeliveredInsulinResponse):
                    detail["bolus_delivered_iu"] = repr(delivered.bolus_delivered_iu)
                    detail["basal_delivered_iu"] = repr(delivered.basal_delivered_iu)
                on_board = await self._read_status(link, ids.GetInsulinOnBoard())
                if isinstance(on_board, ids.InsulinOnBoardResponse):
                    detail["insulin_on_board_iu"] = repr(on_board.insulin_on_board_iu)
                if flags:
                    answer = await self._read_status(link, ids.ResetStatus(flags))
                    if (
                        isinstance(answer, ids.StatusReaderResponseCode)
                        and answer.value == ids.StatusReaderResponseCodeValue.SUCCESS
                    ):
                        self.status_resets += 1
                    detail["status_changed"] = ",".join(f.name.lower() for f in flags if f.name)
            except (TransportError, InvalidFrame, TimeoutError) as err:
                log.warning("pump status read failed", device_id=self.device_id, error=type(err).__name__)
                self._status_changed |= flags  # not acknowledged: reset them with the next report
                continue
            if detail:
                await sink.emit(self._status(ConnectionState.CONNECTED, detail=detail))

    # -- the pump's own history (IDD RACP + IDD History Data): settling an unknown outcome ----------------------
    def watch_connections(self, listener: Callable[[str], None]) -> None:
        """Call listener(device_id) each time the link is ready (the command service settles then)."""
        self._connection_listeners.append(listener)

    def _on_history_racp(self, _uuid: str, data: bytes) -> None:
        if self._history_answer is not None and not self._history_answer.done():
            self._history_answer.set_result(bytes(data))

    def _on_history_record(self, _uuid: str, data: bytes) -> None:
        records = self._history_records
        if records is None:
            return  # not asked for: a pump sends history only in a report
        try:
            record, counter = idd_history.decode_history_record(data, e2e=self._state.idd_e2e)
            if counter is not None:
                self._history_tracker.check(counter)  # a lost or repeated record would make the report wrong
        except InvalidFrame as err:
            self._history_problems += 1
            self.stats.invalid_frames += 1
            log.warning("pump history record unusable", device_id=self.device_id, **err.log_fields())
            return
        if len(records) >= MAX_HISTORY_RECORDS:
            self._history_problems += 1
            return
        records.append(record)

    async def _read_history(self, request: idd_history.RacpRequest, timeout_s: float) -> HistoryRead | None:
        """One IDD RACP report: the records that came as History Data, and whether the pump said Success.
        None when the pump has no history here or the procedure failed (logged)."""
        link = self._link
        if link is None or not self._history_ready:
            return None
        e2e = self._state.idd_e2e
        async with self._history_lock:
            self._history_records, self._history_problems = [], 0
            self._history_tracker.reset()
            self._history_answer = asyncio.get_running_loop().create_future()
            try:
                frame = idd_history.encode_racp_request(request, counter=self._history_counter.next() if e2e else None)
                await link.write(idd_history.IDD_RECORD_ACCESS_CONTROL_POINT, frame, response=True)
                async with asyncio.timeout(timeout_s):
                    raw = await self._history_answer
                answer, _counter = idd_history.decode_racp_response(raw, e2e=e2e)
            except (TransportError, InvalidFrame, TimeoutError) as err:
                log.warning("pump history not read", device_id=self.device_id, error=type(err).__name__)
                return None
            finally:
                records, problems = self._history_records or [], self._history_problems
                self._history_records, self._history_answer = None, None
        completed = (
            isinstance(answer, idd_history.RacpResponseCode)
            and answer.request_opcode == request.opcode
            and answer.value == idd_history.RacpResponseCodeValue.SUCCESS
        )
        return HistoryRead(tuple(records), completed, problems)

    async def history_position(self, timeout_s: float) -> int | None:
        """The sequence number after the pump's newest history record (None: no history here, or unknown)."""
        read = await self._read_history(idd_history.report_last_record(), timeout_s)
        if read is None or not read.completed or read.problems or len(read.records) != 1:
            if read is not None:
                log.warning("pump history position unknown", device_id=self.device_id, count=len(read.records))
            return None
        return read.records[0].sequence_number + 1

    async def settle_from_history(
        self, command_type: str, parameters: dict[str, int | str], since: int, timeout_s: float
    ) -> Settlement:
        """What the pump's history from `since` on says about a bolus sent after `since` was read."""
        if command_type != "bolus":
            return Settlement("undecided", f"a {command_type} is not settled from the history")
        try:
            amount_iu = _exact_iu(int(parameters["amount_mu"]))
        except (KeyError, ValueError, CommandRefused):
            return Settlement("undecided", "the command's dose is not one the pump could have recorded")
        read = await self._read_history(idd_history.report_records_since(since), timeout_s)
        if read is None:
            return Settlement("undecided", "the pump's history could not be read now")
        return settle_bolus(read, since, amount_iu)

    # -- commands (insulin pump, IDS Command Control Point) ---------------------------------------------------
    def _on_control_point(self, _uuid: str, data: bytes) -> None:
        if self._response is not None and not self._response.done():
            self._response.set_result(bytes(data))

    def validate(self, command_type: str, parameters: dict[str, int | str]) -> None:
        """Refuse, before anything is sent, a command this pump cannot carry out exactly."""
        self._checked_message(command_type, parameters)

    def _checked_message(self, command_type: str, parameters: dict[str, int | str]) -> ids.IddCommand:
        message = _ids_message(command_type, parameters, self.profile.name)
        try:
            ids.encode_command(message, counter=0)  # every field in range for the wire format
        except ValueError:
            raise CommandRefused("parameters out of range for the pump's wire format; nothing was sent") from None
        return message

    async def execute(self, command_type: str, parameters: dict[str, int | str], timeout_s: float) -> dict[str, str]:
        """Write one IDS command and wait for the pump's answer to *that* command.

        Framed as the pump's IDD Features say: with E2E-Counter and E2E-CRC when it supports E2E protection,
        without them when it does not (a pump without E2E would read the trailer as operand bytes)."""
        message = self._checked_message(command_type, parameters)
        async with self._command_lock:
            link = self._link
            if link is None or link.disconnected.is_set():
                raise CommandRefused("device not connected; nothing was sent")
            e2e = self._state.idd_e2e
            frame = ids.encode_command(message, counter=self._counter.next() if e2e else None)
            self._response = asyncio.get_running_loop().create_future()
            try:
                await link.write(ids.IDD_COMMAND_CONTROL_POINT, frame, response=True)
                async with asyncio.timeout(timeout_s):
                    raw = await self._response
            except TransportError:
                raise OutcomeUnknown("link failed during the write: the pump may have acted on it") from None
            except TimeoutError:
                # A late answer could later be taken for the next command's: the control point must resync.
                self._tracker.reset()
                raise OutcomeUnknown("no answer from the pump in time: it may have acted") from None
            finally:
                self._response = None
            try:
                response, counter = ids.decode_response(raw, e2e=e2e)
                if counter is not None:
                    self._tracker.check(counter)
            except InvalidFrame:
                raise OutcomeUnknown("the pump's answer failed its E2E check") from None
        return _outcome(message, response)

    def _decode(self, state: ProfileState, uuid: str, data: bytes) -> Sequence[Event]:
        self.stats.notifications += 1
        try:
            return self.profile.notify[uuid](state, data)
        except InvalidFrame as err:
            self.stats.invalid_frames += 1
            refetch = self.profile.record_access and uuid in self.profile.records
            log.warning(
                "invalid frame dropped",
                device_id=self.device_id,
                count=self.stats.invalid_frames,
                refetch=refetch,
                **err.log_fields(),
            )
            if refetch:
                self._want_refetch(state)  # the device still holds the record: ask for it again
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
        self,
        connection: ConnectionState,
        battery: float | None = None,
        detail: dict[str, str] | None = None,
        *,
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


def _racp_code_name(code: int | None) -> str:
    try:
        return gatt.RacpResponseCode(code).name.lower() if code is not None else "none"
    except ValueError:
        return f"0x{code:02x}"


def _code_name(value: int) -> str:
    try:
        return ids.ResponseCodeValue(value).name.lower()
    except ValueError:
        return f"0x{value:02x}"


def _exact_iu(milli_units: int) -> float:
    """Milli-units as IU, refusing any dose SFLOAT cannot carry exactly (a dose is never rounded)."""
    value = milli_units / 1000
    try:
        exact = decode_sfloat(encode_sfloat(value)) == value
    except ValueError:
        exact = False
    if not exact:
        raise CommandRefused("dose not representable exactly on the pump's wire format; nothing was sent")
    return value


def _ids_message(command_type: str, parameters: dict[str, int | str], profile: str) -> ids.IddCommand:
    def integer(name: str) -> int:
        value = parameters.get(name)
        if not isinstance(value, int):
            raise CommandRefused(f"parameter {name} missing; nothing was sent")
        return value

    if profile != "insulin_pump":
        raise CommandRefused(f"a {profile} takes no commands; nothing was sent")
    if command_type == "bolus":
        return ids.SetBolus(
            ids.BolusType.FAST,
            _exact_iu(integer("amount_mu")),
            0.0,
            0,
            None,
            None,
            ids.BolusActivationType.COMMANDED,
            False,
            False,
        )
    if command_type == "cancel_bolus":
        return ids.CancelBolus(integer("bolus_id"))
    if command_type == "temp_basal":
        return ids.SetTbrAdjustment(
            ids.TbrType.ABSOLUTE,
            _exact_iu(integer("rate_mu_per_h")),
            integer("duration_min"),
            None,
            ids.TbrDeliveryContext.REMOTE_CONTROL,
            False,
        )
    raise CommandRefused(f"command type {command_type} not supported by this device; nothing was sent")


_REQUEST_OPCODE = {
    ids.SetBolus: ids.CommandOpCode.SET_BOLUS,
    ids.CancelBolus: ids.CommandOpCode.CANCEL_BOLUS,
    ids.SetTbrAdjustment: ids.CommandOpCode.SET_TBR_ADJUSTMENT,
    ids.CancelTbrAdjustment: ids.CommandOpCode.CANCEL_TBR_ADJUSTMENT,
}
# Answers that say for certain the pump did not act; anything else that is not success is uncertain.
_CERTAINLY_NOT_EXECUTED = {
    ids.ResponseCodeValue.OP_CODE_NOT_SUPPORTED,
    ids.ResponseCodeValue.INVALID_OPERAND,
    ids.ResponseCodeValue.PARAMETER_OUT_OF_RANGE,
    ids.ResponseCodeValue.PROCEDURE_NOT_APPLICABLE,
    ids.ResponseCodeValue.PLAUSIBILITY_CHECK_FAILED,
    ids.ResponseCodeValue.MAXIMUM_BOLUS_NUMBER_REACHED,
}


def _outcome(request: ids.IddCommand, response: ids.IddResponse) -> dict[str, str]:
    """The command's outcome from the pump's answer, which must answer this very request."""
    if isinstance(request, ids.SetBolus) and isinstance(response, ids.SetBolusResponse):
        return {"bolus_id": str(response.bolus_id)}
    if (
        isinstance(request, ids.CancelBolus)
        and isinstance(response, ids.CancelBolusResponse)
        and response.bolus_id == request.bolus_id
    ):
        return {"bolus_id": str(response.bolus_id)}
    if isinstance(response, ids.ResponseCode) and response.request_opcode == _REQUEST_OPCODE[type(request)]:
        if response.value == ids.ResponseCodeValue.SUCCESS and isinstance(
            request, ids.SetTbrAdjustment | ids.CancelTbrAdjustment
        ):
            return {}
        if response.value in _CERTAINLY_NOT_EXECUTED:
            raise CommandRefused(f"pump refused: {_code_name(response.value)}")
    raise OutcomeUnknown("the pump's answer does not match the command (or does not say it was not executed)")
