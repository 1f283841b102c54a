"""Insulin Delivery Service (IDS 1.0.x) characteristics: pure codecs, no I/O.

Covered: IDD Command Control Point (0x2B25), IDD Status Reader Control Point (0x2B24), IDD Status Changed
(0x2B20), IDD Annunciation Status (0x2B22) and IDD Features (0x2B23); IDD Status (0x2B21) is in `idd_status`.

Every field is little-endian.  A control point message is Op Code (uint16) and the op code's operand; Status
Changed and Annunciation Status are their flags and the fields the flags announce.  When the pump uses E2E
protection, each of them ends with E2E-Counter (uint8) and E2E-CRC (uint16, CRC-16/MCRF4XX over every preceding
byte).  IDD Features is the exception: it always starts with E2E-CRC and E2E-Counter (see `decode_idd_features`).

Safety notes:

* Op codes, response code values and the type/context enums are Hamming-distance coded (0x0F, 0x33, 0x3C,
  0x55, 0x5A, ... are pairwise at least four bits apart; the 16-bit op codes likewise).  A few flipped bits
  therefore cannot turn one valid value into another (a FAST bolus into an EXTENDED one, a Cancel into a
  Set); corruption yields a value nobody defined, which a receiver refuses.  Decoders keep such unknown
  enum values as plain ints so the caller can refuse them explicitly; unknown op codes are an InvalidFrame.
* E2E protection exists because the BLE link-layer CRC only covers one radio hop: bytes are also carried
  through host stacks, HCI transports and gateway memory, where the link layer protects nothing.  The
  E2E-CRC covers the application message end to end and is checked before any field is interpreted; the
  E2E-Counter lets the receiver detect a lost, repeated or replayed message (a replayed Set Bolus would
  deliver a second dose).  See `E2ECounter` and `E2ECounterTracker`.
* Insulin amounts (doses, delivered totals, insulin on board, the insulin concentration) are encoded exactly
  or not at all: an amount the SFLOAT/FLOAT field cannot carry exactly raises ValueError rather than being
  rounded on the wire, and decoders refuse negative or non-finite (NaN, NRes, INF) amounts.
* Flag bits IDS 1.0.x reserves are refused, not ignored: a reserved bit means a layout (or a meaning) this
  codec does not know, and in an unprotected frame it is also what a bit error looks like.

Decoders accept bytes, bytearray or memoryview and raise only `InvalidFrame` on malformed input; its fields
name the characteristic, lengths, op codes and flag bits, never an amount, rate or duration.  Encoders raise
`ValueError` for values the wire format cannot carry and `TypeError` for a message of the wrong direction.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Final, Literal, NoReturn, TypeAlias, TypeVar

from drivers.ble.fields import Buffer, FlaggedLayout, crc16_mcrf4xx, flagged_size, pack_flagged, unpack_flagged, uuid16
from drivers.ble.sfloat import decode_float, decode_sfloat, encode_float, encode_sfloat, read_float, read_sfloat
from gateway.core.errors import InvalidFrame

__all__ = [
    # UUIDs
    "IDD_STATUS_READER_CONTROL_POINT",
    "IDD_COMMAND_CONTROL_POINT",
    "IDD_COMMAND_DATA",
    "IDD_RECORD_ACCESS_CONTROL_POINT",
    "IDD_HISTORY_DATA",
    # shared with drivers.ble.idd_history
    "BOLUS_OPTIONS",
    "BOLUS_FLAGS_ALLOWED",
    "bolus_options",
    "read_bolus_options",
    "seal_e2e",
    "open_e2e",
    "exact_dose_sfloat",
    "read_dose",
    # enums
    "CommandOpCode",
    "ResponseCodeValue",
    "BolusType",
    "BolusActivationType",
    "TbrType",
    "TbrDeliveryContext",
    # messages
    "SetBolus",
    "SetBolusResponse",
    "CancelBolus",
    "CancelBolusResponse",
    "SetTbrAdjustment",
    "CancelTbrAdjustment",
    "ResponseCode",
    "IddCommand",
    "IddResponse",
    # codecs
    "encode_command",
    "decode_command",
    "encode_response",
    "decode_response",
    # E2E
    "E2ECounter",
    "E2ECounterTracker",
    # IDD Features
    "IddFeatures",
    "decode_idd_features",
    "encode_idd_features",
    # IDD Status Changed
    "StatusChangedFlag",
    "decode_status_changed",
    "encode_status_changed",
    # IDD Annunciation Status
    "AnnunciationType",
    "AnnunciationStatusValue",
    "Annunciation",
    "decode_annunciation_status",
    "encode_annunciation_status",
    "annunciation_severity",
    # IDD Status Reader Control Point
    "StatusReaderOpCode",
    "StatusReaderResponseCodeValue",
    "ResetStatus",
    "GetActiveBolusIds",
    "GetTotalDailyInsulinStatus",
    "GetDeliveredInsulin",
    "GetInsulinOnBoard",
    "StatusReaderResponseCode",
    "ActiveBolusIdsResponse",
    "TotalDailyInsulinStatusResponse",
    "DeliveredInsulinResponse",
    "InsulinOnBoardResponse",
    "StatusReaderRequest",
    "StatusReaderResponse",
    "MAX_ACTIVE_BOLUS_IDS",
    "encode_status_reader_request",
    "decode_status_reader_request",
    "encode_status_reader_response",
    "decode_status_reader_response",
]

INSULIN_DELIVERY_SERVICE: Final = uuid16(0x183A)
IDD_STATUS_CHANGED: Final = uuid16(0x2B20)
IDD_ANNUNCIATION_STATUS: Final = uuid16(0x2B22)
IDD_FEATURES: Final = uuid16(0x2B23)
IDD_STATUS_READER_CONTROL_POINT: Final = uuid16(0x2B24)
IDD_COMMAND_CONTROL_POINT: Final = uuid16(0x2B25)
IDD_COMMAND_DATA: Final = uuid16(0x2B26)
IDD_RECORD_ACCESS_CONTROL_POINT: Final = uuid16(0x2B27)
IDD_HISTORY_DATA: Final = uuid16(0x2B28)

_NAME: Final = "idd_command_control_point"
_SRCP_NAME: Final = "idd_status_reader_control_point"
_FEATURES_NAME: Final = "idd_features"
_STATUS_CHANGED_NAME: Final = "idd_status_changed"
_ANNUNCIATION_NAME: Final = "idd_annunciation_status"

_E = TypeVar("_E", bound=enum.IntEnum)

_U8: Final = struct.Struct("<B")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_OPCODE: Final = _U16
_E2E_TRAILER: Final = 3  # E2E-Counter uint8 + E2E-CRC uint16
_SET_BOLUS_FIXED: Final = struct.Struct("<BBHHH")  # flags, type, fast SFLOAT, extended SFLOAT, duration
_SET_TBR_FIXED: Final = struct.Struct("<BBHH")  # flags, type, adjustment SFLOAT, duration
_RESPONSE_CODE: Final = struct.Struct("<HB")  # request op code, response code value


# --------------------------------------------------------------------------------------------------- enums


class CommandOpCode(enum.IntEnum):
    """IDD Command Control Point op codes (Hamming-distance coded)."""

    RESPONSE_CODE = 0x0F55
    SET_THERAPY_CONTROL_STATE = 0x0F5A
    SET_TBR_ADJUSTMENT = 0x0FFF
    CANCEL_TBR_ADJUSTMENT = 0x1111
    SET_BOLUS = 0x114B
    SET_BOLUS_RESPONSE = 0x1177
    CANCEL_BOLUS = 0x1178
    CANCEL_BOLUS_RESPONSE = 0x1187
    GET_AVAILABLE_BOLUSES = 0x1188
    GET_AVAILABLE_BOLUSES_RESPONSE = 0x11B4


class ResponseCodeValue(enum.IntEnum):
    """Response Code Value of the generic Response Code message."""

    SUCCESS = 0x0F
    OP_CODE_NOT_SUPPORTED = 0x70
    INVALID_OPERAND = 0x71
    PROCEDURE_NOT_COMPLETED = 0x72
    PARAMETER_OUT_OF_RANGE = 0x73
    PROCEDURE_NOT_APPLICABLE = 0x74
    PLAUSIBILITY_CHECK_FAILED = 0x75
    MAXIMUM_BOLUS_NUMBER_REACHED = 0x76


class BolusType(enum.IntEnum):
    UNDETERMINED = 0x0F
    FAST = 0x33
    EXTENDED = 0x3C
    MULTIWAVE = 0x55


class BolusActivationType(enum.IntEnum):
    UNDETERMINED = 0x0F
    MANUAL = 0x33
    RECOMMENDED = 0x3C
    MANUALLY_CHANGED_RECOMMENDED = 0x55
    COMMANDED = 0x5A


class TbrType(enum.IntEnum):
    UNDETERMINED = 0x0F
    ABSOLUTE = 0x33
    RELATIVE = 0x3C


class TbrDeliveryContext(enum.IntEnum):
    UNDETERMINED = 0x0F
    DEVICE_BASED = 0x33
    REMOTE_CONTROL = 0x3C
    AP_CONTROLLER = 0x55


# ------------------------------------------------------------------------------------------------ messages

# Set Bolus flags: delay, template and activation type present (the optional fields, in that order), and the
# reason bits.  Bolus Programmed Part 2 of 2 in the pump's history opens with the same octet.
_BOLUS_REASON_CORRECTION: Final = 0x08
_BOLUS_REASON_MEAL: Final = 0x10
BOLUS_OPTIONS: Final[FlaggedLayout] = ((0x01, 2), (0x02, 1), (0x04, 1))
BOLUS_FLAGS_ALLOWED: Final = 0x1F

# Set TBR Adjustment flags: template and delivery context present (in that order), and Change TBR.
_TBR_OPTIONS: Final[FlaggedLayout] = ((0x01, 1), (0x02, 1))
_TBR_CHANGE: Final = 0x04
_TBR_ALLOWED: Final = 0x07


@dataclass(frozen=True, slots=True)
class SetBolus:
    """Set Bolus (0x114B).  Optional fields are present on the wire exactly when they are not None.

    bolus_type and activation_type are enum members when known, plain ints otherwise.
    """

    bolus_type: int
    fast_amount_iu: float
    extended_amount_iu: float
    duration_min: int
    delay_min: int | None = None
    template_number: int | None = None
    activation_type: int | None = None
    reason_correction: bool = False
    reason_meal: bool = False


@dataclass(frozen=True, slots=True)
class SetBolusResponse:
    """Set Bolus Response (0x1177): the ID the pump gave the programmed bolus."""

    bolus_id: int


@dataclass(frozen=True, slots=True)
class CancelBolus:
    """Cancel Bolus (0x1178)."""

    bolus_id: int


@dataclass(frozen=True, slots=True)
class CancelBolusResponse:
    """Cancel Bolus Response (0x1187): the ID of the bolus the pump cancelled."""

    bolus_id: int


@dataclass(frozen=True, slots=True)
class SetTbrAdjustment:
    """Set TBR Adjustment (0x0FFF); adjustment is IU/h for an absolute TBR, percent for a relative one.

    tbr_type and delivery_context are enum members when known, plain ints otherwise.
    """

    tbr_type: int
    adjustment: float
    duration_min: int
    template_number: int | None = None
    delivery_context: int | None = None
    change_tbr: bool = False


@dataclass(frozen=True, slots=True)
class CancelTbrAdjustment:
    """Cancel TBR Adjustment (0x1111): no operand."""


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """Response Code (0x0F55): the outcome of request_opcode; both are enum members when known."""

    request_opcode: int
    value: int


IddCommand: TypeAlias = SetBolus | CancelBolus | SetTbrAdjustment | CancelTbrAdjustment
IddResponse: TypeAlias = SetBolusResponse | CancelBolusResponse | ResponseCode


# ------------------------------------------------------------------------------------------------- helpers


def _check_uint(value: int, bits: int, name: str) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be an unsigned {bits}-bit integer")


def _enum_or_int(enum_cls: type[_E], value: int) -> int:
    """The enum member for `value`, or the plain int when no member has it (the caller decides to refuse)."""
    try:
        return enum_cls(value)
    except ValueError:
        return value


def _dose_sfloat(value: float, name: str) -> bytes:
    """The SFLOAT bytes carrying `value` exactly; a dose is never rounded silently on its way to the pump."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative number")
    raw = encode_sfloat(value)
    if decode_sfloat(raw) != value:
        raise ValueError(f"{name} is not exactly representable as an SFLOAT")
    return _U16.pack(raw)


