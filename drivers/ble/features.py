"""BLE profile features: behaviour a profile declares (`Profile.features`) and the session composes.

A GATT session (drivers/ble/session.py) connects, identifies, subscribes to the profile's notifications and
watches the link; everything a particular kind of device adds is a feature attached to that session:

- `RecordBackfill` (RACP): stored records fetched after every (re)connection, and again after a corrupt one;
- `PumpStatus` (IDS Status Reader CP + Status Changed): insulin delivered and on board, flags acknowledged;
- `PumpCommander` (IDS Command CP, and the pump's IDD History through the IDD RACP): the device's
  `CommandTarget`, whose outcome-unknown commands are settled from the pump's own history.

A feature subscribes in `attach` (False: this device does not offer it), may run a coroutine while the link
is up (`while_connected`), and fails what waits on the device in `detach`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from drivers.base import CommandRefused, EventSink, OutcomeUnknown, Settlement
from drivers.ble import idd_history, ids, racp
from drivers.ble.link import GattLink
from drivers.ble.profiles import ProfileState
from drivers.ble.pump_history import HistoryRead, settle_bolus
from drivers.ble.sfloat import decode_sfloat, encode_sfloat
from gateway.core.errors import InvalidFrame, TransportError
from gateway.core.logs import get_logger
from gateway.core.model import ConnectionState, DeviceStatus
from gateway.core.stats import DriverStats

log = get_logger(__name__)

RACP_TIMEOUT_S = 30.0  # a CGM sends two weeks of 5-minute records in well under this
REFETCH_ATTEMPTS = 3
MAX_HISTORY_RECORDS = 4096  # one history report; more is a report that decides nothing (never a growing list)


class Session(Protocol):
    """What a feature sees of the session it is attached to."""

    device_id: str
    state: ProfileState  # kept across reconnections
    stats: DriverStats

    @property
    def link(self) -> GattLink | None:
        """The link while it is ready; None between connections."""
        ...

    def status(self, connection: ConnectionState, *, detail: dict[str, str]) -> DeviceStatus: ...


class SessionFeature(Protocol):
    async def attach(self, link: GattLink) -> bool:
        """Subscribe on a new connection; False when this device does not offer the feature."""
        ...

    def while_connected(self, link: GattLink, sink: EventSink) -> Coroutine[Any, Any, None] | None:
        """A coroutine to run while the link is up (cancelled when it drops), if the feature needs one."""
        ...

    def record_corrupt(self, uuid: str) -> bool:
        """A notification on `uuid` failed to decode: True when the feature will fetch it again."""
        ...

    def detach(self) -> None:
        """The link dropped: fail whatever waits on the device."""
        ...


class _Answer:
    """One outstanding request's answer, delivered by a notification (control points answer one at a time)."""

    def __init__(self) -> None:
        self.future: asyncio.Future[bytes] | None = None

    def expect(self) -> asyncio.Future[bytes]:
        self.future = asyncio.get_running_loop().create_future()
        return self.future

    def deliver(self, _uuid: str, data: bytes) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(bytes(data))

    def fail(self, error: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)

    def clear(self) -> None:
        self.future = None


