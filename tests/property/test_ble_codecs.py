"""Tests for the pure BLE codecs: SFLOAT/FLOAT, E2E-CRC and every GATT characteristic decoder/encoder."""

from __future__ import annotations

import dataclasses
import itertools
import math
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble import bas, cgms, device_info, fields, hrs, idd_status, ids, plxs, pmd, racp
from drivers.ble.cgms import CgmMeasurement
from drivers.ble.hrs import HeartRateMeasurement
from drivers.ble.idd_status import IddStatus, OperationalState, TherapyControlState
from drivers.ble.plxs import PlxContinuousMeasurement, PlxSpotCheckMeasurement
from drivers.ble.racp import RacpFilterType, RacpOpcode, RacpOperator, RacpRequest, RacpResponse, RacpResponseCode
from drivers.ble.sfloat import (
    SfloatSpecial,
    classify_float,
    classify_sfloat,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    read_float,
    read_sfloat,
)
from gateway.core.errors import InvalidFrame
from tests.support.fuzzing import FAST, Mutation, check_mutations, decodes_or_invalid, mutations

U16 = struct.Struct("<H")


def sfloat_raw(mantissa: int, exponent: int) -> int:
    """Pack an SFLOAT by the definition, independently of the encoder under test."""
    return ((exponent & 0xF) << 12) | (mantissa & 0xFFF)


def float_raw(mantissa: int, exponent: int) -> int:
    return ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)


def sf(mantissa: int, exponent: int) -> bytes:
    return U16.pack(sfloat_raw(mantissa, exponent))


def same_float(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


# Values every GATT encoder (SFLOAT, max_decimals=3) carries exactly.
sfloat_values = st.builds(lambda m, e: decode_sfloat(sfloat_raw(m, e)), st.integers(-2045, 2045), st.integers(-3, 7))
tenths = st.integers(-2045, 2045).map(lambda i: i / 10)
representable = st.one_of(tenths, sfloat_values)


# ------------------------------------------------------------------------------------------------- SFLOAT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0x0072, 114.0),
        (0xF3CF, 97.5),  # exponent -1, mantissa 975
        (0xF3D1, 97.7),  # exponent -1, mantissa 977
        (0xFF9C, -10.0),  # exponent -1, mantissa -100
        (0x0FFF, -1.0),
        (0x0000, 0.0),
        (0xE00A, 0.1),  # exponent -2, mantissa 10
        (0x2001, 100.0),
        (0x7001, 1e7),
        (0x8001, 1e-8),
        (0xF7FD, 204.5),  # largest ordinary mantissa 2045
        (0xF803, -204.5),  # smallest ordinary mantissa -2045
        (0xD3FF, 1.023),  # exponent -3, mantissa 1023
    ],
)
def test_sfloat_known_vectors(raw: int, expected: float) -> None:
    assert decode_sfloat(raw) == expected
    assert classify_sfloat(raw) is None


@pytest.mark.parametrize(
    ("raw", "special", "value"),
    [
        (0x07FF, SfloatSpecial.NAN, math.nan),
        (0x0800, SfloatSpecial.NRES, math.nan),
        (0x07FE, SfloatSpecial.POS_INF, math.inf),
        (0x0802, SfloatSpecial.NEG_INF, -math.inf),
        (0x0801, SfloatSpecial.RESERVED, math.nan),
        (0x37FF, SfloatSpecial.NAN, math.nan),  # special mantissas are special whatever the exponent
        (0xF800, SfloatSpecial.NRES, math.nan),
    ],
)
def test_sfloat_specials(raw: int, special: SfloatSpecial, value: float) -> None:
    assert classify_sfloat(raw) is special
    assert same_float(decode_sfloat(raw), value)


def test_sfloat_encode_known_and_specials() -> None:
    assert encode_sfloat(97.5) == 0xF3CF
    assert encode_sfloat(114) == 0x0072
    assert encode_sfloat(0.1) == 0xF001
    assert encode_sfloat(-10.0) == 0x0FF6
    assert encode_sfloat(30000.0) == 0x212C  # 300e2
    assert encode_sfloat(math.nan) == 0x07FF
    assert encode_sfloat(math.inf) == 0x07FE
    assert encode_sfloat(-math.inf) == 0x0802
    # Not exact at 3 decimals: the nearest value at the finest exponent whose mantissa fits.
    assert decode_sfloat(encode_sfloat(97.53)) == 97.5
    assert decode_sfloat(encode_sfloat(2046.0)) == 2050.0  # 2046 is the +INF mantissa, never a number


def test_sfloat_encode_rejects_unrepresentable() -> None:
    with pytest.raises(ValueError, match="too large"):
        encode_sfloat(1e12)
    with pytest.raises(ValueError, match="max_decimals"):
        encode_sfloat(1.0, max_decimals=9)
    with pytest.raises(ValueError, match="16-bit"):
        decode_sfloat(0x10000)


@FAST
@given(st.integers(0, 0xFFFF))
def test_sfloat_decode_total(raw: int) -> None:
    value = decode_sfloat(raw)
    special = classify_sfloat(raw)
    assert isinstance(value, float)
    assert math.isnan(value) == (special in {SfloatSpecial.NAN, SfloatSpecial.NRES, SfloatSpecial.RESERVED})
    assert math.isinf(value) == (special in {SfloatSpecial.POS_INF, SfloatSpecial.NEG_INF})
    if special is None:
        # Every ordinary SFLOAT re-encodes to the same value (all exponents need max_decimals=8).
        assert decode_sfloat(encode_sfloat(value, max_decimals=8)) == value


