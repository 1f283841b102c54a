"""Tests for the Blood Pressure, GlucoseHealth Thermometer, Glucose, Device Information and Current Time codecs,
and for the profiles that turn their frames into events."""

from __future__ import annotations

import dataclasses
import math
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.ble import bas, bps, device_info, gls, hts
from drivers.ble.bps import (
    BloodPressureFeature,
    BloodPressureMeasurement,
    IntermediateCuffPressure,
    PressureUnit,
)
from drivers.ble.device_info import (
    AdjustReason,
    CurrentTime,
    DayOfWeek,
    DeviceIdentity,
    DstOffset,
    LocalTimeInformation,
    PnpId,
    SystemId,
    VendorIdSource,
)
from drivers.ble.gls import (
    CarbohydrateId,
    GlucoseConcentrationUnit,
    GlucoseFeature,
    GlucoseHealth,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseSampleLocation,
    GlucoseSampleType,
    GlucoseSensorStatus,
    GlucoseTester,
    Meal,
    MedicationId,
    MedicationUnit,
)
from drivers.ble.hts import (
    TemperatureMeasurement,
    TemperatureType,
    TemperatureUnit,
)
from drivers.ble.profiles import PROFILES, ProfileState, on_blood_pressure, on_glucose, on_temperature
from drivers.ble.sfloat import decode_float, decode_sfloat
from drivers.ble.transport import BleDeviceSection
from gateway.core.errors import InvalidFrame
from gateway.core.model import Observation, stable_id
from gateway.core.nomenclature import quantity
from tests.support.fuzzing import FAST, CodecBattery

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")


def sf(mantissa: int, exponent: int) -> bytes:
    """An SFLOAT packed by the definition (4-bit exponent, 12-bit mantissa), independently of the encoder."""
    return U16.pack(((exponent & 0xF) << 12) | (mantissa & 0xFFF))


def fl(mantissa: int, exponent: int) -> bytes:
    """A FLOAT packed by the definition (8-bit exponent, 24-bit mantissa)."""
    return U32.pack(((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF))


def date_time(year: int, month: int, day: int, hours: int, minutes: int, seconds: int) -> bytes:
    return struct.pack("<HBBBBB", year, month, day, hours, minutes, seconds)


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_truncations_invalid(decode: Callable[[bytes], object], frame: bytes) -> None:
    """Every proper prefix of a valid frame is an InvalidFrame, never a crash or a shorter reading."""
    decode(frame)
    for n in range(len(frame)):
        with pytest.raises(InvalidFrame):
            decode(frame[:n])


NAN, NRES, POS_INF, NEG_INF, RESERVED = 0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801

# Values the encoders (SFLOAT, every exponent) carry exactly.
sfloat_values = st.builds(
    lambda m, e: decode_sfloat(int.from_bytes(sf(m, e), "little")), st.integers(-2045, 2045), st.integers(-8, 7)
)
float_values = st.builds(
    lambda m, e: decode_float(int.from_bytes(fl(m, e), "little")),
    st.integers(-8_388_605, 8_388_605),
    st.integers(-6, 20),
)
date_times = st.tuples(
    st.one_of(st.just(0), st.integers(1582, 9999)),
    st.integers(0, 12),
    st.integers(0, 31),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)
optional = st.one_of  # readability: optional(st.none(), x)


# ------------------------------------------------------------------------------------------------ UUIDs


def test_uuids_are_canonical_and_distinct() -> None:
    assert bps.BLOOD_PRESSURE_MEASUREMENT == "00002a35-0000-1000-8000-00805f9b34fb"
    assert gls.GLUCOSE_MEASUREMENT_CONTEXT == "00002a34-0000-1000-8000-00805f9b34fb"
    assert hts.HEALTH_THERMOMETER_SERVICE == "00001809-0000-1000-8000-00805f9b34fb"
    assert device_info.CURRENT_TIME == "00002a2b-0000-1000-8000-00805f9b34fb"
    assert device_info.PNP_ID == "00002a50-0000-1000-8000-00805f9b34fb"
    assert device_info.SERIAL_NUMBER == device_info.SERIAL_NUMBER  # one definition, re-exported
    constants = {
        f"{module.__name__}.{name}": value
        for module in (bps, hts, gls, device_info)
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and value.count("-") == 4
    }
    assert len(constants) == 12 + 13
    values = list(constants.values())
    assert len(set(values)) == len(values)
    for value in values:
        assert str(uuid.UUID(value)) == value


# ---------------------------------------------------------------------------------------- blood pressure


# Flags 0x1E: mmHg, time stamp, pulse rate, user ID, measurement status all present.
BPM_FULL = (
    b"\x1e"
    + sf(120, 0)  # systolic 120 mmHg
    + sf(80, 0)  # diastolic 80 mmHg
    + sf(933, -1)  # mean arterial pressure 93.3 mmHg
    + date_time(2024, 5, 1, 8, 30, 0)  # time stamp
    + sf(72, 0)  # pulse rate 72 /min
    + b"\x01"  # user ID 1
    + b"\x01\x00"  # measurement status: body movement detected
)
# Flags 0x01: kPa, no optional fields.
BPM_KPA = b"\x01" + sf(160, -1) + sf(107, -1) + sf(125, -1)  # 16.0 / 10.7 / 12.5 kPa
# Flags 0x04: mmHg, pulse rate; diastolic and MAP unused (NaN).
ICP = b"\x04" + sf(152, 0) + U16.pack(NAN) + U16.pack(NAN) + sf(70, 0)


def test_blood_pressure_measurement_spec_example() -> None:
    m = bps.decode_blood_pressure_measurement(BPM_FULL)
    assert m == BloodPressureMeasurement(120.0, 80.0, 93.3, PressureUnit.MMHG, (2024, 5, 1, 8, 30, 0), 72.0, 1, 0x0001)
    assert bps.encode_blood_pressure_measurement(m) == BPM_FULL
    assert_truncations_invalid(bps.decode_blood_pressure_measurement, BPM_FULL)
    kpa = bps.decode_blood_pressure_measurement(BPM_KPA)
    assert kpa == BloodPressureMeasurement(16.0, 10.7, 12.5, PressureUnit.KPA)
    # The encoder prefers exponent 0 where it is exact (16 rather than 160e-1): same values, other bytes.
    assert bps.decode_blood_pressure_measurement(bps.encode_blood_pressure_measurement(kpa)) == kpa


@pytest.mark.parametrize("flags", range(32))
def test_blood_pressure_every_flag_combination(flags: int) -> None:
    frame = bytes([flags]) + sf(1205, -1) + sf(78, 0) + sf(92, 0)
    frame += date_time(2023, 12, 31, 23, 59, 59) if flags & 0x02 else b""
    frame += sf(65, 0) if flags & 0x04 else b""
    frame += b"\xff" if flags & 0x08 else b""  # 0xFF: unknown user
    frame += b"\x18\x00" if flags & 0x10 else b""  # pulse rate range bits 3-4 = 0b11
    m = bps.decode_blood_pressure_measurement(frame)
    assert m == BloodPressureMeasurement(
        120.5,
        78.0,
        92.0,
        PressureUnit.KPA if flags & 0x01 else PressureUnit.MMHG,
        (2023, 12, 31, 23, 59, 59) if flags & 0x02 else None,
        65.0 if flags & 0x04 else None,
        0xFF if flags & 0x08 else None,
        0x0018 if flags & 0x10 else None,
    )
    assert bps.encode_blood_pressure_measurement(m) == frame
    assert_truncations_invalid(bps.decode_blood_pressure_measurement, frame)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x20" + sf(120, 0) + sf(80, 0) + sf(90, 0),  # reserved flag bit 5
        b"\x80" + sf(120, 0) + sf(80, 0) + sf(90, 0),  # reserved flag bit 7
        b"\x00" + sf(120, 0) + sf(80, 0) + sf(90, 0) + b"\x00",  # trailing byte
        b"\x02" + sf(120, 0) + sf(80, 0) + sf(90, 0) + date_time(2024, 13, 1, 0, 0, 0),  # month 13
        b"\x02" + sf(120, 0) + sf(80, 0) + sf(90, 0) + date_time(1000, 1, 1, 0, 0, 0),  # year before 1582
    ],
)
def test_blood_pressure_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        bps.decode_blood_pressure_measurement(frame)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(NAN, math.nan), (NRES, math.nan), (RESERVED, math.nan), (POS_INF, math.inf), (NEG_INF, -math.inf)],
)
def test_blood_pressure_special_sfloat_values(raw: int, expected: float) -> None:
    m = bps.decode_blood_pressure_measurement(b"\x04" + sf(120, 0) + sf(80, 0) + U16.pack(raw) + U16.pack(raw))
    assert same(m.mean_arterial_pressure, expected)
    assert m.pulse_rate_bpm is not None
    assert same(m.pulse_rate_bpm, expected)


