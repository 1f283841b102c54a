"""Tests for the IDS status codecs in drivers/ble/ids.py: IDD Features, IDD Status Changed, IDD Annunciation
Status and the IDD Status Reader Control Point."""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble import ids
from drivers.ble.ids import (
    MAX_ACTIVE_BOLUS_IDS,
    ActiveBolusIdsResponse,
    Annunciation,
    AnnunciationStatusValue,
    AnnunciationType,
    DeliveredInsulinResponse,
    GetActiveBolusIds,
    GetDeliveredInsulin,
    GetInsulinOnBoard,
    GetTotalDailyInsulinStatus,
    IddFeatures,
    InsulinOnBoardResponse,
    ResetStatus,
    StatusChangedFlag,
    StatusReaderOpCode,
    StatusReaderResponseCode,
    StatusReaderResponseCodeValue,
    TotalDailyInsulinStatusResponse,
    annunciation_severity,
    decode_annunciation_status,
    decode_idd_features,
    decode_status_changed,
    decode_status_reader_request,
    decode_status_reader_response,
    encode_annunciation_status,
    encode_idd_features,
    encode_status_changed,
    encode_status_reader_request,
    encode_status_reader_response,
)
from gateway.core.errors import InvalidFrame
from tests.support.fuzzing import FAST, CodecBattery

Decoder = Callable[[bytes], Any]


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/MCRF4XX by its definition (reflected 0x1021, init 0xFFFF, no xorout), bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def with_e2e(body: bytes, counter: int) -> bytes:
    """body + E2E-Counter + E2E-CRC, computed independently of the codec."""
    framed = body + bytes([counter])
    return framed + crc16_bitwise(framed).to_bytes(2, "little")