@FAST
@given(representable)
def test_sfloat_round_trip(value: float) -> None:
    assert decode_sfloat(encode_sfloat(value)) == value


@FAST
@given(st.one_of(st.floats(min_value=-1e10, max_value=1e10), st.sampled_from([math.nan, math.inf, -math.inf])))
def test_sfloat_encode_nearest(value: float) -> None:
    decoded = decode_sfloat(encode_sfloat(value))
    if math.isnan(value):
        assert math.isnan(decoded)
    elif math.isinf(value):
        assert decoded == value
    else:
        # Within half a unit of the finest usable exponent: 2045 * 10**e >= |value| fixes e.
        assert abs(decoded - value) <= max(0.0005, abs(value) * 0.0005 / 0.2045) + 1e-9


def test_read_sfloat_offsets_and_truncation() -> None:
    buf = b"\xaa" + U16.pack(0xF3CF)
    assert read_sfloat(buf, 1) == 97.5
    assert read_sfloat(memoryview(bytearray(buf)), 1) == 97.5
    with pytest.raises(InvalidFrame):
        read_sfloat(buf, 2)
    with pytest.raises(InvalidFrame):
        read_sfloat(buf, -1)


# -------------------------------------------------------------------------------------------------- FLOAT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0x00000072, 114.0),
        (0xFF00016A, 36.2),  # exponent -1, mantissa 362
        (0xFE0F4240, 10000.0),  # exponent -2, mantissa 1_000_000
        (0x00FFFFFF, -1.0),
        (0x02000001, 100.0),
        (0xFA7FFFFD, 8.388605),  # largest ordinary mantissa, exponent -6
    ],
)
def test_float_known_vectors(raw: int, expected: float) -> None:
    assert decode_float(raw) == expected
    assert classify_float(raw) is None


@pytest.mark.parametrize(
    ("raw", "special", "value"),
    [
        (0x007FFFFF, SfloatSpecial.NAN, math.nan),
        (0x00800000, SfloatSpecial.NRES, math.nan),
        (0x007FFFFE, SfloatSpecial.POS_INF, math.inf),
        (0x00800002, SfloatSpecial.NEG_INF, -math.inf),
        (0x00800001, SfloatSpecial.RESERVED, math.nan),
    ],
)
def test_float_specials(raw: int, special: SfloatSpecial, value: float) -> None:
    assert classify_float(raw) is special
    assert same_float(decode_float(raw), value)


def test_float_encode_known_and_specials() -> None:
    assert encode_float(36.2) == 0xFF00016A
    assert encode_float(114.0) == 0x00000072
    assert encode_float(math.nan) == 0x007FFFFF
    assert encode_float(math.inf) == 0x007FFFFE
    assert encode_float(-math.inf) == 0x00800002
    with pytest.raises(ValueError, match="too large"):
        encode_float(1e300)
    assert read_float(struct.pack("<I", 0xFF00016A), 0) == 36.2
    with pytest.raises(InvalidFrame):
        read_float(b"\x00\x00\x00", 0)


@FAST
@given(st.integers(0, 0xFFFFFFFF))
def test_float_decode_total(raw: int) -> None:
    value = decode_float(raw)
    assert isinstance(value, float)
    if classify_float(raw) is None:
        assert decode_float(encode_float(value, max_decimals=128)) == value


@FAST
@given(st.integers(-8_388_605, 8_388_605), st.integers(-6, 20))
def test_float_round_trip(mantissa: int, exponent: int) -> None:
    value = decode_float(float_raw(mantissa, exponent))
    assert decode_float(encode_float(value)) == value


# ---------------------------------------------------------------------------------------------------- CRC


def test_crc16_mcrf4xx_check_value() -> None:
    assert fields.crc16_mcrf4xx(b"123456789") == 0x6F91
    assert fields.crc16_mcrf4xx(b"") == 0xFFFF
    assert fields.crc16_mcrf4xx(memoryview(b"123456789")) == 0x6F91


# -------------------------------------------------------------------------------------------------- UUIDs


def test_uuids() -> None:
    assert fields.uuid16(0x2A37) == "00002a37-0000-1000-8000-00805f9b34fb"
    assert hrs.HEART_RATE_MEASUREMENT == "00002a37-0000-1000-8000-00805f9b34fb"
    assert cgms.CGM_MEASUREMENT == "00002aa7-0000-1000-8000-00805f9b34fb"
    assert idd_status.IDD_STATUS == "00002b21-0000-1000-8000-00805f9b34fb"
    assert plxs.PULSE_OXIMETER_SERVICE == "00001822-0000-1000-8000-00805f9b34fb"
    assert pmd.PMD_DATA == "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
    constants = [
        value
        for module in (hrs, plxs, cgms, racp, idd_status, ids, bas, pmd, device_info)
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and value.count("-") == 4
    ]
    assert len(constants) == 43  # every characteristic and service the codecs name, each defined once
    assert len(set(constants)) == len(constants)
    for value in constants:
        assert str(uuid.UUID(value)) == value  # canonical lowercase form
    with pytest.raises(ValueError, match="16-bit"):
        fields.uuid16(0x10000)


# --------------------------------------------------------------------------------------- shared helpers


def assert_truncations_invalid(decode: Callable[[bytes], object], frame: bytes) -> None:
    """Every proper prefix of a frame whose fields are all fixed-size is an InvalidFrame, never a crash."""
    decode(frame)
    for n in range(len(frame)):
        with pytest.raises(InvalidFrame):
            decode(frame[:n])