def test_intermediate_cuff_pressure() -> None:
    m = bps.decode_intermediate_cuff_pressure(ICP)
    assert m == IntermediateCuffPressure(152.0, PressureUnit.MMHG, None, 70.0)
    # The encoder fills the unused diastolic and MAP with NaN, as the spec requires.
    assert bps.encode_intermediate_cuff_pressure(m) == ICP
    assert_truncations_invalid(bps.decode_intermediate_cuff_pressure, ICP)
    # Some cuffs send 0 rather than NaN in the unused fields: nothing of theirs is read.
    assert bps.decode_intermediate_cuff_pressure(b"\x00" + sf(40, 0) + sf(0, 0) * 2).current_cuff_pressure == 40


def test_blood_pressure_feature() -> None:
    features = bps.decode_blood_pressure_feature(b"\x21\x00")  # body movement, multiple bond
    assert features == BloodPressureFeature.BODY_MOVEMENT_DETECTION | BloodPressureFeature.MULTIPLE_BOND
    assert BloodPressureFeature.CUFF_FIT_DETECTION not in features
    assert bps.decode_blood_pressure_feature(b"\x00\x81") == 0x8100  # bits of a newer spec kept
    assert bps.encode_blood_pressure_feature(features) == b"\x21\x00"
    for frame in (b"", b"\x21", b"\x21\x00\x00"):
        with pytest.raises(InvalidFrame):
            bps.decode_blood_pressure_feature(frame)


units = st.sampled_from(list(PressureUnit))
blood_pressures = st.builds(
    BloodPressureMeasurement,
    sfloat_values,
    sfloat_values,
    sfloat_values,
    units,
    optional(st.none(), date_times),
    optional(st.none(), sfloat_values),
    optional(st.none(), st.integers(0, 255)),
    optional(st.none(), st.integers(0, 0xFFFF)),
)
cuff_pressures = st.builds(
    IntermediateCuffPressure,
    sfloat_values,
    units,
    optional(st.none(), date_times),
    optional(st.none(), sfloat_values),
    optional(st.none(), st.integers(0, 255)),
    optional(st.none(), st.integers(0, 0xFFFF)),
)


@FAST
@given(blood_pressures)
def test_blood_pressure_round_trip(m: BloodPressureMeasurement) -> None:
    assert bps.decode_blood_pressure_measurement(bps.encode_blood_pressure_measurement(m)) == m


@FAST
@given(cuff_pressures)
def test_intermediate_cuff_pressure_round_trip(m: IntermediateCuffPressure) -> None:
    assert bps.decode_intermediate_cuff_pressure(bps.encode_intermediate_cuff_pressure(m)) == m


def test_blood_pressure_encoder_rejects_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="user_id"):
        bps.encode_blood_pressure_measurement(BloodPressureMeasurement(1, 2, 3, user_id=256))
    with pytest.raises(ValueError, match="timestamp"):
        bps.encode_blood_pressure_measurement(BloodPressureMeasurement(1, 2, 3, timestamp=(2024, 2, 3, 24, 0, 0)))
    with pytest.raises(ValueError, match="too large"):
        bps.encode_blood_pressure_measurement(BloodPressureMeasurement(1e12, 2, 3))


# -------------------------------------------------------------------------------------- health thermometer

