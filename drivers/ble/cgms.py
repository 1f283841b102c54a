"""Continuous Glucose Monitoring Service (CGMS): measurements (with E2E-CRC), CGM Feature, Session Start Time.

Pure: bytes in, frozen dataclasses out, no I/O.  Decoders accept bytes, bytearray or memoryview and raise only
`InvalidFrame`; encoders (for simulators and tests) raise `ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from drivers.ble.fields import (
    U8,
    U16,
    Buffer,
    check_uint,
    crc16_mcrf4xx,
    date_time_valid,
    read_sfloat_at,
    reject_reserved_flags,
    require_length,
    require_min_length,
    sfloat_bytes,
    uuid16,
)
from drivers.ble.sfloat import decode_sfloat, encode_sfloat
from gateway.core.errors import InvalidFrame

_CGM_HEAD: Final = struct.Struct("<BBHH")  # size, flags, glucose SFLOAT, time offset

CGM_SERVICE: Final = uuid16(0x181F)
CGM_MEASUREMENT: Final = uuid16(0x2AA7)
CGM_FEATURE: Final = uuid16(0x2AA8)
CGM_STATUS: Final = uuid16(0x2AA9)
CGM_SESSION_START_TIME: Final = uuid16(0x2AAA)
CGM_SESSION_RUN_TIME: Final = uuid16(0x2AAB)
CGM_SPECIFIC_OPS_CONTROL_POINT: Final = uuid16(0x2AAC)


_CGM_TREND: Final = 0x01
_CGM_QUALITY: Final = 0x02
_CGM_WARNING_OCTET: Final = 0x20
_CGM_CAL_TEMP_OCTET: Final = 0x40
_CGM_STATUS_OCTET: Final = 0x80
_CGM_ALLOWED: Final = 0xE3


@dataclass(frozen=True, slots=True)
class CgmMeasurement:
    """One CGM Measurement record (0x2AA7).

    sensor_status combines the annunciation octets present: status in bits 0-7, cal/temp in 8-15, warning in
    16-23 (absent octets read as 0); None when the record carries none.
    """

    glucose_mg_dl: float
    time_offset_min: int
    sensor_status: int | None = None
    trend_mg_dl_min: float | None = None
    quality_pct: float | None = None


def _cgm_record_length(flags: int, e2e_crc: bool) -> int:
    return (
        _CGM_HEAD.size
        + (1 if flags & _CGM_STATUS_OCTET else 0)
        + (1 if flags & _CGM_CAL_TEMP_OCTET else 0)
        + (1 if flags & _CGM_WARNING_OCTET else 0)
        + (2 if flags & _CGM_TREND else 0)
        + (2 if flags & _CGM_QUALITY else 0)
        + (2 if e2e_crc else 0)
    )


def decode_cgm_measurements(buf: Buffer, *, e2e_crc: bool) -> list[CgmMeasurement]:
    """Decode the one or more CGM Measurement records of a notification, checking each size and E2E-CRC."""
    name = "cgm_measurement"
    data = bytes(buf)
    require_min_length(data, 2, name)
    records: list[CgmMeasurement] = []
    offset = 0
    while offset < len(data):
        index = len(records)
        if len(data) - offset < 2:
            raise InvalidFrame("cgm_measurement record truncated", characteristic=name, record=index, length=len(data))
        size, flags = data[offset], data[offset + 1]
        reject_reserved_flags(flags, _CGM_ALLOWED, name)
        expected = _cgm_record_length(flags, e2e_crc)
        # The size field is the only record delimiter; a mismatch means the stream cannot be trusted.
        if size != expected:
            raise InvalidFrame(
                "cgm_measurement size field disagrees with its flags",
                characteristic=name,
                record=index,
                size=size,
                expected=expected,
            )
        if len(data) - offset < size:
            raise InvalidFrame(
                "cgm_measurement record truncated",
                characteristic=name,
                record=index,
                length=len(data) - offset,
                expected=size,
            )
        record = data[offset : offset + size]
        offset += size
        if e2e_crc and crc16_mcrf4xx(record[:-2]) != U16.unpack_from(record, size - 2)[0]:
            raise InvalidFrame("cgm_measurement E2E-CRC mismatch", characteristic=name, record=index)
        _, _, glucose_raw, time_offset = _CGM_HEAD.unpack_from(record, 0)
        pos = _CGM_HEAD.size
        status: int | None = None
        if flags & (_CGM_STATUS_OCTET | _CGM_CAL_TEMP_OCTET | _CGM_WARNING_OCTET):
            status = 0
            # Wire order is status, cal/temp, warning: the reverse of the flag bit order.
            for bit, shift in ((_CGM_STATUS_OCTET, 0), (_CGM_CAL_TEMP_OCTET, 8), (_CGM_WARNING_OCTET, 16)):
                if flags & bit:
                    status |= record[pos] << shift
                    pos += 1
        trend: float | None = None
        if flags & _CGM_TREND:
            trend = read_sfloat_at(record, pos)
            pos += 2
        quality = read_sfloat_at(record, pos) if flags & _CGM_QUALITY else None
        records.append(CgmMeasurement(decode_sfloat(glucose_raw), time_offset, status, trend, quality))
    return records


def encode_cgm_measurement(m: CgmMeasurement, *, e2e_crc: bool) -> bytes:
    """Encode one CGM Measurement record (size byte included, E2E-CRC appended when e2e_crc)."""
    check_uint(m.time_offset_min, 16, "time_offset_min")
    flags = 0
    octets = bytearray()
    if m.sensor_status is not None:
        check_uint(m.sensor_status, 24, "sensor_status")
        status_octet = m.sensor_status & 0xFF
        cal_temp_octet = (m.sensor_status >> 8) & 0xFF
        warning_octet = (m.sensor_status >> 16) & 0xFF
        # Send only the octets with something to say, but at least one so "all clear" is not "absent".
        if status_octet or not m.sensor_status:
            flags |= _CGM_STATUS_OCTET
            octets.append(status_octet)
        if cal_temp_octet:
            flags |= _CGM_CAL_TEMP_OCTET
            octets.append(cal_temp_octet)
        if warning_octet:
            flags |= _CGM_WARNING_OCTET
            octets.append(warning_octet)
    tail = bytearray()
    if m.trend_mg_dl_min is not None:
        flags |= _CGM_TREND
        tail += sfloat_bytes(m.trend_mg_dl_min)
    if m.quality_pct is not None:
        flags |= _CGM_QUALITY
        tail += sfloat_bytes(m.quality_pct)
    size = _cgm_record_length(flags, e2e_crc)
    record = _CGM_HEAD.pack(size, flags, encode_sfloat(m.glucose_mg_dl), m.time_offset_min) + octets + tail
    if e2e_crc:
        record += U16.pack(crc16_mcrf4xx(record))
    return bytes(record)


CGM_FEATURE_E2E_CRC: Final = 1 << 12  # CGM Feature bit: E2E-CRC supported (on measurements, session times, ...)
_CGM_FEATURE_CRC_ABSENT: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class CgmFeature:
    """CGM Feature (0x2AA8): the 24-bit feature field, type and sample location nibbles."""

    features: int
    cgm_type: int
    sample_location: int

    @property
    def e2e_crc(self) -> bool:
        """Whether the sensor protects its measurements (and this characteristic) with an E2E-CRC."""
        return bool(self.features & CGM_FEATURE_E2E_CRC)


def decode_cgm_feature(buf: Buffer) -> CgmFeature:
    """Decode CGM Feature: 3-byte features, type/location octet, E2E-CRC (0xFFFF when not supported)."""
    name = "cgm_feature"
    data = bytes(buf)
    require_length(data, 6, name)
    features = int.from_bytes(data[:3], "little")
    crc = U16.unpack_from(data, 4)[0]
    if features & CGM_FEATURE_E2E_CRC and crc16_mcrf4xx(data[:4]) != crc:
        raise InvalidFrame("cgm_feature E2E-CRC mismatch", characteristic=name)
    return CgmFeature(features, data[3] & 0x0F, data[3] >> 4)


def encode_cgm_feature(feature: CgmFeature) -> bytes:
    check_uint(feature.features, 24, "features")
    check_uint(feature.cgm_type, 4, "cgm_type")
    check_uint(feature.sample_location, 4, "sample_location")
    body = feature.features.to_bytes(3, "little") + U8.pack(feature.sample_location << 4 | feature.cgm_type)
    crc = crc16_mcrf4xx(body) if feature.e2e_crc else _CGM_FEATURE_CRC_ABSENT
    return body + U16.pack(crc)


_SESSION_START: Final = struct.Struct("<HBBBBBbB")  # Date Time, time zone (15 min units), DST offset code
_TIME_ZONE_UNKNOWN: Final = -128
_DST_UNKNOWN: Final = 255
_DST_OFFSET_MIN: Final[dict[int, int]] = {0: 0, 2: 30, 4: 60, 8: 120}
_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S: Final = 1_000_000_000


def decode_cgm_session_start_time(buf: Buffer, *, e2e_crc: bool | None = None) -> int | None:
    """CGM Session Start Time (0x2AAA) as Unix ns (UTC); None when the date, time zone or DST is unknown.

    e2e_crc None accepts both lengths and checks the E2E-CRC when the 11-byte form arrives.
    """
    name = "cgm_session_start_time"
    data = bytes(buf)
    if e2e_crc is None:
        e2e_crc = len(data) == _SESSION_START.size + 2
    require_length(data, _SESSION_START.size + (2 if e2e_crc else 0), name)
    if e2e_crc and crc16_mcrf4xx(data[:-2]) != U16.unpack_from(data, len(data) - 2)[0]:
        raise InvalidFrame("cgm_session_start_time E2E-CRC mismatch", characteristic=name)
    year, month, day, hours, minutes, seconds, zone, dst = _SESSION_START.unpack_from(data, 0)
    if not date_time_valid((year, month, day, hours, minutes, seconds)):
        raise InvalidFrame("cgm_session_start_time date time out of range", characteristic=name)
    if zone != _TIME_ZONE_UNKNOWN and not -48 <= zone <= 56:
        raise InvalidFrame("cgm_session_start_time time zone reserved", characteristic=name)
    if dst != _DST_UNKNOWN and dst not in _DST_OFFSET_MIN:
        raise InvalidFrame("cgm_session_start_time DST offset reserved", characteristic=name)
    if 0 in (year, month, day) or zone == _TIME_ZONE_UNKNOWN or dst == _DST_UNKNOWN:
        # A local time with an unknown offset cannot be placed on the UTC axis; a guess would be wrong.
        return None
    try:
        local = datetime(year, month, day, hours, minutes, seconds, tzinfo=UTC)
    except ValueError:
        raise InvalidFrame("cgm_session_start_time is not a calendar date", characteristic=name) from None
    # Local time = UTC + time zone + DST offset (Bluetooth Local Time Information).
    utc = local - timedelta(minutes=zone * 15 + _DST_OFFSET_MIN[dst])
    return (utc - _UNIX_EPOCH) // timedelta(seconds=1) * _NS_PER_S


def encode_cgm_session_start_time(
    unix_ns: int, *, time_zone_quarter_hours: int = 0, dst_offset_code: int = 0, e2e_crc: bool = False
) -> bytes:
    """Encode CGM Session Start Time from Unix ns (floored to whole seconds) as local time in that zone."""
    if not -48 <= time_zone_quarter_hours <= 56:
        raise ValueError("time zone must be in [-48, 56] quarter hours")
    if dst_offset_code not in _DST_OFFSET_MIN:
        raise ValueError("DST offset code must be 0, 2, 4 or 8")
    offset = timedelta(minutes=time_zone_quarter_hours * 15 + _DST_OFFSET_MIN[dst_offset_code])
    try:
        local = _UNIX_EPOCH + timedelta(seconds=unix_ns // _NS_PER_S) + offset
    except OverflowError:
        raise ValueError("time is outside the Date Time range") from None
    if not 1582 <= local.year <= 9999:
        raise ValueError("time is outside the Date Time range")
    out = _SESSION_START.pack(
        local.year,
        local.month,
        local.day,
        local.hour,
        local.minute,
        local.second,
        time_zone_quarter_hours,
        dst_offset_code,
    )
    return out + U16.pack(crc16_mcrf4xx(out)) if e2e_crc else out