DECODERS: dict[str, Callable[[bytes], object]] = {
    "heart_rate": hrs.decode_heart_rate_measurement,
    "plx_continuous": plxs.decode_plx_continuous,
    "plx_spot_check": plxs.decode_plx_spot_check,
    "cgm": lambda b: cgms.decode_cgm_measurements(b, e2e_crc=False),
    "cgm_crc": lambda b: cgms.decode_cgm_measurements(b, e2e_crc=True),
    "cgm_session_start": cgms.decode_cgm_session_start_time,
    "cgm_feature": cgms.decode_cgm_feature,
    "racp_request": racp.decode_racp_request,
    "racp_response": racp.decode_racp_response,
    "idd_status": lambda b: idd_status.decode_idd_status(b, e2e=False),
    "idd_status_e2e": lambda b: idd_status.decode_idd_status(b, e2e=True),
    "battery": bas.decode_battery_level,
    "pmd_ecg": pmd.decode_pmd_ecg_frame,
}


@FAST
@given(data=st.binary(max_size=48))
def test_decoders_raise_only_invalid_frame(data: bytes) -> None:
    # Every decoder sees every example: one hypothesis run instead of one per decoder keeps the suite fast.
    for decode in DECODERS.values():
        decodes_or_invalid(decode, data)


# Valid frames to mutate: random bytes alone rarely get past the flags and length checks.
VALID_FRAMES: dict[str, bytes] = {
    "heart_rate": bytes([0x1F]) + U16.pack(300) + U16.pack(5) + U16.pack(800) + U16.pack(810),
    "plx_continuous": bytes([0x1F]) + sf(975, -1) + sf(72, 0) * 5 + b"\x01\x02\x03\x04\x05" + sf(34, -1),
    "plx_spot_check": bytes([0x1F]) + sf(975, -1) + sf(72, 0) + bytes.fromhex("e8070c1f173b3b0102030405") + sf(34, -1),
    "cgm": cgms.encode_cgm_measurement(CgmMeasurement(120.0, 5, 0x030201, -1.5, 90.0), e2e_crc=False) * 2,
    "cgm_crc": cgms.encode_cgm_measurement(CgmMeasurement(120.0, 5, 0x030201, -1.5, 90.0), e2e_crc=True) * 2,
    "cgm_session_start": cgms.encode_cgm_session_start_time(1_700_000_000_000_000_000, e2e_crc=True),
    "cgm_feature": cgms.encode_cgm_feature(cgms.CgmFeature(0x01F000, 1, 5)),
    "racp_request": bytes([1, 4, 1, 10, 0, 20, 0]),
    "racp_response": bytes([6, 0, 1, 1]),
    "idd_status": bytes([0x55, 0x96]) + sf(1805, -1) + b"\x01",
    "idd_status_e2e": idd_status.encode_idd_status(IddStatus(0x55, 0x96, 180.5, True, 7), e2e=True),
    "battery": b"\x55",
    "pmd_ecg": pmd.encode_pmd_ecg_frame(123, [1, -1, 8_388_607, -8_388_608]),
}


def test_valid_frames_decode() -> None:
    for name, frame in VALID_FRAMES.items():
        DECODERS[name](frame)


@FAST
@given(mutations)
def test_decoders_survive_mutations(mutation: Mutation) -> None:
    check_mutations(DECODERS, VALID_FRAMES, mutation)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decoders_accept_bytes_like(wrap: Callable[[bytes], Any]) -> None:
    assert bas.decode_battery_level(wrap(b"\x55")) == 85
    assert hrs.decode_heart_rate_measurement(wrap(b"\x00\x48")).heart_rate_bpm == 72
    assert pmd.decode_pmd_ecg_frame(wrap(VALID_FRAMES["pmd_ecg"])).samples_uv.tolist()[0] == 1


def test_dataclasses_are_frozen_and_slotted() -> None:
    m = HeartRateMeasurement(72)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.heart_rate_bpm = 80  # type: ignore[misc]
    assert not hasattr(m, "__dict__")


def test_errors_carry_no_measured_values() -> None:
    with pytest.raises(InvalidFrame) as excinfo:
        bas.decode_battery_level(b"\xc8")
    assert 200 not in excinfo.value.fields.values()
    assert "200" not in str(excinfo.value)
    assert excinfo.value.fields["characteristic"] == "battery_level"


# --------------------------------------------------------------------------------------------- heart rate


@pytest.mark.parametrize("flags", range(32))
def test_heart_rate_every_flag_combination(flags: int) -> None:
    frame = bytes([flags]) + (U16.pack(300) if flags & 0x01 else b"\x48")
    frame += U16.pack(1234) if flags & 0x08 else b""
    frame += U16.pack(1024) + U16.pack(512) if flags & 0x10 else b""
    m = hrs.decode_heart_rate_measurement(frame)
    assert m.heart_rate_bpm == (300 if flags & 0x01 else 72)
    assert m.sensor_contact == {0: None, 1: None, 2: False, 3: True}[(flags >> 1) & 3]
    assert m.energy_expended_kj == (1234 if flags & 0x08 else None)
    assert m.rr_intervals_ms == ((1000.0, 500.0) if flags & 0x10 else ())
    single_rr = frame[:-2] if flags & 0x10 else frame
    assert_truncations_invalid(hrs.decode_heart_rate_measurement, single_rr)


@pytest.mark.parametrize(
    "frame",
    [
        b"\x20\x48",  # reserved flag bit
        b"\x00\x48\x00",  # trailing byte
        b"\x10\x48",  # RR flag without an RR value
        b"\x10\x48\x00\x04\x00",  # half an RR value
        b"\x08\x48\x01",  # energy truncated
    ],
)
def test_heart_rate_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        hrs.decode_heart_rate_measurement(frame)


