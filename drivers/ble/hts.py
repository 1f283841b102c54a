"""Health Thermometer Service (0x1809) codecs: Temperature Measurement, Intermediate Temperature, Temperature Type.

Layouts follow the GATT Specification Supplement (GSS).  Decoders raise only `InvalidFrame`, naming the
characteristic and lengths, never a measured value; the FLOAT specials decode as `drivers.ble.sfloat` does.
Encoders exist for simulated peripherals and tests.  A temperature type a newer spec defines stays a plain int.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from drivers.ble.fields import (
    DATE_TIME,
    U8,
    U32,
    Buffer,
    DateTimeTuple,
    check_uint,
    date_time_bytes,
    enum_or_int,
    read_date_time,
    reject_reserved_flags,
    require_length,
    require_min_length,
    uuid16,
)
from drivers.ble.sfloat import decode_float, encode_float

HEALTH_THERMOMETER_SERVICE: Final = uuid16(0x1809)
TEMPERATURE_MEASUREMENT: Final = uuid16(0x2A1C)
TEMPERATURE_TYPE: Final = uuid16(0x2A1D)
INTERMEDIATE_TEMPERATURE: Final = uuid16(0x2A1E)


class TemperatureUnit(enum.Enum):
    """The unit a temperature frame carries (flags bit 0); values are UCUM codes."""

    CELSIUS = "Cel"
    FAHRENHEIT = "[degF]"


class TemperatureType(enum.IntEnum):
    """Temperature Type (0x2A1D) values: where on the body the temperature was taken."""

    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


_TEMP_FAHRENHEIT: Final = 0x01
_TEMP_TIME_STAMP: Final = 0x02
_TEMP_TYPE: Final = 0x04
_TEMP_ALLOWED: Final = 0x07


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    """Temperature Measurement (0x2A1C) or Intermediate Temperature (0x2A1E), which share one layout.

    timestamp is the device's local (year, month, day, h, m, s), 0 meaning unknown; temperature_type is a
    TemperatureType member when known, the plain int otherwise.
    """

    temperature: float
    unit: TemperatureUnit = TemperatureUnit.CELSIUS
    timestamp: DateTimeTuple | None = None
    temperature_type: int | None = None


def _decode_temperature(buf: Buffer, name: str) -> TemperatureMeasurement:
    data = bytes(buf)
    require_min_length(data, 5, name)
    flags = data[0]
    reject_reserved_flags(flags, _TEMP_ALLOWED, name)
    expected = 5 + (DATE_TIME.size if flags & _TEMP_TIME_STAMP else 0) + (1 if flags & _TEMP_TYPE else 0)
    require_length(data, expected, name)
    temperature = decode_float(U32.unpack_from(data, 1)[0])
    offset = 5
    timestamp: DateTimeTuple | None = None
    if flags & _TEMP_TIME_STAMP:
        timestamp = read_date_time(data, offset, name)
        offset += DATE_TIME.size
    site = enum_or_int(TemperatureType, data[offset]) if flags & _TEMP_TYPE else None
    unit = TemperatureUnit.FAHRENHEIT if flags & _TEMP_FAHRENHEIT else TemperatureUnit.CELSIUS
    return TemperatureMeasurement(temperature, unit, timestamp, site)


def _encode_temperature(m: TemperatureMeasurement) -> bytes:
    flags = _TEMP_FAHRENHEIT if m.unit is TemperatureUnit.FAHRENHEIT else 0
    body = bytearray(U32.pack(encode_float(m.temperature)))
    if m.timestamp is not None:
        flags |= _TEMP_TIME_STAMP
        body += date_time_bytes(m.timestamp, "timestamp")
    if m.temperature_type is not None:
        check_uint(m.temperature_type, 8, "temperature_type")
        flags |= _TEMP_TYPE
        body += U8.pack(m.temperature_type)
    return U8.pack(flags) + bytes(body)


def decode_temperature_measurement(buf: Buffer) -> TemperatureMeasurement:
    """Decode a Temperature Measurement indication; the FLOAT stays in the unit the flags name."""
    return _decode_temperature(buf, "temperature_measurement")


def encode_temperature_measurement(m: TemperatureMeasurement) -> bytes:
    """Encode a Temperature Measurement with the optional fields that are set."""
    return _encode_temperature(m)


def decode_intermediate_temperature(buf: Buffer) -> TemperatureMeasurement:
    """Decode an Intermediate Temperature notification (the Temperature Measurement layout)."""
    return _decode_temperature(buf, "intermediate_temperature")


def encode_intermediate_temperature(m: TemperatureMeasurement) -> bytes:
    """Encode an Intermediate Temperature (the Temperature Measurement layout)."""
    return _encode_temperature(m)


def decode_temperature_type(buf: Buffer) -> int:
    """Decode Temperature Type: exactly one byte, a TemperatureType member when known."""
    data = bytes(buf)
    require_length(data, 1, "temperature_type")
    return enum_or_int(TemperatureType, data[0])


def encode_temperature_type(value: int) -> bytes:
    """Encode Temperature Type."""
    check_uint(value, 8, "temperature_type")
    return U8.pack(value)