class RecordBackfill:
    """Stored records through the Record Access Control Point: what was missed while away, after every
    (re)connection, and a corrupt record again from the newest good one on."""

    def __init__(self, session: Session, records: frozenset[str]) -> None:
        self._session = session
        self._records = records  # characteristics carrying stored records
        self._answer = _Answer()
        self._refetch_wanted = asyncio.Event()
        self._refetch_since: int | None = None
        self._last_refetch: int | None = None
        self.records_requested = 0  # RACP procedures started

    async def attach(self, link: GattLink) -> bool:
        if not link.has_characteristic(racp.RECORD_ACCESS_CONTROL_POINT, notify=True):
            return False
        await link.start_notify(racp.RECORD_ACCESS_CONTROL_POINT, self._answer.deliver)
        return True

    def while_connected(self, link: GattLink, sink: EventSink) -> Coroutine[Any, Any, None]:
        return self._keep_records_complete(link)

    def record_corrupt(self, uuid: str) -> bool:
        if uuid not in self._records:
            return False
        state = self._session.state
        since = 0 if state.cgm_last_offset_min is None else state.cgm_last_offset_min + 1
        self._refetch_since = since if self._refetch_since is None else min(self._refetch_since, since)
        self._refetch_wanted.set()
        return True

    def detach(self) -> None:
        self._answer.fail(TransportError("link lost", device_id=self._session.device_id))

    async def _keep_records_complete(self, link: GattLink) -> None:
        """Fetch what was missed while away, then again after any record that arrived corrupted.

        Records already passed on are not passed on twice.  A record still corrupt after REFETCH_ATTEMPTS
        tries in a row is reported lost (log line) rather than asked for forever.
        """
        state = self._session.state
        since = None if state.cgm_last_offset_min is None else state.cgm_last_offset_min + 1
        if self._refetch_since is not None:  # a corrupt record the last connection did not get to fetch again
            since = min(self._refetch_since, since if since is not None else self._refetch_since)
            self._refetch_since = None
        self._refetch_wanted.clear()
        attempts = 0
        while True:
            await self._fetch(link, since)
            while True:
                await self._refetch_wanted.wait()
                self._refetch_wanted.clear()
                since, self._refetch_since = self._refetch_since, None
                attempts = attempts + 1 if since == self._last_refetch else 1
                self._last_refetch = since
                if attempts <= REFETCH_ATTEMPTS:
                    break
                log.error(
                    "stored record lost: corrupt on every fetch",
                    device_id=self._session.device_id,
                    since_offset_min=since,
                )

    async def _fetch(self, link: GattLink, since: int | None) -> None:
        """Ask for every record from time offset `since` on (all records when None)."""
        device_id = self._session.device_id
        request = racp.racp_report_all() if since is None else racp.racp_report_records_since(since)
        answer = self._answer.expect()
        self.records_requested += 1
        try:
            await link.write(racp.RECORD_ACCESS_CONTROL_POINT, request, response=True)
            async with asyncio.timeout(RACP_TIMEOUT_S):
                response = racp.decode_racp_response(await answer)
        except TimeoutError:
            log.warning("stored records: no RACP answer in time", device_id=device_id, since_offset_min=since)
            return
        except (TransportError, InvalidFrame) as err:
            fields = err.log_fields() if isinstance(err, InvalidFrame) else {}
            log.warning("stored records: RACP failed", device_id=device_id, error=type(err).__name__, **fields)
            return
        finally:
            self._answer.clear()
        code = response.response_code
        outcome = "none_missed" if code == racp.RacpResponseCode.NO_RECORDS_FOUND else _racp_code_name(code)
        log.info("stored records fetched", device_id=device_id, since_offset_min=since, outcome=outcome)