# Flags 0x06: Celsius, time stamp and temperature type present.
TEMP_FULL = b"\x06" + fl(366, -1) + date_time(2024, 2, 29, 7, 15, 0) + b"\x03"  # 36.6 Cel, ear
# Flags 0x01: Fahrenheit only.
TEMP_FAHRENHEIT = b"\x01" + fl(986, -1)  # 98.6 [degF]


def test_temperature_measurement_spec_examples() -> None:
    m = hts.decode_temperature_measurement(TEMP_FULL)
    assert m == TemperatureMeasurement(36.6, TemperatureUnit.CELSIUS, (2024, 2, 29, 7, 15, 0), TemperatureType.EAR)
    assert isinstance(m.temperature_type, TemperatureType)
    assert hts.encode_temperature_measurement(m) == TEMP_FULL
    f = hts.decode_temperature_measurement(TEMP_FAHRENHEIT)
    assert f == TemperatureMeasurement(98.6, TemperatureUnit.FAHRENHEIT)
    assert hts.encode_temperature_measurement(f) == TEMP_FAHRENHEIT
    assert hts.decode_intermediate_temperature(TEMP_FULL) == m
    assert hts.encode_intermediate_temperature(m) == TEMP_FULL
    for frame in (TEMP_FULL, TEMP_FAHRENHEIT):
        assert_truncations_invalid(hts.decode_temperature_measurement, frame)
        assert_truncations_invalid(hts.decode_intermediate_temperature, frame)


@pytest.mark.parametrize("flags", range(8))
def test_temperature_every_flag_combination(flags: int) -> None:
    frame = bytes([flags]) + fl(-155, -1)
    frame += date_time(0, 0, 0, 12, 0, 0) if flags & 0x02 else b""  # date unknown
    frame += b"\x0c" if flags & 0x04 else b""  # a type value no published spec defines: kept as int
    m = hts.decode_temperature_measurement(frame)
    assert m == TemperatureMeasurement(
        -15.5,
        TemperatureUnit.FAHRENHEIT if flags & 0x01 else TemperatureUnit.CELSIUS,
        (0, 0, 0, 12, 0, 0) if flags & 0x02 else None,
        12 if flags & 0x04 else None,
    )
    assert hts.encode_temperature_measurement(m) == frame
    assert_truncations_invalid(hts.decode_temperature_measurement, frame)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(0x007FFFFF, math.nan), (0x00800000, math.nan), (0x007FFFFE, math.inf), (0x00800002, -math.inf)],
)
def test_temperature_special_float_values(raw: int, expected: float) -> None:
    m = hts.decode_temperature_measurement(b"\x00" + U32.pack(raw))
    assert same(m.temperature, expected)
    # The encoder writes the specials back: NaN (NRes collapses to NaN), +INF, -INF.
    again = hts.decode_temperature_measurement(hts.encode_temperature_measurement(m))
    assert same(again.temperature, expected)


@pytest.mark.parametrize("frame", [b"\x08" + fl(366, -1), b"\x00" + fl(366, -1) + b"\x00", b"\x04" + fl(366, -1)])
def test_temperature_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        hts.decode_temperature_measurement(frame)


def test_temperature_type() -> None:
    assert hts.decode_temperature_type(b"\x02") is TemperatureType.BODY
    assert hts.decode_temperature_type(b"\x09") is TemperatureType.TYMPANUM
    assert hts.decode_temperature_type(b"\x00") == 0  # reserved, kept
    assert hts.encode_temperature_type(TemperatureType.RECTUM) == b"\x07"
    for frame in (b"", b"\x01\x01"):
        with pytest.raises(InvalidFrame):
            hts.decode_temperature_type(frame)


temperatures = st.builds(
    TemperatureMeasurement,
    float_values,
    st.sampled_from(list(TemperatureUnit)),
    optional(st.none(), date_times),
    optional(st.none(), st.integers(0, 255)),
)


@FAST
@given(temperatures)
def test_temperature_round_trip(m: TemperatureMeasurement) -> None:
    assert hts.decode_temperature_measurement(hts.encode_temperature_measurement(m)) == m
    assert hts.decode_intermediate_temperature(hts.encode_intermediate_temperature(m)) == m


# ------------------------------------------------------------------------------------------------- glucose

# Flags 0x1B: time offset, concentration (kg/L) + type-sample location, sensor status, context follows.
GLUCOSE_FULL = (
    b"\x1b"
    + b"\x07\x00"  # sequence number 7
    + date_time(2024, 1, 2, 3, 4, 5)  # base time
    + b"\xc4\xff"  # time offset -60 min
    + sf(95, -5)  # 95e-5 kg/L = 95 mg/dL
    + b"\x11"  # type 1 (capillary whole blood, low nibble), location 1 (finger, high nibble)
    + b"\x01\x00"  # sensor status: device battery low
)
# Flags 0x06: concentration in mol/L + type-sample location.
GLUCOSE_MOL = b"\x06" + b"\x2a\x01" + date_time(2024, 1, 2, 3, 4, 5) + sf(53, -4) + b"\x12"  # 5.3 mmol/L, plasma


def test_glucose_measurement_spec_examples() -> None:
    m = gls.decode_glucose_measurement(GLUCOSE_FULL)
    assert m == GlucoseMeasurement(
        7,
        (2024, 1, 2, 3, 4, 5),
        -60,
        95e-5,
        GlucoseConcentrationUnit.KG_PER_L,
        GlucoseSampleType.CAPILLARY_WHOLE_BLOOD,
        GlucoseSampleLocation.FINGER,
        GlucoseSensorStatus.DEVICE_BATTERY_LOW,
        context_follows=True,
    )
    assert gls.encode_glucose_measurement(m) == GLUCOSE_FULL
    assert_truncations_invalid(gls.decode_glucose_measurement, GLUCOSE_FULL)
    mol = gls.decode_glucose_measurement(GLUCOSE_MOL)
    assert (mol.sequence_number, mol.concentration, mol.concentration_unit) == (
        298,
        0.0053,
        GlucoseConcentrationUnit.MOL_PER_L,
    )
    assert (mol.sample_type, mol.sample_location) == (GlucoseSampleType.CAPILLARY_PLASMA, GlucoseSampleLocation.FINGER)
    assert mol.time_offset_min is None and mol.sensor_status is None and not mol.context_follows
    assert gls.encode_glucose_measurement(mol) == GLUCOSE_MOL


