"""Register values to engineering units and back, per a point's data type, word and byte order, scale and offset.

Pure.  Modbus registers are 16-bit big-endian on the wire; devices differ in the order of the two registers of
a 32-bit value (word order) and some swap the bytes inside a register (byte order).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

from drivers.modbus.profile import Point

_FORMATS = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def raw_value(point: Point, words: Sequence[int]) -> float:
    """The point's raw number from its registers (exactly point.width of them), before scale and offset."""
    if point.type == "bool":
        return 1.0 if words[0] else 0.0
    regs = [_swap(w) if point.byte_order == "little" else w for w in words[: point.width]]
    if point.word_order == "little":
        regs.reverse()
    data = b"".join(r.to_bytes(2, "big") for r in regs)
    (value,) = struct.unpack(_FORMATS[point.type], data)
    return float(value)


def decoder(point: Point) -> Callable[[Sequence[int], int], float]:
    """A function (registers, index of the point's first register) -> engineering value, prepared once per point.

    16-bit registers in Modbus's own byte order (the common case, and the hot path of a fast poll) skip the
    general decoding; everything else goes through `engineering_value`.
    """
    scale, offset = point.scale, point.offset
    if point.type == "uint16" and point.byte_order == "big":
        return lambda words, at: words[at] * scale + offset
    if point.type == "int16" and point.byte_order == "big":
        return lambda words, at: ((words[at] ^ 0x8000) - 0x8000) * scale + offset
    width = point.width
    return lambda words, at: engineering_value(point, words[at : at + width])


def engineering_value(point: Point, words: Sequence[int]) -> float:
    """The point's value in its unit: raw * scale + offset (NaN stays NaN: a float32 device's 'no value')."""
    return raw_value(point, words) * point.scale + point.offset


def encode_value(point: Point, value: float) -> list[int]:
    """Registers that make the point read `value` (for writes); ValueError if it does not fit exactly."""
    if not math.isfinite(value):
        raise ValueError("a written value must be finite")
    raw = (value - point.offset) / point.scale
    if point.type == "bool":
        if raw not in (0.0, 1.0):
            raise ValueError("a bool point takes 0 or 1")
        return [int(raw)]
    if point.type == "float32":
        data = struct.pack(">f", raw)
    else:
        rounded = round(raw)
        if not math.isclose(rounded, raw, abs_tol=1e-9):
            raise ValueError("value is not a whole number of the register's steps")
        try:
            data = struct.pack(_FORMATS[point.type], rounded)
        except struct.error:
            raise ValueError("value out of the register's range") from None
    regs = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if point.word_order == "little":
        regs.reverse()
    return [_swap(r) if point.byte_order == "little" else r for r in regs]