def flips(frame: bytes) -> list[bytes]:
    """Every single-bit corruption of frame."""
    out = []
    for bit in range(len(frame) * 8):
        corrupted = bytearray(frame)
        corrupted[bit // 8] ^= 1 << (bit % 8)
        out.append(bytes(corrupted))
    return out


def assert_truncations_invalid(decode: Decoder, frame: bytes) -> None:
    for n in range(len(frame)):
        with pytest.raises(InvalidFrame):
            decode(frame[:n])


def decode_changed(e2e: bool) -> Decoder:
    return lambda b: decode_status_changed(b, e2e=e2e)


def decode_annunciation(e2e: bool) -> Decoder:
    return lambda b: decode_annunciation_status(b, e2e=e2e)


def decode_srcp_request(e2e: bool) -> Decoder:
    return lambda b: decode_status_reader_request(b, e2e=e2e)


def decode_srcp_response(e2e: bool) -> Decoder:
    return lambda b: decode_status_reader_response(b, e2e=e2e)


# Error fields name the frame's shape, never an amount, a duration or an ID.
SAFE_FIELDS = {
    "characteristic",
    "opcode",
    "request_opcode",
    "response_code",
    "length",
    "operand_length",
    "expected",
    "reserved_bits",
    "aux_bits",
    "field",
}


# ------------------------------------------------------------------------------------------- constants


def test_annunciation_types_are_the_spec_values_without_aliases() -> None:
    # Two references disagree on two values (BLEIDSSim's first ids.py: INFUSION_SET_INCOMPLETE = 0x0069, the
    # priming issue's value; ST's ids_app.c: BATTERY_MEDIUM = 0x00C); 0x0096 and 0x00CC keep the Hamming code.
    assert int(AnnunciationType.INFUSION_SET_INCOMPLETE) == 0x0096
    assert int(AnnunciationType.BATTERY_MEDIUM) == 0x00CC
    # A duplicated value would silently make an IntEnum alias; 22 names must be 22 members.
    assert len(AnnunciationType.__members__) == len(list(AnnunciationType)) == 22


@pytest.mark.parametrize("enum_cls", [AnnunciationType, AnnunciationStatusValue, StatusReaderOpCode])
def test_enum_values_are_hamming_distance_coded(enum_cls: type[enum.IntEnum]) -> None:
    values = [int(m) for m in enum_cls]
    assert min(bin(a ^ b).count("1") for a, b in itertools.combinations(values, 2)) >= 4


def test_status_changed_flag_bits() -> None:
    assert [int(f) for f in StatusChangedFlag] == [1 << bit for bit in range(8)]


# ---------------------------------------------------------------------------------------- IDD Features


def test_idd_features_hand_built_with_e2e() -> None:
    tail = bytes(
        [
            0x05,  # E2E-Counter
            0x64, 0x00,  # Insulin Concentration 100 IU/mL: SFLOAT exponent 0, mantissa 100 -> 0x0064
            0x23, 0x80, 0x00,  # Flags (24 bits): bit 0 E2E, 1 basal rate, 5 fast bolus, 15 insulin on board
        ]
    )  # fmt: skip
    frame = crc16_bitwise(tail).to_bytes(2, "little") + tail  # E2E-CRC comes first, over every byte after it
    features = IddFeatures(True, 100.0, basal_rate=True, fast_bolus=True, insulin_on_board=True, e2e_counter=5)
    assert decode_idd_features(frame) == features
    assert encode_idd_features(features) == frame


def test_idd_features_hand_built_without_e2e() -> None:
    frame = bytes(
        [
            0xFF, 0xFF,  # E2E-CRC: 0xFFFF when E2E-Protection is not supported
            0x00,  # E2E-Counter
            0xC8, 0x00,  # Insulin Concentration 200 IU/mL
            0x40, 0x0C, 0x00,  # Flags: bit 6 extended bolus, 10 bolus activation type, 11 multiple bond
        ]
    )  # fmt: skip
    features = IddFeatures(False, 200.0, extended_bolus=True, bolus_activation_type=True, multiple_bond=True)
    assert decode_idd_features(frame) == features
    assert encode_idd_features(features) == frame


BOOL_FEATURES = [f.name for f in dataclasses.fields(IddFeatures) if f.type in ("bool", bool)]


@pytest.mark.parametrize(("bit", "field"), list(enumerate(BOOL_FEATURES)))
def test_idd_features_each_flag_bit_sets_one_field(bit: int, field: str) -> None:
    tail = b"\x00\x64\x00" + (1 << bit).to_bytes(3, "little")
    crc = crc16_bitwise(tail) if bit == 0 else 0xFFFF
    decoded = decode_idd_features(crc.to_bytes(2, "little") + tail)
    assert [name for name in BOOL_FEATURES if getattr(decoded, name)] == [field]


PROTECTED_FEATURES = encode_idd_features(IddFeatures(True, 100.0, basal_rate=True, e2e_counter=9))
UNPROTECTED_FEATURES = encode_idd_features(IddFeatures(False, 100.0, basal_rate=True))


def test_idd_features_every_single_bit_error_in_a_protected_frame_is_invalid() -> None:
    # Clearing the E2E-Protection bit included: without E2E the CRC field must be 0xFFFF, and this one is not.
    for corrupted in flips(PROTECTED_FEATURES):
        with pytest.raises(InvalidFrame):
            decode_idd_features(corrupted)


def test_idd_features_unprotected_frame_crc_and_e2e_bits_are_checked() -> None:
    # Without E2E only the 0xFFFF marker and the E2E bit itself can be checked; the other fields cannot be.
    for corrupted in flips(UNPROTECTED_FEATURES)[:16]:  # the E2E-CRC field
        with pytest.raises(InvalidFrame, match="0xFFFF"):
            decode_idd_features(corrupted)
    upgraded = bytearray(UNPROTECTED_FEATURES)
    upgraded[5] |= 0x01  # E2E-Protection Supported set: 0xFFFF is now checked as a CRC, and fails
    with pytest.raises(InvalidFrame, match="E2E-CRC mismatch"):
        decode_idd_features(bytes(upgraded))


def test_idd_features_e2e_downgrade_is_refused() -> None:
    downgraded = bytearray(PROTECTED_FEATURES)
    downgraded[5] &= 0xFE  # E2E-Protection Supported cleared, real CRC left in place
    with pytest.raises(InvalidFrame, match="0xFFFF"):
        decode_idd_features(bytes(downgraded))


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("reserved bit 16", bytes.fromhex("ffff00640000000" + "1")),
        ("reserved bit 22", bytes.fromhex("ffff0064000000" + "40")),
        ("feature extension", bytes.fromhex("ffff0064000000" + "80")),
        ("feature extension with an extra octet", bytes.fromhex("ffff0064000000" + "80" + "00")),
        ("trailing byte", bytes.fromhex("ffff006400000000" + "00")),
        ("crc not 0xffff without e2e", bytes.fromhex("0000006400000000")),
        ("NaN concentration", bytes.fromhex("ffff00ff07000000")),
        ("negative concentration", bytes.fromhex("ffff00ffff000000")),
    ],
)
def test_idd_features_malformed(name: str, frame: bytes) -> None:
    with pytest.raises(InvalidFrame) as info:
        decode_idd_features(frame)
    assert info.value.fields["characteristic"] == "idd_features"
    assert set(info.value.fields) <= SAFE_FIELDS


def test_idd_features_truncations_invalid() -> None:
    assert_truncations_invalid(decode_idd_features, PROTECTED_FEATURES)


