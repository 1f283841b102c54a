"""IDS history: IDD Record Access Control Point (0x2B27) and IDD History Data (0x2B28), pure codecs, no I/O.

A pump keeps a history of what it did (bolus programmed, bolus delivered, reference time, ...), each event a
record with a sequence number of its own.  A client asks for records through the IDD Record Access Control Point
(RACP); the records arrive as IDD History Data notifications and an RACP indication closes the procedure.

Layouts, little-endian (the SIG's IDS 1.0.x text was not reachable from here; every value below was taken from
open implementations and, where they disagree or only one has it, the docstring says so):

* History Data record: Event Type (uint16), Sequence Number (uint32), Relative Offset (uint16, seconds since the
  last Reference Time event), Event Data, then E2E-Counter (uint8) and E2E-CRC (uint16) when the pump's IDD Features
  say it uses E2E protection.  Header and event types agree in ehealthinnovation/AndroidBLEParser
  (`HistoryData.kt`, `readEventInfo`), ehealthinnovation/BLEIDSSim (`history.py`) and ehealthinnovation/JDRFAndroid;
  the E2E trailer on records in ehealthinnovation/CCInsulinDelivery (`IDSHistory.swift`: length - 11).
* Event data decoded here (AndroidBLEParser `BolusProgrammed.kt`, `BolusDelivered.kt`, `ReferenceTime`):
  Reference Time: Recording Reason (uint8), Date Time (7), Time Zone (sint8), DST Offset (uint8);
  Bolus Programmed / Delivered Part 1 of 2: Bolus ID (uint16), Bolus Type (uint8), Fast Amount (SFLOAT, IU),
  Extended Amount (SFLOAT, IU), Duration (uint16, min): programmed amounts in the one, delivered in the other;
  Bolus Programmed Part 2 of 2: Flags (uint8: delay, template, activation type present; reason correction, meal),
  then Delay Time (uint16), Template Number (uint8), Activation Type (uint8) as flagged;
  Bolus Delivered Part 2 of 2: Flags (uint8: activation type, end reason, annunciation instance id present),
  Start Time Offset (uint32, s), Activation Type (uint8), End Reason (uint8), Annunciation Instance ID (uint16).
  Every other event type is kept as opaque bytes (its E2E-CRC is still checked).
* RACP request: Op Code (uint8), Operator (uint8), then for record op codes a Filter Type (uint8) and, for
  <=, >= and range, one or two Sequence Numbers (uint32) (AndroidBLEParser `RacpOperandComposer.kt`), then E2E.
  Op codes, operators and filter types agree in BLEIDSSim, CCInsulinDelivery and AndroidBLEParser.  Two choices are
  not settled by those sources and are made conservatively: "all", "first" and "last" carry the Filter Type byte
  (as both AndroidBLEParser and CCInsulinDelivery send it), and Abort carries no operand (as AndroidBLEParser
  sends it; CCInsulinDelivery adds a filter type).  The gateway itself only sends ">=" and "last record".
* RACP responses: Response Code (0x0F), Operator Null, Request Op Code (uint8), Response Code Value (uint8); Number
  of Stored Records Response (0x66), Operator Null, count (uint32).  Response Code Values: Success is 0xF0
  (AndroidBLEParser, JDRFAndroid, CCInsulinDelivery, BLEIDSSim agree) and Procedure Not Applicable 0x0A; the other
  values (0x02-0x09, the generic RACP ones) come from AndroidBLEParser and JDRFAndroid only and are NOT confirmed
  against the SIG text.  That is why the gateway acts on Success alone: any other code leaves a question open.

Decoders accept bytes, bytearray or memoryview and raise only `InvalidFrame` (fields name the characteristic,
lengths, op codes and flag bits, never an amount); encoders raise ValueError for values the format cannot carry.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, TypeAlias

from drivers.ble.fields import (
    Buffer,
    DateTimeTuple,
    FlaggedLayout,
    check_uint,
    date_time_valid,
    enum_or_int,
    flagged_size,
    pack_flagged,
    reject_reserved_flags,
    require_length,
    unpack_flagged,
)
from drivers.ble.ids import (
    BOLUS_FLAGS_ALLOWED,
    BOLUS_OPTIONS,
    IDD_HISTORY_DATA,
    IDD_RECORD_ACCESS_CONTROL_POINT,
    BolusActivationType,
    BolusType,
    bolus_options,
    exact_dose_sfloat,
    open_e2e,
    read_bolus_options,
    read_dose,
    seal_e2e,
)
from drivers.ble.racp import RacpGrammar, parse_racp_request, racp_request_bytes
from gateway.core.errors import InvalidFrame

__all__ = [
    "IDD_HISTORY_DATA",
    "IDD_RECORD_ACCESS_CONTROL_POINT",
    # History Data
    "HistoryEventType",
    "RecordingReason",
    "BolusEndReason",
    "ReferenceTime",
    "BolusAmounts",
    "BolusProgrammedDetails",
    "BolusDeliveredDetails",
    "OpaqueEventData",
    "HistoryEventData",
    "HistoryRecord",
    "encode_history_record",
    "decode_history_record",
    # RACP
    "RacpOpcode",
    "RacpOperator",
    "RacpFilterType",
    "RacpResponseCodeValue",
    "RacpRequest",
    "RacpResponseCode",
    "RacpRecordCount",
    "RacpResponse",
    "report_records_since",
    "report_last_record",
    "encode_racp_request",
    "decode_racp_request",
    "encode_racp_response",
    "decode_racp_response",
    "MAX_SEQUENCE_NUMBER",
]

_HISTORY: Final = "idd_history_data"
_RACP: Final = "idd_record_access_control_point"

_U8: Final = struct.Struct("<B")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_HEADER: Final = struct.Struct("<HIH")  # event type, sequence number, relative offset
_REFERENCE_TIME: Final = struct.Struct("<BHBBBBBbB")  # reason, date time (7), time zone, DST offset
_BOLUS_AMOUNTS: Final = struct.Struct("<HBHHH")  # bolus id, type, fast SFLOAT, extended SFLOAT, duration
_RACP_HEAD: Final = struct.Struct("<BB")  # op code, operator
MAX_SEQUENCE_NUMBER: Final = 0xFFFF_FFFF


# ---------------------------------------------------------------------------------------------- History Data


class HistoryEventType(enum.IntEnum):
    """IDD History Data Event Type (uint16, Hamming-distance coded)."""

    REFERENCE_TIME = 0x000F
    REFERENCE_TIME_BASE_OFFSET = 0x0033
    BOLUS_CALCULATED_PART_1_OF_2 = 0x003C
    BOLUS_CALCULATED_PART_2_OF_2 = 0x0055
    BOLUS_PROGRAMMED_PART_1_OF_2 = 0x005A
    BOLUS_PROGRAMMED_PART_2_OF_2 = 0x0066
    BOLUS_DELIVERED_PART_1_OF_2 = 0x0069
    BOLUS_DELIVERED_PART_2_OF_2 = 0x0096
    DELIVERED_BASAL_RATE_CHANGED = 0x0099
    TBR_ADJUSTMENT_STARTED = 0x00A5
    TBR_ADJUSTMENT_ENDED = 0x00AA
    TBR_ADJUSTMENT_CHANGED = 0x00C3
    PROFILE_TEMPLATE_ACTIVATED = 0x00CC
    BASAL_RATE_PROFILE_TEMPLATE_TIME_BLOCK_CHANGED = 0x00F0
    TOTAL_DAILY_INSULIN_DELIVERY = 0x00FF
    THERAPY_CONTROL_STATE_CHANGED = 0x0303
    OPERATIONAL_STATE_CHANGED = 0x030C
    RESERVOIR_REMAINING_AMOUNT_CHANGED = 0x0330
    ANNUNCIATION_STATUS_CHANGED_PART_1_OF_2 = 0x033F
    ANNUNCIATION_STATUS_CHANGED_PART_2_OF_2 = 0x0356
    ISF_PROFILE_TEMPLATE_TIME_BLOCK_CHANGED = 0x0359
    I2CHO_RATIO_PROFILE_TEMPLATE_TIME_BLOCK_CHANGED = 0x0365
    TARGET_GLUCOSE_RANGE_PROFILE_TEMPLATE_TIME_BLOCK_CHANGED = 0x036A
    PRIMING_STARTED = 0x0395
    PRIMING_DONE = 0x039A
    DATA_CORRUPTION = 0x03A6
    POINTER_EVENT = 0x03A9
    BOLUS_TEMPLATE_CHANGED_PART_1_OF_2 = 0x03C0
    BOLUS_TEMPLATE_CHANGED_PART_2_OF_2 = 0x03CF
    TBR_TEMPLATE_CHANGED = 0x03F3
    MAX_BOLUS_AMOUNT_CHANGED = 0x03FC


class RecordingReason(enum.IntEnum):
    """Why a Reference Time event was recorded."""

    UNDETERMINED = 0x0F
    SET_DATE_TIME = 0x33
    PERIODIC_RECORDING = 0x3C
    DATE_TIME_LOSS = 0x55


class BolusEndReason(enum.IntEnum):
    """Why a bolus delivery ended (Bolus Delivered Part 2 of 2)."""

    UNDETERMINED = 0x0F
    PROGRAMMED_DURATION_OVER = 0x33
    CANCELED = 0x3C
    ERROR_ABORT = 0x55


@dataclass(frozen=True, slots=True)
class ReferenceTime:
    """Reference Time event data: the pump's clock when it was recorded (time zone in 15-minute steps)."""

    recording_reason: int
    date_time: DateTimeTuple
    time_zone: int
    dst_offset: int


