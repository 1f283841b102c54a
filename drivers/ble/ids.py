"""Insulin Delivery Service (IDS 1.0.x) IDD Command Control Point (0x2B25): pure codecs, no I/O.

Every message is little-endian: Op Code (uint16), the op code's operand, then, when the pump uses E2E
protection, E2E-Counter (uint8) and E2E-CRC (uint16, CRC-16/MCRF4XX over every preceding byte).

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
* Doses are encoded exactly or not at all: an amount SFLOAT cannot carry exactly raises ValueError rather
  than being rounded on the wire, and decoders refuse negative or non-finite (NaN, NRes, INF) doses.

Decoders accept bytes, bytearray or memoryview and raise only `InvalidFrame` on malformed input; its fields
name the characteristic, lengths, op codes and flag bits, never an amount, rate or duration.  Encoders raise
`ValueError` for values the wire format cannot carry and `TypeError` for a message of the wrong direction.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Final, TypeAlias, TypeVar

from drivers.ble.gatt import Buffer, crc16_mcrf4xx, uuid16
from drivers.ble.sfloat import decode_sfloat, encode_sfloat, read_sfloat
from gateway.errors import InvalidFrame

__all__ = [
    # UUIDs
    "IDD_STATUS_READER_CONTROL_POINT",
    "IDD_COMMAND_CONTROL_POINT",
    "IDD_COMMAND_DATA",
    "IDD_RECORD_ACCESS_CONTROL_POINT",
    "IDD_HISTORY_DATA",
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
]

IDD_STATUS_READER_CONTROL_POINT: Final = uuid16(0x2B24)
IDD_COMMAND_CONTROL_POINT: Final = uuid16(0x2B25)
IDD_COMMAND_DATA: Final = uuid16(0x2B26)
IDD_RECORD_ACCESS_CONTROL_POINT: Final = uuid16(0x2B27)
IDD_HISTORY_DATA: Final = uuid16(0x2B28)

_NAME: Final = "idd_command_control_point"

_E = TypeVar("_E", bound=enum.IntEnum)

_U8: Final = struct.Struct("<B")
_U16: Final = struct.Struct("<H")
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

# Set Bolus flags
_BOLUS_DELAY: Final = 0x01
_BOLUS_TEMPLATE: Final = 0x02
_BOLUS_ACTIVATION: Final = 0x04
_BOLUS_REASON_CORRECTION: Final = 0x08
_BOLUS_REASON_MEAL: Final = 0x10
_BOLUS_ALLOWED: Final = 0x1F

# Set TBR Adjustment flags
_TBR_TEMPLATE: Final = 0x01
_TBR_CONTEXT: Final = 0x02
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


def _read_dose(data: bytes, offset: int, field: str) -> float:
    value = read_sfloat(data, offset)
    # NaN, NRes, INF and negative amounts are never a dose a pump can act on.
    if not math.isfinite(value) or value < 0:
        raise InvalidFrame(f"{_NAME} {field} is not a finite, non-negative number", characteristic=_NAME, field=field)
    return value


def _exact_length(data: bytes, expected: int, opcode: int) -> None:
    """Raise InvalidFrame unless the operand is exactly `expected` bytes (the flags fix its layout)."""
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise InvalidFrame(
            f"{_NAME} operand {what}",
            characteristic=_NAME,
            opcode=opcode,
            operand_length=len(data),
            expected=expected,
        )


def _min_length(data: bytes, minimum: int, opcode: int) -> None:
    """Raise InvalidFrame when the operand is shorter than its fixed part."""
    if len(data) < minimum:
        raise InvalidFrame(
            f"{_NAME} operand truncated",
            characteristic=_NAME,
            opcode=opcode,
            operand_length=len(data),
            expected=minimum,
        )


def _reserved_flags(flags: int, allowed: int, opcode: int) -> None:
    """A reserved flag bit means a layout this codec does not know: refuse rather than guess."""
    if flags & ~allowed:
        raise InvalidFrame(
            f"{_NAME} has reserved flag bits set",
            characteristic=_NAME,
            opcode=opcode,
            reserved_bits=flags & ~allowed & 0xFF,
        )


def _frame(opcode: int, operand: bytes, counter: int | None) -> bytes:
    out = _OPCODE.pack(opcode) + operand
    if counter is None:
        return out
    _check_uint(counter, 8, "counter")
    out += _U8.pack(counter)
    return out + _U16.pack(crc16_mcrf4xx(out))


def _unframe(buf: Buffer, e2e: bool) -> tuple[int, bytes, int | None]:
    """Split a frame into (op code, operand, counter), verifying the E2E-CRC before anything is parsed."""
    data = bytes(buf)
    minimum = _OPCODE.size + (_E2E_TRAILER if e2e else 0)
    if len(data) < minimum:
        raise InvalidFrame(f"{_NAME} frame truncated", characteristic=_NAME, length=len(data), expected=minimum)
    counter: int | None = None
    if e2e:
        if crc16_mcrf4xx(data[:-2]) != _U16.unpack_from(data, len(data) - 2)[0]:
            raise InvalidFrame(f"{_NAME} E2E-CRC mismatch", characteristic=_NAME, length=len(data))
        counter = data[-_E2E_TRAILER]
        data = data[:-_E2E_TRAILER]
    (opcode,) = _OPCODE.unpack_from(data, 0)
    return opcode, data[_OPCODE.size :], counter


# ------------------------------------------------------------------------------------------------ commands


def _encode_set_bolus(m: SetBolus) -> bytes:
    _check_uint(m.bolus_type, 8, "bolus_type")
    _check_uint(m.duration_min, 16, "duration_min")
    flags = 0
    tail = b""
    if m.delay_min is not None:
        _check_uint(m.delay_min, 16, "delay_min")
        flags |= _BOLUS_DELAY
        tail += _U16.pack(m.delay_min)
    if m.template_number is not None:
        _check_uint(m.template_number, 8, "template_number")
        flags |= _BOLUS_TEMPLATE
        tail += _U8.pack(m.template_number)
    if m.activation_type is not None:
        _check_uint(m.activation_type, 8, "activation_type")
        flags |= _BOLUS_ACTIVATION
        tail += _U8.pack(m.activation_type)
    if m.reason_correction:
        flags |= _BOLUS_REASON_CORRECTION
    if m.reason_meal:
        flags |= _BOLUS_REASON_MEAL
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
    _reserved_flags(flags, _BOLUS_ALLOWED, opcode)
    expected = (
        _SET_BOLUS_FIXED.size
        + (2 if flags & _BOLUS_DELAY else 0)
        + (1 if flags & _BOLUS_TEMPLATE else 0)
        + (1 if flags & _BOLUS_ACTIVATION else 0)
    )
    _exact_length(operand, expected, opcode)
    _, bolus_type, _, _, duration = _SET_BOLUS_FIXED.unpack_from(operand, 0)
    fast = _read_dose(operand, 2, "fast_amount")
    extended = _read_dose(operand, 4, "extended_amount")
    offset = _SET_BOLUS_FIXED.size
    delay: int | None = None
    if flags & _BOLUS_DELAY:
        (delay,) = _U16.unpack_from(operand, offset)
        offset += 2
    template: int | None = None
    if flags & _BOLUS_TEMPLATE:
        template = operand[offset]
        offset += 1
    activation: int | None = None
    if flags & _BOLUS_ACTIVATION:
        activation = _enum_or_int(BolusActivationType, operand[offset])
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
    flags = _TBR_CHANGE if m.change_tbr else 0
    tail = b""
    if m.template_number is not None:
        _check_uint(m.template_number, 8, "template_number")
        flags |= _TBR_TEMPLATE
        tail += _U8.pack(m.template_number)
    if m.delivery_context is not None:
        _check_uint(m.delivery_context, 8, "delivery_context")
        flags |= _TBR_CONTEXT
        tail += _U8.pack(m.delivery_context)
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
    expected = _SET_TBR_FIXED.size + (1 if flags & _TBR_TEMPLATE else 0) + (1 if flags & _TBR_CONTEXT else 0)
    _exact_length(operand, expected, opcode)
    _, tbr_type, _, duration = _SET_TBR_FIXED.unpack_from(operand, 0)
    adjustment = _read_dose(operand, 2, "tbr_adjustment")
    offset = _SET_TBR_FIXED.size
    template: int | None = None
    if flags & _TBR_TEMPLATE:
        template = operand[offset]
        offset += 1
    context: int | None = None
    if flags & _TBR_CONTEXT:
        context = _enum_or_int(TbrDeliveryContext, operand[offset])
    return SetTbrAdjustment(
        _enum_or_int(TbrType, tbr_type),
        adjustment,
        duration,
        template,
        context,
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