@pytest.mark.parametrize("flags", range(32))
def test_glucose_every_flag_combination(flags: int) -> None:
    frame = bytes([flags]) + b"\xff\xff" + date_time(2025, 6, 30, 23, 0, 59)
    frame += struct.pack("<h", 1440) if flags & 0x01 else b""
    frame += sf(1, -3) + b"\xf9" if flags & 0x02 else b""  # 1e-3; sample location 15 (n/a), type 9 (ISF)
    frame += b"\x00\x80" if flags & 0x08 else b""  # a status bit no published spec defines: kept
    m = gls.decode_glucose_measurement(frame)
    assert m == GlucoseMeasurement(
        0xFFFF,
        (2025, 6, 30, 23, 0, 59),
        1440 if flags & 0x01 else None,
        0.001 if flags & 0x02 else None,
        GlucoseConcentrationUnit.MOL_PER_L if flags & 0x04 else GlucoseConcentrationUnit.KG_PER_L,
        GlucoseSampleType.INTERSTITIAL_FLUID if flags & 0x02 else None,
        GlucoseSampleLocation.NOT_AVAILABLE if flags & 0x02 else None,
        0x8000 if flags & 0x08 else None,
        bool(flags & 0x10),
    )
    assert gls.encode_glucose_measurement(m) == frame
    assert_truncations_invalid(gls.decode_glucose_measurement, frame)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x20" + b"\x01\x00" + date_time(2024, 1, 2, 3, 4, 5),  # reserved flag bit
        b"\x00" + b"\x01\x00" + date_time(2024, 1, 2, 3, 4, 5) + b"\x00",  # trailing byte
        b"\x00" + b"\x01\x00" + date_time(2024, 1, 32, 3, 4, 5),  # day 32
    ],
)
def test_glucose_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        gls.decode_glucose_measurement(frame)


@pytest.mark.parametrize(("raw", "expected"), [(NRES, math.nan), (POS_INF, math.inf), (NEG_INF, -math.inf)])
def test_glucose_special_sfloat_values(raw: int, expected: float) -> None:
    m = gls.decode_glucose_measurement(b"\x02\x01\x00" + date_time(2024, 1, 2, 3, 4, 5) + U16.pack(raw) + b"\x11")
    assert same(m.concentration, expected)


def test_glucose_encoder_keeps_type_and_location_with_the_concentration() -> None:
    with pytest.raises(ValueError, match="together"):
        gls.encode_glucose_measurement(GlucoseMeasurement(1, (2024, 1, 1, 0, 0, 0), concentration=1e-3))
    with pytest.raises(ValueError, match="sample_type"):
        gls.encode_glucose_measurement(
            GlucoseMeasurement(1, (2024, 1, 1, 0, 0, 0), None, 1e-3, sample_type=16, sample_location=1)
        )
    with pytest.raises(ValueError, match="time_offset"):
        gls.encode_glucose_measurement(GlucoseMeasurement(1, (2024, 1, 1, 0, 0, 0), 40_000))


concentrations = optional(
    st.tuples(st.none(), st.none(), st.none()),
    st.tuples(sfloat_values, st.integers(0, 15), st.integers(0, 15)),
)
glucose_measurements = st.builds(
    lambda seq, base, offset, c, unit, status, follows: GlucoseMeasurement(
        seq, base, offset, c[0], unit, c[1], c[2], status, follows
    ),
    st.integers(0, 0xFFFF),
    date_times,
    optional(st.none(), st.integers(-0x8000, 0x7FFF)),
    concentrations,
    st.sampled_from(list(GlucoseConcentrationUnit)),
    optional(st.none(), st.integers(0, 0xFFFF)),
    st.booleans(),
)


@FAST
@given(glucose_measurements)
def test_glucose_round_trip(m: GlucoseMeasurement) -> None:
    assert gls.decode_glucose_measurement(gls.encode_glucose_measurement(m)) == m


# Flags 0xFF: every field, medication in litres, extended flags octet present (all reserved, so 0).
CONTEXT_FULL = (
    b"\xff"
    + b"\x07\x00"  # sequence number 7 (the measurement's)
    + b"\x00"  # extended flags
    + b"\x01"  # carbohydrate ID: breakfast
    + sf(5, -2)  # carbohydrate 0.05 kg
    + b"\x01"  # meal: preprandial
    + b"\x51"  # tester 1 (self, low nibble), health 5 (no health issues, high nibble)
    + b"\x08\x07"  # exercise duration 1800 s
    + b"\x32"  # exercise intensity 50 %
    + b"\x01"  # medication ID: rapid acting insulin
    + sf(4, -5)  # medication 4e-5 L (4 units of U-100)
    + sf(65, -1)  # HbA1c 6.5 %
)


def test_glucose_context_spec_example() -> None:
    c = gls.decode_glucose_measurement_context(CONTEXT_FULL)
    assert c == GlucoseMeasurementContext(
        7,
        CarbohydrateId.BREAKFAST,
        0.05,
        Meal.PREPRANDIAL,
        GlucoseTester.SELF,
        GlucoseHealth.NO_HEALTH_ISSUES,
        1800,
        50,
        MedicationId.RAPID_ACTING_INSULIN,
        4e-5,
        MedicationUnit.LITRES,
        6.5,
        extended_flags=0,
    )
    assert gls.encode_glucose_measurement_context(c) == CONTEXT_FULL
    assert_truncations_invalid(gls.decode_glucose_measurement_context, CONTEXT_FULL)


