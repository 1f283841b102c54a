"""Record Access Control Point (RACP), shared by the services that keep stored records (CGMS, GLS), and the
grammar the IDD RACP reuses.

Pure: bytes in, frozen dataclasses out, no I/O.  Decoders accept bytes, bytearray or memoryview and raise only
`InvalidFrame`; encoders (for simulators and tests) raise `ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from drivers.ble.fields import (
    U8,
    U16,
    Buffer,
    check_uint,
    enum_or_int,
    member_name,
    require_length,
    require_min_length,
    uuid16,
)
from gateway.core.errors import InvalidFrame

_RACP_HEAD: Final = struct.Struct("<BB")  # opcode, operator
_RACP_CODE: Final = struct.Struct("<BBBB")  # opcode, operator, request opcode, response code
_RACP_COUNT: Final = struct.Struct("<BBH")  # opcode, operator, number of records

RECORD_ACCESS_CONTROL_POINT: Final = uuid16(0x2A52)


class RacpOpcode(enum.IntEnum):
    """Record Access Control Point op codes (CGM and Glucose profiles)."""

    REPORT_STORED_RECORDS = 0x01
    DELETE_STORED_RECORDS = 0x02
    ABORT_OPERATION = 0x03
    REPORT_NUMBER_OF_STORED_RECORDS = 0x04
    NUMBER_OF_STORED_RECORDS_RESPONSE = 0x05
    RESPONSE_CODE = 0x06


class RacpOperator(enum.IntEnum):
    """Record Access Control Point operators."""

    NULL = 0x00
    ALL_RECORDS = 0x01
    LESS_THAN_OR_EQUAL = 0x02
    GREATER_THAN_OR_EQUAL = 0x03
    WITHIN_RANGE = 0x04
    FIRST_RECORD = 0x05
    LAST_RECORD = 0x06


class RacpFilterType(enum.IntEnum):
    """Record Access Control Point filter types with a uint16 operand (CGM time offset / GLS sequence)."""

    TIME_OFFSET = 0x01


class RacpResponseCode(enum.IntEnum):
    """Record Access Control Point response code values."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_OPERATOR = 0x03
    OPERATOR_NOT_SUPPORTED = 0x04
    INVALID_OPERAND = 0x05
    NO_RECORDS_FOUND = 0x06
    ABORT_UNSUCCESSFUL = 0x07
    PROCEDURE_NOT_COMPLETED = 0x08
    OPERAND_NOT_SUPPORTED = 0x09


@dataclass(frozen=True)
class RacpGrammar:
    """What the Record Access Control Points of the profiles differ in; the rules of a request are the same.

    The generic RACP (Glucose, CGM: here) and the IDD RACP of an insulin pump (drivers.ble.idd_history) name their
    op codes, operators and response codes alike but give them other values, and differ in the operand's width;
    the IDD RACP also sends the filter type after "all", "first" and "last".  Refusals use the generic RACP's
    values in both (see drivers.ble.idd_history on why that is assumed).
    """

    label: str  # in error messages, e.g. "RACP"
    characteristic: str  # the InvalidFrame field
    opcodes: type[enum.IntEnum]
    operators: type[enum.IntEnum]
    filter_types: type[enum.IntEnum]
    codes: type[enum.IntEnum]  # the response code values, for refusals
    value: struct.Struct  # one operand value
    filter_always: bool = False  # the filter type also follows operators that take no value


_RACP_RECORD_OPCODES: Final = frozenset(
    {"REPORT_STORED_RECORDS", "DELETE_STORED_RECORDS", "REPORT_NUMBER_OF_STORED_RECORDS"}
)
# How many values each record operator takes.
_RACP_OPERAND_COUNTS: Final = {
    "ALL_RECORDS": 0,
    "FIRST_RECORD": 0,
    "LAST_RECORD": 0,
    "LESS_THAN_OR_EQUAL": 1,
    "GREATER_THAN_OR_EQUAL": 1,
    "WITHIN_RANGE": 2,
}