def _dose_float(value: float, name: str) -> bytes:
    """The FLOAT bytes carrying `value` exactly (as `_dose_sfloat`, for the 32-bit totals)."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite, non-negative number")
    raw = encode_float(value)
    if decode_float(raw) != value:
        raise ValueError(f"{name} is not exactly representable as a FLOAT")
    return _U32.pack(raw)


def _check_amount(value: float, field: str, name: str) -> float:
    # NaN, NRes, INF and negative amounts are never an insulin amount anyone can act on.
    if not math.isfinite(value) or value < 0:
        raise InvalidFrame(f"{name} {field} is not a finite, non-negative number", characteristic=name, field=field)
    return value


def _read_dose(data: bytes, offset: int, field: str, name: str = _NAME) -> float:
    return _check_amount(read_sfloat(data, offset), field, name)


def _read_float_dose(data: bytes, offset: int, field: str, name: str) -> float:
    return _check_amount(read_float(data, offset), field, name)


def _exact_length(data: bytes, expected: int, opcode: int, name: str = _NAME) -> None:
    """Raise InvalidFrame unless the operand is exactly `expected` bytes (the flags fix its layout)."""
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise InvalidFrame(
            f"{name} operand {what}",
            characteristic=name,
            opcode=opcode,
            operand_length=len(data),
            expected=expected,
        )


def _min_length(data: bytes, minimum: int, opcode: int, name: str = _NAME) -> None:
    """Raise InvalidFrame when the operand is shorter than its fixed part."""
    if len(data) < minimum:
        raise InvalidFrame(
            f"{name} operand truncated",
            characteristic=name,
            opcode=opcode,
            operand_length=len(data),
            expected=minimum,
        )


def _reserved_flags(flags: int, allowed: int, opcode: int, name: str = _NAME) -> None:
    """A reserved flag bit means a layout this codec does not know: refuse rather than guess."""
    if flags & ~allowed:
        raise InvalidFrame(
            f"{name} has reserved flag bits set",
            characteristic=name,
            opcode=opcode,
            reserved_bits=flags & ~allowed & 0xFF,
        )


# E2E handling lives in _seal/_open only; every characteristic with a trailing E2E goes through them.


def _seal(body: bytes, counter: int | None) -> bytes:
    """`body`, then (unless counter is None) the E2E-Counter and the E2E-CRC over everything before the CRC."""
    if counter is None:
        return body
    _check_uint(counter, 8, "counter")
    out = body + _U8.pack(counter)
    return out + _U16.pack(crc16_mcrf4xx(out))


def _open(buf: Buffer, e2e: bool, name: str, minimum: int) -> tuple[bytes, int | None]:
    """Split a frame into (body, counter), verifying the E2E-CRC before any field of the body is parsed.

    Raises InvalidFrame when the body would be shorter than `minimum` bytes or the E2E-CRC does not match.
    """
    data = bytes(buf)
    expected = minimum + (_E2E_TRAILER if e2e else 0)
    if len(data) < expected:
        raise InvalidFrame(f"{name} frame truncated", characteristic=name, length=len(data), expected=expected)
    if not e2e:
        return data, None
    if crc16_mcrf4xx(data[:-2]) != _U16.unpack_from(data, len(data) - 2)[0]:
        raise InvalidFrame(f"{name} E2E-CRC mismatch", characteristic=name, length=len(data))
    return data[:-_E2E_TRAILER], data[-_E2E_TRAILER]


def _body_length(body: bytes, expected: int, name: str, e2e: bool) -> None:
    """Raise InvalidFrame unless the body before the E2E trailer is exactly `expected` bytes (frame lengths)."""
    if len(body) != expected:
        trailer = _E2E_TRAILER if e2e else 0
        what = "truncated" if len(body) < expected else "has trailing bytes"
        raise InvalidFrame(
            f"{name} frame {what}",
            characteristic=name,
            length=len(body) + trailer,
            expected=expected + trailer,
        )


# The sibling IDS codec (idd_history: IDD RACP and History Data) frames and reads with these same helpers.
seal_e2e = _seal
open_e2e = _open
exact_dose_sfloat = _dose_sfloat
read_dose = _read_dose


def _frame(opcode: int, operand: bytes, counter: int | None) -> bytes:
    return _seal(_OPCODE.pack(opcode) + operand, counter)


def _unframe(buf: Buffer, e2e: bool, name: str = _NAME) -> tuple[int, bytes, int | None]:
    """Split a control point frame into (op code, operand, counter), the E2E-CRC verified first."""
    body, counter = _open(buf, e2e, name, _OPCODE.size)
    (opcode,) = _OPCODE.unpack_from(body, 0)
    return opcode, body[_OPCODE.size :], counter


# ------------------------------------------------------------------------------------------------ commands


def bolus_options(
    delay_min: int | None,
    template_number: int | None,
    activation_type: int | None,
    reason_correction: bool,
    reason_meal: bool,
) -> tuple[int, bytes]:
    """The Set Bolus flags octet and the optional fields it announces (the same layout opens Bolus Programmed
    Part 2 of 2 in the pump's history); ValueError for a field out of range."""
    names = ("delay_min", "template_number", "activation_type")
    flags, tail = pack_flagged(BOLUS_OPTIONS, (delay_min, template_number, activation_type), names)
    flags |= (_BOLUS_REASON_CORRECTION if reason_correction else 0) | (_BOLUS_REASON_MEAL if reason_meal else 0)
    return flags, tail


def read_bolus_options(data: bytes, offset: int, flags: int) -> tuple[int | None, int | None, int | None]:
    """(delay, template number, activation type) as the flags announce them, from `offset` (length checked)."""
    delay, template, activation = unpack_flagged(data, offset, flags, BOLUS_OPTIONS)
    return delay, template, None if activation is None else _enum_or_int(BolusActivationType, activation)


def _encode_set_bolus(m: SetBolus) -> bytes:
    _check_uint(m.bolus_type, 8, "bolus_type")
    _check_uint(m.duration_min, 16, "duration_min")
    flags, tail = bolus_options(m.delay_min, m.template_number, m.activation_type, m.reason_correction, m.reason_meal)
    return (
        _U8.pack(flags)
        + _U8.pack(m.bolus_type)
        + _dose_sfloat(m.fast_amount_iu, "fast_amount_iu")
        + _dose_sfloat(m.extended_amount_iu, "extended_amount_iu")
        + _U16.pack(m.duration_min)
        + tail
    )


def _decode_set_bolus(operand: bytes) -> SetBolus:
    opcode = CommandOpCode.SET_BOLUS
    _min_length(operand, _SET_BOLUS_FIXED.size, opcode)
    flags = operand[0]
    _reserved_flags(flags, BOLUS_FLAGS_ALLOWED, opcode)
    _exact_length(operand, _SET_BOLUS_FIXED.size + flagged_size(flags, BOLUS_OPTIONS), opcode)
    _, bolus_type, _, _, duration = _SET_BOLUS_FIXED.unpack_from(operand, 0)
    fast = _read_dose(operand, 2, "fast_amount")
    extended = _read_dose(operand, 4, "extended_amount")
    delay, template, activation = read_bolus_options(operand, _SET_BOLUS_FIXED.size, flags)
    return SetBolus(
        _enum_or_int(BolusType, bolus_type),
        fast,
        extended,
        duration,
        delay,
        template,
        activation,
        bool(flags & _BOLUS_REASON_CORRECTION),
        bool(flags & _BOLUS_REASON_MEAL),
    )


def _encode_set_tbr(m: SetTbrAdjustment) -> bytes:
    _check_uint(m.tbr_type, 8, "tbr_type")
    _check_uint(m.duration_min, 16, "duration_min")
    flags, tail = pack_flagged(
        _TBR_OPTIONS, (m.template_number, m.delivery_context), ("template_number", "delivery_context")
    )
    flags |= _TBR_CHANGE if m.change_tbr else 0
    return (
        _U8.pack(flags)
        + _U8.pack(m.tbr_type)
        + _dose_sfloat(m.adjustment, "adjustment")
        + _U16.pack(m.duration_min)
        + tail
    )


def _decode_set_tbr(operand: bytes) -> SetTbrAdjustment:
    opcode = CommandOpCode.SET_TBR_ADJUSTMENT
    _min_length(operand, _SET_TBR_FIXED.size, opcode)
    flags = operand[0]
    _reserved_flags(flags, _TBR_ALLOWED, opcode)
    _exact_length(operand, _SET_TBR_FIXED.size + flagged_size(flags, _TBR_OPTIONS), opcode)
    _, tbr_type, _, duration = _SET_TBR_FIXED.unpack_from(operand, 0)
    adjustment = _read_dose(operand, 2, "tbr_adjustment")
    template, context = unpack_flagged(operand, _SET_TBR_FIXED.size, flags, _TBR_OPTIONS)
    return SetTbrAdjustment(
        _enum_or_int(TbrType, tbr_type),
        adjustment,
        duration,
        template,
        None if context is None else _enum_or_int(TbrDeliveryContext, context),
        bool(flags & _TBR_CHANGE),
    )


def _bolus_id(operand: bytes, opcode: int) -> int:
    _exact_length(operand, _U16.size, opcode)
    value: int = _U16.unpack(operand)[0]
    return value


def encode_command(msg: IddCommand, *, counter: int | None) -> bytes:
    """Encode a client->server IDD Command Control Point request.

    counter None sends no E2E trailer; otherwise it is the E2E-Counter (uint8, normally from `E2ECounter`)
    and the E2E-CRC is appended.  The argument is required so that leaving E2E off is always a decision.
    """
    if isinstance(msg, SetBolus):
        return _frame(CommandOpCode.SET_BOLUS, _encode_set_bolus(msg), counter)
    if isinstance(msg, CancelBolus):
        _check_uint(msg.bolus_id, 16, "bolus_id")
        return _frame(CommandOpCode.CANCEL_BOLUS, _U16.pack(msg.bolus_id), counter)
    if isinstance(msg, SetTbrAdjustment):
        return _frame(CommandOpCode.SET_TBR_ADJUSTMENT, _encode_set_tbr(msg), counter)
    if isinstance(msg, CancelTbrAdjustment):
        return _frame(CommandOpCode.CANCEL_TBR_ADJUSTMENT, b"", counter)
    raise TypeError(f"not an IDD command: {type(msg).__name__}")


def decode_command(buf: Buffer, *, e2e: bool) -> tuple[IddCommand, int | None]:
    """Decode a client->server request; returns (message, E2E-Counter or None when e2e is False).

    With e2e the E2E-CRC is verified before any field is read.  The counter is returned, not judged: feed
    it to an `E2ECounterTracker`.
    """
    opcode, operand, counter = _unframe(buf, e2e)
    msg: IddCommand
    if opcode == CommandOpCode.SET_BOLUS:
        msg = _decode_set_bolus(operand)
    elif opcode == CommandOpCode.CANCEL_BOLUS:
        msg = CancelBolus(_bolus_id(operand, opcode))
    elif opcode == CommandOpCode.SET_TBR_ADJUSTMENT:
        msg = _decode_set_tbr(operand)
    elif opcode == CommandOpCode.CANCEL_TBR_ADJUSTMENT:
        _exact_length(operand, 0, opcode)
        msg = CancelTbrAdjustment()
    else:
        raise InvalidFrame(f"{_NAME} op code is not a supported command", characteristic=_NAME, opcode=opcode)
    return msg, counter


# ----------------------------------------------------------------------------------------------- responses


def encode_response(msg: IddResponse, *, counter: int | None) -> bytes:
    """Encode a server->client response; counter as for `encode_command`."""
    if isinstance(msg, SetBolusResponse):
        _check_uint(msg.bolus_id, 16, "bolus_id")
        return _frame(CommandOpCode.SET_BOLUS_RESPONSE, _U16.pack(msg.bolus_id), counter)
    if isinstance(msg, CancelBolusResponse):
        _check_uint(msg.bolus_id, 16, "bolus_id")
        return _frame(CommandOpCode.CANCEL_BOLUS_RESPONSE, _U16.pack(msg.bolus_id), counter)
    if isinstance(msg, ResponseCode):
        _check_uint(msg.request_opcode, 16, "request_opcode")
        _check_uint(msg.value, 8, "value")
        return _frame(CommandOpCode.RESPONSE_CODE, _RESPONSE_CODE.pack(msg.request_opcode, msg.value), counter)
    raise TypeError(f"not an IDD response: {type(msg).__name__}")


def decode_response(buf: Buffer, *, e2e: bool) -> tuple[IddResponse, int | None]:
    """Decode a server->client response; returns (message, E2E-Counter or None when e2e is False)."""
    opcode, operand, counter = _unframe(buf, e2e)
    msg: IddResponse
    if opcode == CommandOpCode.SET_BOLUS_RESPONSE:
        msg = SetBolusResponse(_bolus_id(operand, opcode))
    elif opcode == CommandOpCode.CANCEL_BOLUS_RESPONSE:
        msg = CancelBolusResponse(_bolus_id(operand, opcode))
    elif opcode == CommandOpCode.RESPONSE_CODE:
        _exact_length(operand, _RESPONSE_CODE.size, opcode)
        request_opcode, value = _RESPONSE_CODE.unpack(operand)
        msg = ResponseCode(_enum_or_int(CommandOpCode, request_opcode), _enum_or_int(ResponseCodeValue, value))
    else:
        raise InvalidFrame(f"{_NAME} op code is not a supported response", characteristic=_NAME, opcode=opcode)
    return msg, counter


# ----------------------------------------------------------------------------------------------------- E2E

_COUNTER_MODULUS: Final = 256


class E2ECounter:
    """Sender side E2E-Counter: 0, 1, ..., 255, 0, ...; one instance per direction and connection."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def next(self) -> int:
        """The counter for the next message sent."""
        value = self._next
        self._next = (value + 1) % _COUNTER_MODULUS
        return value


class E2ECounterTracker:
    """Receiver side E2E-Counter check: each message must carry the previous counter + 1 (mod 256).

    The first message after construction or `reset()` is accepted whatever its counter.  A repeated counter
    means a duplicated or replayed message, a skipped one a lost message: either raises InvalidFrame and
    leaves the tracker unchanged, so the genuine next message is still accepted after a replay and, after a
    loss, nothing is accepted again until the caller decides to resynchronise with `reset()`.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: int | None = None

    @property
    def expected(self) -> int | None:
        """The counter the next message must carry, or None when any counter is accepted."""
        return None if self._last is None else (self._last + 1) % _COUNTER_MODULUS

    def check(self, received: int) -> None:
        """Accept `received` if it is the expected next counter, else raise InvalidFrame."""
        _check_uint(received, 8, "received")
        expected = self.expected
        if expected is not None and received != expected:
            kind = "repeated" if received == self._last else "out of sequence"
            raise InvalidFrame(
                f"{_NAME} E2E-Counter {kind}",
                characteristic=_NAME,
                expected=expected,
                received=received,
            )
        self._last = received

    def reset(self) -> None:
        """Forget the sequence (new connection, or an explicit resynchronisation after a loss)."""
        self._last = None


# ------------------------------------------------------------------------------------------- IDD Features

_FEATURES: Final = struct.Struct("<HBH")  # E2E-CRC, E2E-Counter, insulin concentration SFLOAT
_FEATURES_SIZE: Final = _FEATURES.size + 3  # then the 24-bit Flags field
_FEATURES_NO_CRC: Final = 0xFFFF
_FEATURE_E2E_PROTECTION: Final = 1 << 0
_FEATURE_EXTENSION: Final = 1 << 23
# Field of IddFeatures for each defined Flags bit (IDS 1.0.x); bits 16-22 are reserved.
_FEATURE_BITS: Final = (
    ("e2e_protection", 0),
    ("basal_rate", 1),
    ("tbr_absolute", 2),
    ("tbr_relative", 3),
    ("tbr_template", 4),
    ("fast_bolus", 5),
    ("extended_bolus", 6),
    ("multiwave_bolus", 7),
    ("bolus_delay_time", 8),
    ("bolus_template", 9),
    ("bolus_activation_type", 10),
    ("multiple_bond", 11),
    ("isf_profile_template", 12),
    ("i2cho_ratio_profile_template", 13),
    ("target_glucose_range_profile_template", 14),
    ("insulin_on_board", 15),
)
_FEATURES_ALLOWED: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class IddFeatures:
    """IDD Features (0x2B23): what the pump supports and the concentration (IU/mL) of the insulin it holds.

    Each bool is the matching "... Supported" flag.  e2e_counter is the characteristic's E2E-Counter field.
    """

    e2e_protection: bool
    insulin_concentration_iu_per_ml: float
    basal_rate: bool = False
    tbr_absolute: bool = False
    tbr_relative: bool = False
    tbr_template: bool = False
    fast_bolus: bool = False
    extended_bolus: bool = False
    multiwave_bolus: bool = False
    bolus_delay_time: bool = False
    bolus_template: bool = False
    bolus_activation_type: bool = False
    multiple_bond: bool = False
    isf_profile_template: bool = False
    i2cho_ratio_profile_template: bool = False
    target_glucose_range_profile_template: bool = False
    insulin_on_board: bool = False
    e2e_counter: int = 0


def decode_idd_features(buf: Buffer) -> IddFeatures:
    """Decode IDD Features: E2E-CRC (uint16), E2E-Counter (uint8), Insulin Concentration (SFLOAT), Flags (24 bits).

    The fields are always present.  With E2E-Protection Supported set, the E2E-CRC (over every byte after it)
    must match; without it the field must hold 0xFFFF, as the spec requires.  Insisting on 0xFFFF is what
    stops a single flipped E2E-Protection bit from silently switching a protected pump's E2E off (the
    downgrade would otherwise pass unnoticed, since nothing else is checked).  The Feature Extension bit
    (bit 23) announces further flag octets IDS 1.0.x defines none of, so it is refused like a reserved bit.
    """
    name = _FEATURES_NAME
    data = bytes(buf)
    if len(data) < _FEATURES_SIZE:
        raise InvalidFrame(f"{name} frame truncated", characteristic=name, length=len(data), expected=_FEATURES_SIZE)
    crc, counter, _ = _FEATURES.unpack_from(data, 0)
    flags = int.from_bytes(data[_FEATURES.size : _FEATURES_SIZE], "little")
    if flags & _FEATURE_E2E_PROTECTION:
        if crc16_mcrf4xx(data[_U16.size :]) != crc:
            raise InvalidFrame(f"{name} E2E-CRC mismatch", characteristic=name, length=len(data))
    elif crc != _FEATURES_NO_CRC:
        raise InvalidFrame(
            f"{name} E2E-CRC must be 0xFFFF when E2E-Protection is not supported",
            characteristic=name,
            length=len(data),
        )
    if flags & _FEATURE_EXTENSION:
        raise InvalidFrame(f"{name} feature extension is not defined by IDS 1.0.x", characteristic=name)
    if len(data) != _FEATURES_SIZE:
        raise InvalidFrame(
            f"{name} frame has trailing bytes", characteristic=name, length=len(data), expected=_FEATURES_SIZE
        )
    if flags & ~_FEATURES_ALLOWED:
        raise InvalidFrame(
            f"{name} has reserved flag bits set", characteristic=name, reserved_bits=flags & ~_FEATURES_ALLOWED
        )
    concentration = _read_dose(data, 3, "insulin_concentration", name)
    supported = {field: bool(flags >> bit & 1) for field, bit in _FEATURE_BITS}
    return IddFeatures(
        e2e_protection=supported["e2e_protection"],
        insulin_concentration_iu_per_ml=concentration,
        basal_rate=supported["basal_rate"],
        tbr_absolute=supported["tbr_absolute"],
        tbr_relative=supported["tbr_relative"],
        tbr_template=supported["tbr_template"],
        fast_bolus=supported["fast_bolus"],
        extended_bolus=supported["extended_bolus"],
        multiwave_bolus=supported["multiwave_bolus"],
        bolus_delay_time=supported["bolus_delay_time"],
        bolus_template=supported["bolus_template"],
        bolus_activation_type=supported["bolus_activation_type"],
        multiple_bond=supported["multiple_bond"],
        isf_profile_template=supported["isf_profile_template"],
        i2cho_ratio_profile_template=supported["i2cho_ratio_profile_template"],
        target_glucose_range_profile_template=supported["target_glucose_range_profile_template"],
        insulin_on_board=supported["insulin_on_board"],
        e2e_counter=counter,
    )


def encode_idd_features(features: IddFeatures) -> bytes:
    """Encode IDD Features; the E2E-CRC is computed when e2e_protection is set, 0xFFFF otherwise."""
    _check_uint(features.e2e_counter, 8, "e2e_counter")
    flags = 0
    for field, bit in _FEATURE_BITS:
        if getattr(features, field):
            flags |= 1 << bit
    tail = (
        _U8.pack(features.e2e_counter)
        + _dose_sfloat(features.insulin_concentration_iu_per_ml, "insulin_concentration_iu_per_ml")
        + flags.to_bytes(3, "little")
    )
    crc = crc16_mcrf4xx(tail) if features.e2e_protection else _FEATURES_NO_CRC
    return _U16.pack(crc) + tail


# ------------------------------------------------------------------------------------- IDD Status Changed


class StatusChangedFlag(enum.IntFlag):
    """IDD Status Changed flags (uint16); also the operand of the Status Reader's Reset Status."""

    THERAPY_CONTROL_STATE_CHANGED = 1 << 0
    OPERATIONAL_STATE_CHANGED = 1 << 1
    RESERVOIR_STATUS_CHANGED = 1 << 2
    ANNUNCIATION_STATUS_CHANGED = 1 << 3
    TOTAL_DAILY_INSULIN_STATUS_CHANGED = 1 << 4
    ACTIVE_BASAL_RATE_STATUS_CHANGED = 1 << 5
    ACTIVE_BOLUS_STATUS_CHANGED = 1 << 6
    HISTORY_EVENT_RECORDED = 1 << 7


_STATUS_CHANGED_ALLOWED: Final = 0x00FF


def _check_status_flags(flags: int, name: str) -> None:
    _check_uint(flags, 16, name)
    if flags & ~_STATUS_CHANGED_ALLOWED:
        raise ValueError(f"{name} has bits IDS 1.0.x reserves")


def decode_status_changed(buf: Buffer, *, e2e: bool) -> tuple[StatusChangedFlag, int | None]:
    """Decode IDD Status Changed: (flags, E2E-Counter or None when e2e is False); the E2E-CRC is checked first."""
    name = _STATUS_CHANGED_NAME
    body, counter = _open(buf, e2e, name, _U16.size)
    _body_length(body, _U16.size, name, e2e)
    (flags,) = _U16.unpack(body)
    if flags & ~_STATUS_CHANGED_ALLOWED:
        raise InvalidFrame(
            f"{name} has reserved flag bits set", characteristic=name, reserved_bits=flags & ~_STATUS_CHANGED_ALLOWED
        )
    return StatusChangedFlag(flags), counter


def encode_status_changed(flags: int, *, counter: int | None) -> bytes:
    """Encode IDD Status Changed; counter as for `encode_command` (None: no E2E trailer)."""
    _check_status_flags(flags, "flags")
    return _seal(_U16.pack(flags), counter)


# -------------------------------------------------------------------------------- IDD Annunciation Status


class AnnunciationType(enum.IntEnum):
    """Annunciation Type (uint16, Hamming-distance coded)."""

    SYSTEM_ISSUE = 0x000F
    MECHANICAL_ISSUE = 0x0033
    OCCLUSION_DETECTED = 0x003C
    RESERVOIR_ISSUE = 0x0055
    RESERVOIR_EMPTY = 0x005A
    RESERVOIR_LOW = 0x0066
    PRIMING_ISSUE = 0x0069
    INFUSION_SET_INCOMPLETE = 0x0096
    INFUSION_SET_DETACHED = 0x0099
    POWER_SOURCE_INSUFFICIENT = 0x00A5
    BATTERY_EMPTY = 0x00AA
    BATTERY_LOW = 0x00C3
    BATTERY_MEDIUM = 0x00CC
    BATTERY_FULL = 0x00F0
    TEMPERATURE_OUT_OF_RANGE = 0x00FF
    AIR_PRESSURE_OUT_OF_RANGE = 0x0303
    BOLUS_CANCELED = 0x030C
    TBR_OVER = 0x0330
    TBR_CANCELED = 0x033F
    MAX_DELIVERY = 0x0356
    DATE_TIME_ISSUE = 0x0359
    TEMPERATURE = 0x0365


class AnnunciationStatusValue(enum.IntEnum):
    """Annunciation Status (uint8, Hamming-distance coded)."""

    UNDETERMINED = 0x0F
    PENDING = 0x33
    SNOOZED = 0x3C
    CONFIRMED = 0x55


@dataclass(frozen=True, slots=True)
class Annunciation:
    """One annunciation; type and status are enum members when known, plain ints otherwise.

    aux_info holds AuxInfo1, AuxInfo2, ... in order (at most five raw uint16; their meaning depends on type).
    """

    instance_id: int
    type: int
    status: int
    aux_info: tuple[int, ...] = ()


_ANNUNCIATION_PRESENT: Final = 0x01
_AUX_INFO_SHIFT: Final = 1  # AuxInfo1..AuxInfo5 Present are flag bits 1..5
_AUX_INFO_MAX: Final = 5
_ANNUNCIATION_ALLOWED: Final = 0x3F
_ANNUNCIATION_FIXED: Final = struct.Struct("<HHB")  # instance ID, type, status


def decode_annunciation_status(buf: Buffer, *, e2e: bool) -> tuple[Annunciation | None, int | None]:
    """Decode IDD Annunciation Status: (annunciation or None when none is present, E2E-Counter or None).

    Layout: Flags (uint8), then, with Annunciation Present, Instance ID (uint16), Type (uint16), Status (uint8)
    and AuxInfo1..AuxInfo5 (uint16 each, per its flag).  Decision: AuxInfo flags must form a prefix
    (AuxInfo2 only with AuxInfo1, ...) and need an annunciation; anything else is refused, because the
    positional aux_info tuple could not say which AuxInfo a value was, and an aux value without an
    annunciation means nothing.
    """
    name = _ANNUNCIATION_NAME
    body, counter = _open(buf, e2e, name, 1)
    flags = body[0]
    if flags & ~_ANNUNCIATION_ALLOWED:
        raise InvalidFrame(
            f"{name} has reserved flag bits set", characteristic=name, reserved_bits=flags & ~_ANNUNCIATION_ALLOWED
        )
    aux_bits = flags >> _AUX_INFO_SHIFT
    if not flags & _ANNUNCIATION_PRESENT:
        if aux_bits:
            raise InvalidFrame(f"{name} has AuxInfo without an annunciation", characteristic=name, aux_bits=aux_bits)
        _body_length(body, 1, name, e2e)
        return None, counter
    aux_count = aux_bits.bit_length()
    if aux_bits != (1 << aux_count) - 1:
        raise InvalidFrame(f"{name} AuxInfo fields do not start at AuxInfo1", characteristic=name, aux_bits=aux_bits)
    _body_length(body, 1 + _ANNUNCIATION_FIXED.size + aux_count * _U16.size, name, e2e)
    instance_id, annunciation_type, status = _ANNUNCIATION_FIXED.unpack_from(body, 1)
    aux = tuple(value for (value,) in _U16.iter_unpack(body[1 + _ANNUNCIATION_FIXED.size :]))
    annunciation = Annunciation(
        instance_id,
        _enum_or_int(AnnunciationType, annunciation_type),
        _enum_or_int(AnnunciationStatusValue, status),
        aux,
    )
    return annunciation, counter


def encode_annunciation_status(annunciation: Annunciation | None, *, counter: int | None) -> bytes:
    """Encode IDD Annunciation Status (None: no annunciation present); counter as for `encode_command`."""
    if annunciation is None:
        return _seal(_U8.pack(0), counter)
    _check_uint(annunciation.instance_id, 16, "instance_id")
    _check_uint(annunciation.type, 16, "type")
    _check_uint(annunciation.status, 8, "status")
    if len(annunciation.aux_info) > _AUX_INFO_MAX:
        raise ValueError(f"aux_info must hold at most {_AUX_INFO_MAX} values")
    for value in annunciation.aux_info:
        _check_uint(value, 16, "aux_info")
    flags = _ANNUNCIATION_PRESENT | ((1 << len(annunciation.aux_info)) - 1) << _AUX_INFO_SHIFT
    body = (
        _U8.pack(flags)
        + _ANNUNCIATION_FIXED.pack(annunciation.instance_id, annunciation.type, annunciation.status)
        + b"".join(_U16.pack(value) for value in annunciation.aux_info)
    )
    return _seal(body, counter)


_HIGH_SEVERITY: Final = frozenset(
    {
        AnnunciationType.OCCLUSION_DETECTED,
        AnnunciationType.RESERVOIR_EMPTY,
        AnnunciationType.BATTERY_EMPTY,
        AnnunciationType.MECHANICAL_ISSUE,
        AnnunciationType.INFUSION_SET_DETACHED,
        AnnunciationType.MAX_DELIVERY,
        AnnunciationType.SYSTEM_ISSUE,
    }
)
_MEDIUM_SEVERITY: Final = frozenset(
    {
        AnnunciationType.RESERVOIR_LOW,
        AnnunciationType.BATTERY_LOW,
        AnnunciationType.POWER_SOURCE_INSUFFICIENT,
        AnnunciationType.PRIMING_ISSUE,
        AnnunciationType.INFUSION_SET_INCOMPLETE,
        AnnunciationType.TEMPERATURE_OUT_OF_RANGE,
        AnnunciationType.AIR_PRESSURE_OUT_OF_RANGE,
        AnnunciationType.DATE_TIME_ISSUE,
        AnnunciationType.RESERVOIR_ISSUE,
    }
)


def annunciation_severity(annunciation_type: int) -> Literal["high", "medium", "low"]:
    """The clinical alarm priority of an annunciation type: "high", "medium" or "low".

    Decision (IDS defines types, not priorities; this mapping is the gateway's):

    * high: insulin delivery has stopped or is unsafe now: occlusion detected, reservoir empty, battery
      empty, mechanical issue, infusion set detached, max delivery reached, system issue;
    * medium: delivery will stop or may be compromised unless someone acts soon: reservoir low, battery
      low, power source insufficient, priming issue, infusion set incomplete, temperature or air pressure
      out of range, date-time issue, reservoir issue;
    * low: information: battery medium/full, bolus canceled, TBR over, TBR canceled, temperature, and any
      type IDS 1.0.x does not define (decoders keep those as plain ints, so a caller that wants to escalate
      unknown types can test for them before asking this function).
    """
    if annunciation_type in _HIGH_SEVERITY:
        return "high"
    if annunciation_type in _MEDIUM_SEVERITY:
        return "medium"
    return "low"


# ------------------------------------------------------------------------ IDD Status Reader Control Point


class StatusReaderOpCode(enum.IntEnum):
    """IDD Status Reader Control Point op codes (Hamming-distance coded)."""

    RESPONSE_CODE = 0x0303
    RESET_STATUS = 0x030C
    GET_ACTIVE_BOLUS_IDS = 0x0330
    GET_ACTIVE_BOLUS_IDS_RESPONSE = 0x033F
    GET_ACTIVE_BOLUS_DELIVERY = 0x0356
    GET_ACTIVE_BOLUS_DELIVERY_RESPONSE = 0x0359
    GET_ACTIVE_BASAL_RATE_DELIVERY = 0x0365
    GET_ACTIVE_BASAL_RATE_DELIVERY_RESPONSE = 0x036A
    GET_TOTAL_DAILY_INSULIN_STATUS = 0x0395
    GET_TOTAL_DAILY_INSULIN_STATUS_RESPONSE = 0x039A
    GET_COUNTER = 0x03A6
    GET_COUNTER_RESPONSE = 0x03A9
    GET_DELIVERED_INSULIN = 0x03C0
    GET_DELIVERED_INSULIN_RESPONSE = 0x03CF
    GET_INSULIN_ON_BOARD = 0x03F3
    GET_INSULIN_ON_BOARD_RESPONSE = 0x03FC


class StatusReaderResponseCodeValue(enum.IntEnum):
    """Response Code Value of the Status Reader's Response Code message (0x75/0x76 are Command CP only)."""

    SUCCESS = 0x0F
    OP_CODE_NOT_SUPPORTED = 0x70
    INVALID_OPERAND = 0x71
    PROCEDURE_NOT_COMPLETED = 0x72
    PARAMETER_OUT_OF_RANGE = 0x73
    PROCEDURE_NOT_APPLICABLE = 0x74


# IDS limits Get Active Bolus IDs to seven IDs: op code, count and 7 x uint16, plus E2E, fill a 20-octet ATT PDU.
MAX_ACTIVE_BOLUS_IDS: Final = 7


@dataclass(frozen=True, slots=True)
class ResetStatus:
    """Reset Status (0x030C): clear these IDD Status Changed flags."""

    flags: StatusChangedFlag


@dataclass(frozen=True, slots=True)
class GetActiveBolusIds:
    """Get Active Bolus IDs (0x0330): no operand."""


@dataclass(frozen=True, slots=True)
class GetTotalDailyInsulinStatus:
    """Get Total Daily Insulin Status (0x0395): no operand."""


@dataclass(frozen=True, slots=True)
class GetDeliveredInsulin:
    """Get Delivered Insulin (0x03C0): no operand."""


@dataclass(frozen=True, slots=True)
class GetInsulinOnBoard:
    """Get Insulin On Board (0x03F3): no operand."""


@dataclass(frozen=True, slots=True)
class StatusReaderResponseCode:
    """Response Code (0x0303): the outcome of request_opcode; both are enum members when known."""

    request_opcode: int
    value: int


@dataclass(frozen=True, slots=True)
class ActiveBolusIdsResponse:
    """Get Active Bolus IDs Response (0x033F): Number of Active Boluses (uint8), then one uint16 ID each."""

    bolus_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TotalDailyInsulinStatusResponse:
    """Get Total Daily Insulin Status Response (0x039A): today's sums of bolus, basal and both (SFLOAT, IU)."""

    bolus_iu: float
    basal_iu: float
    total_iu: float


@dataclass(frozen=True, slots=True)
class DeliveredInsulinResponse:
    """Get Delivered Insulin Response (0x03CF): bolus and basal delivered since the last rollover (FLOAT, IU)."""

    bolus_delivered_iu: float
    basal_delivered_iu: float


@dataclass(frozen=True, slots=True)
class InsulinOnBoardResponse:
    """Get Insulin On Board Response (0x03FC): Flags, Insulin On Board (SFLOAT, IU), Remaining Duration (min)."""

    insulin_on_board_iu: float
    remaining_duration_min: int | None = None


StatusReaderRequest: TypeAlias = (
    ResetStatus | GetActiveBolusIds | GetTotalDailyInsulinStatus | GetDeliveredInsulin | GetInsulinOnBoard
)
StatusReaderResponse: TypeAlias = (
    StatusReaderResponseCode
    | ActiveBolusIdsResponse
    | TotalDailyInsulinStatusResponse
    | DeliveredInsulinResponse
    | InsulinOnBoardResponse
)

_NoOperandRequest: TypeAlias = GetActiveBolusIds | GetTotalDailyInsulinStatus | GetDeliveredInsulin | GetInsulinOnBoard
_SRCP_NO_OPERAND: Final[dict[type[_NoOperandRequest], StatusReaderOpCode]] = {
    GetActiveBolusIds: StatusReaderOpCode.GET_ACTIVE_BOLUS_IDS,
    GetTotalDailyInsulinStatus: StatusReaderOpCode.GET_TOTAL_DAILY_INSULIN_STATUS,
    GetDeliveredInsulin: StatusReaderOpCode.GET_DELIVERED_INSULIN,
    GetInsulinOnBoard: StatusReaderOpCode.GET_INSULIN_ON_BOARD,
}
_SRCP_NO_OPERAND_BY_OPCODE: Final[dict[int, type[_NoOperandRequest]]] = {
    opcode: cls for cls, opcode in _SRCP_NO_OPERAND.items()
}
_SRCP_RESPONSE_CODE: Final = struct.Struct("<HB")  # request op code, response code value
_TOTAL_DAILY_INSULIN: Final = struct.Struct("<HHH")  # bolus, basal, bolus + basal (SFLOAT each)
_DELIVERED_INSULIN: Final = struct.Struct("<II")  # bolus, basal (FLOAT each)
_IOB_REMAINING_DURATION: Final = 0x01
_IOB_ALLOWED: Final = 0x01


def encode_status_reader_request(msg: StatusReaderRequest, *, counter: int | None) -> bytes:
    """Encode a client->server IDD Status Reader Control Point request; counter as for `encode_command`."""
    if isinstance(msg, ResetStatus):
        _check_status_flags(msg.flags, "flags")
        return _frame(StatusReaderOpCode.RESET_STATUS, _U16.pack(msg.flags), counter)
    opcode = _SRCP_NO_OPERAND.get(type(msg))
    if opcode is None:
        raise TypeError(f"not an IDD status reader request: {type(msg).__name__}")
    return _frame(opcode, b"", counter)


def _refuse_request(
    reason: str, request_opcode: int, response_code: StatusReaderResponseCodeValue, **fields: int
) -> NoReturn:
    raise InvalidFrame(
        f"{_SRCP_NAME} request refused: {reason}",
        characteristic=_SRCP_NAME,
        request_opcode=request_opcode,
        response_code=response_code,
        **fields,
    )


def decode_status_reader_request(buf: Buffer, *, e2e: bool) -> tuple[StatusReaderRequest, int | None]:
    """Decode a client->server request (server side); returns (message, E2E-Counter or None).

    A well-formed frame this codec cannot serve raises InvalidFrame whose fields carry `request_opcode` and
    the `response_code` a server should answer with: Op Code Not Supported for op codes it does not
    implement (Get Active Bolus Delivery, Get Active Basal Rate Delivery, Get Counter, response op codes,
    unknown ones), Invalid Operand for a wrong operand length or reserved Reset Status bits.  A truncated
    frame or a failed E2E-CRC carries neither: no field of such a frame, the op code included, can be trusted.
    """
    opcode, operand, counter = _unframe(buf, e2e, _SRCP_NAME)
    request_opcode = _enum_or_int(StatusReaderOpCode, opcode)
    invalid = StatusReaderResponseCodeValue.INVALID_OPERAND
    msg: StatusReaderRequest
    if opcode == StatusReaderOpCode.RESET_STATUS:
        if len(operand) != _U16.size:
            _refuse_request("operand length", request_opcode, invalid, operand_length=len(operand), expected=2)
        (flags,) = _U16.unpack(operand)
        if flags & ~_STATUS_CHANGED_ALLOWED:
            _refuse_request(
                "reserved flag bits", request_opcode, invalid, reserved_bits=flags & ~_STATUS_CHANGED_ALLOWED
            )
        msg = ResetStatus(StatusChangedFlag(flags))
    elif opcode in _SRCP_NO_OPERAND_BY_OPCODE:
        if operand:
            _refuse_request("operand length", request_opcode, invalid, operand_length=len(operand), expected=0)
        msg = _SRCP_NO_OPERAND_BY_OPCODE[opcode]()
    else:
        raise InvalidFrame(
            f"{_SRCP_NAME} op code is not a supported request",
            characteristic=_SRCP_NAME,
            request_opcode=request_opcode,
            response_code=StatusReaderResponseCodeValue.OP_CODE_NOT_SUPPORTED,
        )
    return msg, counter


def encode_status_reader_response(msg: StatusReaderResponse, *, counter: int | None) -> bytes:
    """Encode a server->client response; counter as for `encode_command`."""
    if isinstance(msg, StatusReaderResponseCode):
        _check_uint(msg.request_opcode, 16, "request_opcode")
        _check_uint(msg.value, 8, "value")
        operand = _SRCP_RESPONSE_CODE.pack(msg.request_opcode, msg.value)
        return _frame(StatusReaderOpCode.RESPONSE_CODE, operand, counter)
    if isinstance(msg, ActiveBolusIdsResponse):
        if len(msg.bolus_ids) > MAX_ACTIVE_BOLUS_IDS:
            raise ValueError(f"bolus_ids must hold at most {MAX_ACTIVE_BOLUS_IDS} IDs")
        for bolus_id in msg.bolus_ids:
            _check_uint(bolus_id, 16, "bolus_ids")
        operand = _U8.pack(len(msg.bolus_ids)) + b"".join(_U16.pack(bolus_id) for bolus_id in msg.bolus_ids)
        return _frame(StatusReaderOpCode.GET_ACTIVE_BOLUS_IDS_RESPONSE, operand, counter)
    if isinstance(msg, TotalDailyInsulinStatusResponse):
        operand = (
            _dose_sfloat(msg.bolus_iu, "bolus_iu")
            + _dose_sfloat(msg.basal_iu, "basal_iu")
            + _dose_sfloat(msg.total_iu, "total_iu")
        )
        return _frame(StatusReaderOpCode.GET_TOTAL_DAILY_INSULIN_STATUS_RESPONSE, operand, counter)
    if isinstance(msg, DeliveredInsulinResponse):
        operand = _dose_float(msg.bolus_delivered_iu, "bolus_delivered_iu") + _dose_float(
            msg.basal_delivered_iu, "basal_delivered_iu"
        )
        return _frame(StatusReaderOpCode.GET_DELIVERED_INSULIN_RESPONSE, operand, counter)
    if isinstance(msg, InsulinOnBoardResponse):
        iob = _dose_sfloat(msg.insulin_on_board_iu, "insulin_on_board_iu")
        if msg.remaining_duration_min is None:
            operand = _U8.pack(0) + iob
        else:
            _check_uint(msg.remaining_duration_min, 16, "remaining_duration_min")
            operand = _U8.pack(_IOB_REMAINING_DURATION) + iob + _U16.pack(msg.remaining_duration_min)
        return _frame(StatusReaderOpCode.GET_INSULIN_ON_BOARD_RESPONSE, operand, counter)
    raise TypeError(f"not an IDD status reader response: {type(msg).__name__}")


def decode_status_reader_response(buf: Buffer, *, e2e: bool) -> tuple[StatusReaderResponse, int | None]:
    """Decode a server->client response; returns (message, E2E-Counter or None when e2e is False)."""
    name = _SRCP_NAME
    opcode, operand, counter = _unframe(buf, e2e, name)
    msg: StatusReaderResponse
    if opcode == StatusReaderOpCode.RESPONSE_CODE:
        _exact_length(operand, _SRCP_RESPONSE_CODE.size, opcode, name)
        request_opcode, value = _SRCP_RESPONSE_CODE.unpack(operand)
        msg = StatusReaderResponseCode(
            _enum_or_int(StatusReaderOpCode, request_opcode), _enum_or_int(StatusReaderResponseCodeValue, value)
        )
    elif opcode == StatusReaderOpCode.GET_ACTIVE_BOLUS_IDS_RESPONSE:
        _min_length(operand, 1, opcode, name)
        count = operand[0]
        if count > MAX_ACTIVE_BOLUS_IDS:
            raise InvalidFrame(
                f"{name} announces more active boluses than IDS allows",
                characteristic=name,
                opcode=opcode,
                expected=MAX_ACTIVE_BOLUS_IDS,
            )
        _exact_length(operand, 1 + count * _U16.size, opcode, name)
        msg = ActiveBolusIdsResponse(tuple(bolus_id for (bolus_id,) in _U16.iter_unpack(operand[1:])))
    elif opcode == StatusReaderOpCode.GET_TOTAL_DAILY_INSULIN_STATUS_RESPONSE:
        _exact_length(operand, _TOTAL_DAILY_INSULIN.size, opcode, name)
        msg = TotalDailyInsulinStatusResponse(
            _read_dose(operand, 0, "total_daily_bolus", name),
            _read_dose(operand, 2, "total_daily_basal", name),
            _read_dose(operand, 4, "total_daily_insulin", name),
        )
    elif opcode == StatusReaderOpCode.GET_DELIVERED_INSULIN_RESPONSE:
        _exact_length(operand, _DELIVERED_INSULIN.size, opcode, name)
        msg = DeliveredInsulinResponse(
            _read_float_dose(operand, 0, "bolus_delivered", name),
            _read_float_dose(operand, 4, "basal_delivered", name),
        )
    elif opcode == StatusReaderOpCode.GET_INSULIN_ON_BOARD_RESPONSE:
        _min_length(operand, 3, opcode, name)
        flags = operand[0]
        _reserved_flags(flags, _IOB_ALLOWED, opcode, name)
        has_duration = bool(flags & _IOB_REMAINING_DURATION)
        _exact_length(operand, 3 + (2 if has_duration else 0), opcode, name)
        iob = _read_dose(operand, 1, "insulin_on_board", name)
        duration: int | None = _U16.unpack_from(operand, 3)[0] if has_duration else None
        msg = InsulinOnBoardResponse(iob, duration)
    else:
        raise InvalidFrame(f"{name} op code is not a supported response", characteristic=name, opcode=opcode)
    return msg, counter
