"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) decimal numbers, little-endian as GATT carries them.

SFLOAT: 4-bit signed exponent (high nibble), 12-bit signed mantissa; value = mantissa * 10**exponent.
FLOAT: 8-bit signed exponent (high byte), 24-bit signed mantissa.  The mantissas at the very top of the
range (+max, +max-1, -max-1, -max, -max+1) are reserved for NaN, +INF, NRes, reserved and -INF; they are
special whatever the exponent, so a conforming encoder never produces them as ordinary numbers.
"""

from __future__ import annotations

import enum
import math
import struct
from fractions import Fraction
from typing import Final

from gateway.core.errors import InvalidFrame

__all__ = [
    "SfloatSpecial",
    "FloatSpecial",
    "SFLOAT_NAN",
    "SFLOAT_NRES",
    "SFLOAT_POS_INF",
    "SFLOAT_NEG_INF",
    "SFLOAT_RESERVED",
    "FLOAT_NAN",
    "FLOAT_NRES",
    "FLOAT_POS_INF",
    "FLOAT_NEG_INF",
    "FLOAT_RESERVED",
    "decode_sfloat",
    "classify_sfloat",
    "encode_sfloat",
    "decode_float",
    "classify_float",
    "encode_float",
    "read_sfloat",
    "read_float",
]


class SfloatSpecial(enum.Enum):
    """The non-numeric values an SFLOAT or FLOAT can carry."""

    NAN = "nan"
    NRES = "nres"  # "not at this resolution": the device has a value but cannot express it
    POS_INF = "+inf"
    NEG_INF = "-inf"
    RESERVED = "reserved"


# FLOAT uses the same five specials; the alias keeps call sites readable.
FloatSpecial = SfloatSpecial

SFLOAT_NAN: Final = 0x07FF
SFLOAT_NRES: Final = 0x0800
SFLOAT_POS_INF: Final = 0x07FE
SFLOAT_NEG_INF: Final = 0x0802
SFLOAT_RESERVED: Final = 0x0801

FLOAT_NAN: Final = 0x007FFFFF
FLOAT_NRES: Final = 0x00800000
FLOAT_POS_INF: Final = 0x007FFFFE
FLOAT_NEG_INF: Final = 0x00800002
FLOAT_RESERVED: Final = 0x00800001

_SFLOAT_SPECIALS: Final[dict[int, SfloatSpecial]] = {
    SFLOAT_NAN: SfloatSpecial.NAN,
    SFLOAT_NRES: SfloatSpecial.NRES,
    SFLOAT_POS_INF: SfloatSpecial.POS_INF,
    SFLOAT_NEG_INF: SfloatSpecial.NEG_INF,
    SFLOAT_RESERVED: SfloatSpecial.RESERVED,
}
_FLOAT_SPECIALS: Final[dict[int, SfloatSpecial]] = {
    FLOAT_NAN: SfloatSpecial.NAN,
    FLOAT_NRES: SfloatSpecial.NRES,
    FLOAT_POS_INF: SfloatSpecial.POS_INF,
    FLOAT_NEG_INF: SfloatSpecial.NEG_INF,
    FLOAT_RESERVED: SfloatSpecial.RESERVED,
}
_SPECIAL_VALUES: Final[dict[SfloatSpecial, float]] = {
    SfloatSpecial.NAN: math.nan,
    SfloatSpecial.NRES: math.nan,
    SfloatSpecial.RESERVED: math.nan,
    SfloatSpecial.POS_INF: math.inf,
    SfloatSpecial.NEG_INF: -math.inf,
}

_SFLOAT_MANTISSA_BITS: Final = 12
_SFLOAT_EXPONENT_BITS: Final = 4
_FLOAT_MANTISSA_BITS: Final = 24
_FLOAT_EXPONENT_BITS: Final = 8

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")


def _to_signed(value: int, bits: int) -> int:
    """Two's-complement interpretation of an unsigned `bits`-wide field."""
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _scale(mantissa: int, exponent: int) -> float:
    """mantissa * 10**exponent, correctly rounded (so 975e-1 is exactly the float literal 97.5)."""
    # Multiplying by a float 0.1 would round twice; int / int true division rounds once.
    if exponent >= 0:
        multiplier: int = 10**exponent
        return float(mantissa * multiplier)
    divisor: int = 10**-exponent
    return mantissa / divisor


def _check_raw(raw: int, bits: int) -> None:
    if not 0 <= raw < 1 << bits:
        raise ValueError(f"raw value must be an unsigned {bits}-bit integer")


def _classify(raw: int, mantissa_bits: int, specials: dict[int, SfloatSpecial]) -> SfloatSpecial | None:
    return specials.get(raw & ((1 << mantissa_bits) - 1))


def _decode(raw: int, mantissa_bits: int, exponent_bits: int, specials: dict[int, SfloatSpecial]) -> float:
    special = _classify(raw, mantissa_bits, specials)
    if special is not None:
        return _SPECIAL_VALUES[special]
    mantissa = _to_signed(raw & ((1 << mantissa_bits) - 1), mantissa_bits)
    exponent = _to_signed(raw >> mantissa_bits, exponent_bits)
    return _scale(mantissa, exponent)


