"""Pulse Oximeter Service (PLXS): continuous and spot-check measurements.

Pure: bytes in, frozen dataclasses out, no I/O.  Decoders accept bytes, bytearray or memoryview and raise only
`InvalidFrame`; encoders (for simulators and tests) raise `ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from drivers.ble.fields import (
    DATE_TIME,
    U8,
    U16,
    Buffer,
    DateTimeTuple,
    check_uint,
    date_time_valid,
    read_sfloat_at,
    reject_reserved_flags,
    require_length,
    require_min_length,
    sfloat_bytes,
    u24,
    uuid16,
)
from gateway.core.errors import InvalidFrame

PULSE_OXIMETER_SERVICE: Final = uuid16(0x1822)
PLX_SPOT_CHECK_MEASUREMENT: Final = uuid16(0x2A5E)
PLX_CONTINUOUS_MEASUREMENT: Final = uuid16(0x2A5F)
PLX_FEATURES: Final = uuid16(0x2A60)


_PLXC_FAST: Final = 0x01
_PLXC_SLOW: Final = 0x02
_PLXC_STATUS: Final = 0x04
_PLXC_DEVICE_STATUS: Final = 0x08
_PLXC_PAI: Final = 0x10
_PLXC_ALLOWED: Final = 0x1F

_PLXS_TIMESTAMP: Final = 0x01
_PLXS_STATUS: Final = 0x02
_PLXS_DEVICE_STATUS: Final = 0x04
_PLXS_PAI: Final = 0x08
_PLXS_CLOCK_NOT_SET: Final = 0x10
_PLXS_ALLOWED: Final = 0x1F


@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement:
    """PLX Continuous Measurement (0x2A5F), SpO2PR-Normal only; statuses are the raw bit fields."""

    spo2_pct: float
    pulse_rate_bpm: float
    pulse_amplitude_index_pct: float | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None


@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement:
    """PLX Spot-check Measurement (0x2A5E); timestamp is (year, month, day, h, m, s), 0 meaning unknown."""

    spo2_pct: float
    pulse_rate_bpm: float
    timestamp: DateTimeTuple | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index_pct: float | None = None
    device_clock_not_set: bool = False


def decode_plx_continuous(buf: Buffer) -> PlxContinuousMeasurement:
    """Decode a PLX Continuous Measurement; the Fast and Slow SpO2PR fields are validated and skipped."""
    name = "plx_continuous"
    data = bytes(buf)
    require_min_length(data, 5, name)
    flags = data[0]
    reject_reserved_flags(flags, _PLXC_ALLOWED, name)
    expected = (
        5
        + (4 if flags & _PLXC_FAST else 0)
        + (4 if flags & _PLXC_SLOW else 0)
        + (2 if flags & _PLXC_STATUS else 0)
        + (3 if flags & _PLXC_DEVICE_STATUS else 0)
        + (2 if flags & _PLXC_PAI else 0)
    )
    require_length(data, expected, name)
    spo2 = read_sfloat_at(data, 1)
    pulse_rate = read_sfloat_at(data, 3)
    offset = 5
    offset += 4 if flags & _PLXC_FAST else 0
    offset += 4 if flags & _PLXC_SLOW else 0
    status: int | None = None
    if flags & _PLXC_STATUS:
        status = U16.unpack_from(data, offset)[0]
        offset += 2
    device_status: int | None = None
    if flags & _PLXC_DEVICE_STATUS:
        device_status = u24(data, offset)
        offset += 3
    pai = read_sfloat_at(data, offset) if flags & _PLXC_PAI else None
    return PlxContinuousMeasurement(spo2, pulse_rate, pai, status, device_status)


def encode_plx_continuous(m: PlxContinuousMeasurement) -> bytes:
    """Encode a PLX Continuous Measurement carrying SpO2PR-Normal and the optional fields that are set."""
    flags = 0
    body = bytearray(sfloat_bytes(m.spo2_pct) + sfloat_bytes(m.pulse_rate_bpm))
    if m.measurement_status is not None:
        check_uint(m.measurement_status, 16, "measurement_status")
        flags |= _PLXC_STATUS
        body += U16.pack(m.measurement_status)
    if m.device_sensor_status is not None:
        check_uint(m.device_sensor_status, 24, "device_sensor_status")
        flags |= _PLXC_DEVICE_STATUS
        body += m.device_sensor_status.to_bytes(3, "little")
    if m.pulse_amplitude_index_pct is not None:
        flags |= _PLXC_PAI
        body += sfloat_bytes(m.pulse_amplitude_index_pct)
    return U8.pack(flags) + bytes(body)


def decode_plx_spot_check(buf: Buffer) -> PlxSpotCheckMeasurement:
    """Decode a PLX Spot-check Measurement; an out-of-range Date Time field is an invalid frame."""
    name = "plx_spot_check"
    data = bytes(buf)
    require_min_length(data, 5, name)
    flags = data[0]
    reject_reserved_flags(flags, _PLXS_ALLOWED, name)
    expected = (
        5
        + (DATE_TIME.size if flags & _PLXS_TIMESTAMP else 0)
        + (2 if flags & _PLXS_STATUS else 0)
        + (3 if flags & _PLXS_DEVICE_STATUS else 0)
        + (2 if flags & _PLXS_PAI else 0)
    )
    require_length(data, expected, name)
    spo2 = read_sfloat_at(data, 1)
    pulse_rate = read_sfloat_at(data, 3)
    offset = 5
    timestamp: DateTimeTuple | None = None
    if flags & _PLXS_TIMESTAMP:
        timestamp = DATE_TIME.unpack_from(data, offset)
        offset += DATE_TIME.size
        if not date_time_valid(timestamp):
            raise InvalidFrame("plx_spot_check timestamp field out of range", characteristic=name)
    status: int | None = None
    if flags & _PLXS_STATUS:
        status = U16.unpack_from(data, offset)[0]
        offset += 2
    device_status: int | None = None
    if flags & _PLXS_DEVICE_STATUS:
        device_status = u24(data, offset)
        offset += 3
    pai = read_sfloat_at(data, offset) if flags & _PLXS_PAI else None
    return PlxSpotCheckMeasurement(
        spo2, pulse_rate, timestamp, status, device_status, pai, bool(flags & _PLXS_CLOCK_NOT_SET)
    )


def encode_plx_spot_check(m: PlxSpotCheckMeasurement) -> bytes:
    """Encode a PLX Spot-check Measurement with the optional fields that are set."""
    flags = _PLXS_CLOCK_NOT_SET if m.device_clock_not_set else 0
    body = bytearray(sfloat_bytes(m.spo2_pct) + sfloat_bytes(m.pulse_rate_bpm))
    if m.timestamp is not None:
        if len(m.timestamp) != 6 or not date_time_valid(m.timestamp):
            raise ValueError("timestamp must be (year, month, day, hours, minutes, seconds) in range")
        flags |= _PLXS_TIMESTAMP
        body += DATE_TIME.pack(*m.timestamp)
    if m.measurement_status is not None:
        check_uint(m.measurement_status, 16, "measurement_status")
        flags |= _PLXS_STATUS
        body += U16.pack(m.measurement_status)
    if m.device_sensor_status is not None:
        check_uint(m.device_sensor_status, 24, "device_sensor_status")
        flags |= _PLXS_DEVICE_STATUS
        body += m.device_sensor_status.to_bytes(3, "little")
    if m.pulse_amplitude_index_pct is not None:
        flags |= _PLXS_PAI
        body += sfloat_bytes(m.pulse_amplitude_index_pct)
    return U8.pack(flags) + bytes(body)