doses = st.builds(lambda m, e: m / 10**-e, st.integers(0, 2045), st.sampled_from([-2, -1, 0])).filter(
    lambda v: v <= 200
)
float_doses = st.builds(lambda m, e: m / 10**-e, st.integers(0, (1 << 23) - 3), st.sampled_from([-3, -2, -1, 0]))
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
counters = st.none() | u8

features = st.builds(
    IddFeatures,
    insulin_concentration_iu_per_ml=doses,
    e2e_counter=u8,
    **{name: st.booleans() for name in BOOL_FEATURES},
)


@FAST
@given(features)
def test_idd_features_round_trip(f: IddFeatures) -> None:
    assert decode_idd_features(encode_idd_features(f)) == f


@pytest.mark.parametrize(
    "f",
    [
        IddFeatures(False, math.nan),
        IddFeatures(False, -100.0),
        IddFeatures(False, 100.0001),
        IddFeatures(False, 100.0, e2e_counter=256),
    ],
)
def test_encode_idd_features_refuses_what_the_wire_cannot_carry(f: IddFeatures) -> None:
    with pytest.raises(ValueError, match=r"must be|not exactly"):
        encode_idd_features(f)


# ---------------------------------------------------------------------------------- IDD Status Changed


def test_status_changed_hand_built() -> None:
    body = bytes([0x89, 0x00])  # Flags: therapy control state (bit 0), annunciation (bit 3), history event (bit 7)
    flags = (
        StatusChangedFlag.THERAPY_CONTROL_STATE_CHANGED
        | StatusChangedFlag.ANNUNCIATION_STATUS_CHANGED
        | StatusChangedFlag.HISTORY_EVENT_RECORDED
    )
    assert encode_status_changed(flags, counter=None) == body
    assert decode_status_changed(body, e2e=False) == (flags, None)
    frame = with_e2e(body, 0x2A)
    assert encode_status_changed(flags, counter=0x2A) == frame
    assert decode_status_changed(frame, e2e=True) == (flags, 0x2A)
    decoded, _ = decode_status_changed(frame, e2e=True)
    assert type(decoded) is StatusChangedFlag
    # Mixing E2E modes is refused both ways.
    with pytest.raises(InvalidFrame):
        decode_status_changed(frame, e2e=False)
    with pytest.raises(InvalidFrame):
        decode_status_changed(body, e2e=True)


status_flags = st.integers(0, 0xFF).map(StatusChangedFlag)


@FAST
@given(status_flags, counters)
def test_status_changed_round_trip(flags: StatusChangedFlag, counter: int | None) -> None:
    frame = encode_status_changed(flags, counter=counter)
    assert decode_status_changed(frame, e2e=counter is not None) == (flags, counter)
    assert_truncations_invalid(decode_changed(counter is not None), frame)


@pytest.mark.parametrize("e2e", [False, True])
def test_status_changed_reserved_bits_refused(e2e: bool) -> None:
    body = bytes([0x00, 0x01])  # bit 8: reserved
    with pytest.raises(InvalidFrame, match="reserved") as info:
        decode_status_changed(with_e2e(body, 0) if e2e else body, e2e=e2e)
    assert info.value.fields["reserved_bits"] == 0x0100
    with pytest.raises(ValueError, match="reserves"):
        encode_status_changed(0x0100, counter=None)


# ----------------------------------------------------------------------------- IDD Annunciation Status


def test_annunciation_status_hand_built() -> None:
    body = bytes(
        [
            0x07,  # Flags: annunciation present (bit 0), AuxInfo1 present (bit 1), AuxInfo2 present (bit 2)
            0x34, 0x12,  # Annunciation Instance ID 0x1234
            0x3C, 0x00,  # Annunciation Type: occlusion detected 0x003C
            0x33,  # Annunciation Status: pending
            0x01, 0x00,  # AuxInfo1
            0x00, 0x02,  # AuxInfo2 0x0200
        ]
    )  # fmt: skip
    annunciation = Annunciation(
        0x1234, AnnunciationType.OCCLUSION_DETECTED, AnnunciationStatusValue.PENDING, (1, 0x200)
    )
    assert encode_annunciation_status(annunciation, counter=None) == body
    assert decode_annunciation_status(body, e2e=False) == (annunciation, None)
    frame = with_e2e(body, 7)
    assert encode_annunciation_status(annunciation, counter=7) == frame
    decoded, counter = decode_annunciation_status(frame, e2e=True)
    assert (decoded, counter) == (annunciation, 7)
    assert decoded is not None
    assert type(decoded.type) is AnnunciationType
    assert type(decoded.status) is AnnunciationStatusValue


def test_annunciation_status_none_present() -> None:
    assert encode_annunciation_status(None, counter=None) == b"\x00"
    assert decode_annunciation_status(b"\x00", e2e=False) == (None, None)
    assert decode_annunciation_status(with_e2e(b"\x00", 3), e2e=True) == (None, 3)