@dataclass(frozen=True, slots=True)
class BolusAmounts:
    """Bolus Programmed / Bolus Delivered Part 1 of 2: the bolus, with programmed or delivered amounts (IU)."""

    bolus_id: int
    bolus_type: int
    fast_amount_iu: float
    extended_amount_iu: float
    duration_min: int


@dataclass(frozen=True, slots=True)
class BolusProgrammedDetails:
    """Bolus Programmed Part 2 of 2; optional fields are on the wire exactly when they are not None."""

    delay_min: int | None = None
    template_number: int | None = None
    activation_type: int | None = None
    reason_correction: bool = False
    reason_meal: bool = False


@dataclass(frozen=True, slots=True)
class BolusDeliveredDetails:
    """Bolus Delivered Part 2 of 2: when delivery started (seconds after the programmed event) and how it ended."""

    start_time_offset_s: int
    activation_type: int | None = None
    end_reason: int | None = None
    annunciation_instance_id: int | None = None


@dataclass(frozen=True, slots=True)
class OpaqueEventData:
    """The event data of an event type this codec does not interpret, as sent."""

    data: bytes


HistoryEventData: TypeAlias = (
    ReferenceTime | BolusAmounts | BolusProgrammedDetails | BolusDeliveredDetails | OpaqueEventData
)


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One IDD History Data record; event_type is a HistoryEventType member when known, a plain int otherwise."""

    event_type: int
    sequence_number: int
    relative_offset_s: int
    data: HistoryEventData


_REASON_CORRECTION: Final = 0x08  # Bolus Programmed Part 2 of 2: the Set Bolus flags (drivers.ble.ids.BOLUS_OPTIONS)
_REASON_MEAL: Final = 0x10
# Bolus Delivered Part 2 of 2: activation type, end reason, annunciation instance id present.
_DELIVERED_OPTIONS: Final[FlaggedLayout] = ((0x01, 1), (0x02, 1), (0x04, 2))
_DELIVERED_ALLOWED: Final = 0x07

_AMOUNT_EVENTS: Final = frozenset(
    {HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2, HistoryEventType.BOLUS_DELIVERED_PART_1_OF_2}
)
# Which event data type each interpreted event type carries; every other type is OpaqueEventData.
_DATA_TYPE: Final[dict[int, type[HistoryEventData]]] = {
    HistoryEventType.REFERENCE_TIME: ReferenceTime,
    HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2: BolusAmounts,
    HistoryEventType.BOLUS_DELIVERED_PART_1_OF_2: BolusAmounts,
    HistoryEventType.BOLUS_PROGRAMMED_PART_2_OF_2: BolusProgrammedDetails,
    HistoryEventType.BOLUS_DELIVERED_PART_2_OF_2: BolusDeliveredDetails,
}


def _encode_event_data(record: HistoryRecord) -> bytes:
    data = record.data
    expected = _DATA_TYPE.get(record.event_type, OpaqueEventData)
    if type(data) is not expected:
        raise ValueError(f"event type 0x{record.event_type:04x} carries {expected.__name__}")
    if isinstance(data, ReferenceTime):
        if len(data.date_time) != 6 or not date_time_valid(data.date_time):
            raise ValueError("date_time must be (year, month, day, hours, minutes, seconds) in range")
        check_uint(data.recording_reason, 8, "recording_reason")
        check_uint(data.dst_offset, 8, "dst_offset")
        if not -128 <= data.time_zone <= 127:
            raise ValueError("time_zone must be a signed 8-bit integer")
        return _REFERENCE_TIME.pack(data.recording_reason, *data.date_time, data.time_zone, data.dst_offset)
    if isinstance(data, BolusAmounts):
        check_uint(data.bolus_id, 16, "bolus_id")
        check_uint(data.bolus_type, 8, "bolus_type")
        check_uint(data.duration_min, 16, "duration_min")
        return (
            _U16.pack(data.bolus_id)
            + _U8.pack(data.bolus_type)
            + exact_dose_sfloat(data.fast_amount_iu, "fast_amount_iu")
            + exact_dose_sfloat(data.extended_amount_iu, "extended_amount_iu")
            + _U16.pack(data.duration_min)
        )
    if isinstance(data, BolusProgrammedDetails):
        flags, tail = bolus_options(
            data.delay_min, data.template_number, data.activation_type, data.reason_correction, data.reason_meal
        )
        return _U8.pack(flags) + tail
    if isinstance(data, BolusDeliveredDetails):
        check_uint(data.start_time_offset_s, 32, "start_time_offset_s")
        values = (data.activation_type, data.end_reason, data.annunciation_instance_id)
        flags, tail = pack_flagged(_DELIVERED_OPTIONS, values, ("activation_type", "end_reason", "annunciation_id"))
        return _U8.pack(flags) + _U32.pack(data.start_time_offset_s) + tail
    return bytes(data.data)


def encode_history_record(record: HistoryRecord, *, counter: int | None) -> bytes:
    """Encode one IDD History Data record; counter None sends no E2E trailer (a pump without E2E protection)."""
    check_uint(record.event_type, 16, "event_type")
    check_uint(record.sequence_number, 32, "sequence_number")
    check_uint(record.relative_offset_s, 16, "relative_offset_s")
    header = _HEADER.pack(record.event_type, record.sequence_number, record.relative_offset_s)
    return seal_e2e(header + _encode_event_data(record), counter)


def _decode_reference_time(data: bytes) -> ReferenceTime:
    require_length(data, _REFERENCE_TIME.size, _HISTORY)
    reason, year, month, day, hours, minutes, seconds, time_zone, dst = _REFERENCE_TIME.unpack(data)
    stamp: DateTimeTuple = (year, month, day, hours, minutes, seconds)
    if not date_time_valid(stamp):
        raise InvalidFrame(f"{_HISTORY} reference time out of range", characteristic=_HISTORY)
    return ReferenceTime(enum_or_int(RecordingReason, reason), stamp, time_zone, dst)


def _decode_bolus_amounts(data: bytes) -> BolusAmounts:
    require_length(data, _BOLUS_AMOUNTS.size, _HISTORY)
    bolus_id, bolus_type, _, _, duration = _BOLUS_AMOUNTS.unpack(data)
    return BolusAmounts(
        bolus_id,
        enum_or_int(BolusType, bolus_type),
        read_dose(data, 3, "bolus_fast_amount", _HISTORY),
        read_dose(data, 5, "bolus_extended_amount", _HISTORY),
        duration,
    )


def _flags_and_length(data: bytes, allowed: int, fixed: int, layout: FlaggedLayout) -> int:
    """The flags octet, after checking reserved bits and that the data is exactly as long as the flags say."""
    if not data:
        raise InvalidFrame(f"{_HISTORY} event data truncated", characteristic=_HISTORY, length=0, expected=1)
    flags = data[0]
    reject_reserved_flags(flags, allowed, _HISTORY)
    require_length(data, fixed + flagged_size(flags, layout), _HISTORY)
    return flags


def _decode_programmed_details(data: bytes) -> BolusProgrammedDetails:
    # The Set Bolus flags octet and its optional fields, as the pump took them from the command.
    flags = _flags_and_length(data, BOLUS_FLAGS_ALLOWED, 1, BOLUS_OPTIONS)
    delay, template, activation = read_bolus_options(data, 1, flags)
    return BolusProgrammedDetails(
        delay, template, activation, bool(flags & _REASON_CORRECTION), bool(flags & _REASON_MEAL)
    )


def _decode_delivered_details(data: bytes) -> BolusDeliveredDetails:
    fixed = 1 + _U32.size
    flags = _flags_and_length(data, _DELIVERED_ALLOWED, fixed, _DELIVERED_OPTIONS)
    (start,) = _U32.unpack_from(data, 1)
    activation, end_reason, annunciation = unpack_flagged(data, fixed, flags, _DELIVERED_OPTIONS)
    return BolusDeliveredDetails(
        start,
        None if activation is None else enum_or_int(BolusActivationType, activation),
        None if end_reason is None else enum_or_int(BolusEndReason, end_reason),
        annunciation,
    )


def decode_history_record(buf: Buffer, *, e2e: bool) -> tuple[HistoryRecord, int | None]:
    """Decode one IDD History Data notification: (record, E2E-Counter or None); the E2E-CRC is checked first."""
    body, counter = open_e2e(buf, e2e, _HISTORY, _HEADER.size)
    event_type, sequence_number, relative_offset = _HEADER.unpack_from(body, 0)
    data = body[_HEADER.size :]
    kind = enum_or_int(HistoryEventType, event_type)
    event: HistoryEventData
    if kind == HistoryEventType.REFERENCE_TIME:
        event = _decode_reference_time(data)
    elif kind in _AMOUNT_EVENTS:
        event = _decode_bolus_amounts(data)
    elif kind == HistoryEventType.BOLUS_PROGRAMMED_PART_2_OF_2:
        event = _decode_programmed_details(data)
    elif kind == HistoryEventType.BOLUS_DELIVERED_PART_2_OF_2:
        event = _decode_delivered_details(data)
    else:
        event = OpaqueEventData(data)
    return HistoryRecord(kind, sequence_number, relative_offset, event), counter


# ------------------------------------------------------------------------------ IDD Record Access Control Point


class RacpOpcode(enum.IntEnum):
    """IDD Record Access Control Point op codes (uint8, Hamming-distance coded)."""

    RESPONSE_CODE = 0x0F
    REPORT_STORED_RECORDS = 0x33
    DELETE_STORED_RECORDS = 0x3C
    ABORT_OPERATION = 0x55
    REPORT_NUMBER_OF_STORED_RECORDS = 0x5A
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x66


class RacpOperator(enum.IntEnum):
    """IDD Record Access Control Point operators (uint8, Hamming-distance coded)."""

    NULL = 0x0F
    ALL_RECORDS = 0x33
    LESS_THAN_OR_EQUAL = 0x3C
    GREATER_THAN_OR_EQUAL = 0x55
    WITHIN_RANGE = 0x5A
    FIRST_RECORD = 0x66
    LAST_RECORD = 0x69


class RacpFilterType(enum.IntEnum):
    """What the operand's uint32 values select on (all three are sequence numbers)."""

    SEQUENCE_NUMBER = 0x0F
    SEQUENCE_NUMBER_REFERENCE_TIME_EVENTS = 0x33
    SEQUENCE_NUMBER_NON_REFERENCE_TIME_EVENTS = 0x3C