def test_heart_rate_encode() -> None:
    assert hrs.encode_heart_rate_measurement(HeartRateMeasurement(72, True, None, (1000.0,))) == bytes(
        [0x16, 72, 0x00, 0x04]
    )
    assert hrs.encode_heart_rate_measurement(HeartRateMeasurement(300)) == b"\x01\x2c\x01"
    with pytest.raises(ValueError, match="heart_rate_bpm"):
        hrs.encode_heart_rate_measurement(HeartRateMeasurement(70_000))


heart_rates = st.builds(
    HeartRateMeasurement,
    st.integers(0, 0xFFFF),
    st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
    st.lists(st.integers(0, 0xFFFF).map(lambda raw: raw * 1000 / 1024), max_size=9).map(tuple),
)


@FAST
@given(heart_rates)
def test_heart_rate_round_trip(m: HeartRateMeasurement) -> None:
    assert hrs.decode_heart_rate_measurement(hrs.encode_heart_rate_measurement(m)) == m


# ------------------------------------------------------------------------------------------- PLX continuous


@pytest.mark.parametrize("flags", range(32))
def test_plx_continuous_every_flag_combination(flags: int) -> None:
    frame = bytes([flags]) + sf(975, -1) + sf(72, 0)
    frame += sf(98, 0) + sf(73, 0) if flags & 0x01 else b""
    frame += sf(96, 0) + sf(71, 0) if flags & 0x02 else b""
    frame += U16.pack(0x1234) if flags & 0x04 else b""
    frame += b"\x0c\x0b\x0a" if flags & 0x08 else b""
    frame += sf(34, -1) if flags & 0x10 else b""
    m = plxs.decode_plx_continuous(frame)
    assert m == PlxContinuousMeasurement(
        97.5,
        72.0,
        3.4 if flags & 0x10 else None,
        0x1234 if flags & 0x04 else None,
        0x0A0B0C if flags & 0x08 else None,
    )
    assert_truncations_invalid(plxs.decode_plx_continuous, frame)


@pytest.mark.parametrize(
    "frame", [bytes([0x20]) + sf(975, -1) + sf(72, 0), b"\x00" + sf(975, -1) + sf(72, 0) + b"\x00"]
)
def test_plx_continuous_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        plxs.decode_plx_continuous(frame)


def test_plx_continuous_nan_and_nres() -> None:
    m = plxs.decode_plx_continuous(b"\x00" + U16.pack(0x07FF) + U16.pack(0x0800))
    assert math.isnan(m.spo2_pct)
    assert math.isnan(m.pulse_rate_bpm)


plx_continuous = st.builds(
    PlxContinuousMeasurement,
    representable,
    representable,
    st.one_of(st.none(), representable),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
    st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
)


@FAST
@given(plx_continuous)
def test_plx_continuous_round_trip(m: PlxContinuousMeasurement) -> None:
    assert plxs.decode_plx_continuous(plxs.encode_plx_continuous(m)) == m


# ------------------------------------------------------------------------------------------- PLX spot-check


@pytest.mark.parametrize("flags", range(32))
def test_plx_spot_check_every_flag_combination(flags: int) -> None:
    frame = bytes([flags]) + sf(975, -1) + sf(72, 0)
    frame += struct.pack("<HBBBBB", 2024, 2, 29, 13, 45, 7) if flags & 0x01 else b""
    frame += U16.pack(0x0020) if flags & 0x02 else b""
    frame += b"\x01\x00\x00" if flags & 0x04 else b""
    frame += sf(34, -1) if flags & 0x08 else b""
    m = plxs.decode_plx_spot_check(frame)
    assert m == PlxSpotCheckMeasurement(
        97.5,
        72.0,
        (2024, 2, 29, 13, 45, 7) if flags & 0x01 else None,
        0x0020 if flags & 0x02 else None,
        0x000001 if flags & 0x04 else None,
        3.4 if flags & 0x08 else None,
        bool(flags & 0x10),
    )
    assert_truncations_invalid(plxs.decode_plx_spot_check, frame)


@pytest.mark.parametrize(
    "frame",
    [
        bytes([0x20]) + sf(975, -1) + sf(72, 0),  # reserved flag bit
        b"\x01" + sf(975, -1) + sf(72, 0) + struct.pack("<HBBBBB", 2024, 13, 1, 0, 0, 0),  # month 13
        b"\x01" + sf(975, -1) + sf(72, 0) + struct.pack("<HBBBBB", 2024, 1, 1, 24, 0, 0),  # hour 24
        b"\x00" + sf(975, -1) + sf(72, 0) + b"\x00",  # trailing byte
    ],
)
def test_plx_spot_check_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        plxs.decode_plx_spot_check(frame)


date_times = st.one_of(
    st.none(),
    st.tuples(
        st.one_of(st.just(0), st.integers(1582, 9999)),
        st.integers(0, 12),
        st.integers(0, 31),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
    ),
)
plx_spot_checks = st.builds(
    PlxSpotCheckMeasurement,
    representable,
    representable,
    date_times,
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
    st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
    st.one_of(st.none(), representable),
    st.booleans(),
)


@FAST
@given(plx_spot_checks)
def test_plx_spot_check_round_trip(m: PlxSpotCheckMeasurement) -> None:
    assert plxs.decode_plx_spot_check(plxs.encode_plx_spot_check(m)) == m


# ---------------------------------------------------------------------------------------------------- CGM


