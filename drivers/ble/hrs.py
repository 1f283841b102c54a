"""Heart Rate Service (HRS): the Heart Rate Measurement characteristic.

Pure: bytes in, frozen dataclasses out, no I/O.  Decoders accept bytes, bytearray or memoryview and raise only
`InvalidFrame`; encoders (for simulators and tests) raise `ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from drivers.ble.fields import (
    U8,
    U16,
    Buffer,
    check_uint,
    reject_reserved_flags,
    require_length,
    require_min_length,
    uuid16,
)
from gateway.core.errors import InvalidFrame

HEART_RATE_SERVICE: Final = uuid16(0x180D)
HEART_RATE_MEASUREMENT: Final = uuid16(0x2A37)
BODY_SENSOR_LOCATION: Final = uuid16(0x2A38)


_HR_UINT16: Final = 0x01
_HR_CONTACT_MASK: Final = 0x06
_HR_ENERGY: Final = 0x08
_HR_RR: Final = 0x10
_HR_ALLOWED: Final = 0x1F


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """Heart Rate Measurement (0x2A37); sensor_contact is None when the sensor does not report contact."""

    heart_rate_bpm: int
    sensor_contact: bool | None = None
    energy_expended_kj: int | None = None
    rr_intervals_ms: tuple[float, ...] = ()


def decode_heart_rate_measurement(buf: Buffer) -> HeartRateMeasurement:
    """Decode a Heart Rate Measurement notification; RR intervals are converted from 1/1024 s to ms."""
    name = "heart_rate_measurement"
    data = bytes(buf)
    require_min_length(data, 2, name)
    flags = data[0]
    reject_reserved_flags(flags, _HR_ALLOWED, name)
    fixed = 1 + (2 if flags & _HR_UINT16 else 1) + (2 if flags & _HR_ENERGY else 0)
    if flags & _HR_RR:
        # The RR field runs to the end of the frame; a present field holds at least one whole uint16.
        require_min_length(data, fixed + 2, name)
        if (len(data) - fixed) % 2:
            raise InvalidFrame(
                "heart_rate_measurement RR-interval field is not a whole number of uint16",
                characteristic=name,
                length=len(data),
                expected=f"{fixed}+2n",
            )
    else:
        require_length(data, fixed, name)
    offset = 1
    if flags & _HR_UINT16:
        heart_rate = U16.unpack_from(data, offset)[0]
        offset += 2
    else:
        heart_rate = data[offset]
        offset += 1
    contact_bits = (flags & _HR_CONTACT_MASK) >> 1
    # 0b0x: contact detection not supported; 0b10: supported, no contact; 0b11: supported, contact.
    sensor_contact = None if contact_bits < 2 else contact_bits == 3
    energy: int | None = None
    if flags & _HR_ENERGY:
        energy = U16.unpack_from(data, offset)[0]
        offset += 2
    rr = tuple(raw * 1000 / 1024 for (raw,) in U16.iter_unpack(data[offset:])) if flags & _HR_RR else ()
    return HeartRateMeasurement(heart_rate, sensor_contact, energy, rr)


def encode_heart_rate_measurement(m: HeartRateMeasurement) -> bytes:
    """Encode a Heart Rate Measurement; uint8 heart rate when it fits, RR ms rounded to 1/1024 s."""
    check_uint(m.heart_rate_bpm, 16, "heart_rate_bpm")
    flags = 0
    body = bytearray()
    if m.heart_rate_bpm < 256:
        body += U8.pack(m.heart_rate_bpm)
    else:
        flags |= _HR_UINT16
        body += U16.pack(m.heart_rate_bpm)
    if m.sensor_contact is not None:
        flags |= 0x06 if m.sensor_contact else 0x04
    if m.energy_expended_kj is not None:
        check_uint(m.energy_expended_kj, 16, "energy_expended_kj")
        flags |= _HR_ENERGY
        body += U16.pack(m.energy_expended_kj)
    if m.rr_intervals_ms:
        flags |= _HR_RR
        for ms in m.rr_intervals_ms:
            if not math.isfinite(ms):
                raise ValueError("rr_intervals_ms must be finite")
            raw = round(ms * 1024 / 1000)
            check_uint(raw, 16, "rr_interval (1/1024 s)")
            body += U16.pack(raw)
    return U8.pack(flags) + bytes(body)