def test_annunciation_unknown_values_kept_as_ints() -> None:
    frame = bytes.fromhex("01" + "0100" + "3412" + "99")  # type 0x1234 and status 0x99: nobody defined them
    decoded, _ = decode_annunciation_status(frame, e2e=False)
    assert decoded == Annunciation(1, 0x1234, 0x99)
    assert type(decoded.type) is int
    assert type(decoded.status) is int


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("reserved flag bit 6", bytes.fromhex("41" + "0100" + "0f00" + "33")),
        ("aux info without an annunciation", bytes.fromhex("02" + "0100")),
        ("AuxInfo2 without AuxInfo1", bytes.fromhex("05" + "0100" + "0f00" + "33" + "0100")),
        ("flags promise AuxInfo1", bytes.fromhex("03" + "0100" + "0f00" + "33")),
        ("trailing byte", bytes.fromhex("01" + "0100" + "0f00" + "33" + "00")),
        ("nothing present but bytes follow", bytes.fromhex("00" + "00")),
        ("empty", b""),
    ],
)
def test_annunciation_status_malformed(name: str, frame: bytes) -> None:
    with pytest.raises(InvalidFrame) as info:
        decode_annunciation_status(frame, e2e=False)
    assert info.value.fields["characteristic"] == "idd_annunciation_status"
    assert set(info.value.fields) <= SAFE_FIELDS