class PumpStatus:
    """Insulin delivered and on board, read through the IDS Status Reader Control Point at connection and
    whenever the pump signals a change; the pump's Status Changed flags acknowledged (Reset Status)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._answer = _Answer()
        self._lock = asyncio.Lock()
        self._counter = ids.E2ECounter()
        self._changed = ids.StatusChangedFlag(0)
        self._changed_event = asyncio.Event()
        self.status_resets = 0  # Status Changed flags acknowledged

    async def attach(self, link: GattLink) -> bool:
        if not link.has_characteristic(ids.IDD_STATUS_READER_CONTROL_POINT, notify=True):
            return False
        await link.start_notify(ids.IDD_STATUS_READER_CONTROL_POINT, self._answer.deliver)
        self._counter = ids.E2ECounter()
        if link.has_characteristic(ids.IDD_STATUS_CHANGED, notify=True):
            await link.start_notify(ids.IDD_STATUS_CHANGED, self._on_status_changed)
        return True

    def while_connected(self, link: GattLink, sink: EventSink) -> Coroutine[Any, Any, None]:
        return self._follow(link, sink)

    def record_corrupt(self, uuid: str) -> bool:
        return False

    def detach(self) -> None:
        self._answer.fail(TransportError("link lost", device_id=self._session.device_id))

    def _on_status_changed(self, _uuid: str, data: bytes) -> None:
        try:
            flags, _counter = ids.decode_status_changed(data, e2e=self._session.state.idd_e2e)
        except InvalidFrame as err:
            self._session.stats.invalid_frames += 1
            log.warning("invalid frame dropped", device_id=self._session.device_id, **err.log_fields())
            return
        self._changed |= flags
        self._changed_event.set()

    async def _read(self, link: GattLink, request: ids.StatusReaderRequest) -> ids.StatusReaderResponse:
        """One Status Reader CP procedure (with E2E): write the request, wait for its indication."""
        e2e = self._session.state.idd_e2e
        async with self._lock:
            answer = self._answer.expect()
            try:
                frame = ids.encode_status_reader_request(request, counter=self._counter.next() if e2e else None)
                await link.write(ids.IDD_STATUS_READER_CONTROL_POINT, frame, response=True)
                async with asyncio.timeout(RACP_TIMEOUT_S):
                    raw = await answer
            finally:
                self._answer.clear()
        response, _counter = ids.decode_status_reader_response(raw, e2e=e2e)
        return response

    async def _follow(self, link: GattLink, sink: EventSink) -> None:
        """Get Delivered Insulin and Get Insulin On Board into the status detail, then Reset Status for the
        flags that were seen (the IDS procedure).  A failure is logged and retried at the next change; it never
        costs the connection."""
        self._changed_event.set()  # a first report at connection
        while True:
            await self._changed_event.wait()
            self._changed_event.clear()
            flags, self._changed = self._changed, ids.StatusChangedFlag(0)
            detail: dict[str, str] = {}
            try:
                delivered = await self._read(link, ids.GetDeliveredInsulin())
                if isinstance(delivered, ids.DeliveredInsulinResponse):
                    detail["bolus_delivered_iu"] = repr(delivered.bolus_delivered_iu)
                    detail["basal_delivered_iu"] = repr(delivered.basal_delivered_iu)
                on_board = await self._read(link, ids.GetInsulinOnBoard())
                if isinstance(on_board, ids.InsulinOnBoardResponse):
                    detail["insulin_on_board_iu"] = repr(on_board.insulin_on_board_iu)
                if flags:
                    answer = await self._read(link, ids.ResetStatus(flags))
                    if (
                        isinstance(answer, ids.StatusReaderResponseCode)
                        and answer.value == ids.StatusReaderResponseCodeValue.SUCCESS
                    ):
                        self.status_resets += 1
                    detail["status_changed"] = ",".join(f.name.lower() for f in flags if f.name)
            except (TransportError, InvalidFrame, TimeoutError) as err:
                log.warning("pump status read failed", device_id=self._session.device_id, error=type(err).__name__)
                self._changed |= flags  # not acknowledged: reset them with the next report
                continue
            if detail:
                await sink.emit(self._session.status(ConnectionState.CONNECTED, detail=detail))


class PumpCommander:
    """The insulin pump as a command target: IDS commands through the Command Control Point, framed as the
    pump's IDD Features say, and an outcome-unknown bolus settled from the pump's own history (IDD RACP and
    IDD History Data) where the pump offers it.  Implements `drivers.base.DeliveryHistory`."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.device_id = session.device_id
        self._response = _Answer()
        self._lock = asyncio.Lock()
        self._counter = ids.E2ECounter()
        self._tracker = ids.E2ECounterTracker()
        self._history_ready = False  # this connection offers the pump's history
        self._history_answer = _Answer()
        self._history_lock = asyncio.Lock()
        self._history_counter = ids.E2ECounter()
        self._history_tracker = ids.E2ECounterTracker()
        self._history_records: list[idd_history.HistoryRecord] | None = None  # the running report's records
        self._history_problems = 0
        self._connection_listeners: list[Callable[[str], None]] = []

    # -- SessionFeature --------------------------------------------------------------------------------------
    async def attach(self, link: GattLink) -> bool:
        if not link.has_characteristic(ids.IDD_COMMAND_CONTROL_POINT):
            return False
        # Control point responses answer our own writes: they go to the waiting command, not the pipeline.
        await link.start_notify(ids.IDD_COMMAND_CONTROL_POINT, self._response.deliver)
        self._counter, self._tracker = ids.E2ECounter(), ids.E2ECounterTracker()
        self._history_ready = link.has_characteristic(
            idd_history.IDD_RECORD_ACCESS_CONTROL_POINT, notify=True
        ) and link.has_characteristic(idd_history.IDD_HISTORY_DATA, notify=True)
        if self._history_ready:
            await link.start_notify(idd_history.IDD_HISTORY_DATA, self._on_history_record)
            await link.start_notify(idd_history.IDD_RECORD_ACCESS_CONTROL_POINT, self._history_answer.deliver)
            self._history_counter = ids.E2ECounter()
        return True

    def while_connected(self, link: GattLink, sink: EventSink) -> None:
        for listener in self._connection_listeners:
            listener(self.device_id)  # the command service settles unknown outcomes now

    def record_corrupt(self, uuid: str) -> bool:
        return False

    def detach(self) -> None:
        self._response.fail(OutcomeUnknown("link lost while waiting for the device's answer"))
        self._history_answer.fail(TransportError("link lost", device_id=self.device_id))

    # -- CommandTarget ---------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        link = self._session.link
        return link is not None and not link.disconnected.is_set()

    def validate(self, command_type: str, parameters: dict[str, int | str]) -> None:
        """Refuse, before anything is sent, a command this pump cannot carry out exactly."""
        self._checked_message(command_type, parameters)

    def _checked_message(self, command_type: str, parameters: dict[str, int | str]) -> ids.IddCommand:
        message = _ids_message(command_type, parameters)
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
        async with self._lock:
            link = self._session.link
            if link is None or link.disconnected.is_set():
                raise CommandRefused("device not connected; nothing was sent")
            e2e = self._session.state.idd_e2e
            frame = ids.encode_command(message, counter=self._counter.next() if e2e else None)
            answer = self._response.expect()
            try:
                await link.write(ids.IDD_COMMAND_CONTROL_POINT, frame, response=True)
                async with asyncio.timeout(timeout_s):
                    raw = await answer
            except TransportError:
                raise OutcomeUnknown("link failed during the write: the pump may have acted on it") from None
            except TimeoutError:
                # A late answer could later be taken for the next command's: the control point must resync.
                self._tracker.reset()
                raise OutcomeUnknown("no answer from the pump in time: it may have acted") from None
            finally:
                self._response.clear()
            try:
                response, counter = ids.decode_response(raw, e2e=e2e)
                if counter is not None:
                    self._tracker.check(counter)
            except InvalidFrame:
                raise OutcomeUnknown("the pump's answer failed its E2E check") from None
        return _outcome(message, response)

    # -- DeliveryHistory -------------------------------------------------------------------------------------
    def watch_connections(self, listener: Callable[[str], None]) -> None:
        """Call listener(device_id) each time the link is ready (the command service settles then)."""
        self._connection_listeners.append(listener)

    def _on_history_record(self, _uuid: str, data: bytes) -> None:
        records = self._history_records
        if records is None:
            return  # not asked for: a pump sends history only in a report
        try:
            record, counter = idd_history.decode_history_record(data, e2e=self._session.state.idd_e2e)
            if counter is not None:
                self._history_tracker.check(counter)  # a lost or repeated record would make the report wrong
        except InvalidFrame as err:
            self._history_problems += 1
            self._session.stats.invalid_frames += 1
            log.warning("pump history record unusable", device_id=self.device_id, **err.log_fields())
            return
        if len(records) >= MAX_HISTORY_RECORDS:
            self._history_problems += 1
            return
        records.append(record)

    async def _read_history(self, request: idd_history.RacpRequest, timeout_s: float) -> HistoryRead | None:
        """One IDD RACP report: the records that came as History Data, and whether the pump said Success.
        None when the pump has no history here or the procedure failed (logged)."""
        link = self._session.link
        if link is None or not self._history_ready:
            return None
        e2e = self._session.state.idd_e2e
        async with self._history_lock:
            self._history_records, self._history_problems = [], 0
            self._history_tracker.reset()
            answer = self._history_answer.expect()
            try:
                frame = idd_history.encode_racp_request(request, counter=self._history_counter.next() if e2e else None)
                await link.write(idd_history.IDD_RECORD_ACCESS_CONTROL_POINT, frame, response=True)
                async with asyncio.timeout(timeout_s):
                    raw = await answer
                response, _counter = idd_history.decode_racp_response(raw, e2e=e2e)
            except (TransportError, InvalidFrame, TimeoutError) as err:
                log.warning("pump history not read", device_id=self.device_id, error=type(err).__name__)
                return None
            finally:
                records, problems = self._history_records or [], self._history_problems
                self._history_records = None
                self._history_answer.clear()
        completed = (
            isinstance(response, idd_history.RacpResponseCode)
            and response.request_opcode == request.opcode
            and response.value == idd_history.RacpResponseCodeValue.SUCCESS
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


def _racp_code_name(code: int | None) -> str:
    try:
        return racp.RacpResponseCode(code).name.lower() if code is not None else "none"
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


def _ids_message(command_type: str, parameters: dict[str, int | str]) -> ids.IddCommand:
    def integer(name: str) -> int:
        value = parameters.get(name)
        if not isinstance(value, int):
            raise CommandRefused(f"parameter {name} missing; nothing was sent")
        return value

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
