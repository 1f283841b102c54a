"""Insulin Delivery Service (IDS): the IDD Status characteristic (therapy and operational state, reservoir).

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
    crc16_mcrf4xx,
    enum_or_int,
    reject_reserved_flags,
    require_length,
    uuid16,
)
from drivers.ble.sfloat import decode_sfloat, encode_sfloat
from gateway.core.errors import InvalidFrame

_IDD_STATUS: Final = struct.Struct("<BBHB")  # therapy state, operational state, reservoir SFLOAT, flags

IDD_STATUS: Final = uuid16(0x2B21)


class TherapyControlState(enum.IntEnum):
    """IDD Status therapy control state (Hamming-distance coded values)."""

    UNDETERMINED = 0x0F
    STOP = 0x33
    PAUSE = 0x3C
    RUN = 0x55


class OperationalState(enum.IntEnum):
    """IDD Status operational state (Hamming-distance coded values)."""

    UNDETERMINED = 0x0F
    OFF = 0x33
    STANDBY = 0x3C
    PREPARING = 0x55
    PRIMING = 0x5A
    WAITING = 0x66
    READY = 0x96


_IDD_RESERVOIR_ATTACHED: Final = 0x01
_IDD_ALLOWED: Final = 0x01


@dataclass(frozen=True, slots=True)
class IddStatus:
    """IDD Status (0x2B21); states are enum members when known, plain ints otherwise."""

    therapy_control_state: int
    operational_state: int
    reservoir_remaining_iu: float
    reservoir_attached: bool
    e2e_counter: int | None = None


def decode_idd_status(buf: Buffer, *, e2e: bool) -> IddStatus:
    """Decode IDD Status; with e2e the trailing E2E-Counter and E2E-CRC are required and checked."""
    name = "idd_status"
    data = bytes(buf)
    require_length(data, _IDD_STATUS.size + (3 if e2e else 0), name)
    therapy, operational, reservoir_raw, flags = _IDD_STATUS.unpack_from(data, 0)
    reject_reserved_flags(flags, _IDD_ALLOWED, name)
    counter: int | None = None
    if e2e:
        if crc16_mcrf4xx(data[:-2]) != U16.unpack_from(data, len(data) - 2)[0]:
            raise InvalidFrame("idd_status E2E-CRC mismatch", characteristic=name)
        counter = data[_IDD_STATUS.size]
    return IddStatus(
        enum_or_int(TherapyControlState, therapy),
        enum_or_int(OperationalState, operational),
        decode_sfloat(reservoir_raw),
        bool(flags & _IDD_RESERVOIR_ATTACHED),
        counter,
    )


def encode_idd_status(s: IddStatus, *, e2e: bool) -> bytes:
    """Encode IDD Status; with e2e, e2e_counter is required and the E2E-CRC is appended."""
    check_uint(s.therapy_control_state, 8, "therapy_control_state")
    check_uint(s.operational_state, 8, "operational_state")
    out = _IDD_STATUS.pack(
        s.therapy_control_state,
        s.operational_state,
        encode_sfloat(s.reservoir_remaining_iu),
        _IDD_RESERVOIR_ATTACHED if s.reservoir_attached else 0,
    )
    if not e2e:
        if s.e2e_counter is not None:
            raise ValueError("e2e_counter given but E2E protection is off")
        return out
    if s.e2e_counter is None:
        raise ValueError("E2E protection needs an e2e_counter")
    check_uint(s.e2e_counter, 8, "e2e_counter")
    out += U8.pack(s.e2e_counter)
    return out + U16.pack(crc16_mcrf4xx(out))