def test_glucose_context_skips_exactly_the_present_fields() -> None:
    # Flags 0x54: tester-health, medication (kg) and HbA1c; the carbohydrate, meal and exercise fields are absent.
    frame = b"\x54" + b"\x02\x00" + b"\xf2" + b"\x04" + sf(2, -6) + sf(71, -1)
    c = gls.decode_glucose_measurement_context(frame)
    assert c == GlucoseMeasurementContext(
        2,
        tester=GlucoseTester.HEALTH_CARE_PROFESSIONAL,
        health=GlucoseHealth.NOT_AVAILABLE,
        medication_id=MedicationId.LONG_ACTING_INSULIN,
        medication=2e-6,
        hba1c_pct=7.1,
    )
    assert gls.encode_glucose_measurement_context(c) == frame


CONTEXT_FIELDS = {
    0x01: sf(12, -3),  # carbohydrate ID 1 prepended below, then 0.012 kg
    0x02: b"\x05",  # meal: bedtime
    0x04: b"\x13",  # tester 3 (lab), health 1 (minor issues)
    0x08: b"\xff\xff\x64",  # exercise 65535 s ("overrun"), 100 %
    0x10: b"\x05" + sf(1, -4),  # pre-mixed insulin, 1e-4 kg or L
    0x40: sf(-1, 0),  # HbA1c -1 %: nonsense, but a codec does not judge values
}


@pytest.mark.parametrize("flags", range(256))
def test_glucose_context_every_flag_combination(flags: int) -> None:
    frame = bytes([flags]) + b"\x34\x12" + (b"\x00" if flags & 0x80 else b"")
    for bit in (0x01, 0x02, 0x04, 0x08, 0x10, 0x40):
        if flags & bit:
            frame += (b"\x06" if bit == 0x01 else b"") + CONTEXT_FIELDS[bit]
    c = gls.decode_glucose_measurement_context(frame)
    assert c == GlucoseMeasurementContext(
        0x1234,
        CarbohydrateId.SUPPER if flags & 0x01 else None,
        0.012 if flags & 0x01 else None,
        Meal.BEDTIME if flags & 0x02 else None,
        GlucoseTester.LAB_TEST if flags & 0x04 else None,
        GlucoseHealth.MINOR_HEALTH_ISSUES if flags & 0x04 else None,
        0xFFFF if flags & 0x08 else None,
        100 if flags & 0x08 else None,
        MedicationId.PRE_MIXED_INSULIN if flags & 0x10 else None,
        1e-4 if flags & 0x10 else None,
        MedicationUnit.LITRES if flags & 0x20 else MedicationUnit.KILOGRAMS,
        -1.0 if flags & 0x40 else None,
        0 if flags & 0x80 else None,
    )
    assert gls.encode_glucose_measurement_context(c) == frame
    assert_truncations_invalid(gls.decode_glucose_measurement_context, frame)


def test_glucose_context_rejects_set_extended_flags_and_trailing_bytes() -> None:
    with pytest.raises(InvalidFrame, match="reserved"):
        gls.decode_glucose_measurement_context(b"\x80\x01\x00\x01")
    with pytest.raises(InvalidFrame):
        gls.decode_glucose_measurement_context(b"\x00\x01\x00\x00")
    with pytest.raises(ValueError, match="together"):
        gls.encode_glucose_measurement_context(GlucoseMeasurementContext(1, tester=1))
    with pytest.raises(ValueError, match="reserved"):
        gls.encode_glucose_measurement_context(GlucoseMeasurementContext(1, extended_flags=1))


def pair(first: st.SearchStrategy[Any], second: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, Any]]:
    return optional(st.tuples(st.none(), st.none()), st.tuples(first, second))


glucose_contexts = st.builds(
    lambda seq, carb, meal, th, ex, med, unit, hba1c, ext: GlucoseMeasurementContext(
        seq,
        carbohydrate_id=carb[0],
        carbohydrate_kg=carb[1],
        meal=meal,
        tester=th[0],
        health=th[1],
        exercise_duration_s=ex[0],
        exercise_intensity_pct=ex[1],
        medication_id=med[0],
        medication=med[1],
        medication_unit=unit,
        hba1c_pct=hba1c,
        extended_flags=ext,
    ),
    st.integers(0, 0xFFFF),
    pair(st.integers(0, 255), sfloat_values),
    optional(st.none(), st.integers(0, 255)),
    pair(st.integers(0, 15), st.integers(0, 15)),
    pair(st.integers(0, 0xFFFF), st.integers(0, 255)),
    pair(st.integers(0, 255), sfloat_values),
    st.sampled_from(list(MedicationUnit)),
    optional(st.none(), sfloat_values),
    st.sampled_from([None, 0]),
)


@FAST
@given(glucose_contexts)
def test_glucose_context_round_trip(c: GlucoseMeasurementContext) -> None:
    assert gls.decode_glucose_measurement_context(gls.encode_glucose_measurement_context(c)) == c


def test_glucose_feature() -> None:
    features = gls.decode_glucose_feature(b"\x01\x04")
    assert features == GlucoseFeature.LOW_BATTERY_DETECTION | GlucoseFeature.MULTIPLE_BOND
    assert gls.encode_glucose_feature(features) == b"\x01\x04"
    with pytest.raises(InvalidFrame):
        gls.decode_glucose_feature(b"\x01")


# ------------------------------------------------------------------------------------- device information


def test_dis_strings() -> None:
    assert device_info.decode_dis_string(b"Acme Medical") == "Acme Medical"
    assert device_info.decode_dis_string(bytearray(b"SN-0042\x00\x00")) == "SN-0042"  # NUL padding removed
    assert device_info.decode_dis_string(memoryview("Zürich 1.2".encode())) == "Zürich 1.2"
    assert device_info.decode_dis_string(b"") == ""
    assert device_info.encode_dis_string("Zürich 1.2") == "Zürich 1.2".encode()
    with pytest.raises(ValueError, match="512"):
        device_info.encode_dis_string("x" * 513)


def test_dis_string_invalid_utf8_names_no_content() -> None:
    with pytest.raises(InvalidFrame) as excinfo:
        device_info.decode_dis_string(b"SN-\xff\xfe42", "serial_number")
    assert excinfo.value.fields == {"characteristic": "serial_number", "length": 7, "offset": 3}
    assert "SN-" not in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    with pytest.raises(InvalidFrame, match="longer"):
        device_info.decode_dis_string(b"x" * 513)


