"""Field helpers the GATT codecs share: length and flag checks, the medical profiles' E2E-CRC, optional fields
announced by flag bits, SFLOAT and date-time fields.  One definition each; the per-service codec modules
(hrs, plxs, cgms, racp, bas, pmd, ids, idd_history, bps, hts, gls, device_info) stand on them.

Every check raises `InvalidFrame` naming the characteristic and the lengths involved, never a measured value.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Final, TypeAlias, TypeVar

from drivers.ble.sfloat import decode_sfloat, encode_sfloat
from gateway.core.errors import InvalidFrame

Buffer: TypeAlias = bytes | bytearray | memoryview
DateTimeTuple: TypeAlias = tuple[int, int, int, int, int, int]

_E = TypeVar("_E", bound=enum.IntEnum)
_F = TypeVar("_F", bound=enum.IntFlag)

U8: Final = struct.Struct("<B")
U16: Final = struct.Struct("<H")
S16: Final = struct.Struct("<h")
U32: Final = struct.Struct("<I")
DATE_TIME: Final = struct.Struct("<HBBBBB")  # year, month, day, hours, minutes, seconds


def uuid16(short: int) -> str:
    """The full lowercase 128-bit UUID string of a 16-bit Bluetooth SIG assigned number."""
    if not 0 <= short <= 0xFFFF:
        raise ValueError("a 16-bit UUID must be in [0, 0xFFFF]")
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_mcrf4xx(data: Buffer) -> int:
    """CRC-16/MCRF4XX (reflected poly 0x8408, init 0xFFFF, no final xor): the medical profiles' E2E-CRC."""
    crc = 0xFFFF
    for byte in bytes(data):
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def require_length(data: bytes, expected: int, characteristic: str) -> None:
    """Raise InvalidFrame unless the frame is exactly `expected` bytes long."""
    if len(data) < expected:
        raise InvalidFrame(
            f"{characteristic} frame truncated",
            characteristic=characteristic,
            length=len(data),
            expected=expected,
        )
    if len(data) > expected:
        raise InvalidFrame(
            f"{characteristic} frame has trailing bytes",
            characteristic=characteristic,
            length=len(data),
            expected=expected,
        )


def require_min_length(data: bytes, minimum: int, characteristic: str) -> None:
    """Raise InvalidFrame when the frame is shorter than its fixed part."""
    if len(data) < minimum:
        raise InvalidFrame(
            f"{characteristic} frame truncated",
            characteristic=characteristic,
            length=len(data),
            expected=minimum,
        )


def reject_reserved_flags(flags: int, allowed: int, characteristic: str) -> None:
    """Raise InvalidFrame when a flag bit the spec reserves is set: the layout after it is unknown."""
    if flags & ~allowed:
        raise InvalidFrame(
            f"{characteristic} has reserved flag bits set",
            characteristic=characteristic,
            reserved_bits=flags & ~allowed & 0xFF,
        )


def enum_or_int(enum_cls: type[_E], value: int) -> int:
    """The enum member for `value`, or the plain int when the spec (or a newer one) defines it elsewhere."""
    try:
        return enum_cls(value)
    except ValueError:
        return value


def check_uint(value: int, bits: int, name: str) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be an unsigned {bits}-bit integer")


# The SFLOAT's full exponent range: a glucose concentration in kg/L (95 mg/dL is 95e-5 kg/L) needs it.
SFLOAT_ALL_DECIMALS: Final = 8


def sfloat_bytes(value: float, *, max_decimals: int = 3) -> bytes:
    return U16.pack(encode_sfloat(value, max_decimals=max_decimals))


def read_u16(data: bytes, offset: int) -> int:
    # Callers have checked the length already; this is only the conversion.
    value: int = U16.unpack_from(data, offset)[0]
    return value


def read_sfloat_at(data: bytes, offset: int) -> float:
    # Callers have checked the length already; this is only the conversion.
    return decode_sfloat(read_u16(data, offset))


def read_date_time(data: bytes, offset: int, characteristic: str) -> DateTimeTuple:
    """A GSS Date Time at `offset` (length already checked); InvalidFrame when a field is out of range."""
    stamp: DateTimeTuple = DATE_TIME.unpack_from(data, offset)
    if not date_time_valid(stamp):
        raise InvalidFrame(f"{characteristic} date time out of range", characteristic=characteristic)
    return stamp


def date_time_bytes(stamp: DateTimeTuple, name: str) -> bytes:
    if len(stamp) != 6 or not date_time_valid(stamp):
        raise ValueError(f"{name} must be (year, month, day, hours, minutes, seconds) in range")
    return DATE_TIME.pack(*stamp)


def nibble(value: int, name: str) -> int:
    check_uint(value, 4, name)
    return value


def decode_feature_bits(buf: Buffer, flags: type[_F], characteristic: str) -> _F:
    """A feature characteristic: exactly one uint16 bit field."""
    data = bytes(buf)
    require_length(data, 2, characteristic)
    return flags(read_u16(data, 0))


def encode_feature_bits(features: int, characteristic: str) -> bytes:
    check_uint(int(features), 16, characteristic)
    return U16.pack(int(features))


# Optional fields announced by flag bits: (flag bit, size in octets) per field, in wire order.
FlaggedLayout: TypeAlias = tuple[tuple[int, int], ...]


def pack_flagged(layout: FlaggedLayout, values: Sequence[int | None], names: Sequence[str]) -> tuple[int, bytes]:
    """The flag bits and the bytes of the optional fields present (value not None), in the layout's order; each
    value is range-checked for its size (ValueError)."""
    flags, out = 0, b""
    for (bit, size), value, name in zip(layout, values, names, strict=True):
        if value is None:
            continue
        check_uint(value, 8 * size, name)
        flags |= bit
        out += value.to_bytes(size, "little")
    return flags, out


def flagged_size(flags: int, layout: FlaggedLayout) -> int:
    """How many octets the optional fields these flags announce take."""
    return sum(size for bit, size in layout if flags & bit)


def unpack_flagged(data: bytes, offset: int, flags: int, layout: FlaggedLayout) -> list[int | None]:
    """The optional fields the flags announce, read in order from `offset`, None where absent (the caller has
    checked the length against `flagged_size`)."""
    values: list[int | None] = []
    for bit, size in layout:
        if flags & bit:
            values.append(int.from_bytes(data[offset : offset + size], "little"))
            offset += size
        else:
            values.append(None)
    return values


def u24(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 3], "little")


def date_time_valid(ts: tuple[int, ...]) -> bool:
    year, month, day, hours, minutes, seconds = ts
    return (
        (year == 0 or 1582 <= year <= 9999)
        and 0 <= month <= 12
        and 0 <= day <= 31
        and 0 <= hours <= 23
        and 0 <= minutes <= 59
        and 0 <= seconds <= 59
    )


def member_name(enum_cls: type[enum.IntEnum], value: int) -> str | None:
    try:
        return enum_cls(value).name
    except ValueError:
        return None
