"""Pure codecs for the Blood Pressure, Health Thermometer and Glucose services: bytes in, frozen dataclasses out.

Layouts follow the GATT Specification Supplement (GSS).  Decoders accept bytes, bytearray or memoryview and raise
only `InvalidFrame` (truncation, trailing bytes, reserved flag bits, out-of-range Date Time); error fields name the
characteristic and lengths, never a measured value.  SFLOAT/FLOAT specials decode as `drivers.ble.sfloat` does
(NaN, NRes and reserved give nan; +/-INFINITY give +/-inf).  Encoders exist for simulated peripherals and tests and
raise `ValueError` for values the wire format cannot carry.  Enumerated fields (temperature type, glucose sample
type, meal, ...) decode to enum members when known and stay plain ints otherwise, so a newer spec's value is kept.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Final, TypeVar

from drivers.ble.fields import (
    Buffer,
    DateTimeTuple,
    check_uint,
    date_time_valid,
    enum_or_int,
    reject_reserved_flags,
    require_length,
    require_min_length,
    uuid16,
)
from drivers.ble.sfloat import decode_float, decode_sfloat, encode_float, encode_sfloat
from gateway.core.errors import InvalidFrame

__all__ = [
    # UUIDs
    "BLOOD_PRESSURE_SERVICE",
    "HEALTH_THERMOMETER_SERVICE",
    "GLUCOSE_SERVICE",
    "BLOOD_PRESSURE_MEASUREMENT",
    "INTERMEDIATE_CUFF_PRESSURE",
    "BLOOD_PRESSURE_FEATURE",
    "TEMPERATURE_MEASUREMENT",
    "TEMPERATURE_TYPE",
    "INTERMEDIATE_TEMPERATURE",
    "GLUCOSE_MEASUREMENT",
    "GLUCOSE_MEASUREMENT_CONTEXT",
    "GLUCOSE_FEATURE",
    # blood pressure
    "PressureUnit",
    "BloodPressureMeasurement",
    "decode_blood_pressure_measurement",
    "encode_blood_pressure_measurement",
    "IntermediateCuffPressure",
    "decode_intermediate_cuff_pressure",
    "encode_intermediate_cuff_pressure",
    "BloodPressureFeature",
    "decode_blood_pressure_feature",
    "encode_blood_pressure_feature",
    # health thermometer
    "TemperatureUnit",
    "TemperatureType",
    "TemperatureMeasurement",
    "decode_temperature_measurement",
    "encode_temperature_measurement",
    "decode_intermediate_temperature",
    "encode_intermediate_temperature",
    "decode_temperature_type",
    "encode_temperature_type",
    # glucose
    "GlucoseConcentrationUnit",
    "GlucoseSampleType",
    "GlucoseSampleLocation",
    "GlucoseSensorStatus",
    "GlucoseMeasurement",
    "decode_glucose_measurement",
    "encode_glucose_measurement",
    "CarbohydrateId",
    "Meal",
    "GlucoseTester",
    "GlucoseHealth",
    "MedicationId",
    "MedicationUnit",
    "GlucoseMeasurementContext",
    "decode_glucose_measurement_context",
    "encode_glucose_measurement_context",
    "GlucoseFeature",
    "decode_glucose_feature",
    "encode_glucose_feature",
]

BLOOD_PRESSURE_SERVICE: Final = uuid16(0x1810)
HEALTH_THERMOMETER_SERVICE: Final = uuid16(0x1809)
GLUCOSE_SERVICE: Final = uuid16(0x1808)

BLOOD_PRESSURE_MEASUREMENT: Final = uuid16(0x2A35)
INTERMEDIATE_CUFF_PRESSURE: Final = uuid16(0x2A36)
BLOOD_PRESSURE_FEATURE: Final = uuid16(0x2A49)
TEMPERATURE_MEASUREMENT: Final = uuid16(0x2A1C)
TEMPERATURE_TYPE: Final = uuid16(0x2A1D)
INTERMEDIATE_TEMPERATURE: Final = uuid16(0x2A1E)
GLUCOSE_MEASUREMENT: Final = uuid16(0x2A18)
GLUCOSE_MEASUREMENT_CONTEXT: Final = uuid16(0x2A34)
GLUCOSE_FEATURE: Final = uuid16(0x2A51)

_U8: Final = struct.Struct("<B")
_U16: Final = struct.Struct("<H")
_F = TypeVar("_F", bound=enum.IntFlag)
_S16: Final = struct.Struct("<h")
_U32: Final = struct.Struct("<I")
_DATE_TIME: Final = struct.Struct("<HBBBBB")  # GSS Date Time: year, month, day, hours, minutes, seconds


def _read_u16(data: bytes, offset: int) -> int:
    # Callers have checked the length already; this is only the conversion.
    value: int = _U16.unpack_from(data, offset)[0]
    return value


def _read_sfloat(data: bytes, offset: int) -> float:
    return decode_sfloat(_read_u16(data, offset))


# The SFLOAT's full exponent range: a glucose concentration in kg/L (95 mg/dL is 95e-5 kg/L) needs it.
_SFLOAT_MAX_DECIMALS: Final = 8


def _sfloat_bytes(value: float) -> bytes:
    return _U16.pack(encode_sfloat(value, max_decimals=_SFLOAT_MAX_DECIMALS))


def _read_date_time(data: bytes, offset: int, characteristic: str) -> DateTimeTuple:
    stamp: DateTimeTuple = _DATE_TIME.unpack_from(data, offset)
    if not date_time_valid(stamp):
        raise InvalidFrame(f"{characteristic} date time out of range", characteristic=characteristic)
    return stamp


def _date_time_bytes(stamp: DateTimeTuple, name: str) -> bytes:
    if len(stamp) != 6 or not date_time_valid(stamp):
        raise ValueError(f"{name} must be (year, month, day, hours, minutes, seconds) in range")
    return _DATE_TIME.pack(*stamp)


def _nibble(value: int, name: str) -> int:
    check_uint(value, 4, name)
    return value


# ------------------------------------------------------------------------------------------- blood pressure


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
        + (_DATE_TIME.size if flags & _BP_TIME_STAMP else 0)
        + (2 if flags & _BP_PULSE_RATE else 0)
        + (1 if flags & _BP_USER_ID else 0)
        + (2 if flags & _BP_STATUS else 0)
    )
    require_length(data, expected, name)
    compound = (_read_sfloat(data, 1), _read_sfloat(data, 3), _read_sfloat(data, 5))
    offset = 7
    timestamp: DateTimeTuple | None = None
    if flags & _BP_TIME_STAMP:
        timestamp = _read_date_time(data, offset, name)
        offset += _DATE_TIME.size
    pulse_rate: float | None = None
    if flags & _BP_PULSE_RATE:
        pulse_rate = _read_sfloat(data, offset)
        offset += 2
    user_id: int | None = None
    if flags & _BP_USER_ID:
        user_id = data[offset]
        offset += 1
    status = _read_u16(data, offset) if flags & _BP_STATUS else None
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
    body = bytearray(b"".join(_sfloat_bytes(v) for v in compound))
    if timestamp is not None:
        flags |= _BP_TIME_STAMP
        body += _date_time_bytes(timestamp, "timestamp")
    if pulse_rate is not None:
        flags |= _BP_PULSE_RATE
        body += _sfloat_bytes(pulse_rate)
    if user_id is not None:
        check_uint(user_id, 8, "user_id")
        flags |= _BP_USER_ID
        body += _U8.pack(user_id)
    if status is not None:
        check_uint(status, 16, "measurement_status")
        flags |= _BP_STATUS
        body += _U16.pack(status)
    return _U8.pack(flags) + bytes(body)


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


def _decode_features(buf: Buffer, flags: type[_F], characteristic: str) -> _F:
    """A feature characteristic: exactly one uint16 bit field."""
    data = bytes(buf)
    require_length(data, 2, characteristic)
    return flags(_read_u16(data, 0))


def _encode_features(features: int, characteristic: str) -> bytes:
    check_uint(int(features), 16, characteristic)
    return _U16.pack(int(features))


def decode_blood_pressure_feature(buf: Buffer) -> BloodPressureFeature:
    """Decode Blood Pressure Feature: exactly one uint16 bit field."""
    return _decode_features(buf, BloodPressureFeature, "blood_pressure_feature")


def encode_blood_pressure_feature(features: int) -> bytes:
    """Encode Blood Pressure Feature from its bits."""
    return _encode_features(features, "blood_pressure_feature")


# -------------------------------------------------------------------------------------- health thermometer


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
    expected = 5 + (_DATE_TIME.size if flags & _TEMP_TIME_STAMP else 0) + (1 if flags & _TEMP_TYPE else 0)
    require_length(data, expected, name)
    temperature = decode_float(_U32.unpack_from(data, 1)[0])
    offset = 5
    timestamp: DateTimeTuple | None = None
    if flags & _TEMP_TIME_STAMP:
        timestamp = _read_date_time(data, offset, name)
        offset += _DATE_TIME.size
    site = enum_or_int(TemperatureType, data[offset]) if flags & _TEMP_TYPE else None
    unit = TemperatureUnit.FAHRENHEIT if flags & _TEMP_FAHRENHEIT else TemperatureUnit.CELSIUS
    return TemperatureMeasurement(temperature, unit, timestamp, site)


def _encode_temperature(m: TemperatureMeasurement) -> bytes:
    flags = _TEMP_FAHRENHEIT if m.unit is TemperatureUnit.FAHRENHEIT else 0
    body = bytearray(_U32.pack(encode_float(m.temperature)))
    if m.timestamp is not None:
        flags |= _TEMP_TIME_STAMP
        body += _date_time_bytes(m.timestamp, "timestamp")
    if m.temperature_type is not None:
        check_uint(m.temperature_type, 8, "temperature_type")
        flags |= _TEMP_TYPE
        body += _U8.pack(m.temperature_type)
    return _U8.pack(flags) + bytes(body)


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
    return _U8.pack(value)


# -------------------------------------------------------------------------------------------------- glucose


class GlucoseConcentrationUnit(enum.Enum):
    """The unit of the glucose concentration (flags bit 2); values are UCUM codes."""

    KG_PER_L = "kg/L"
    MOL_PER_L = "mol/L"


class GlucoseSampleType(enum.IntEnum):
    """Glucose Measurement sample type (low nibble of Type-Sample Location)."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class GlucoseSampleLocation(enum.IntEnum):
    """Glucose Measurement sample location (high nibble of Type-Sample Location)."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


class GlucoseSensorStatus(enum.IntFlag):
    """Glucose Measurement Sensor Status Annunciation bits; undefined bits are kept in the value, unnamed."""

    DEVICE_BATTERY_LOW = 0x0001
    SENSOR_MALFUNCTION = 0x0002
    SAMPLE_SIZE_INSUFFICIENT = 0x0004
    STRIP_INSERTION_ERROR = 0x0008
    STRIP_TYPE_INCORRECT = 0x0010
    RESULT_TOO_HIGH = 0x0020
    RESULT_TOO_LOW = 0x0040
    TEMPERATURE_TOO_HIGH = 0x0080
    TEMPERATURE_TOO_LOW = 0x0100
    READ_INTERRUPTED = 0x0200
    GENERAL_DEVICE_FAULT = 0x0400
    TIME_FAULT = 0x0800


_GLU_TIME_OFFSET: Final = 0x01
_GLU_CONCENTRATION: Final = 0x02  # concentration, type and sample location
_GLU_MOL_PER_L: Final = 0x04
_GLU_STATUS: Final = 0x08
_GLU_CONTEXT_FOLLOWS: Final = 0x10
_GLU_ALLOWED: Final = 0x1F
_GLU_HEAD: Final = 3 + _DATE_TIME.size  # flags, sequence number, base time


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """Glucose Measurement (0x2A18).

    base_time is the device's local (year, month, day, h, m, s) and time_offset_min a signed minute offset
    from it.  concentration, sample_type and sample_location are all present or all None (one flag carries
    them); concentration is in concentration_unit.  sensor_status is a GlucoseSensorStatus bit field.
    """

    sequence_number: int
    base_time: DateTimeTuple
    time_offset_min: int | None = None
    concentration: float | None = None
    concentration_unit: GlucoseConcentrationUnit = GlucoseConcentrationUnit.KG_PER_L
    sample_type: int | None = None
    sample_location: int | None = None
    sensor_status: int | None = None
    context_follows: bool = False


def decode_glucose_measurement(buf: Buffer) -> GlucoseMeasurement:
    """Decode a Glucose Measurement notification (one record)."""
    name = "glucose_measurement"
    data = bytes(buf)
    require_min_length(data, _GLU_HEAD, name)
    flags = data[0]
    reject_reserved_flags(flags, _GLU_ALLOWED, name)
    expected = (
        _GLU_HEAD
        + (2 if flags & _GLU_TIME_OFFSET else 0)
        + (3 if flags & _GLU_CONCENTRATION else 0)
        + (2 if flags & _GLU_STATUS else 0)
    )
    require_length(data, expected, name)
    sequence_number = _read_u16(data, 1)
    base_time = _read_date_time(data, 3, name)
    offset = _GLU_HEAD
    time_offset: int | None = None
    if flags & _GLU_TIME_OFFSET:
        time_offset = _S16.unpack_from(data, offset)[0]
        offset += 2
    concentration: float | None = None
    sample_type: int | None = None
    sample_location: int | None = None
    if flags & _GLU_CONCENTRATION:
        concentration = _read_sfloat(data, offset)
        # Type is the least significant nibble, Sample Location the most significant one.
        sample_type = enum_or_int(GlucoseSampleType, data[offset + 2] & 0x0F)
        sample_location = enum_or_int(GlucoseSampleLocation, data[offset + 2] >> 4)
        offset += 3
    status = GlucoseSensorStatus(_read_u16(data, offset)) if flags & _GLU_STATUS else None
    unit = GlucoseConcentrationUnit.MOL_PER_L if flags & _GLU_MOL_PER_L else GlucoseConcentrationUnit.KG_PER_L
    return GlucoseMeasurement(
        sequence_number,
        base_time,
        time_offset,
        concentration,
        unit,
        sample_type,
        sample_location,
        status,
        bool(flags & _GLU_CONTEXT_FOLLOWS),
    )


def encode_glucose_measurement(m: GlucoseMeasurement) -> bytes:
    """Encode a Glucose Measurement; concentration, sample_type and sample_location go together or not at all."""
    check_uint(m.sequence_number, 16, "sequence_number")
    flags = _GLU_MOL_PER_L if m.concentration_unit is GlucoseConcentrationUnit.MOL_PER_L else 0
    flags |= _GLU_CONTEXT_FOLLOWS if m.context_follows else 0
    body = bytearray(_date_time_bytes(m.base_time, "base_time"))
    if m.time_offset_min is not None:
        if not -0x8000 <= m.time_offset_min <= 0x7FFF:
            raise ValueError("time_offset_min must be a signed 16-bit integer")
        flags |= _GLU_TIME_OFFSET
        body += _S16.pack(m.time_offset_min)
    present = (m.concentration is not None, m.sample_type is not None, m.sample_location is not None)
    if any(present) and not all(present):
        raise ValueError("concentration, sample_type and sample_location are present together or not at all")
    if m.concentration is not None and m.sample_type is not None and m.sample_location is not None:
        flags |= _GLU_CONCENTRATION
        type_location = _nibble(m.sample_location, "sample_location") << 4 | _nibble(m.sample_type, "sample_type")
        body += _sfloat_bytes(m.concentration) + _U8.pack(type_location)
    if m.sensor_status is not None:
        check_uint(m.sensor_status, 16, "sensor_status")
        flags |= _GLU_STATUS
        body += _U16.pack(m.sensor_status)
    return _U8.pack(flags) + _U16.pack(m.sequence_number) + bytes(body)


class CarbohydrateId(enum.IntEnum):
    """Glucose Measurement Context carbohydrate ID."""

    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(enum.IntEnum):
    """Glucose Measurement Context meal."""

    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4
    BEDTIME = 5


class GlucoseTester(enum.IntEnum):
    """Glucose Measurement Context tester (low nibble of Tester-Health)."""

    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class GlucoseHealth(enum.IntEnum):
    """Glucose Measurement Context health (high nibble of Tester-Health)."""

    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(enum.IntEnum):
    """Glucose Measurement Context medication ID."""

    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


class MedicationUnit(enum.Enum):
    """The unit of the medication amount (context flags bit 5); values are UCUM codes."""

    KILOGRAMS = "kg"
    LITRES = "L"


_CTX_CARBOHYDRATE: Final = 0x01
_CTX_MEAL: Final = 0x02
_CTX_TESTER_HEALTH: Final = 0x04
_CTX_EXERCISE: Final = 0x08
_CTX_MEDICATION: Final = 0x10
_CTX_MEDICATION_LITRES: Final = 0x20
_CTX_HBA1C: Final = 0x40
_CTX_EXTENDED_FLAGS: Final = 0x80
_CTX_EXTENDED_ALLOWED: Final = 0x00  # every extended flag bit is reserved for future use


@dataclass(frozen=True, slots=True)
class GlucoseMeasurementContext:
    """Glucose Measurement Context (0x2A34), linked to its measurement by sequence_number.

    Paired fields are present together or not at all: carbohydrate_id with carbohydrate_kg, tester with health,
    exercise_duration_s with exercise_intensity_pct, medication_id with medication (in medication_unit).
    exercise_duration_s 65535 means "overrun"; extended_flags is 0 when the (all-reserved) octet was sent.
    """

    sequence_number: int
    carbohydrate_id: int | None = None
    carbohydrate_kg: float | None = None
    meal: int | None = None
    tester: int | None = None
    health: int | None = None
    exercise_duration_s: int | None = None
    exercise_intensity_pct: int | None = None
    medication_id: int | None = None
    medication: float | None = None
    medication_unit: MedicationUnit = MedicationUnit.KILOGRAMS
    hba1c_pct: float | None = None
    extended_flags: int | None = None


def decode_glucose_measurement_context(buf: Buffer) -> GlucoseMeasurementContext:
    """Decode a Glucose Measurement Context notification, skipping over exactly the fields the flags announce."""
    name = "glucose_measurement_context"
    data = bytes(buf)
    require_min_length(data, 3, name)
    flags = data[0]
    expected = (
        3
        + (1 if flags & _CTX_EXTENDED_FLAGS else 0)
        + (3 if flags & _CTX_CARBOHYDRATE else 0)
        + (1 if flags & _CTX_MEAL else 0)
        + (1 if flags & _CTX_TESTER_HEALTH else 0)
        + (3 if flags & _CTX_EXERCISE else 0)
        + (3 if flags & _CTX_MEDICATION else 0)
        + (2 if flags & _CTX_HBA1C else 0)
    )
    require_length(data, expected, name)
    sequence_number = _read_u16(data, 1)
    offset = 3
    extended: int | None = None
    if flags & _CTX_EXTENDED_FLAGS:
        extended = data[offset]
        # A set extended flag would announce fields whose place in the frame no published spec defines.
        reject_reserved_flags(extended, _CTX_EXTENDED_ALLOWED, name)
        offset += 1
    carbohydrate_id: int | None = None
    carbohydrate: float | None = None
    if flags & _CTX_CARBOHYDRATE:
        carbohydrate_id = enum_or_int(CarbohydrateId, data[offset])
        carbohydrate = _read_sfloat(data, offset + 1)
        offset += 3
    meal: int | None = None
    if flags & _CTX_MEAL:
        meal = enum_or_int(Meal, data[offset])
        offset += 1
    tester: int | None = None
    health: int | None = None
    if flags & _CTX_TESTER_HEALTH:
        # Tester is the least significant nibble, Health the most significant one.
        tester = enum_or_int(GlucoseTester, data[offset] & 0x0F)
        health = enum_or_int(GlucoseHealth, data[offset] >> 4)
        offset += 1
    duration: int | None = None
    intensity: int | None = None
    if flags & _CTX_EXERCISE:
        duration = _read_u16(data, offset)
        intensity = data[offset + 2]
        offset += 3
    medication_id: int | None = None
    medication: float | None = None
    if flags & _CTX_MEDICATION:
        medication_id = enum_or_int(MedicationId, data[offset])
        medication = _read_sfloat(data, offset + 1)
        offset += 3
    hba1c = _read_sfloat(data, offset) if flags & _CTX_HBA1C else None
    unit = MedicationUnit.LITRES if flags & _CTX_MEDICATION_LITRES else MedicationUnit.KILOGRAMS
    return GlucoseMeasurementContext(
        sequence_number,
        carbohydrate_id,
        carbohydrate,
        meal,
        tester,
        health,
        duration,
        intensity,
        medication_id,
        medication,
        unit,
        hba1c,
        extended,
    )


def encode_glucose_measurement_context(c: GlucoseMeasurementContext) -> bytes:
    """Encode a Glucose Measurement Context with the optional fields that are set."""
    check_uint(c.sequence_number, 16, "sequence_number")
    pairs = (
        (c.carbohydrate_id, c.carbohydrate_kg, "carbohydrate_id and carbohydrate_kg"),
        (c.tester, c.health, "tester and health"),
        (c.exercise_duration_s, c.exercise_intensity_pct, "exercise_duration_s and exercise_intensity_pct"),
        (c.medication_id, c.medication, "medication_id and medication"),
    )
    for first, second, names in pairs:
        if (first is None) != (second is None):
            raise ValueError(f"{names} are present together or not at all")
    flags = _CTX_MEDICATION_LITRES if c.medication_unit is MedicationUnit.LITRES else 0
    body = bytearray()
    if c.extended_flags is not None:
        if c.extended_flags != 0:
            raise ValueError("every extended flag bit is reserved for future use")
        flags |= _CTX_EXTENDED_FLAGS
        body += _U8.pack(0)
    if c.carbohydrate_id is not None and c.carbohydrate_kg is not None:
        check_uint(c.carbohydrate_id, 8, "carbohydrate_id")
        flags |= _CTX_CARBOHYDRATE
        body += _U8.pack(c.carbohydrate_id) + _sfloat_bytes(c.carbohydrate_kg)
    if c.meal is not None:
        check_uint(c.meal, 8, "meal")
        flags |= _CTX_MEAL
        body += _U8.pack(c.meal)
    if c.tester is not None and c.health is not None:
        flags |= _CTX_TESTER_HEALTH
        body += _U8.pack(_nibble(c.health, "health") << 4 | _nibble(c.tester, "tester"))
    if c.exercise_duration_s is not None and c.exercise_intensity_pct is not None:
        check_uint(c.exercise_duration_s, 16, "exercise_duration_s")
        check_uint(c.exercise_intensity_pct, 8, "exercise_intensity_pct")
        flags |= _CTX_EXERCISE
        body += _U16.pack(c.exercise_duration_s) + _U8.pack(c.exercise_intensity_pct)
    if c.medication_id is not None and c.medication is not None:
        check_uint(c.medication_id, 8, "medication_id")
        flags |= _CTX_MEDICATION
        body += _U8.pack(c.medication_id) + _sfloat_bytes(c.medication)
    if c.hba1c_pct is not None:
        flags |= _CTX_HBA1C
        body += _sfloat_bytes(c.hba1c_pct)
    return _U8.pack(flags) + _U16.pack(c.sequence_number) + bytes(body)


class GlucoseFeature(enum.IntFlag):
    """Glucose Feature (0x2A51) bits; bits a newer spec defines are kept in the value, unnamed."""

    LOW_BATTERY_DETECTION = 0x0001
    SENSOR_MALFUNCTION_DETECTION = 0x0002
    SAMPLE_SIZE = 0x0004
    STRIP_INSERTION_ERROR_DETECTION = 0x0008
    STRIP_TYPE_ERROR_DETECTION = 0x0010
    RESULT_HIGH_LOW_DETECTION = 0x0020
    TEMPERATURE_HIGH_LOW_DETECTION = 0x0040
    READ_INTERRUPT_DETECTION = 0x0080
    GENERAL_DEVICE_FAULT = 0x0100
    TIME_FAULT = 0x0200
    MULTIPLE_BOND = 0x0400


def decode_glucose_feature(buf: Buffer) -> GlucoseFeature:
    """Decode Glucose Feature: exactly one uint16 bit field."""
    return _decode_features(buf, GlucoseFeature, "glucose_feature")


def encode_glucose_feature(features: int) -> bytes:
    """Encode Glucose Feature from its bits."""
    return _encode_features(features, "glucose_feature")