def test_system_id_pnp_id_and_certification_list() -> None:
    # System ID: manufacturer identifier 0x0504030201 (40 bits, first), OUI 0x00A0C6 (24 bits, last).
    system_id = device_info.decode_system_id(bytes.fromhex("0102030405c6a000"))
    assert system_id == SystemId(0x0504030201, 0x00A0C6)
    assert system_id.eui64 == 0x00A0C60504030201
    assert device_info.encode_system_id(system_id) == bytes.fromhex("0102030405c6a000")
    assert_truncations_invalid(device_info.decode_system_id, bytes.fromhex("0102030405c6a000"))
    # PnP ID: Bluetooth SIG vendor 0x0059, product 0x1234, version 1.2.3 (0x0123).
    pnp = device_info.decode_pnp_id(bytes.fromhex("01590034122301"))
    assert pnp == PnpId(VendorIdSource.BLUETOOTH_SIG, 0x0059, 0x1234, 0x0123)
    assert pnp.version == "1.2.3"
    assert device_info.encode_pnp_id(pnp) == bytes.fromhex("01590034122301")
    assert_truncations_invalid(device_info.decode_pnp_id, bytes.fromhex("01590034122301"))
    assert device_info.decode_pnp_id(bytes.fromhex("07590034122301")).vendor_id_source == 7  # unknown, kept
    cert = bytes.fromhex("00020012000100010008000200010002a001")
    assert device_info.decode_regulatory_certification_data_list(cert) == cert
    assert device_info.encode_regulatory_certification_data_list(cert) == cert
    with pytest.raises(InvalidFrame):
        device_info.decode_regulatory_certification_data_list(bytes(513))


def test_device_identity_from_whichever_characteristics_are_present() -> None:
    reads = {
        device_info.MANUFACTURER_NAME: b"Acme\x00",
        device_info.SERIAL_NUMBER: b"SN-7",
        device_info.SOFTWARE_REVISION: b"2.0.1",
        device_info.PNP_ID: bytes.fromhex("02b80a01000001"),
        device_info.REGULATORY_CERTIFICATION_DATA_LIST: b"\x00\x01",
        gls.GLUCOSE_FEATURE: b"\x00\x00",  # not a DIS characteristic: ignored
    }
    identity = device_info.decode_device_identity(reads)
    assert identity == DeviceIdentity(
        manufacturer_name="Acme",
        serial_number="SN-7",
        software_revision="2.0.1",
        pnp_id=PnpId(VendorIdSource.USB_IMPLEMENTERS_FORUM, 0x0AB8, 0x0001, 0x0100),
        regulatory_certification_data=b"\x00\x01",
    )
    assert identity.regulatory_certification_hex == "0001"
    assert device_info.decode_device_identity({}) == DeviceIdentity()
    with pytest.raises(InvalidFrame) as excinfo:
        device_info.decode_device_identity({device_info.MODEL_NUMBER: b"\xc3"})
    assert excinfo.value.fields["characteristic"] == "model_number"
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.serial_number = "x"  # type: ignore[misc]


def test_dis_table_covers_every_identity_field() -> None:
    string_fields = set(device_info.DIS_STRING_CHARACTERISTICS.values())
    assert string_fields | {"system_id", "pnp_id", "regulatory_certification_data"} == {
        f.name for f in dataclasses.fields(DeviceIdentity)
    }
    assert len(device_info.DIS_CHARACTERISTICS) == len(set(device_info.DIS_CHARACTERISTICS)) == 9
    with pytest.raises(TypeError):
        device_info.DIS_STRING_CHARACTERISTICS["x"] = "y"  # type: ignore[index]


# ------------------------------------------------------------------------------------------- current time


def test_current_time_from_a_known_unix_time() -> None:
    # 1 700 000 000.5 s = Tuesday 2023-11-14 22:13:20.5 UTC.
    assert datetime.fromtimestamp(1_700_000_000, UTC).isoweekday() == 2
    frame = device_info.encode_current_time_from_ns(1_700_000_000_500_000_000, AdjustReason.MANUAL_TIME_UPDATE)
    assert frame == bytes.fromhex(
        "e707"  # year 2023
        "0b"  # November
        "0e"  # 14th
        "16"
        "0d"
        "14"  # 22:13:20
        "02"  # Tuesday
        "80"  # 128/256 s
        "01"  # adjust reason: manual time update
    )
    assert device_info.decode_current_time(frame) == CurrentTime(
        (2023, 11, 14, 22, 13, 20), DayOfWeek.TUESDAY, 128, AdjustReason.MANUAL_TIME_UPDATE
    )
    # Without a reason the gateway's clock is an external reference; fractions are floored.
    assert device_info.encode_current_time_from_ns(1_700_000_000_999_999_999)[-2:] == b"\xff\x02"
    # The epoch itself was a Thursday; times before it floor towards the past.
    assert device_info.encode_current_time_from_ns(0)[:9] == bytes.fromhex("b20701010000000400")
    assert device_info.encode_current_time_from_ns(-1)[:9] == bytes.fromhex("b1070c1f173b3b03ff")
    assert_truncations_invalid(device_info.decode_current_time, frame)


@pytest.mark.parametrize(
    "frame",
    [
        bytes.fromhex("e7070d0e160d1402 8001"),  # month 13
        bytes.fromhex("e7070b0e160d1408 8001"),  # day of week 8
        bytes.fromhex("e7070b0e180d1402 8001"),  # hour 24
        bytes.fromhex("e7070b0e160d1402 800100"),  # trailing byte
    ],
)
def test_current_time_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        device_info.decode_current_time(frame)


def test_current_time_encoder_checks() -> None:
    with pytest.raises(ValueError, match="Date Time range"):
        device_info.encode_current_time_from_ns(-(10**20))
    with pytest.raises(ValueError, match="Date Time range"):
        device_info.encode_current_time_from_ns(10**30)
    with pytest.raises(ValueError, match="adjust_reason"):
        device_info.encode_current_time_from_ns(0, 0x10)
    with pytest.raises(ValueError, match="day_of_week"):
        device_info.encode_current_time(CurrentTime((2024, 1, 1, 0, 0, 0), 8))
    assert device_info.decode_current_time(bytes.fromhex("e7070b0e160d140280f1")).adjust_reason == 0xF1  # RFU kept