class RacpResponseCodeValue(enum.IntEnum):
    """Response Code Values.  Only SUCCESS (0xF0) is confirmed by several sources; see the module docstring."""

    SUCCESS = 0xF0
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09
    PROCEDURE_NOT_APPLICABLE = 0x0A


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """An IDD RACP request; filter_type is None only for Abort, sequence_numbers empty for all/first/last."""

    opcode: int
    operator: int
    filter_type: int | None = None
    sequence_numbers: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RacpResponseCode:
    """Response Code: the outcome of request_opcode (both enum members when known)."""

    request_opcode: int
    value: int


@dataclass(frozen=True, slots=True)
class RacpRecordCount:
    """Number of Stored Records Response."""

    count: int


RacpResponse: TypeAlias = RacpResponseCode | RacpRecordCount

# The generic RACP rules with these values, uint32 sequence numbers, and the filter type after every operator.
_GRAMMAR: Final = RacpGrammar(
    "IDD RACP", _RACP, RacpOpcode, RacpOperator, RacpFilterType, RacpResponseCodeValue, _U32, filter_always=True
)


def report_records_since(sequence_number: int) -> RacpRequest:
    """Report Stored Records with a sequence number >= `sequence_number`."""
    return RacpRequest(
        RacpOpcode.REPORT_STORED_RECORDS,
        RacpOperator.GREATER_THAN_OR_EQUAL,
        RacpFilterType.SEQUENCE_NUMBER,
        (sequence_number,),
    )