def enum_or_raw(enum_cls: type[enum.IntEnum], raw: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    """Known members, and raw values nobody defined (which must survive as plain ints)."""
    return st.one_of(st.sampled_from(list(enum_cls)), raw)


annunciations = st.builds(
    Annunciation,
    u16,
    enum_or_raw(AnnunciationType, u16),
    enum_or_raw(AnnunciationStatusValue, u8),
    st.lists(u16, max_size=5).map(tuple),
)


@FAST
@given(st.none() | annunciations, counters)
def test_annunciation_status_round_trip(annunciation: Annunciation | None, counter: int | None) -> None:
    frame = encode_annunciation_status(annunciation, counter=counter)
    assert decode_annunciation_status(frame, e2e=counter is not None) == (annunciation, counter)
    assert_truncations_invalid(decode_annunciation(counter is not None), frame)


@pytest.mark.parametrize(
    "annunciation",
    [
        Annunciation(0, AnnunciationType.BATTERY_LOW, AnnunciationStatusValue.PENDING, (1, 2, 3, 4, 5, 6)),
        Annunciation(0x10000, AnnunciationType.BATTERY_LOW, AnnunciationStatusValue.PENDING),
        Annunciation(0, 0x10000, AnnunciationStatusValue.PENDING),
        Annunciation(0, AnnunciationType.BATTERY_LOW, 0x100),
        Annunciation(0, AnnunciationType.BATTERY_LOW, AnnunciationStatusValue.PENDING, (-1,)),
    ],
)
def test_encode_annunciation_refuses_what_the_wire_cannot_carry(annunciation: Annunciation) -> None:
    with pytest.raises(ValueError, match="must"):
        encode_annunciation_status(annunciation, counter=None)


# ------------------------------------------------------------------------------------------- severity

EXPECTED_SEVERITY = {
    AnnunciationType.SYSTEM_ISSUE: "high",
    AnnunciationType.MECHANICAL_ISSUE: "high",
    AnnunciationType.OCCLUSION_DETECTED: "high",
    AnnunciationType.RESERVOIR_ISSUE: "medium",
    AnnunciationType.RESERVOIR_EMPTY: "high",
    AnnunciationType.RESERVOIR_LOW: "medium",
    AnnunciationType.PRIMING_ISSUE: "medium",
    AnnunciationType.INFUSION_SET_INCOMPLETE: "medium",
    AnnunciationType.INFUSION_SET_DETACHED: "high",
    AnnunciationType.POWER_SOURCE_INSUFFICIENT: "medium",
    AnnunciationType.BATTERY_EMPTY: "high",
    AnnunciationType.BATTERY_LOW: "medium",
    AnnunciationType.BATTERY_MEDIUM: "low",
    AnnunciationType.BATTERY_FULL: "low",
    AnnunciationType.TEMPERATURE_OUT_OF_RANGE: "medium",
    AnnunciationType.AIR_PRESSURE_OUT_OF_RANGE: "medium",
    AnnunciationType.BOLUS_CANCELED: "low",
    AnnunciationType.TBR_OVER: "low",
    AnnunciationType.TBR_CANCELED: "low",
    AnnunciationType.MAX_DELIVERY: "high",
    AnnunciationType.DATE_TIME_ISSUE: "medium",
    AnnunciationType.TEMPERATURE: "low",
}


def test_severity_covers_every_annunciation_type() -> None:
    assert set(EXPECTED_SEVERITY) == set(AnnunciationType)


@pytest.mark.parametrize("annunciation_type", list(AnnunciationType))
def test_annunciation_severity(annunciation_type: AnnunciationType) -> None:
    assert annunciation_severity(annunciation_type) == EXPECTED_SEVERITY[annunciation_type]
    assert annunciation_severity(int(annunciation_type)) == EXPECTED_SEVERITY[annunciation_type]


@pytest.mark.parametrize("raw", [0x0000, 0x0010, 0x003D, 0xFFFF])
def test_annunciation_severity_of_unknown_types_is_low(raw: int) -> None:
    assert annunciation_severity(raw) == "low"


# --------------------------------------------------------------------- IDD Status Reader Control Point


def test_status_reader_requests_hand_built() -> None:
    reset = ResetStatus(
        StatusChangedFlag.THERAPY_CONTROL_STATE_CHANGED | StatusChangedFlag.TOTAL_DAILY_INSULIN_STATUS_CHANGED
    )
    body = bytes(
        [
            0x0C, 0x03,  # op code Reset Status 0x030C
            0x11, 0x00,  # Flags to reset: therapy control state (bit 0), total daily insulin (bit 4)
        ]
    )  # fmt: skip
    frame = with_e2e(body, 0)
    assert encode_status_reader_request(reset, counter=0) == frame
    assert decode_status_reader_request(frame, e2e=True) == (reset, 0)
    assert encode_status_reader_request(reset, counter=None) == body
    assert decode_status_reader_request(body, e2e=False) == (reset, None)
    no_operand: list[tuple[ids.StatusReaderRequest, str]] = [
        (GetActiveBolusIds(), "3003"),
        (GetTotalDailyInsulinStatus(), "9503"),
        (GetDeliveredInsulin(), "c003"),
        (GetInsulinOnBoard(), "f303"),
    ]
    for msg, opcode in no_operand:
        assert encode_status_reader_request(msg, counter=None) == bytes.fromhex(opcode)
        assert decode_status_reader_request(bytes.fromhex(opcode), e2e=False) == (msg, None)


@pytest.mark.parametrize(
    ("msg", "body"),
    [
        (
            StatusReaderResponseCode(StatusReaderOpCode.RESET_STATUS, StatusReaderResponseCodeValue.SUCCESS),
            "03030c030f",  # Response Code; request op code Reset Status; Success
        ),
        (
            ActiveBolusIdsResponse((1, 2, 0x0300)),
            "3f0303010002000003",  # Get Active Bolus IDs Response; 3 active boluses; their IDs
        ),
        (
            ActiveBolusIdsResponse(()),
            "3f0300",  # no active bolus
        ),
        (
            TotalDailyInsulinStatusResponse(12.5, 20.0, 32.5),
            # Get Total Daily Insulin Status Response; SFLOATs 125e-1 (0xF07D), 20 (0x0014), 325e-1 (0xF145)
            "9a037df0140045f1",
        ),
        (
            DeliveredInsulinResponse(17.5, 10.2),
            # Get Delivered Insulin Response; FLOATs (8-bit exponent, 24-bit mantissa) 175e-1, 102e-1
            "cf03af0000ff660000ff",
        ),
        (
            InsulinOnBoardResponse(2.05, 90),
            # Get Insulin On Board Response; Flags bit 0 remaining duration present; SFLOAT 205e-2 (0xE0CD); 90 min
            "fc0301cde05a00",
        ),
        (
            InsulinOnBoardResponse(0.5),
            "fc030005f0",  # no remaining duration; SFLOAT 5e-1 (0xF005)
        ),
    ],
)
def test_status_reader_responses_hand_built(msg: ids.StatusReaderResponse, body: str) -> None:
    raw = bytes.fromhex(body)
    assert encode_status_reader_response(msg, counter=None) == raw
    assert decode_status_reader_response(raw, e2e=False) == (msg, None)
    frame = with_e2e(raw, 0xFF)
    assert encode_status_reader_response(msg, counter=0xFF) == frame
    assert decode_status_reader_response(frame, e2e=True) == (msg, 0xFF)


def test_status_reader_response_code_enums() -> None:
    decoded, _ = decode_status_reader_response(bytes.fromhex("0303300374"), e2e=False)
    assert isinstance(decoded, StatusReaderResponseCode)
    assert decoded.request_opcode is StatusReaderOpCode.GET_ACTIVE_BOLUS_IDS
    assert decoded.value is StatusReaderResponseCodeValue.PROCEDURE_NOT_APPLICABLE
    decoded, _ = decode_status_reader_response(bytes.fromhex("0303341276"), e2e=False)
    assert decoded == StatusReaderResponseCode(0x1234, 0x76)  # unknown to the status reader: plain ints


requests = st.one_of(
    status_flags.map(ResetStatus),
    st.sampled_from([GetActiveBolusIds(), GetTotalDailyInsulinStatus(), GetDeliveredInsulin(), GetInsulinOnBoard()]),
)
responses = st.one_of(
    st.builds(
        StatusReaderResponseCode,
        enum_or_raw(StatusReaderOpCode, u16),
        enum_or_raw(StatusReaderResponseCodeValue, u8),
    ),
    st.lists(u16, max_size=MAX_ACTIVE_BOLUS_IDS).map(lambda v: ActiveBolusIdsResponse(tuple(v))),
    st.builds(TotalDailyInsulinStatusResponse, doses, doses, doses),
    st.builds(DeliveredInsulinResponse, float_doses, float_doses),
    st.builds(InsulinOnBoardResponse, doses, st.none() | u16),
)


@FAST
@given(requests, counters)
def test_status_reader_request_round_trip(msg: ids.StatusReaderRequest, counter: int | None) -> None:
    frame = encode_status_reader_request(msg, counter=counter)
    assert decode_status_reader_request(frame, e2e=counter is not None) == (msg, counter)
    assert_truncations_invalid(decode_srcp_request(counter is not None), frame)


@FAST
@given(responses, counters)
def test_status_reader_response_round_trip(msg: ids.StatusReaderResponse, counter: int | None) -> None:
    frame = encode_status_reader_response(msg, counter=counter)
    assert decode_status_reader_response(frame, e2e=counter is not None) == (msg, counter)
    assert_truncations_invalid(decode_srcp_response(counter is not None), frame)


UNSUPPORTED = StatusReaderResponseCodeValue.OP_CODE_NOT_SUPPORTED
INVALID_OPERAND = StatusReaderResponseCodeValue.INVALID_OPERAND


@pytest.mark.parametrize(
    ("name", "body", "request_opcode", "response_code"),
    [
        # Valid requests this codec does not implement: a server answers Op Code Not Supported.
        ("get active bolus delivery", "560301000f", StatusReaderOpCode.GET_ACTIVE_BOLUS_DELIVERY, UNSUPPORTED),
        ("get active basal rate delivery", "6503", StatusReaderOpCode.GET_ACTIVE_BASAL_RATE_DELIVERY, UNSUPPORTED),
        ("get counter", "a6030f33", StatusReaderOpCode.GET_COUNTER, UNSUPPORTED),
        ("response op code as request", "03030c030f", StatusReaderOpCode.RESPONSE_CODE, UNSUPPORTED),
        ("get counter response as request", "a903", StatusReaderOpCode.GET_COUNTER_RESPONSE, UNSUPPORTED),
        ("command control point op code", "4b11", 0x114B, UNSUPPORTED),
        ("unknown op code", "3412", 0x1234, UNSUPPORTED),
        # Implemented requests with a bad operand: Invalid Operand.
        ("reset status short flags", "0c0311", StatusReaderOpCode.RESET_STATUS, INVALID_OPERAND),
        ("reset status long flags", "0c03110000", StatusReaderOpCode.RESET_STATUS, INVALID_OPERAND),
        ("reset status reserved bit", "0c030001", StatusReaderOpCode.RESET_STATUS, INVALID_OPERAND),
        ("get active bolus ids with operand", "300300", StatusReaderOpCode.GET_ACTIVE_BOLUS_IDS, INVALID_OPERAND),
        ("get insulin on board with operand", "f3030000", StatusReaderOpCode.GET_INSULIN_ON_BOARD, INVALID_OPERAND),
    ],
)
@pytest.mark.parametrize("e2e", [False, True])
def test_status_reader_request_refusals_carry_the_answer(
    name: str, body: str, request_opcode: int, response_code: StatusReaderResponseCodeValue, e2e: bool
) -> None:
    raw = bytes.fromhex(body)
    with pytest.raises(InvalidFrame) as info:
        decode_status_reader_request(with_e2e(raw, 4) if e2e else raw, e2e=e2e)
    fields = info.value.fields
    assert fields["characteristic"] == "idd_status_reader_control_point"
    assert fields["request_opcode"] == request_opcode
    assert type(fields["request_opcode"]) is type(request_opcode)  # a member when known, else a plain int
    assert fields["response_code"] is response_code
    assert set(fields) <= SAFE_FIELDS


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x30",  # half an op code
        flips(with_e2e(bytes.fromhex("5603"), 0))[0],  # E2E-CRC broken: nothing in the frame can be trusted
    ],
)
def test_status_reader_request_untrustworthy_frames_carry_no_answer(frame: bytes) -> None:
    with pytest.raises(InvalidFrame) as info:
        decode_status_reader_request(frame, e2e=len(frame) > 2)
    assert "request_opcode" not in info.value.fields
    assert "response_code" not in info.value.fields


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("unknown op code", "3412"),
        ("request op code as response", "3003"),
        ("unsupported get counter response", "a9030f3300000000"),
        ("unsupported active bolus delivery response", "5903"),
        ("response code short", "03030c03"),
        ("response code long", "03030c030f00"),
        ("more bolus ids than IDS allows", "3f0308" + "0100" * 8),
        ("bolus id count promises more", "3f03020100"),
        ("bolus id count promises fewer", "3f030101000200"),
        ("bolus ids without count", "3f03"),
        ("total daily NaN", "9a03ff0714001400"),
        ("total daily negative", "9a031400ffff1400"),
        ("total daily short", "9a0314001400"),
        ("delivered NRes", "cf030000800000000000"),
        ("delivered +INF", "cf0300000000feff7f00"),
        ("delivered negative", "cf03ffffff0000000000"),
        ("delivered short", "cf0300000000"),
        ("iob reserved flag", "fc03020500"),
        ("iob flags promise duration", "fc03010500"),
        ("iob trailing duration", "fc030005000a00"),
        ("iob negative", "fc0300ffff"),
        ("iob NaN", "fc0300ff07"),
    ],
)
def test_status_reader_response_malformed(name: str, body: str) -> None:
    with pytest.raises(InvalidFrame) as info:
        decode_status_reader_response(bytes.fromhex(body), e2e=False)
    assert info.value.fields["characteristic"] == "idd_status_reader_control_point"
    assert set(info.value.fields) <= SAFE_FIELDS