def _encode(
    value: float,
    *,
    max_decimals: int,
    mantissa_bits: int,
    exponent_bits: int,
    nan: int,
    pos_inf: int,
    neg_inf: int,
) -> int:
    if math.isnan(value):
        return nan
    if math.isinf(value):
        return pos_inf if value > 0 else neg_inf
    exponent_min = -(1 << (exponent_bits - 1))
    exponent_max = (1 << (exponent_bits - 1)) - 1
    if not 0 <= max_decimals <= -exponent_min:
        raise ValueError(f"max_decimals must be in [0, {-exponent_min}]")
    # The top three and bottom two mantissas are the specials, never ordinary numbers.
    mantissa_max = (1 << (mantissa_bits - 1)) - 3
    exact = Fraction(value)

    def pack(mantissa: int, exponent: int) -> int:
        return ((exponent & ((1 << exponent_bits) - 1)) << mantissa_bits) | (mantissa & ((1 << mantissa_bits) - 1))

    # First an exact representation, preferring exponent 0, then more decimals, then coarser powers of ten,
    # so integers stay integers on the wire and 97.5 becomes 975e-1.
    candidates = [*range(0, -max_decimals - 1, -1), *range(1, exponent_max + 1)]
    for exponent in candidates:
        mantissa = round(exact / Fraction(10) ** exponent)
        if abs(mantissa) <= mantissa_max and _scale(mantissa, exponent) == value:
            return pack(mantissa, exponent)
        if exponent > 0 and mantissa == 0:
            break  # every coarser exponent also rounds to zero
    # Otherwise the finest resolution whose mantissa fits: the nearest representable value.
    for exponent in range(-max_decimals, exponent_max + 1):
        mantissa = round(exact / Fraction(10) ** exponent)
        if abs(mantissa) <= mantissa_max:
            return pack(mantissa, exponent)
    raise ValueError("value is too large in magnitude for this format")


def classify_sfloat(raw: int) -> SfloatSpecial | None:
    """The special value an unsigned 16-bit SFLOAT denotes, or None when it is an ordinary number."""
    _check_raw(raw, 16)
    return _classify(raw, _SFLOAT_MANTISSA_BITS, _SFLOAT_SPECIALS)


def decode_sfloat(raw: int) -> float:
    """The value of an unsigned 16-bit SFLOAT; NaN, NRes and reserved give nan, +/-INF give +/-inf."""
    _check_raw(raw, 16)
    return _decode(raw, _SFLOAT_MANTISSA_BITS, _SFLOAT_EXPONENT_BITS, _SFLOAT_SPECIALS)


def encode_sfloat(value: float, *, max_decimals: int = 3) -> int:
    """The unsigned 16-bit SFLOAT for `value`: exact when possible, else the nearest with <= max_decimals.

    nan -> NaN, +/-inf -> +/-INF; raises ValueError when the magnitude exceeds the format's range.
    """
    return _encode(
        value,
        max_decimals=max_decimals,
        mantissa_bits=_SFLOAT_MANTISSA_BITS,
        exponent_bits=_SFLOAT_EXPONENT_BITS,
        nan=SFLOAT_NAN,
        pos_inf=SFLOAT_POS_INF,
        neg_inf=SFLOAT_NEG_INF,
    )


def classify_float(raw: int) -> SfloatSpecial | None:
    """The special value an unsigned 32-bit FLOAT denotes, or None when it is an ordinary number."""
    _check_raw(raw, 32)
    return _classify(raw, _FLOAT_MANTISSA_BITS, _FLOAT_SPECIALS)


def decode_float(raw: int) -> float:
    """The value of an unsigned 32-bit FLOAT; NaN, NRes and reserved give nan, +/-INF give +/-inf."""
    _check_raw(raw, 32)
    return _decode(raw, _FLOAT_MANTISSA_BITS, _FLOAT_EXPONENT_BITS, _FLOAT_SPECIALS)


def encode_float(value: float, *, max_decimals: int = 6) -> int:
    """The unsigned 32-bit FLOAT for `value`: exact when possible, else the nearest with <= max_decimals.

    nan -> NaN, +/-inf -> +/-INF; raises ValueError when the magnitude exceeds the format's range.
    """
    return _encode(
        value,
        max_decimals=max_decimals,
        mantissa_bits=_FLOAT_MANTISSA_BITS,
        exponent_bits=_FLOAT_EXPONENT_BITS,
        nan=FLOAT_NAN,
        pos_inf=FLOAT_POS_INF,
        neg_inf=FLOAT_NEG_INF,
    )


def read_sfloat(buf: bytes | bytearray | memoryview, offset: int) -> float:
    """Decode the little-endian SFLOAT at `offset`; raises InvalidFrame when the buffer is too short."""
    if offset < 0 or offset + _U16.size > len(buf):
        raise InvalidFrame("SFLOAT field truncated", offset=offset, length=len(buf), expected=offset + 2)
    return decode_sfloat(_U16.unpack_from(buf, offset)[0])


def read_float(buf: bytes | bytearray | memoryview, offset: int) -> float:
    """Decode the little-endian FLOAT at `offset`; raises InvalidFrame when the buffer is too short."""
    if offset < 0 or offset + _U32.size > len(buf):
        raise InvalidFrame("FLOAT field truncated", offset=offset, length=len(buf), expected=offset + 4)
    return decode_float(_U32.unpack_from(buf, offset)[0])