def _racp_request_problem(
    g: RacpGrammar, opcode: int, operator: int, filter_type: int | None, values: tuple[int, ...]
) -> tuple[int, str] | None:
    """The response code a server owes this request and why, or None when the request is well formed."""
    refusal = RacpResponseCode  # the refusal values are the generic RACP's in every grammar
    problem: tuple[int, str] | None = None
    op, oper = member_name(g.opcodes, opcode), member_name(g.operators, operator)
    wanted = _RACP_OPERAND_COUNTS.get(oper or "")
    if op == "ABORT_OPERATION":
        if oper != "NULL":
            problem = refusal.INVALID_OPERATOR, "abort takes the null operator"
        elif filter_type is not None or values:
            problem = refusal.INVALID_OPERAND, "abort takes no operand"
    elif op not in _RACP_RECORD_OPCODES:
        problem = refusal.OP_CODE_NOT_SUPPORTED, "op code is not a request"
    elif oper == "NULL":
        problem = refusal.INVALID_OPERATOR, "record op codes need a non-null operator"
    elif wanted is None:
        problem = refusal.OPERATOR_NOT_SUPPORTED, "unknown operator"
    elif wanted == 0 and not g.filter_always:
        if filter_type is not None or values:
            problem = refusal.INVALID_OPERAND, "operator takes no operand"
    elif filter_type is None:
        problem = refusal.INVALID_OPERAND, "operator needs a filter type"
    elif member_name(g.filter_types, filter_type) is None:
        problem = refusal.OPERAND_NOT_SUPPORTED, "unsupported filter type"
    elif len(values) != wanted or not all(0 <= v < 1 << 8 * g.value.size for v in values):
        problem = refusal.INVALID_OPERAND, f"operand must be {wanted} value(s) of {g.value.size} octets"
    elif wanted == 2 and values[0] > values[1]:
        problem = refusal.INVALID_OPERAND, "range minimum exceeds maximum"
    if problem is None:
        return None
    return enum_or_int(g.codes, problem[0]), problem[1]


def racp_request_bytes(
    g: RacpGrammar, opcode: int, operator: int, filter_type: int | None, values: tuple[int, ...]
) -> bytes:
    """A request's bytes under grammar `g`; ValueError for a request a server would have to refuse."""
    problem = _racp_request_problem(g, opcode, operator, filter_type, values)
    if problem is not None:
        raise ValueError(f"invalid {g.label} request: {problem[1]}")
    out = _RACP_HEAD.pack(opcode, operator)
    if filter_type is not None:
        out += U8.pack(filter_type) + b"".join(g.value.pack(v) for v in values)
    return out


def parse_racp_request(g: RacpGrammar, data: bytes) -> tuple[int, int, int | None, tuple[int, ...]]:
    """(op code, operator, filter type, values) of a request under grammar `g` (server side).

    A malformed request raises InvalidFrame whose fields carry `request_opcode` and the `response_code` the
    server should answer with, when those can be determined.
    """
    name = g.characteristic
    if not data:
        raise InvalidFrame(f"{name} frame truncated", characteristic=name, length=0, expected=2)
    opcode = enum_or_int(g.opcodes, data[0])
    if len(data) < 2:
        raise InvalidFrame(
            f"{name} has no operator",
            characteristic=name,
            length=len(data),
            expected=2,
            request_opcode=opcode,
            response_code=enum_or_int(g.codes, RacpResponseCode.INVALID_OPERATOR),
        )
    operator = enum_or_int(g.operators, data[1])
    filter_type: int | None = None
    values: tuple[int, ...] = ()
    if len(data) > 2:
        filter_type = enum_or_int(g.filter_types, data[2])
        operand = data[3:]
        if member_name(g.filter_types, filter_type) is not None:
            if len(operand) % g.value.size:
                raise InvalidFrame(
                    f"{name} operand is not a whole number of values",
                    characteristic=name,
                    length=len(data),
                    request_opcode=opcode,
                    response_code=enum_or_int(g.codes, RacpResponseCode.INVALID_OPERAND),
                )
            values = tuple(v for (v,) in g.value.iter_unpack(operand))
    problem = _racp_request_problem(g, opcode, operator, filter_type, values)
    if problem is not None:
        code, reason = problem
        raise InvalidFrame(
            f"{name} refused: {reason}",
            characteristic=name,
            length=len(data),
            request_opcode=opcode,
            response_code=code,
        )
    return opcode, operator, filter_type, values


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """A RACP request; filter_type is None and operand empty for operators that take no operand."""

    opcode: int
    operator: int
    filter_type: int | None = None
    operand: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RacpResponse:
    """A RACP response: either a response code (to request_opcode) or a number of stored records."""

    opcode: int
    operator: int
    request_opcode: int | None = None
    response_code: int | None = None
    number_of_records: int | None = None


