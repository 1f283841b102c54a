"""Battery Service (BAS): Battery Level.

Pure: bytes in, frozen dataclasses out, no I/O.  Decoders accept bytes, bytearray or memoryview and raise only
`InvalidFrame`; encoders (for simulators and tests) raise `ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

from typing import Final

from drivers.ble.fields import (
    U8,
    Buffer,
    require_length,
    uuid16,
)
from gateway.core.errors import InvalidFrame

BATTERY_SERVICE: Final = uuid16(0x180F)
BATTERY_LEVEL: Final = uuid16(0x2A19)


def decode_battery_level(buf: Buffer) -> int:
    """Decode Battery Level: exactly one byte, a percentage in [0, 100]."""
    name = "battery_level"
    data = bytes(buf)
    require_length(data, 1, name)
    if data[0] > 100:
        raise InvalidFrame("battery_level out of range", characteristic=name, expected="0..100")
    return data[0]


def encode_battery_level(pct: int) -> bytes:
    """Encode Battery Level from a percentage in [0, 100]."""
    if not 0 <= pct <= 100:
        raise ValueError("battery level must be in [0, 100]")
    return U8.pack(pct)