def cgm_record(flags: int, *, crc: bool, size: int | None = None) -> bytes:
    """Hand-build one CGM record: glucose 120.5, offset 15 min, octets 0x11/0x22/0x33, trend -1.2, quality 95."""
    body = bytes([flags]) + sf(1205, -1) + U16.pack(15)
    body += b"\x11" if flags & 0x80 else b""
    body += b"\x22" if flags & 0x40 else b""
    body += b"\x33" if flags & 0x20 else b""
    body += sf(-12, -1) if flags & 0x01 else b""
    body += sf(95, 0) if flags & 0x02 else b""
    record = bytes([size if size is not None else len(body) + 1 + (2 if crc else 0)]) + body
    return record + U16.pack(fields.crc16_mcrf4xx(record)) if crc else record


CGM_FLAG_COMBINATIONS = [
    sum(bits) for n in range(6) for bits in itertools.combinations((0x01, 0x02, 0x20, 0x40, 0x80), n)
]


@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("flags", CGM_FLAG_COMBINATIONS)
def test_cgm_every_flag_combination(flags: int, crc: bool) -> None:
    record = cgm_record(flags, crc=crc)
    (m,) = cgms.decode_cgm_measurements(record, e2e_crc=crc)
    status = None
    if flags & 0xE0:
        status = (0x11 if flags & 0x80 else 0) | (0x2200 if flags & 0x40 else 0) | (0x330000 if flags & 0x20 else 0)
    assert m == CgmMeasurement(120.5, 15, status, -1.2 if flags & 0x01 else None, 95.0 if flags & 0x02 else None)
    assert_truncations_invalid(lambda b: cgms.decode_cgm_measurements(b, e2e_crc=crc), record)


def test_cgm_two_records_in_one_notification() -> None:
    for crc in (False, True):
        frame = cgm_record(0x00, crc=crc) + cgm_record(0xE3, crc=crc)
        first, second = cgms.decode_cgm_measurements(frame, e2e_crc=crc)
        assert first == CgmMeasurement(120.5, 15)
        assert second == CgmMeasurement(120.5, 15, 0x332211, -1.2, 95.0)
        with pytest.raises(InvalidFrame):
            cgms.decode_cgm_measurements(frame[:-1], e2e_crc=crc)  # second record truncated


def test_cgm_size_field_mismatch_rejected() -> None:
    for size in (0, 5, 7, 8, 255):
        with pytest.raises(InvalidFrame, match="size"):
            cgms.decode_cgm_measurements(cgm_record(0x00, crc=False, size=size), e2e_crc=False)
    # A record with CRC read as if CRC were off (and vice versa) disagrees with its size field.
    with pytest.raises(InvalidFrame, match="size"):
        cgms.decode_cgm_measurements(cgm_record(0x03, crc=True), e2e_crc=False)
    with pytest.raises(InvalidFrame, match="size"):
        cgms.decode_cgm_measurements(cgm_record(0x03, crc=False), e2e_crc=True)


def test_cgm_bad_crc_rejected() -> None:
    record = bytearray(cgm_record(0x03, crc=True))
    record[-1] ^= 0x01
    with pytest.raises(InvalidFrame, match="CRC") as excinfo:
        cgms.decode_cgm_measurements(bytes(record), e2e_crc=True)
    assert excinfo.value.fields == {"characteristic": "cgm_measurement", "record": 0}
    good = cgm_record(0x00, crc=True)
    with pytest.raises(InvalidFrame, match="CRC"):
        cgms.decode_cgm_measurements(good + bytes(record), e2e_crc=True)


def test_cgm_reserved_flags_and_empty_rejected() -> None:
    with pytest.raises(InvalidFrame, match="reserved"):
        cgms.decode_cgm_measurements(cgm_record(0x04, crc=False), e2e_crc=False)
    with pytest.raises(InvalidFrame):
        cgms.decode_cgm_measurements(b"", e2e_crc=False)


def test_cgm_encode_all_clear_status_stays_present() -> None:
    frame = cgms.encode_cgm_measurement(CgmMeasurement(100.0, 1, 0), e2e_crc=False)
    assert frame[1] == 0x80  # status octet present, value 0
    assert cgms.decode_cgm_measurements(frame, e2e_crc=False)[0].sensor_status == 0


cgm_measurements = st.builds(
    CgmMeasurement,
    representable,
    st.integers(0, 0xFFFF),
    st.one_of(st.none(), st.integers(0, 0xFFFFFF)),
    st.one_of(st.none(), representable),
    st.one_of(st.none(), representable),
)


@FAST
@given(st.lists(cgm_measurements, min_size=1, max_size=3), st.booleans())
def test_cgm_round_trip(records: list[CgmMeasurement], crc: bool) -> None:
    frame = b"".join(cgms.encode_cgm_measurement(m, e2e_crc=crc) for m in records)
    assert cgms.decode_cgm_measurements(frame, e2e_crc=crc) == records


# ---------------------------------------------------------------------------------------- session start time