@pytest.mark.parametrize(
    "msg",
    [
        ActiveBolusIdsResponse(tuple(range(MAX_ACTIVE_BOLUS_IDS + 1))),
        ActiveBolusIdsResponse((0x10000,)),
        TotalDailyInsulinStatusResponse(199.99, 0.0, 199.99),  # 12-bit mantissa: would round to 200.0
        TotalDailyInsulinStatusResponse(1.0, -1.0, 0.0),
        DeliveredInsulinResponse(math.nan, 0.0),
        DeliveredInsulinResponse(0.1 + 0.2, 0.0),  # 0.30000000000000004: not a FLOAT, would be rounded
        InsulinOnBoardResponse(math.inf),
        InsulinOnBoardResponse(1.0, 0x10000),
        StatusReaderResponseCode(0x10000, StatusReaderResponseCodeValue.SUCCESS),
        StatusReaderResponseCode(StatusReaderOpCode.RESET_STATUS, 0x100),
    ],
)
def test_encode_status_reader_response_refuses_what_the_wire_cannot_carry(msg: ids.StatusReaderResponse) -> None:
    with pytest.raises(ValueError, match=r"must|not exactly"):
        encode_status_reader_response(msg, counter=None)


def test_encode_status_reader_request_refuses_reserved_reset_bits() -> None:
    with pytest.raises(ValueError, match="reserves"):
        encode_status_reader_request(ResetStatus(StatusChangedFlag(0x0100)), counter=None)


