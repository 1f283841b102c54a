"""Pure codecs for the GATT characteristics the gateway reads: bytes in, frozen dataclasses out, no I/O.

Every decoder accepts bytes, bytearray or memoryview and raises only `InvalidFrame` on malformed input
(truncation, trailing bytes the spec does not allow, reserved flag bits, bad E2E-CRC).  Error fields name the
characteristic and the lengths involved, never a measured value.  Encoders exist for simulators and tests and
raise `ValueError` when given values the wire format cannot carry.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from drivers.ble.sfloat import decode_sfloat, encode_sfloat
from gateway.core.errors import InvalidFrame

__all__ = [
    # UUIDs
    "uuid16",
    "HEART_RATE_SERVICE",
    "PULSE_OXIMETER_SERVICE",
    "CGM_SERVICE",
    "INSULIN_DELIVERY_SERVICE",
    "BATTERY_SERVICE",
    "DEVICE_INFORMATION_SERVICE",
    "HEART_RATE_MEASUREMENT",
    "BODY_SENSOR_LOCATION",
    "PLX_SPOT_CHECK_MEASUREMENT",
    "PLX_CONTINUOUS_MEASUREMENT",
    "PLX_FEATURES",
    "BATTERY_LEVEL",
    "CGM_MEASUREMENT",
    "CGM_FEATURE",
    "CGM_STATUS",
    "CGM_SESSION_START_TIME",
    "CGM_SESSION_RUN_TIME",
    "CGM_SPECIFIC_OPS_CONTROL_POINT",
    "RECORD_ACCESS_CONTROL_POINT",
    "IDD_STATUS_CHANGED",
    "IDD_STATUS",
    "IDD_ANNUNCIATION_STATUS",
    "IDD_FEATURES",
    "MANUFACTURER_NAME",
    "MODEL_NUMBER",
    "SERIAL_NUMBER",
    "FIRMWARE_REVISION",
    "PMD_SERVICE",
    "PMD_CONTROL_POINT",
    "PMD_DATA",
    # shared
    "Buffer",
    "crc16_mcrf4xx",
    "require_length",
    "require_min_length",
    "reject_reserved_flags",
    "enum_or_int",
    "check_uint",
    "date_time_valid",
    "FlaggedLayout",
    "pack_flagged",
    "flagged_size",
    "unpack_flagged",
    # heart rate
    "HeartRateMeasurement",
    "decode_heart_rate_measurement",
    "encode_heart_rate_measurement",
    # pulse oximetry
    "DateTimeTuple",
    "PlxContinuousMeasurement",
    "decode_plx_continuous",
    "encode_plx_continuous",
    "PlxSpotCheckMeasurement",
    "decode_plx_spot_check",
    "encode_plx_spot_check",
    # CGM
    "CgmMeasurement",
    "decode_cgm_measurements",
    "encode_cgm_measurement",
    "decode_cgm_session_start_time",
    "encode_cgm_session_start_time",
    # RACP
    "RacpOpcode",
    "RacpOperator",
    "RacpFilterType",
    "RacpResponseCode",
    "RacpRequest",
    "RacpResponse",
    "encode_racp_request",
    "decode_racp_request",
    "encode_racp_response",
    "decode_racp_response",
    "racp_report_records_since",
    "RacpGrammar",
    "racp_request_bytes",
    "parse_racp_request",
    "racp_report_all",
    "racp_report_number_all",
    "racp_abort",
    # IDD
    "TherapyControlState",
    "OperationalState",
    "IddStatus",
    "decode_idd_status",
    "encode_idd_status",
    # battery
    "decode_battery_level",
    "encode_battery_level",
    # Polar PMD
    "PMD_ECG_SAMPLE_RATE_HZ",
    "PMD_MEASUREMENT_TYPE_ECG",
    "PMD_ECG_FRAME_TYPE_0",
    "PmdEcgFrame",
    "decode_pmd_ecg_frame",
    "encode_pmd_ecg_frame",
]

Buffer: TypeAlias = bytes | bytearray | memoryview
DateTimeTuple: TypeAlias = tuple[int, int, int, int, int, int]

_E = TypeVar("_E", bound=enum.IntEnum)

_U8: Final = struct.Struct("<B")
_U16: Final = struct.Struct("<H")
_DATE_TIME: Final = struct.Struct("<HBBBBB")
_CGM_HEAD: Final = struct.Struct("<BBHH")  # size, flags, glucose SFLOAT, time offset
_IDD_STATUS: Final = struct.Struct("<BBHB")  # therapy state, operational state, reservoir SFLOAT, flags
_RACP_HEAD: Final = struct.Struct("<BB")  # opcode, operator
_RACP_CODE: Final = struct.Struct("<BBBB")  # opcode, operator, request opcode, response code
_RACP_COUNT: Final = struct.Struct("<BBH")  # opcode, operator, number of records
_PMD_HEADER: Final = struct.Struct("<BQB")  # measurement type, timestamp ns, frame type


# --------------------------------------------------------------------------------------------------- UUIDs


def uuid16(short: int) -> str:
    """The full lowercase 128-bit UUID string of a 16-bit Bluetooth SIG assigned number."""
    if not 0 <= short <= 0xFFFF:
        raise ValueError("a 16-bit UUID must be in [0, 0xFFFF]")
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


HEART_RATE_SERVICE: Final = uuid16(0x180D)
PULSE_OXIMETER_SERVICE: Final = uuid16(0x1822)
CGM_SERVICE: Final = uuid16(0x181F)
INSULIN_DELIVERY_SERVICE: Final = uuid16(0x183A)
BATTERY_SERVICE: Final = uuid16(0x180F)
DEVICE_INFORMATION_SERVICE: Final = uuid16(0x180A)

HEART_RATE_MEASUREMENT: Final = uuid16(0x2A37)
BODY_SENSOR_LOCATION: Final = uuid16(0x2A38)
PLX_SPOT_CHECK_MEASUREMENT: Final = uuid16(0x2A5E)
PLX_CONTINUOUS_MEASUREMENT: Final = uuid16(0x2A5F)
PLX_FEATURES: Final = uuid16(0x2A60)
BATTERY_LEVEL: Final = uuid16(0x2A19)
CGM_MEASUREMENT: Final = uuid16(0x2AA7)
CGM_FEATURE: Final = uuid16(0x2AA8)
CGM_STATUS: Final = uuid16(0x2AA9)
CGM_SESSION_START_TIME: Final = uuid16(0x2AAA)
CGM_SESSION_RUN_TIME: Final = uuid16(0x2AAB)
CGM_SPECIFIC_OPS_CONTROL_POINT: Final = uuid16(0x2AAC)
RECORD_ACCESS_CONTROL_POINT: Final = uuid16(0x2A52)
IDD_STATUS_CHANGED: Final = uuid16(0x2B20)
IDD_STATUS: Final = uuid16(0x2B21)
IDD_ANNUNCIATION_STATUS: Final = uuid16(0x2B22)
IDD_FEATURES: Final = uuid16(0x2B23)
MANUFACTURER_NAME: Final = uuid16(0x2A29)
MODEL_NUMBER: Final = uuid16(0x2A24)
SERIAL_NUMBER: Final = uuid16(0x2A25)
FIRMWARE_REVISION: Final = uuid16(0x2A26)

PMD_SERVICE: Final = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL_POINT: Final = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA: Final = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"


# -------------------------------------------------------------------------------------------------- shared


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


def _exact_length(data: bytes, expected: int, characteristic: str) -> None:
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


def _non_empty(data: bytes, minimum: int, characteristic: str) -> None:
    """Raise InvalidFrame when the frame is shorter than its fixed part."""
    if len(data) < minimum:
        raise InvalidFrame(
            f"{characteristic} frame truncated",
            characteristic=characteristic,
            length=len(data),
            expected=minimum,
        )


def _reserved_flags(flags: int, allowed: int, characteristic: str) -> None:
    """Raise InvalidFrame when a flag bit the spec reserves is set: the layout after it is unknown."""
    if flags & ~allowed:
        raise InvalidFrame(
            f"{characteristic} has reserved flag bits set",
            characteristic=characteristic,
            reserved_bits=flags & ~allowed & 0xFF,
        )


def _enum_or_int(enum_cls: type[_E], value: int) -> int:
    """The enum member for `value`, or the plain int when the spec (or a newer one) defines it elsewhere."""
    try:
        return enum_cls(value)
    except ValueError:
        return value


def _check_uint(value: int, bits: int, name: str) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must be an unsigned {bits}-bit integer")


def _sfloat_bytes(value: float) -> bytes:
    return _U16.pack(encode_sfloat(value))


def _read_sfloat(data: bytes, offset: int) -> float:
    # Callers have checked the length already; this is only the conversion.
    return decode_sfloat(_U16.unpack_from(data, offset)[0])


# Optional fields announced by flag bits: (flag bit, size in octets) per field, in wire order.
FlaggedLayout: TypeAlias = tuple[tuple[int, int], ...]


def pack_flagged(layout: FlaggedLayout, values: Sequence[int | None], names: Sequence[str]) -> tuple[int, bytes]:
    """The flag bits and the bytes of the optional fields present (value not None), in the layout's order; each
    value is range-checked for its size (ValueError)."""
    flags, out = 0, b""
    for (bit, size), value, name in zip(layout, values, names, strict=True):
        if value is None:
            continue
        _check_uint(value, 8 * size, name)
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


# The sibling codec modules (measurements, device_info) validate with these same checks: one definition each.
require_length = _exact_length
require_min_length = _non_empty
reject_reserved_flags = _reserved_flags
enum_or_int = _enum_or_int
check_uint = _check_uint


# ---------------------------------------------------------------------------------------------- heart rate

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
    _non_empty(data, 2, name)
    flags = data[0]
    _reserved_flags(flags, _HR_ALLOWED, name)
    fixed = 1 + (2 if flags & _HR_UINT16 else 1) + (2 if flags & _HR_ENERGY else 0)
    if flags & _HR_RR:
        # The RR field runs to the end of the frame; a present field holds at least one whole uint16.
        _non_empty(data, fixed + 2, name)
        if (len(data) - fixed) % 2:
            raise InvalidFrame(
                "heart_rate_measurement RR-interval field is not a whole number of uint16",
                characteristic=name,
                length=len(data),
                expected=f"{fixed}+2n",
            )
    else:
        _exact_length(data, fixed, name)
    offset = 1
    if flags & _HR_UINT16:
        heart_rate = _U16.unpack_from(data, offset)[0]
        offset += 2
    else:
        heart_rate = data[offset]
        offset += 1
    contact_bits = (flags & _HR_CONTACT_MASK) >> 1
    # 0b0x: contact detection not supported; 0b10: supported, no contact; 0b11: supported, contact.
    sensor_contact = None if contact_bits < 2 else contact_bits == 3
    energy: int | None = None
    if flags & _HR_ENERGY:
        energy = _U16.unpack_from(data, offset)[0]
        offset += 2
    rr = tuple(raw * 1000 / 1024 for (raw,) in _U16.iter_unpack(data[offset:])) if flags & _HR_RR else ()
    return HeartRateMeasurement(heart_rate, sensor_contact, energy, rr)


def encode_heart_rate_measurement(m: HeartRateMeasurement) -> bytes:
    """Encode a Heart Rate Measurement; uint8 heart rate when it fits, RR ms rounded to 1/1024 s."""
    _check_uint(m.heart_rate_bpm, 16, "heart_rate_bpm")
    flags = 0
    body = bytearray()
    if m.heart_rate_bpm < 256:
        body += _U8.pack(m.heart_rate_bpm)
    else:
        flags |= _HR_UINT16
        body += _U16.pack(m.heart_rate_bpm)
    if m.sensor_contact is not None:
        flags |= 0x06 if m.sensor_contact else 0x04
    if m.energy_expended_kj is not None:
        _check_uint(m.energy_expended_kj, 16, "energy_expended_kj")
        flags |= _HR_ENERGY
        body += _U16.pack(m.energy_expended_kj)
    if m.rr_intervals_ms:
        flags |= _HR_RR
        for ms in m.rr_intervals_ms:
            if not math.isfinite(ms):
                raise ValueError("rr_intervals_ms must be finite")
            raw = round(ms * 1024 / 1000)
            _check_uint(raw, 16, "rr_interval (1/1024 s)")
            body += _U16.pack(raw)
    return _U8.pack(flags) + bytes(body)


# ------------------------------------------------------------------------------------------- pulse oximetry

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


def _u24(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 3], "little")


def _date_time_valid(ts: tuple[int, ...]) -> bool:
    year, month, day, hours, minutes, seconds = ts
    return (
        (year == 0 or 1582 <= year <= 9999)
        and 0 <= month <= 12
        and 0 <= day <= 31
        and 0 <= hours <= 23
        and 0 <= minutes <= 59
        and 0 <= seconds <= 59
    )


date_time_valid = _date_time_valid  # shared with measurements and device_info (Date Time fields)


def decode_plx_continuous(buf: Buffer) -> PlxContinuousMeasurement:
    """Decode a PLX Continuous Measurement; the Fast and Slow SpO2PR fields are validated and skipped."""
    name = "plx_continuous"
    data = bytes(buf)
    _non_empty(data, 5, name)
    flags = data[0]
    _reserved_flags(flags, _PLXC_ALLOWED, name)
    expected = (
        5
        + (4 if flags & _PLXC_FAST else 0)
        + (4 if flags & _PLXC_SLOW else 0)
        + (2 if flags & _PLXC_STATUS else 0)
        + (3 if flags & _PLXC_DEVICE_STATUS else 0)
        + (2 if flags & _PLXC_PAI else 0)
    )
    _exact_length(data, expected, name)
    spo2 = _read_sfloat(data, 1)
    pulse_rate = _read_sfloat(data, 3)
    offset = 5
    offset += 4 if flags & _PLXC_FAST else 0
    offset += 4 if flags & _PLXC_SLOW else 0
    status: int | None = None
    if flags & _PLXC_STATUS:
        status = _U16.unpack_from(data, offset)[0]
        offset += 2
    device_status: int | None = None
    if flags & _PLXC_DEVICE_STATUS:
        device_status = _u24(data, offset)
        offset += 3
    pai = _read_sfloat(data, offset) if flags & _PLXC_PAI else None
    return PlxContinuousMeasurement(spo2, pulse_rate, pai, status, device_status)


def encode_plx_continuous(m: PlxContinuousMeasurement) -> bytes:
    """Encode a PLX Continuous Measurement carrying SpO2PR-Normal and the optional fields that are set."""
    flags = 0
    body = bytearray(_sfloat_bytes(m.spo2_pct) + _sfloat_bytes(m.pulse_rate_bpm))
    if m.measurement_status is not None:
        _check_uint(m.measurement_status, 16, "measurement_status")
        flags |= _PLXC_STATUS
        body += _U16.pack(m.measurement_status)
    if m.device_sensor_status is not None:
        _check_uint(m.device_sensor_status, 24, "device_sensor_status")
        flags |= _PLXC_DEVICE_STATUS
        body += m.device_sensor_status.to_bytes(3, "little")
    if m.pulse_amplitude_index_pct is not None:
        flags |= _PLXC_PAI
        body += _sfloat_bytes(m.pulse_amplitude_index_pct)
    return _U8.pack(flags) + bytes(body)


def decode_plx_spot_check(buf: Buffer) -> PlxSpotCheckMeasurement:
    """Decode a PLX Spot-check Measurement; an out-of-range Date Time field is an invalid frame."""
    name = "plx_spot_check"
    data = bytes(buf)
    _non_empty(data, 5, name)
    flags = data[0]
    _reserved_flags(flags, _PLXS_ALLOWED, name)
    expected = (
        5
        + (_DATE_TIME.size if flags & _PLXS_TIMESTAMP else 0)
        + (2 if flags & _PLXS_STATUS else 0)
        + (3 if flags & _PLXS_DEVICE_STATUS else 0)
        + (2 if flags & _PLXS_PAI else 0)
    )
    _exact_length(data, expected, name)
    spo2 = _read_sfloat(data, 1)
    pulse_rate = _read_sfloat(data, 3)
    offset = 5
    timestamp: DateTimeTuple | None = None
    if flags & _PLXS_TIMESTAMP:
        timestamp = _DATE_TIME.unpack_from(data, offset)
        offset += _DATE_TIME.size
        if not _date_time_valid(timestamp):
            raise InvalidFrame("plx_spot_check timestamp field out of range", characteristic=name)
    status: int | None = None
    if flags & _PLXS_STATUS:
        status = _U16.unpack_from(data, offset)[0]
        offset += 2
    device_status: int | None = None
    if flags & _PLXS_DEVICE_STATUS:
        device_status = _u24(data, offset)
        offset += 3
    pai = _read_sfloat(data, offset) if flags & _PLXS_PAI else None
    return PlxSpotCheckMeasurement(
        spo2, pulse_rate, timestamp, status, device_status, pai, bool(flags & _PLXS_CLOCK_NOT_SET)
    )


def encode_plx_spot_check(m: PlxSpotCheckMeasurement) -> bytes:
    """Encode a PLX Spot-check Measurement with the optional fields that are set."""
    flags = _PLXS_CLOCK_NOT_SET if m.device_clock_not_set else 0
    body = bytearray(_sfloat_bytes(m.spo2_pct) + _sfloat_bytes(m.pulse_rate_bpm))
    if m.timestamp is not None:
        if len(m.timestamp) != 6 or not _date_time_valid(m.timestamp):
            raise ValueError("timestamp must be (year, month, day, hours, minutes, seconds) in range")
        flags |= _PLXS_TIMESTAMP
        body += _DATE_TIME.pack(*m.timestamp)
    if m.measurement_status is not None:
        _check_uint(m.measurement_status, 16, "measurement_status")
        flags |= _PLXS_STATUS
        body += _U16.pack(m.measurement_status)
    if m.device_sensor_status is not None:
        _check_uint(m.device_sensor_status, 24, "device_sensor_status")
        flags |= _PLXS_DEVICE_STATUS
        body += m.device_sensor_status.to_bytes(3, "little")
    if m.pulse_amplitude_index_pct is not None:
        flags |= _PLXS_PAI
        body += _sfloat_bytes(m.pulse_amplitude_index_pct)
    return _U8.pack(flags) + bytes(body)


# ---------------------------------------------------------------------------------------------------- CGM

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
    _non_empty(data, 2, name)
    records: list[CgmMeasurement] = []
    offset = 0
    while offset < len(data):
        index = len(records)
        if len(data) - offset < 2:
            raise InvalidFrame("cgm_measurement record truncated", characteristic=name, record=index, length=len(data))
        size, flags = data[offset], data[offset + 1]
        _reserved_flags(flags, _CGM_ALLOWED, name)
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
        if e2e_crc and crc16_mcrf4xx(record[:-2]) != _U16.unpack_from(record, size - 2)[0]:
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
            trend = _read_sfloat(record, pos)
            pos += 2
        quality = _read_sfloat(record, pos) if flags & _CGM_QUALITY else None
        records.append(CgmMeasurement(decode_sfloat(glucose_raw), time_offset, status, trend, quality))
    return records


def encode_cgm_measurement(m: CgmMeasurement, *, e2e_crc: bool) -> bytes:
    """Encode one CGM Measurement record (size byte included, E2E-CRC appended when e2e_crc)."""
    _check_uint(m.time_offset_min, 16, "time_offset_min")
    flags = 0
    octets = bytearray()
    if m.sensor_status is not None:
        _check_uint(m.sensor_status, 24, "sensor_status")
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
        tail += _sfloat_bytes(m.trend_mg_dl_min)
    if m.quality_pct is not None:
        flags |= _CGM_QUALITY
        tail += _sfloat_bytes(m.quality_pct)
    size = _cgm_record_length(flags, e2e_crc)
    record = _CGM_HEAD.pack(size, flags, encode_sfloat(m.glucose_mg_dl), m.time_offset_min) + octets + tail
    if e2e_crc:
        record += _U16.pack(crc16_mcrf4xx(record))
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
    _exact_length(data, 6, name)
    features = int.from_bytes(data[:3], "little")
    crc = _U16.unpack_from(data, 4)[0]
    if features & CGM_FEATURE_E2E_CRC and crc16_mcrf4xx(data[:4]) != crc:
        raise InvalidFrame("cgm_feature E2E-CRC mismatch", characteristic=name)
    return CgmFeature(features, data[3] & 0x0F, data[3] >> 4)


def encode_cgm_feature(feature: CgmFeature) -> bytes:
    _check_uint(feature.features, 24, "features")
    _check_uint(feature.cgm_type, 4, "cgm_type")
    _check_uint(feature.sample_location, 4, "sample_location")
    body = feature.features.to_bytes(3, "little") + _U8.pack(feature.sample_location << 4 | feature.cgm_type)
    crc = crc16_mcrf4xx(body) if feature.e2e_crc else _CGM_FEATURE_CRC_ABSENT
    return body + _U16.pack(crc)


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
    _exact_length(data, _SESSION_START.size + (2 if e2e_crc else 0), name)
    if e2e_crc and crc16_mcrf4xx(data[:-2]) != _U16.unpack_from(data, len(data) - 2)[0]:
        raise InvalidFrame("cgm_session_start_time E2E-CRC mismatch", characteristic=name)
    year, month, day, hours, minutes, seconds, zone, dst = _SESSION_START.unpack_from(data, 0)
    if not _date_time_valid((year, month, day, hours, minutes, seconds)):
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
    return out + _U16.pack(crc16_mcrf4xx(out)) if e2e_crc else out


# ---------------------------------------------------------------------------------------------------- RACP


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


def _member_name(enum_cls: type[enum.IntEnum], value: int) -> str | None:
    try:
        return enum_cls(value).name
    except ValueError:
        return None


def _racp_request_problem(
    g: RacpGrammar, opcode: int, operator: int, filter_type: int | None, values: tuple[int, ...]
) -> tuple[int, str] | None:
    """The response code a server owes this request and why, or None when the request is well formed."""
    refusal = RacpResponseCode  # the refusal values are the generic RACP's in every grammar
    problem: tuple[int, str] | None = None
    op, oper = _member_name(g.opcodes, opcode), _member_name(g.operators, operator)
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
    elif _member_name(g.filter_types, filter_type) is None:
        problem = refusal.OPERAND_NOT_SUPPORTED, "unsupported filter type"
    elif len(values) != wanted or not all(0 <= v < 1 << 8 * g.value.size for v in values):
        problem = refusal.INVALID_OPERAND, f"operand must be {wanted} value(s) of {g.value.size} octets"
    elif wanted == 2 and values[0] > values[1]:
        problem = refusal.INVALID_OPERAND, "range minimum exceeds maximum"
    if problem is None:
        return None
    return _enum_or_int(g.codes, problem[0]), problem[1]


def racp_request_bytes(
    g: RacpGrammar, opcode: int, operator: int, filter_type: int | None, values: tuple[int, ...]
) -> bytes:
    """A request's bytes under grammar `g`; ValueError for a request a server would have to refuse."""
    problem = _racp_request_problem(g, opcode, operator, filter_type, values)
    if problem is not None:
        raise ValueError(f"invalid {g.label} request: {problem[1]}")
    out = _RACP_HEAD.pack(opcode, operator)
    if filter_type is not None:
        out += _U8.pack(filter_type) + b"".join(g.value.pack(v) for v in values)
    return out