def test_cgm_session_start_time() -> None:
    # 2024-01-02 03:04:05 local at UTC+01:00 (4 quarter hours), no DST -> 02:04:05Z.
    frame = struct.pack("<HBBBBBbB", 2024, 1, 2, 3, 4, 5, 4, 0)
    expected = int(datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert cgms.decode_cgm_session_start_time(frame) == expected
    with_dst = struct.pack("<HBBBBBbB", 2024, 7, 2, 3, 4, 5, 4, 4)  # UTC+1 plus one hour DST -> 01:04:05Z
    assert cgms.decode_cgm_session_start_time(with_dst) == (
        int(datetime(2024, 7, 2, 1, 4, 5, tzinfo=UTC).timestamp()) * 1_000_000_000
    )
    with_crc = frame + U16.pack(fields.crc16_mcrf4xx(frame))
    assert cgms.decode_cgm_session_start_time(with_crc) == expected
    assert cgms.decode_cgm_session_start_time(with_crc, e2e_crc=True) == expected
    assert_truncations_invalid(lambda b: cgms.decode_cgm_session_start_time(b, e2e_crc=True), with_crc)
    assert cgms.encode_cgm_session_start_time(expected + 999, time_zone_quarter_hours=4) == frame


@pytest.mark.parametrize(
    ("fields", "result"),
    [
        ((0, 1, 2, 3, 4, 5, 0, 0), None),  # year unknown
        ((2024, 1, 2, 3, 4, 5, -128, 0), None),  # time zone unknown
        ((2024, 1, 2, 3, 4, 5, 0, 255), None),  # DST unknown
        ((2024, 1, 2, 3, 4, 5, 57, 0), InvalidFrame),  # reserved time zone
        ((2024, 1, 2, 3, 4, 5, 0, 3), InvalidFrame),  # reserved DST code
        ((2023, 2, 29, 3, 4, 5, 0, 0), InvalidFrame),  # not a calendar date
        ((2024, 1, 2, 3, 60, 5, 0, 0), InvalidFrame),  # minute out of range
    ],
)
def test_cgm_session_start_time_edge_cases(fields: tuple[int, ...], result: object) -> None:
    frame = struct.pack("<HBBBBBbB", *fields)
    if result is InvalidFrame:
        with pytest.raises(InvalidFrame):
            cgms.decode_cgm_session_start_time(frame)
    else:
        assert cgms.decode_cgm_session_start_time(frame) is None


@FAST
@given(
    st.integers(0, 4_000_000_000 * 1_000_000_000),
    st.integers(-48, 56),
    st.sampled_from([0, 2, 4, 8]),
    st.booleans(),
)
def test_cgm_session_start_time_round_trip(unix_ns: int, zone: int, dst: int, crc: bool) -> None:
    frame = cgms.encode_cgm_session_start_time(unix_ns, time_zone_quarter_hours=zone, dst_offset_code=dst, e2e_crc=crc)
    assert cgms.decode_cgm_session_start_time(frame, e2e_crc=crc) == unix_ns // 10**9 * 10**9


# --------------------------------------------------------------------------------------------------- RACP


@pytest.mark.parametrize(
    ("frame", "req"),
    [
        (b"\x01\x01", RacpRequest(RacpOpcode.REPORT_STORED_RECORDS, RacpOperator.ALL_RECORDS)),
        (b"\x01\x05", RacpRequest(1, RacpOperator.FIRST_RECORD)),
        (b"\x01\x06", RacpRequest(1, RacpOperator.LAST_RECORD)),
        (b"\x01\x03\x01\x0a\x00", RacpRequest(1, RacpOperator.GREATER_THAN_OR_EQUAL, 1, (10,))),
        (b"\x02\x02\x01\xff\xff", RacpRequest(RacpOpcode.DELETE_STORED_RECORDS, 2, 1, (0xFFFF,))),
        (b"\x04\x04\x01\x0a\x00\x14\x00", RacpRequest(4, RacpOperator.WITHIN_RANGE, 1, (10, 20))),
        (b"\x04\x01", RacpRequest(RacpOpcode.REPORT_NUMBER_OF_STORED_RECORDS, RacpOperator.ALL_RECORDS)),
        (b"\x03\x00", RacpRequest(RacpOpcode.ABORT_OPERATION, RacpOperator.NULL)),
    ],
)
def test_racp_requests(frame: bytes, req: RacpRequest) -> None:
    decoded = racp.decode_racp_request(frame)
    assert decoded == req
    assert isinstance(decoded.opcode, RacpOpcode)
    assert racp.encode_racp_request(req) == frame
    assert_truncations_invalid(racp.decode_racp_request, frame)


def test_racp_convenience() -> None:
    assert racp.racp_report_all() == b"\x01\x01"
    assert racp.racp_report_records_since(300) == b"\x01\x03\x01\x2c\x01"
    assert racp.racp_report_number_all() == b"\x04\x01"
    assert racp.racp_abort() == b"\x03\x00"
    assert int(RacpFilterType.TIME_OFFSET) == 1
    with pytest.raises(ValueError, match="invalid RACP request"):
        racp.racp_report_records_since(70_000)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x07\x01", RacpResponseCode.OP_CODE_NOT_SUPPORTED),
        (b"\x05\x00", RacpResponseCode.OP_CODE_NOT_SUPPORTED),  # a response sent as a request
        (b"\x01", RacpResponseCode.INVALID_OPERATOR),
        (b"\x01\x00", RacpResponseCode.INVALID_OPERATOR),
        (b"\x03\x01", RacpResponseCode.INVALID_OPERATOR),
        (b"\x01\x09", RacpResponseCode.OPERATOR_NOT_SUPPORTED),
        (b"\x01\x03", RacpResponseCode.INVALID_OPERAND),
        (b"\x01\x03\x01\x0a", RacpResponseCode.INVALID_OPERAND),
        (b"\x01\x03\x01\x0a\x00\x0b\x00", RacpResponseCode.INVALID_OPERAND),
        (b"\x01\x04\x01\x14\x00\x0a\x00", RacpResponseCode.INVALID_OPERAND),  # min > max
        (b"\x01\x01\x01\x00\x00", RacpResponseCode.INVALID_OPERAND),  # "all" takes no operand
        (b"\x03\x00\x01", RacpResponseCode.INVALID_OPERAND),
        (b"\x01\x03\x02\x0a\x00", RacpResponseCode.OPERAND_NOT_SUPPORTED),
    ],
)
def test_racp_invalid_requests_name_the_response_code(frame: bytes, code: RacpResponseCode) -> None:
    with pytest.raises(InvalidFrame) as excinfo:
        racp.decode_racp_request(frame)
    assert excinfo.value.fields["response_code"] == code
    assert excinfo.value.fields["request_opcode"] == frame[0]