@pytest.mark.parametrize("counter", [-1, 256])
def test_encoders_refuse_bad_counter(counter: int) -> None:
    with pytest.raises(ValueError, match="counter"):
        encode_status_reader_request(GetActiveBolusIds(), counter=counter)
    with pytest.raises(ValueError, match="counter"):
        encode_status_reader_response(ActiveBolusIdsResponse(()), counter=counter)
    with pytest.raises(ValueError, match="counter"):
        encode_status_changed(0, counter=counter)
    with pytest.raises(ValueError, match="counter"):
        encode_annunciation_status(None, counter=counter)


def test_status_reader_encoders_refuse_wrong_direction() -> None:
    with pytest.raises(TypeError):
        encode_status_reader_request(ActiveBolusIdsResponse(()), counter=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_status_reader_response(GetActiveBolusIds(), counter=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_status_reader_request(ids.CancelTbrAdjustment(), counter=None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- E2E-CRC


E2E_FRAMES: dict[str, tuple[bytes, Decoder]] = {
    "status changed": (encode_status_changed(StatusChangedFlag(0x41), counter=1), decode_changed(True)),
    "annunciation": (
        encode_annunciation_status(Annunciation(9, AnnunciationType.RESERVOIR_LOW, 0x33, (7,)), counter=2),
        decode_annunciation(True),
    ),
    "no annunciation": (encode_annunciation_status(None, counter=3), decode_annunciation(True)),
    "reset status": (
        encode_status_reader_request(ResetStatus(StatusChangedFlag(0xFF)), counter=4),
        decode_srcp_request(True),
    ),
    "get insulin on board": (encode_status_reader_request(GetInsulinOnBoard(), counter=5), decode_srcp_request(True)),
    "delivered insulin": (
        encode_status_reader_response(DeliveredInsulinResponse(17.5, 10.2), counter=6),
        decode_srcp_response(True),
    ),
    "insulin on board": (
        encode_status_reader_response(InsulinOnBoardResponse(2.05, 90), counter=7),
        decode_srcp_response(True),
    ),
}


@pytest.mark.parametrize("name", list(E2E_FRAMES))
def test_every_single_bit_flip_is_an_e2e_crc_error(name: str) -> None:
    frame, decode = E2E_FRAMES[name]
    decode(frame)
    # The CRC is verified before anything is parsed, so every single-bit error is reported as a CRC error.
    for corrupted in flips(frame):
        with pytest.raises(InvalidFrame, match="E2E-CRC"):
            decode(corrupted)


@FAST
@given(st.one_of(requests, responses), u8, st.data())
def test_single_bit_flip_in_generated_status_reader_frames_detected(
    msg: Any, counter: int, data: st.DataObject
) -> None:
    is_request = isinstance(msg, ResetStatus | GetActiveBolusIds | GetTotalDailyInsulinStatus)
    is_request = is_request or isinstance(msg, GetDeliveredInsulin | GetInsulinOnBoard)
    if is_request:
        frame, decode = encode_status_reader_request(msg, counter=counter), decode_srcp_request(True)
    else:
        frame, decode = encode_status_reader_response(msg, counter=counter), decode_srcp_response(True)
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    corrupted = bytearray(frame)
    corrupted[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidFrame, match="E2E-CRC"):
        decode(bytes(corrupted))


def test_e2e_counter_feeds_the_tracker() -> None:
    """A pump numbering its Status Changed notifications and a gateway checking them catch a repeat."""
    sender, receiver = ids.E2ECounter(), ids.E2ECounterTracker()
    first = encode_status_changed(StatusChangedFlag.RESERVOIR_STATUS_CHANGED, counter=sender.next())
    second = encode_status_changed(StatusChangedFlag.HISTORY_EVENT_RECORDED, counter=sender.next())
    for frame in (first, second):
        _, counter = decode_status_changed(frame, e2e=True)
        assert counter is not None
        receiver.check(counter)
    _, repeated = decode_status_changed(second, e2e=True)
    assert repeated is not None
    with pytest.raises(InvalidFrame, match="repeated"):
        receiver.check(repeated)


# ----------------------------------------------------------------------- never anything but InvalidFrame

DECODERS: dict[str, Decoder] = {
    "features": decode_idd_features,
    "status changed": decode_changed(False),
    "status changed e2e": decode_changed(True),
    "annunciation": decode_annunciation(False),
    "annunciation e2e": decode_annunciation(True),
    "srcp request": decode_srcp_request(False),
    "srcp request e2e": decode_srcp_request(True),
    "srcp response": decode_srcp_response(False),
    "srcp response e2e": decode_srcp_response(True),
}
VALID_FRAMES: dict[str, bytes] = {
    "features": PROTECTED_FEATURES,
    "status changed": encode_status_changed(StatusChangedFlag(0x81), counter=None),
    "status changed e2e": encode_status_changed(StatusChangedFlag(0x81), counter=8),
    "annunciation": encode_annunciation_status(
        Annunciation(1, AnnunciationType.BATTERY_LOW, 0x3C, (1, 2, 3, 4, 5)), counter=None
    ),
    "annunciation e2e": E2E_FRAMES["annunciation"][0],
    "srcp request": encode_status_reader_request(ResetStatus(StatusChangedFlag(0x03)), counter=None),
    "srcp request e2e": E2E_FRAMES["reset status"][0],
    "srcp response": encode_status_reader_response(InsulinOnBoardResponse(2.05, 90), counter=None),
    "srcp response e2e": E2E_FRAMES["delivered insulin"][0],
}


class TestDecoders(CodecBattery):
    decoders = DECODERS
    valid_frames = VALID_FRAMES


def test_messages_are_frozen_and_slotted() -> None:
    for value in (
        IddFeatures(False, 100.0),
        Annunciation(1, 2, 3),
        ResetStatus(StatusChangedFlag(1)),
        ActiveBolusIdsResponse((1,)),
        DeliveredInsulinResponse(1.0, 2.0),
        InsulinOnBoardResponse(1.0),
        TotalDailyInsulinStatusResponse(1.0, 2.0, 3.0),
        StatusReaderResponseCode(1, 2),
    ):
        assert not hasattr(value, "__dict__")
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, dataclasses.fields(value)[0].name, 5)
