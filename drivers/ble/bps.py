"""Blood Pressure Service (0x1810) codecs: Blood Pressure Measurement, Intermediate Cuff Pressure, Blood Pressure
Feature.  Bytes in, frozen dataclasses out.

Layouts follow the GATT Specification Supplement (GSS).  Decoders accept bytes, bytearray or memoryview and raise
only `InvalidFrame` (truncation, trailing bytes, reserved flag bits, out-of-range Date Time); error fields name the
characteristic and lengths, never a measured value.  SFLOAT specials decode as `drivers.ble.sfloat` does (NaN, NRes
and reserved give nan; +/-INFINITY give +/-inf).  Encoders exist for simulated peripherals and tests and raise
`ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

from drivers.ble.fields import (
    DATE_TIME,
    SFLOAT_ALL_DECIMALS,
    U8,
    U16,
    Buffer,
    DateTimeTuple,
    check_uint,
    date_time_bytes,
    decode_feature_bits,
    encode_feature_bits,
    read_date_time,
    read_sfloat_at,
    read_u16,
    reject_reserved_flags,
    require_length,
    require_min_length,
    sfloat_bytes,
    uuid16,
)

BLOOD_PRESSURE_SERVICE: Final = uuid16(0x1810)
BLOOD_PRESSURE_MEASUREMENT: Final = uuid16(0x2A35)
INTERMEDIATE_CUFF_PRESSURE: Final = uuid16(0x2A36)
BLOOD_PRESSURE_FEATURE: Final = uuid16(0x2A49)


class PressureUnit(enum.Enum):
    """The unit a blood pressure frame carries its pressures in (flags bit 0); values are UCUM codes."""

    MMHG = "mm[Hg]"
    KPA = "kPa"


_BP_KPA: Final = 0x01
_BP_TIME_STAMP: Final = 0x02
_BP_PULSE_RATE: Final = 0x04
_BP_USER_ID: Final = 0x08
_BP_STATUS: Final = 0x10
_BP_ALLOWED: Final = 0x1F


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """Blood Pressure Measurement (0x2A35).

    timestamp is the device's local (year, month, day, h, m, s), 0 meaning unknown; user_id 0xFF is "unknown
    user"; measurement_status is the raw bit field (bit 0 body movement, 1 cuff too loose, 2 irregular pulse,
    3-4 pulse rate range, 5 improper position).
    """

    systolic: float
    diastolic: float
    mean_arterial_pressure: float
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTimeTuple | None = None
    pulse_rate_bpm: float | None = None
    user_id: int | None = None
    measurement_status: int | None = None


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure:
    """Intermediate Cuff Pressure (0x2A36): the Blood Pressure Measurement layout, systolic read as cuff pressure."""

    current_cuff_pressure: float
    unit: PressureUnit = PressureUnit.MMHG
    timestamp: DateTimeTuple | None = None
    pulse_rate_bpm: float | None = None
    user_id: int | None = None
    measurement_status: int | None = None


@dataclass(frozen=True, slots=True)
class _BpFrame:
    flags: int
    compound: tuple[float, float, float]
    timestamp: DateTimeTuple | None
    pulse_rate: float | None
    user_id: int | None
    status: int | None


def _decode_bp_frame(buf: Buffer, name: str) -> _BpFrame:
    data = bytes(buf)
    require_min_length(data, 7, name)
    flags = data[0]
    reject_reserved_flags(flags, _BP_ALLOWED, name)
    expected = (
        7
        + (DATE_TIME.size if flags & _BP_TIME_STAMP else 0)
        + (2 if flags & _BP_PULSE_RATE else 0)
        + (1 if flags & _BP_USER_ID else 0)
        + (2 if flags & _BP_STATUS else 0)
    )
    require_length(data, expected, name)
    compound = (read_sfloat_at(data, 1), read_sfloat_at(data, 3), read_sfloat_at(data, 5))
    offset = 7
    timestamp: DateTimeTuple | None = None
    if flags & _BP_TIME_STAMP:
        timestamp = read_date_time(data, offset, name)
        offset += DATE_TIME.size
    pulse_rate: float | None = None
    if flags & _BP_PULSE_RATE:
        pulse_rate = read_sfloat_at(data, offset)
        offset += 2
    user_id: int | None = None
    if flags & _BP_USER_ID:
        user_id = data[offset]
        offset += 1
    status = read_u16(data, offset) if flags & _BP_STATUS else None
    return _BpFrame(flags, compound, timestamp, pulse_rate, user_id, status)


def _encode_bp_frame(
    unit: PressureUnit,
    compound: tuple[float, float, float],
    timestamp: DateTimeTuple | None,
    pulse_rate: float | None,
    user_id: int | None,
    status: int | None,
) -> bytes:
    flags = _BP_KPA if unit is PressureUnit.KPA else 0
    body = bytearray(b"".join(sfloat_bytes(v, max_decimals=SFLOAT_ALL_DECIMALS) for v in compound))
    if timestamp is not None:
        flags |= _BP_TIME_STAMP
        body += date_time_bytes(timestamp, "timestamp")
    if pulse_rate is not None:
        flags |= _BP_PULSE_RATE
        body += sfloat_bytes(pulse_rate, max_decimals=SFLOAT_ALL_DECIMALS)
    if user_id is not None:
        check_uint(user_id, 8, "user_id")
        flags |= _BP_USER_ID
        body += U8.pack(user_id)
    if status is not None:
        check_uint(status, 16, "measurement_status")
        flags |= _BP_STATUS
        body += U16.pack(status)
    return U8.pack(flags) + bytes(body)


def _pressure_unit(flags: int) -> PressureUnit:
    return PressureUnit.KPA if flags & _BP_KPA else PressureUnit.MMHG


def decode_blood_pressure_measurement(buf: Buffer) -> BloodPressureMeasurement:
    """Decode a Blood Pressure Measurement indication; pressures stay in the unit the flags name."""
    f = _decode_bp_frame(buf, "blood_pressure_measurement")
    return BloodPressureMeasurement(
        *f.compound, _pressure_unit(f.flags), f.timestamp, f.pulse_rate, f.user_id, f.status
    )


def encode_blood_pressure_measurement(m: BloodPressureMeasurement) -> bytes:
    """Encode a Blood Pressure Measurement with the optional fields that are set."""
    return _encode_bp_frame(
        m.unit,
        (m.systolic, m.diastolic, m.mean_arterial_pressure),
        m.timestamp,
        m.pulse_rate_bpm,
        m.user_id,
        m.measurement_status,
    )


def decode_intermediate_cuff_pressure(buf: Buffer) -> IntermediateCuffPressure:
    """Decode an Intermediate Cuff Pressure notification; the unused diastolic and MAP fields are skipped."""
    f = _decode_bp_frame(buf, "intermediate_cuff_pressure")
    return IntermediateCuffPressure(
        f.compound[0], _pressure_unit(f.flags), f.timestamp, f.pulse_rate, f.user_id, f.status
    )


def encode_intermediate_cuff_pressure(m: IntermediateCuffPressure) -> bytes:
    """Encode an Intermediate Cuff Pressure; the unused diastolic and MAP fields carry NaN as the spec requires."""
    return _encode_bp_frame(
        m.unit,
        (m.current_cuff_pressure, math.nan, math.nan),
        m.timestamp,
        m.pulse_rate_bpm,
        m.user_id,
        m.measurement_status,
    )


class BloodPressureFeature(enum.IntFlag):
    """Blood Pressure Feature (0x2A49) bits; bits a newer spec defines are kept in the value, unnamed."""

    BODY_MOVEMENT_DETECTION = 0x0001
    CUFF_FIT_DETECTION = 0x0002
    IRREGULAR_PULSE_DETECTION = 0x0004
    PULSE_RATE_RANGE_DETECTION = 0x0008
    MEASUREMENT_POSITION_DETECTION = 0x0010
    MULTIPLE_BOND = 0x0020


def decode_blood_pressure_feature(buf: Buffer) -> BloodPressureFeature:
    """Decode Blood Pressure Feature: exactly one uint16 bit field."""
    return decode_feature_bits(buf, BloodPressureFeature, "blood_pressure_feature")


def encode_blood_pressure_feature(features: int) -> bytes:
    """Encode Blood Pressure Feature from its bits."""
    return encode_feature_bits(features, "blood_pressure_feature")