def test_racp_encode_refuses_invalid_requests() -> None:
    with pytest.raises(ValueError, match="invalid RACP request"):
        racp.encode_racp_request(RacpRequest(1, RacpOperator.WITHIN_RANGE, 1, (5,)))
    with pytest.raises(ValueError, match="invalid RACP request"):
        racp.encode_racp_request(RacpRequest(6, 0))


@pytest.mark.parametrize(
    ("frame", "response"),
    [
        (b"\x05\x00\x2a\x00", RacpResponse(RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE, 0, number_of_records=42)),
        (b"\x06\x00\x01\x01", RacpResponse(6, 0, RacpOpcode.REPORT_STORED_RECORDS, RacpResponseCode.SUCCESS)),
        (b"\x06\x00\x01\x06", RacpResponse(6, 0, 1, RacpResponseCode.NO_RECORDS_FOUND)),
        (b"\x06\x00\x03\x07", RacpResponse(6, 0, 3, RacpResponseCode.ABORT_UNSUCCESSFUL)),
        (b"\x06\x00\x01\x20", RacpResponse(6, 0, 1, 0x20)),  # unknown code kept as int
    ],
)
def test_racp_responses(frame: bytes, response: RacpResponse) -> None:
    assert racp.decode_racp_response(frame) == response
    assert racp.encode_racp_response(response) == frame
    assert_truncations_invalid(racp.decode_racp_response, frame)


@pytest.mark.parametrize(
    "frame",
    [b"\x06\x01\x01\x01", b"\x06\x00\x01\x01\x00", b"\x05\x00\x01", b"\x01\x01", b"\x06\x00"],
)
def test_racp_invalid_responses(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        racp.decode_racp_response(frame)


racp_requests = st.one_of(
    st.just(RacpRequest(RacpOpcode.ABORT_OPERATION, RacpOperator.NULL)),
    st.builds(
        RacpRequest,
        st.sampled_from([1, 2, 4]),
        st.sampled_from([1, 5, 6]),
    ),
    st.builds(
        lambda opcode, operator, value: RacpRequest(opcode, operator, 1, (value,)),
        st.sampled_from([1, 2, 4]),
        st.sampled_from([2, 3]),
        st.integers(0, 0xFFFF),
    ),
    st.builds(
        lambda opcode, a, b: RacpRequest(opcode, RacpOperator.WITHIN_RANGE, 1, (min(a, b), max(a, b))),
        st.sampled_from([1, 2, 4]),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
    ),
)
racp_responses = st.one_of(
    st.builds(lambda n: RacpResponse(5, 0, number_of_records=n), st.integers(0, 0xFFFF)),
    st.builds(lambda op, code: RacpResponse(6, 0, op, code), st.integers(0, 255), st.integers(0, 255)),
)


@FAST
@given(racp_requests)
def test_racp_request_round_trip(req: RacpRequest) -> None:
    assert racp.decode_racp_request(racp.encode_racp_request(req)) == req


@FAST
@given(racp_responses)
def test_racp_response_round_trip(response: RacpResponse) -> None:
    assert racp.decode_racp_response(racp.encode_racp_response(response)) == response


# ---------------------------------------------------------------------------------------------------- IDD


@pytest.mark.parametrize("attached", [False, True])
@pytest.mark.parametrize("e2e", [False, True])
def test_idd_status(attached: bool, e2e: bool) -> None:
    frame = bytes([0x55, 0x96]) + sf(1805, -1) + bytes([int(attached)])
    if e2e:
        frame += b"\x07"
        frame += U16.pack(fields.crc16_mcrf4xx(frame))
    s = idd_status.decode_idd_status(frame, e2e=e2e)
    assert s == IddStatus(TherapyControlState.RUN, OperationalState.READY, 180.5, attached, 7 if e2e else None)
    assert isinstance(s.therapy_control_state, TherapyControlState)
    assert idd_status.encode_idd_status(s, e2e=e2e) == frame
    assert_truncations_invalid(lambda b: idd_status.decode_idd_status(b, e2e=e2e), frame)


def test_idd_status_unknown_states_kept_and_invalid_rejected() -> None:
    s = idd_status.decode_idd_status(bytes([0x42, 0x43]) + sf(0, 0) + b"\x00", e2e=False)
    assert (s.therapy_control_state, s.operational_state) == (0x42, 0x43)
    assert not isinstance(s.therapy_control_state, TherapyControlState)
    with pytest.raises(InvalidFrame, match="reserved"):
        idd_status.decode_idd_status(bytes([0x55, 0x96]) + sf(0, 0) + b"\x02", e2e=False)
    frame = bytearray(idd_status.encode_idd_status(IddStatus(0x55, 0x96, 10.0, True, 1), e2e=True))
    frame[2] ^= 0x01
    with pytest.raises(InvalidFrame, match="CRC"):
        idd_status.decode_idd_status(bytes(frame), e2e=True)
    with pytest.raises(InvalidFrame):
        idd_status.decode_idd_status(bytes(frame), e2e=False)  # E2E fields where none are expected
    with pytest.raises(ValueError, match="e2e_counter"):
        idd_status.encode_idd_status(IddStatus(0x55, 0x96, 10.0, True), e2e=True)
    with pytest.raises(ValueError, match="e2e_counter"):
        idd_status.encode_idd_status(IddStatus(0x55, 0x96, 10.0, True, 3), e2e=False)


@FAST
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    representable,
    st.booleans(),
    st.one_of(st.none(), st.integers(0, 255)),
)
def test_idd_status_round_trip(
    therapy: int, operational: int, reservoir: float, attached: bool, counter: int | None
) -> None:
    s = IddStatus(therapy, operational, reservoir, attached, counter)
    e2e = counter is not None
    assert idd_status.decode_idd_status(idd_status.encode_idd_status(s, e2e=e2e), e2e=e2e) == s