@FAST
@given(st.integers(-12_219_292_800 * 10**9, 253_402_300_799 * 10**9), st.integers(0, 15))
def test_current_time_round_trip(unix_ns: int, reason: int) -> None:
    ct = device_info.decode_current_time(device_info.encode_current_time_from_ns(unix_ns, reason))
    expected = datetime.fromtimestamp(unix_ns // 10**9, UTC)
    assert ct.date_time == expected.timetuple()[:6]
    assert ct.day_of_week == expected.isoweekday()
    assert ct.fractions256 == unix_ns % 10**9 * 256 // 10**9
    assert ct.adjust_reason == reason


def test_local_time_information() -> None:
    info = device_info.decode_local_time_information(b"\x04\x04")  # UTC+1, daylight time
    assert info == LocalTimeInformation(4, DstOffset.DAYLIGHT_TIME)
    assert info.utc_offset_min == 120
    assert device_info.encode_local_time_information(info) == b"\x04\x04"
    unknown = device_info.decode_local_time_information(b"\x80\xff")
    assert unknown == LocalTimeInformation(None, None)
    assert unknown.utc_offset_min is None
    assert device_info.encode_local_time_information(unknown) == b"\x80\xff"
    assert device_info.decode_local_time_information(b"\xd0\x00").time_zone_quarter_hours == -48
    for frame in (b"\x39\x00", b"\x00\x03", b"\x00", b"\x00\x00\x00"):
        with pytest.raises(InvalidFrame):
            device_info.decode_local_time_information(frame)
    with pytest.raises(ValueError, match="time zone"):
        device_info.encode_local_time_information(LocalTimeInformation(57, None))


# --------------------------------------------------------------------------------- never anything but InvalidFrame

DECODERS: dict[str, Callable[[bytes], object]] = {
    "blood_pressure_measurement": bps.decode_blood_pressure_measurement,
    "intermediate_cuff_pressure": bps.decode_intermediate_cuff_pressure,
    "blood_pressure_feature": bps.decode_blood_pressure_feature,
    "temperature_measurement": hts.decode_temperature_measurement,
    "intermediate_temperature": hts.decode_intermediate_temperature,
    "temperature_type": hts.decode_temperature_type,
    "glucose_measurement": gls.decode_glucose_measurement,
    "glucose_measurement_context": gls.decode_glucose_measurement_context,
    "glucose_feature": gls.decode_glucose_feature,
    "dis_string": device_info.decode_dis_string,
    "system_id": device_info.decode_system_id,
    "pnp_id": device_info.decode_pnp_id,
    "regulatory_certification_data_list": device_info.decode_regulatory_certification_data_list,
    "current_time": device_info.decode_current_time,
    "local_time_information": device_info.decode_local_time_information,
}
VALID_FRAMES: dict[str, bytes] = {
    "blood_pressure_measurement": BPM_FULL,
    "intermediate_cuff_pressure": ICP,
    "blood_pressure_feature": b"\x3f\x00",
    "temperature_measurement": TEMP_FULL,
    "intermediate_temperature": TEMP_FULL,
    "temperature_type": b"\x01",
    "glucose_measurement": GLUCOSE_FULL,
    "glucose_measurement_context": CONTEXT_FULL,
    "glucose_feature": b"\xff\x07",
    "dis_string": "Zürich".encode(),
    "system_id": bytes(range(8)),
    "pnp_id": bytes.fromhex("01590034122301"),
    "regulatory_certification_data_list": b"\x00\x01\x02",
    "current_time": bytes.fromhex("e7070b0e160d14028001"),
    "local_time_information": b"\x04\x04",
}


class TestDecoders(CodecBattery):
    decoders = DECODERS
    valid_frames = VALID_FRAMES


def test_dataclasses_are_frozen_and_slotted() -> None:
    for value in (
        BloodPressureMeasurement(1, 2, 3),
        TemperatureMeasurement(36.6),
        GlucoseMeasurement(1, (0, 0, 0, 0, 0, 0)),
        GlucoseMeasurementContext(1),
        CurrentTime((0, 0, 0, 0, 0, 0), 0),
        SystemId(1, 2),
    ):
        assert not hasattr(value, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, 5)


def test_errors_carry_no_measured_values() -> None:
    with pytest.raises(InvalidFrame) as excinfo:
        bps.decode_blood_pressure_measurement(BPM_FULL + b"\x99")
    fields = excinfo.value.log_fields()
    assert fields["characteristic"] == "blood_pressure_measurement"
    assert {"length", "expected"} <= set(fields)
    assert not {120.0, 80.0, 72.0} & set(fields.values())


# ------------------------------------------------------------------------------------------------ profiles


def observations(events: Any) -> dict[str, Observation]:
    out = {e.quantity.reference_id: e for e in events if isinstance(e, Observation)}
    assert len(out) == len(events)
    return out


def test_blood_pressure_profile_mmhg() -> None:
    state = ProfileState("bp-1")
    obs = observations(on_blood_pressure(state, BPM_FULL))
    assert {ref: o.value for ref, o in obs.items()} == {
        "MDC_PRESS_BLD_NONINV_SYS": 120.0,
        "MDC_PRESS_BLD_NONINV_DIA": 80.0,
        "MDC_PRESS_BLD_NONINV_MEAN": 93.3,
        "MDC_PULS_RATE_NON_INV": 72.0,
    }
    assert obs["MDC_PULS_RATE_NON_INV"].quantity.code == (2 << 16) | 18474
    assert obs["MDC_PULS_RATE_NON_INV"].unit == "/min"
    assert all(o.unit == "mm[Hg]" for ref, o in obs.items() if ref.startswith("MDC_PRESS"))
    assert all(o.device_time_ns is None for o in obs.values())  # local device time, zone unknown
    # The device's time stamp (and user) identify the record: a stored measurement re-sent gets the same ids.
    again = observations(on_blood_pressure(state, BPM_FULL))
    assert {o.id for o in obs.values()} == {o.id for o in again.values()}
    assert obs["MDC_PRESS_BLD_NONINV_SYS"].id == stable_id("bp-1", 150021, 2024, 5, 1, 8, 30, 0, 1)


def test_blood_pressure_profile_converts_kpa_and_drops_nan() -> None:
    frame = b"\x01" + sf(160, -1) + sf(107, -1) + U16.pack(NAN)  # 16.0 / 10.7 kPa, MAP not computed
    obs = observations(on_blood_pressure(ProfileState("bp-1"), frame))
    assert set(obs) == {"MDC_PRESS_BLD_NONINV_SYS", "MDC_PRESS_BLD_NONINV_DIA"}
    assert obs["MDC_PRESS_BLD_NONINV_SYS"].value == pytest.approx(120.01, abs=1e-3)  # 16 kPa * 7.50062 mmHg/kPa
    assert obs["MDC_PRESS_BLD_NONINV_DIA"].value == pytest.approx(80.257, abs=1e-3)
    assert obs["MDC_PRESS_BLD_NONINV_SYS"].unit == "mm[Hg]"
    # No time stamp: nothing identifies the record, so each notification is a new event.
    twice = observations(on_blood_pressure(ProfileState("bp-1"), frame))
    assert obs["MDC_PRESS_BLD_NONINV_SYS"].id != twice["MDC_PRESS_BLD_NONINV_SYS"].id


def test_thermometer_profile_celsius_and_fahrenheit() -> None:
    (celsius,) = on_temperature(ProfileState("t-1"), TEMP_FULL)
    assert isinstance(celsius, Observation)
    assert (celsius.quantity.reference_id, celsius.value, celsius.unit) == ("MDC_TEMP_BODY", 36.6, "Cel")
    (converted,) = on_temperature(ProfileState("t-1"), TEMP_FAHRENHEIT)
    assert isinstance(converted, Observation)
    assert (converted.value, converted.unit) == (37.0, "Cel")  # 98.6 [degF]
    (freezing,) = on_temperature(ProfileState("t-1"), b"\x01" + fl(32, 0))
    assert isinstance(freezing, Observation)
    assert freezing.value == 0.0
    assert on_temperature(ProfileState("t-1"), b"\x01" + U32.pack(0x00800000)) == []  # NRes: no measurement


def test_glucose_profile_units_quantities_and_ids() -> None:
    state = ProfileState("glu-1")
    (mass,) = on_glucose(state, GLUCOSE_FULL)
    assert isinstance(mass, Observation)
    assert (mass.quantity.reference_id, mass.value, mass.unit) == ("MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", 95.0, "mg/dL")
    assert mass.quantity.code == 160184
    assert mass.id == stable_id("glu-1", 160184, 7)  # the sequence number identifies the record
    assert on_glucose(state, GLUCOSE_FULL)[0].id == mass.id  # re-sent through RACP: same id
    (molar,) = on_glucose(state, GLUCOSE_MOL)
    assert isinstance(molar, Observation)
    assert molar.quantity.reference_id == "MDC_CONC_GLU_CAPILLARY_PLASMA"
    assert molar.value == pytest.approx(5.3 * 18.0156, abs=1e-3)  # mmol/L -> mg/dL, glucose 180.156 g/mol
    assert molar.id == stable_id("glu-1", quantity("MDC_CONC_GLU_CAPILLARY_PLASMA").code, 298)


@pytest.mark.parametrize(
    ("type_location", "ref"),
    [
        (0x13, "MDC_CONC_GLU_VENOUS_WHOLEBLOOD"),
        (0x14, "MDC_CONC_GLU_VENOUS_PLASMA"),
        (0x15, "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD"),
        (0x16, "MDC_CONC_GLU_ARTERIAL_PLASMA"),
        (0xF7, "MDC_CONC_GLU_GEN"),  # undetermined whole blood
        (0x28, "MDC_CONC_GLU_GEN"),  # undetermined plasma
        (0x19, "MDC_CONC_GLU_ISF"),
        (0x1B, "MDC_CONC_GLU_GEN"),  # a type no published spec defines
        (0x1A, None),  # control solution: a meter check, not the patient
        (0x41, None),  # sample location "control solution"
    ],
)
def test_glucose_profile_codes_by_sample_type(type_location: int, ref: str | None) -> None:
    frame = b"\x02\x01\x00" + date_time(2024, 1, 2, 3, 4, 5) + sf(100, -5) + bytes([type_location])
    events = on_glucose(ProfileState("glu-1"), frame)
    if ref is None:
        assert events == []
    else:
        (obs,) = events
        assert isinstance(obs, Observation)
        assert (obs.quantity.reference_id, obs.value) == (ref, 100.0)


def test_glucose_profile_skips_records_without_a_concentration() -> None:
    assert on_glucose(ProfileState("glu-1"), b"\x08\x01\x00" + date_time(2024, 1, 2, 3, 4, 5) + b"\x01\x00") == []


def test_new_profiles_are_registered_and_accepted_by_the_config() -> None:
    assert PROFILES["blood_pressure"].notify.keys() == {bps.BLOOD_PRESSURE_MEASUREMENT, bas.BATTERY_LEVEL}
    assert PROFILES["thermometer"].notify.keys() == {hts.TEMPERATURE_MEASUREMENT, bas.BATTERY_LEVEL}
    assert PROFILES["glucose_meter"].notify.keys() == {gls.GLUCOSE_MEASUREMENT, bas.BATTERY_LEVEL}
    for name, profile in PROFILES.items():
        assert profile.name == name
    # Every profile the config accepts has an entry, and every entry can be configured.
    for name in PROFILES:
        device = BleDeviceSection.model_validate(
            {"id": f"{name}-1", "transport": "ble", "profile": name, "address": "sim:x"}
        )
        assert device.profile == name
    with pytest.raises(ValidationError, match="expected one of"):
        BleDeviceSection.model_validate({"id": "x-1", "transport": "ble", "profile": "toaster", "address": "sim:x"})