def parse_racp_request(g: RacpGrammar, data: bytes) -> tuple[int, int, int | None, tuple[int, ...]]:
    """(op code, operator, filter type, values) of a request under grammar `g` (server side).

    A malformed request raises InvalidFrame whose fields carry `request_opcode` and the `response_code` the
    server should answer with, when those can be determined.
    """
    name = g.characteristic
    if not data:
        raise InvalidFrame(f"{name} frame truncated", characteristic=name, length=0, expected=2)
    opcode = _enum_or_int(g.opcodes, data[0])
    if len(data) < 2:
        raise InvalidFrame(
            f"{name} has no operator",
            characteristic=name,
            length=len(data),
            expected=2,
            request_opcode=opcode,
            response_code=_enum_or_int(g.codes, RacpResponseCode.INVALID_OPERATOR),
        )
    operator = _enum_or_int(g.operators, data[1])
    filter_type: int | None = None
    values: tuple[int, ...] = ()
    if len(data) > 2:
        filter_type = _enum_or_int(g.filter_types, data[2])
        operand = data[3:]
        if _member_name(g.filter_types, filter_type) is not None:
            if len(operand) % g.value.size:
                raise InvalidFrame(
                    f"{name} operand is not a whole number of values",
                    characteristic=name,
                    length=len(data),
                    request_opcode=opcode,
                    response_code=_enum_or_int(g.codes, RacpResponseCode.INVALID_OPERAND),
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


_RACP: Final = RacpGrammar("RACP", "racp_request", RacpOpcode, RacpOperator, RacpFilterType, RacpResponseCode, _U16)


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
        _check_uint(resp.number_of_records, 16, "number_of_records")
        return _RACP_COUNT.pack(resp.opcode, resp.operator, resp.number_of_records)
    if resp.opcode == RacpOpcode.RESPONSE_CODE:
        if resp.request_opcode is None or resp.response_code is None or resp.number_of_records is not None:
            raise ValueError("a response-code response carries request_opcode and response_code only")
        _check_uint(resp.request_opcode, 8, "request_opcode")
        _check_uint(resp.response_code, 8, "response_code")
        return _RACP_CODE.pack(resp.opcode, resp.operator, resp.request_opcode, resp.response_code)
    raise ValueError("RACP response op code must be 5 (number of records) or 6 (response code)")


def decode_racp_response(buf: Buffer) -> RacpResponse:
    """Decode a RACP response; unknown request op codes and response code values are kept as ints."""
    name = "racp_response"
    data = bytes(buf)
    _non_empty(data, 2, name)
    opcode, operator = _RACP_HEAD.unpack_from(data, 0)
    if operator != RacpOperator.NULL:
        raise InvalidFrame("racp_response operator must be null", characteristic=name, operator=operator)
    if opcode == RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        _exact_length(data, _RACP_COUNT.size, name)
        _, _, count = _RACP_COUNT.unpack(data)
        return RacpResponse(RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE, RacpOperator.NULL, number_of_records=count)
    if opcode == RacpOpcode.RESPONSE_CODE:
        _exact_length(data, _RACP_CODE.size, name)
        _, _, request_opcode, response_code = _RACP_CODE.unpack(data)
        return RacpResponse(
            RacpOpcode.RESPONSE_CODE,
            RacpOperator.NULL,
            request_opcode=_enum_or_int(RacpOpcode, request_opcode),
            response_code=_enum_or_int(RacpResponseCode, response_code),
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


# ----------------------------------------------------------------------------------------------------- IDD


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
    _exact_length(data, _IDD_STATUS.size + (3 if e2e else 0), name)
    therapy, operational, reservoir_raw, flags = _IDD_STATUS.unpack_from(data, 0)
    _reserved_flags(flags, _IDD_ALLOWED, name)
    counter: int | None = None
    if e2e:
        if crc16_mcrf4xx(data[:-2]) != _U16.unpack_from(data, len(data) - 2)[0]:
            raise InvalidFrame("idd_status E2E-CRC mismatch", characteristic=name)
        counter = data[_IDD_STATUS.size]
    return IddStatus(
        _enum_or_int(TherapyControlState, therapy),
        _enum_or_int(OperationalState, operational),
        decode_sfloat(reservoir_raw),
        bool(flags & _IDD_RESERVOIR_ATTACHED),
        counter,
    )


def encode_idd_status(s: IddStatus, *, e2e: bool) -> bytes:
    """Encode IDD Status; with e2e, e2e_counter is required and the E2E-CRC is appended."""
    _check_uint(s.therapy_control_state, 8, "therapy_control_state")
    _check_uint(s.operational_state, 8, "operational_state")
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
    _check_uint(s.e2e_counter, 8, "e2e_counter")
    out += _U8.pack(s.e2e_counter)
    return out + _U16.pack(crc16_mcrf4xx(out))


# ------------------------------------------------------------------------------------------------- battery


def decode_battery_level(buf: Buffer) -> int:
    """Decode Battery Level: exactly one byte, a percentage in [0, 100]."""
    name = "battery_level"
    data = bytes(buf)
    _exact_length(data, 1, name)
    if data[0] > 100:
        raise InvalidFrame("battery_level out of range", characteristic=name, expected="0..100")
    return data[0]


def encode_battery_level(pct: int) -> bytes:
    """Encode Battery Level from a percentage in [0, 100]."""
    if not 0 <= pct <= 100:
        raise ValueError("battery level must be in [0, 100]")
    return _U8.pack(pct)


# ----------------------------------------------------------------------------------------------- Polar PMD

PMD_ECG_SAMPLE_RATE_HZ: Final = 130
PMD_MEASUREMENT_TYPE_ECG: Final = 0x00
PMD_ECG_FRAME_TYPE_0: Final = 0x00
_PMD_SAMPLE_BYTES: Final = 3
_INT24_MIN: Final = -(1 << 23)
_INT24_MAX: Final = (1 << 23) - 1


@dataclass(frozen=True, slots=True, eq=False)
class PmdEcgFrame:
    """One Polar PMD ECG frame; timestamp_ns is the last sample's time (Polar epoch), samples read-only."""

    timestamp_ns: int
    samples_uv: npt.NDArray[np.int32]


def decode_pmd_ecg_frame(buf: Buffer) -> PmdEcgFrame:
    """Decode a PMD data notification holding an uncompressed ECG frame (type 0: int24 LE microvolts)."""
    name = "pmd_ecg"
    data = bytes(buf)
    _non_empty(data, _PMD_HEADER.size + _PMD_SAMPLE_BYTES, name)
    measurement_type, timestamp_ns, frame_type = _PMD_HEADER.unpack_from(data, 0)
    if measurement_type != PMD_MEASUREMENT_TYPE_ECG:
        raise InvalidFrame("pmd frame is not ECG", characteristic=name, measurement_type=measurement_type)
    if frame_type != PMD_ECG_FRAME_TYPE_0:
        # Compressed (delta) frames set bit 7; the gateway only asks the sensor for type 0.
        raise InvalidFrame("pmd ECG frame type not supported", characteristic=name, frame_type=frame_type)
    sample_bytes = len(data) - _PMD_HEADER.size
    if sample_bytes % _PMD_SAMPLE_BYTES:
        raise InvalidFrame(
            "pmd ECG samples are not a whole number of int24",
            characteristic=name,
            length=len(data),
            expected=f"{_PMD_HEADER.size}+3n",
        )
    raw = np.frombuffer(data, dtype=np.uint8, offset=_PMD_HEADER.size).reshape(-1, 3).astype(np.int32)
    unsigned = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
    # Sign-extend 24 -> 32 bits: flipping the sign bit then subtracting it maps [0, 2**24) onto int24.
    samples = ((unsigned ^ 0x800000) - 0x800000).astype(np.int32, copy=False)
    samples.flags.writeable = False
    return PmdEcgFrame(timestamp_ns, samples)


def encode_pmd_ecg_frame(timestamp_ns: int, samples_uv: Sequence[int] | npt.NDArray[np.integer[Any]]) -> bytes:
    """Encode an uncompressed PMD ECG frame from integer microvolt samples in the int24 range."""
    _check_uint(timestamp_ns, 64, "timestamp_ns")
    arr = np.asarray(samples_uv)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("samples_uv must be a non-empty 1-D sequence")
    if arr.dtype.kind not in "iu":
        raise ValueError("samples_uv must be integers")
    # Compare as Python ints so uint64 input cannot wrap into range.
    if int(arr.min()) < _INT24_MIN or int(arr.max()) > _INT24_MAX:
        raise ValueError("samples_uv must fit in a signed 24-bit integer")
    # Little-endian int32 keeps the two's-complement low 24 bits in its first three bytes.
    triplets = arr.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :_PMD_SAMPLE_BYTES]
    return _PMD_HEADER.pack(PMD_MEASUREMENT_TYPE_ECG, timestamp_ns, PMD_ECG_FRAME_TYPE_0) + triplets.tobytes()