# ------------------------------------------------------------------------------------------------ battery


def test_battery_level() -> None:
    assert bas.decode_battery_level(b"\x00") == 0
    assert bas.decode_battery_level(b"\x64") == 100
    for frame in (b"", b"\x65", b"\xff", b"\x50\x00"):
        with pytest.raises(InvalidFrame):
            bas.decode_battery_level(frame)
    with pytest.raises(ValueError, match="battery"):
        bas.encode_battery_level(101)


@FAST
@given(st.integers(0, 100))
def test_battery_level_round_trip(pct: int) -> None:
    assert bas.decode_battery_level(bas.encode_battery_level(pct)) == pct


# ---------------------------------------------------------------------------------------------- Polar PMD


def pmd_frame(samples: bytes, *, measurement_type: int = 0, frame_type: int = 0, timestamp: int = 0) -> bytes:
    return struct.pack("<BQB", measurement_type, timestamp, frame_type) + samples


def test_pmd_ecg_decode_sign_extends() -> None:
    samples = bytes.fromhex("010000ffffff9cffffffff7f000080000000")
    frame = pmd.decode_pmd_ecg_frame(pmd_frame(samples, timestamp=0x0102030405060708))
    assert frame.timestamp_ns == 0x0102030405060708
    assert frame.samples_uv.dtype == np.int32
    assert frame.samples_uv.tolist() == [1, -1, -100, 8_388_607, -8_388_608, 0]
    with pytest.raises(ValueError, match="read-only"):
        frame.samples_uv[0] = 5
    assert pmd.PMD_ECG_SAMPLE_RATE_HZ == 130


@pytest.mark.parametrize(
    "frame",
    [
        pmd_frame(b"\x01\x00\x00", measurement_type=1),  # not ECG
        pmd_frame(b"\x01\x00\x00", frame_type=0x80),  # compressed frame type
        pmd_frame(b""),  # no samples
        pmd_frame(b"\x01\x00\x00\x02"),  # not a whole sample
        pmd_frame(b"\x01\x00\x00\x02\x00"),
    ],
)
def test_pmd_ecg_invalid(frame: bytes) -> None:
    with pytest.raises(InvalidFrame):
        pmd.decode_pmd_ecg_frame(frame)


def test_pmd_ecg_truncations_and_encoder_checks() -> None:
    assert_truncations_invalid(pmd.decode_pmd_ecg_frame, pmd.encode_pmd_ecg_frame(5, [-2]))
    with pytest.raises(ValueError, match="24-bit"):
        pmd.encode_pmd_ecg_frame(0, [8_388_608])
    with pytest.raises(ValueError, match="24-bit"):
        pmd.encode_pmd_ecg_frame(0, np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(ValueError, match="integers"):
        pmd.encode_pmd_ecg_frame(0, np.array([1.5]))
    with pytest.raises(ValueError, match="non-empty"):
        pmd.encode_pmd_ecg_frame(0, [])
    with pytest.raises(ValueError, match="timestamp_ns"):
        pmd.encode_pmd_ecg_frame(-1, [0])


@FAST
@given(
    st.integers(0, 2**64 - 1),
    st.lists(st.integers(-(2**23), 2**23 - 1), min_size=1, max_size=80),
)
def test_pmd_ecg_round_trip(timestamp_ns: int, samples: list[int]) -> None:
    encoded = pmd.encode_pmd_ecg_frame(timestamp_ns, np.array(samples, dtype=np.int32))
    assert len(encoded) == 10 + 3 * len(samples)
    frame = pmd.decode_pmd_ecg_frame(encoded)
    assert frame.timestamp_ns == timestamp_ns
    assert frame.samples_uv.tolist() == samples


def test_cgm_feature_says_whether_records_carry_an_e2e_crc() -> None:
    # Features 0x001000 (E2E-CRC supported), type 1 (capillary whole blood), location 5 (subcutaneous tissue).
    body = bytes([0x00, 0x10, 0x00, 0x51])
    frame = body + U16.pack(fields.crc16_mcrf4xx(body))
    feature = cgms.decode_cgm_feature(frame)
    assert feature.e2e_crc and (feature.cgm_type, feature.sample_location) == (1, 5)
    assert cgms.encode_cgm_feature(feature) == frame
    with pytest.raises(InvalidFrame, match="E2E-CRC"):
        cgms.decode_cgm_feature(frame[:-1] + bytes([frame[-1] ^ 1]))
    # Without E2E support the CRC field is 0xFFFF and is not checked.
    plain = cgms.decode_cgm_feature(bytes([0x00, 0x00, 0x00, 0x51, 0xFF, 0xFF]))
    assert not plain.e2e_crc
    assert cgms.encode_cgm_feature(plain).endswith(b"\xff\xff")