def report_last_record() -> RacpRequest:
    """Report the newest stored record (its sequence number is where the history stands)."""
    return RacpRequest(RacpOpcode.REPORT_STORED_RECORDS, RacpOperator.LAST_RECORD, RacpFilterType.SEQUENCE_NUMBER)


def encode_racp_request(req: RacpRequest, *, counter: int | None) -> bytes:
    """Encode an IDD RACP request (client side); ValueError for a request a server would have to refuse."""
    body = racp_request_bytes(_GRAMMAR, req.opcode, req.operator, req.filter_type, req.sequence_numbers)
    return seal_e2e(body, counter)


def decode_racp_request(buf: Buffer, *, e2e: bool) -> tuple[RacpRequest, int | None]:
    """Decode an IDD RACP request (server side): (request, E2E-Counter or None).

    A well-formed frame a server must refuse raises InvalidFrame whose fields carry `request_opcode` and the
    `response_code` to answer with.  A truncated frame or a failed E2E-CRC carries neither: nothing in it can be
    trusted, the op code included.
    """
    body, counter = open_e2e(buf, e2e, _RACP, 0)
    return RacpRequest(*parse_racp_request(_GRAMMAR, body)), counter


def encode_racp_response(msg: RacpResponse, *, counter: int | None) -> bytes:
    """Encode an IDD RACP response (server side), always with the null operator."""
    if isinstance(msg, RacpRecordCount):
        check_uint(msg.count, 32, "count")
        body = _RACP_HEAD.pack(RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE, RacpOperator.NULL) + _U32.pack(msg.count)
    else:
        check_uint(msg.request_opcode, 8, "request_opcode")
        check_uint(msg.value, 8, "value")
        body = _RACP_HEAD.pack(RacpOpcode.RESPONSE_CODE, RacpOperator.NULL) + bytes([msg.request_opcode, msg.value])
    return seal_e2e(body, counter)


def decode_racp_response(buf: Buffer, *, e2e: bool) -> tuple[RacpResponse, int | None]:
    """Decode an IDD RACP indication (client side): (response, E2E-Counter or None).

    Unknown request op codes and response code values are kept as ints: the caller decides (and only Success
    means the procedure completed)."""
    body, counter = open_e2e(buf, e2e, _RACP, _RACP_HEAD.size)
    opcode, operator = _RACP_HEAD.unpack_from(body, 0)
    if operator != RacpOperator.NULL:
        raise InvalidFrame(f"{_RACP} response operator must be null", characteristic=_RACP, operator=operator)
    msg: RacpResponse
    if opcode == RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        require_length(body, _RACP_HEAD.size + _U32.size, _RACP)
        msg = RacpRecordCount(_U32.unpack_from(body, _RACP_HEAD.size)[0])
    elif opcode == RacpOpcode.RESPONSE_CODE:
        require_length(body, _RACP_HEAD.size + 2, _RACP)
        msg = RacpResponseCode(enum_or_int(RacpOpcode, body[2]), enum_or_int(RacpResponseCodeValue, body[3]))
    else:
        raise InvalidFrame(f"{_RACP} op code is not a response", characteristic=_RACP, opcode=opcode)
    return msg, counter
