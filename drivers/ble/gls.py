"""Glucose Service (0x1808) codecs: Glucose Measurement, Glucose Measurement Context, Glucose Feature.

Layouts follow the GATT Specification Supplement (GSS).  Decoders raise only `InvalidFrame` (truncation, trailing
bytes, reserved flag bits, out-of-range Date Time), naming the characteristic and lengths, never a measured value.
The concentration is an SFLOAT in kg/L or mol/L, so it uses the format's full exponent range.  Enumerated fields
(sample type, meal, tester, ...) decode to enum members when known and stay plain ints otherwise.  Encoders exist
for simulated peripherals and tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from drivers.ble.fields import (
    DATE_TIME,
    S16,
    SFLOAT_ALL_DECIMALS,
    U8,
    U16,
    Buffer,
    DateTimeTuple,
    check_uint,
    date_time_bytes,
    decode_feature_bits,
    encode_feature_bits,
    enum_or_int,
    nibble,
    read_date_time,
    read_sfloat_at,
    read_u16,
    reject_reserved_flags,
    require_length,
    require_min_length,
    sfloat_bytes,
    uuid16,
)

GLUCOSE_SERVICE: Final = uuid16(0x1808)
GLUCOSE_MEASUREMENT: Final = uuid16(0x2A18)
GLUCOSE_MEASUREMENT_CONTEXT: Final = uuid16(0x2A34)
GLUCOSE_FEATURE: Final = uuid16(0x2A51)


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
_GLU_HEAD: Final = 3 + DATE_TIME.size  # flags, sequence number, base time


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
    sequence_number = read_u16(data, 1)
    base_time = read_date_time(data, 3, name)
    offset = _GLU_HEAD
    time_offset: int | None = None
    if flags & _GLU_TIME_OFFSET:
        time_offset = S16.unpack_from(data, offset)[0]
        offset += 2
    concentration: float | None = None
    sample_type: int | None = None
    sample_location: int | None = None
    if flags & _GLU_CONCENTRATION:
        concentration = read_sfloat_at(data, offset)
        # Type is the least significant nibble, Sample Location the most significant one.
        sample_type = enum_or_int(GlucoseSampleType, data[offset + 2] & 0x0F)
        sample_location = enum_or_int(GlucoseSampleLocation, data[offset + 2] >> 4)
        offset += 3
    status = GlucoseSensorStatus(read_u16(data, offset)) if flags & _GLU_STATUS else None
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
    body = bytearray(date_time_bytes(m.base_time, "base_time"))
    if m.time_offset_min is not None:
        if not -0x8000 <= m.time_offset_min <= 0x7FFF:
            raise ValueError("time_offset_min must be a signed 16-bit integer")
        flags |= _GLU_TIME_OFFSET
        body += S16.pack(m.time_offset_min)
    present = (m.concentration is not None, m.sample_type is not None, m.sample_location is not None)
    if any(present) and not all(present):
        raise ValueError("concentration, sample_type and sample_location are present together or not at all")
    if m.concentration is not None and m.sample_type is not None and m.sample_location is not None:
        flags |= _GLU_CONCENTRATION
        type_location = nibble(m.sample_location, "sample_location") << 4 | nibble(m.sample_type, "sample_type")
        body += sfloat_bytes(m.concentration, max_decimals=SFLOAT_ALL_DECIMALS) + U8.pack(type_location)
    if m.sensor_status is not None:
        check_uint(m.sensor_status, 16, "sensor_status")
        flags |= _GLU_STATUS
        body += U16.pack(m.sensor_status)
    return U8.pack(flags) + U16.pack(m.sequence_number) + bytes(body)


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
    sequence_number = read_u16(data, 1)
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
        carbohydrate = read_sfloat_at(data, offset + 1)
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
        duration = read_u16(data, offset)
        intensity = data[offset + 2]
        offset += 3
    medication_id: int | None = None
    medication: float | None = None
    if flags & _CTX_MEDICATION:
        medication_id = enum_or_int(MedicationId, data[offset])
        medication = read_sfloat_at(data, offset + 1)
        offset += 3
    hba1c = read_sfloat_at(data, offset) if flags & _CTX_HBA1C else None
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
        body += U8.pack(0)
    if c.carbohydrate_id is not None and c.carbohydrate_kg is not None:
        check_uint(c.carbohydrate_id, 8, "carbohydrate_id")
        flags |= _CTX_CARBOHYDRATE
        body += U8.pack(c.carbohydrate_id) + sfloat_bytes(c.carbohydrate_kg, max_decimals=SFLOAT_ALL_DECIMALS)
    if c.meal is not None:
        check_uint(c.meal, 8, "meal")
        flags |= _CTX_MEAL
        body += U8.pack(c.meal)
    if c.tester is not None and c.health is not None:
        flags |= _CTX_TESTER_HEALTH
        body += U8.pack(nibble(c.health, "health") << 4 | nibble(c.tester, "tester"))
    if c.exercise_duration_s is not None and c.exercise_intensity_pct is not None:
        check_uint(c.exercise_duration_s, 16, "exercise_duration_s")
        check_uint(c.exercise_intensity_pct, 8, "exercise_intensity_pct")
        flags |= _CTX_EXERCISE
        body += U16.pack(c.exercise_duration_s) + U8.pack(c.exercise_intensity_pct)
    if c.medication_id is not None and c.medication is not None:
        check_uint(c.medication_id, 8, "medication_id")
        flags |= _CTX_MEDICATION
        body += U8.pack(c.medication_id) + sfloat_bytes(c.medication, max_decimals=SFLOAT_ALL_DECIMALS)
    if c.hba1c_pct is not None:
        flags |= _CTX_HBA1C
        body += sfloat_bytes(c.hba1c_pct, max_decimals=SFLOAT_ALL_DECIMALS)
    return U8.pack(flags) + U16.pack(c.sequence_number) + bytes(body)


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
    return decode_feature_bits(buf, GlucoseFeature, "glucose_feature")


def encode_glucose_feature(features: int) -> bytes:
    """Encode Glucose Feature from its bits."""
    return encode_feature_bits(features, "glucose_feature")