_RACP: Final = RacpGrammar("RACP", "racp_request", RacpOpcode, RacpOperator, RacpFilterType, RacpResponseCode, U16)


def encode_racp_request(req: RacpRequest) -> bytes:
    """Encode a RACP request; raises ValueError for a request a server would have to refuse."""
    return racp_request_bytes(_RACP, req.opcode, req.operator, req.filter_type, req.operand)


def decode_racp_request(buf: Buffer) -> RacpRequest:
    """Decode a RACP request (server side); a malformed one raises InvalidFrame naming its response code."""
    return RacpRequest(*parse_racp_request(_RACP, bytes(buf)))


def encode_racp_response(resp: RacpResponse) -> bytes:
    """Encode a RACP response (number-of-records or response-code form) with the null operator."""
    if resp.operator != RacpOperator.NULL:
        raise ValueError("RACP responses use the null operator")
    if resp.opcode == RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        if resp.number_of_records is None or (resp.request_opcode, resp.response_code) != (None, None):
            raise ValueError("a number-of-records response carries only number_of_records")
        check_uint(resp.number_of_records, 16, "number_of_records")
        return _RACP_COUNT.pack(resp.opcode, resp.operator, resp.number_of_records)
    if resp.opcode == RacpOpcode.RESPONSE_CODE:
        if resp.request_opcode is None or resp.response_code is None or resp.number_of_records is not None:
            raise ValueError("a response-code response carries request_opcode and response_code only")
        check_uint(resp.request_opcode, 8, "request_opcode")
        check_uint(resp.response_code, 8, "response_code")
        return _RACP_CODE.pack(resp.opcode, resp.operator, resp.request_opcode, resp.response_code)
    raise ValueError("RACP response op code must be 5 (number of records) or 6 (response code)")


def decode_racp_response(buf: Buffer) -> RacpResponse:
    """Decode a RACP response; unknown request op codes and response code values are kept as ints."""
    name = "racp_response"
    data = bytes(buf)
    require_min_length(data, 2, name)
    opcode, operator = _RACP_HEAD.unpack_from(data, 0)
    if operator != RacpOperator.NULL:
        raise InvalidFrame("racp_response operator must be null", characteristic=name, operator=operator)
    if opcode == RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        require_length(data, _RACP_COUNT.size, name)
        _, _, count = _RACP_COUNT.unpack(data)
        return RacpResponse(RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE, RacpOperator.NULL, number_of_records=count)
    if opcode == RacpOpcode.RESPONSE_CODE:
        require_length(data, _RACP_CODE.size, name)
        _, _, request_opcode, response_code = _RACP_CODE.unpack(data)
        return RacpResponse(
            RacpOpcode.RESPONSE_CODE,
            RacpOperator.NULL,
            request_opcode=enum_or_int(RacpOpcode, request_opcode),
            response_code=enum_or_int(RacpResponseCode, response_code),
        )
    raise InvalidFrame("racp_response op code is not a response", characteristic=name, opcode=opcode)


def racp_report_records_since(time_offset_min: int) -> bytes:
    """RACP request: report stored records with time offset >= time_offset_min (minutes)."""
    return encode_racp_request(
        RacpRequest(
            RacpOpcode.REPORT_STORED_RECORDS,
            RacpOperator.GREATER_THAN_OR_EQUAL,
            RacpFilterType.TIME_OFFSET,
            (time_offset_min,),
        )
    )


def racp_report_all() -> bytes:
    """RACP request: report all stored records."""
    return _RACP_HEAD.pack(RacpOpcode.REPORT_STORED_RECORDS, RacpOperator.ALL_RECORDS)


def racp_report_number_all() -> bytes:
    """RACP request: report the number of all stored records."""
    return _RACP_HEAD.pack(RacpOpcode.REPORT_NUMBER_OF_STORED_RECORDS, RacpOperator.ALL_RECORDS)


def racp_abort() -> bytes:
    """RACP request: abort the procedure in progress."""
    return _RACP_HEAD.pack(RacpOpcode.ABORT_OPERATION, RacpOperator.NULL)
