"""Tests for the IDS IDD Command Control Point codecs (drivers/ble/ids.py) and the E2E-Counter helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble import ids
from drivers.ble.fields import crc16_mcrf4xx
from drivers.ble.ids import (
    BolusActivationType,
    BolusType,
    CancelBolus,
    CancelBolusResponse,
    CancelTbrAdjustment,
    CommandOpCode,
    E2ECounter,
    E2ECounterTracker,
    ResponseCode,
    ResponseCodeValue,
    SetBolus,
    SetBolusResponse,
    SetTbrAdjustment,
    TbrDeliveryContext,
    TbrType,
    decode_command,
    decode_response,
    encode_command,
    encode_response,
)
from gateway.core.errors import InvalidFrame
from tests.support.ids_vectors import crc16_bitwise, doses, u8, u16

FAST = settings(max_examples=200, deadline=None, database=None)

Decoder = Callable[[bytes], Any]


def decode_cmd(e2e: bool) -> Decoder:
    return lambda b: decode_command(b, e2e=e2e)


def decode_rsp(e2e: bool) -> Decoder:
    return lambda b: decode_response(b, e2e=e2e)


def assert_truncations_invalid(decode: Decoder, frame: bytes) -> None:
    for n in range(len(frame)):
        with pytest.raises(InvalidFrame):
            decode(frame[:n])


# ------------------------------------------------------------------------------------------- constants


def test_uuids() -> None:
    assert ids.IDD_STATUS_READER_CONTROL_POINT == "00002b24-0000-1000-8000-00805f9b34fb"
    assert ids.IDD_COMMAND_CONTROL_POINT == "00002b25-0000-1000-8000-00805f9b34fb"
    assert ids.IDD_COMMAND_DATA == "00002b26-0000-1000-8000-00805f9b34fb"
    assert ids.IDD_RECORD_ACCESS_CONTROL_POINT == "00002b27-0000-1000-8000-00805f9b34fb"
    assert ids.IDD_HISTORY_DATA == "00002b28-0000-1000-8000-00805f9b34fb"


def test_crc_check_value() -> None:
    # The catalogued check value of CRC-16/MCRF4XX anchors the E2E-CRC the hand-computed frames rely on.
    assert crc16_mcrf4xx(b"123456789") == 0x6F91 == crc16_bitwise(b"123456789")


@pytest.mark.parametrize("enum_cls", [CommandOpCode, BolusType, BolusActivationType, TbrType, TbrDeliveryContext])
def test_enum_values_are_hamming_distance_coded(enum_cls: type[enum.IntEnum]) -> None:
    # At least four bits apart: up to three flipped bits never turn one defined value into another.
    values = [int(m) for m in enum_cls]
    assert min(bin(a ^ b).count("1") for a, b in itertools.combinations(values, 2)) >= 4


# -------------------------------------------------------------------------------------- hand-computed


def test_set_bolus_hand_computed_frame_with_e2e() -> None:
    msg = SetBolus(BolusType.FAST, 2.5, 0.0, 0, activation_type=BolusActivationType.COMMANDED)
    frame = encode_command(msg, counter=7)
    body = bytes(
        [
            0x4B, 0x11,  # op code Set Bolus 0x114B, little-endian
            0x04,  # flags: bit2 Bolus Activation Type present
            0x33,  # Bolus Type FAST
            0x19, 0xF0,  # fast amount 2.5 IU = SFLOAT exponent -1 (0xF), mantissa 25 (0x019) -> 0xF019
            0x00, 0x00,  # extended amount 0
            0x00, 0x00,  # duration 0 min
            0x5A,  # activation type COMMANDED
            0x07,  # E2E-Counter
        ]
    )  # fmt: skip
    crc = crc16_bitwise(body)
    assert crc == crc16_mcrf4xx(body) == 0x35B3
    assert frame == body + bytes([0xB3, 0x35])
    assert decode_command(frame, e2e=True) == (msg, 7)
    # The same frame without the E2E trailer is the plain message; mixing the two modes is refused.
    assert encode_command(msg, counter=None) == body[:-1]
    assert decode_command(body[:-1], e2e=False) == (msg, None)
    with pytest.raises(InvalidFrame):
        decode_command(frame, e2e=False)
    with pytest.raises(InvalidFrame):
        decode_command(body[:-1], e2e=True)


def test_set_bolus_all_optional_fields_layout() -> None:
    msg = SetBolus(
        BolusType.MULTIWAVE,
        1.25,
        3.0,
        90,
        delay_min=15,
        template_number=2,
        activation_type=BolusActivationType.MANUAL,
        reason_correction=True,
        reason_meal=True,
    )
    frame = encode_command(msg, counter=None)
    assert frame == bytes.fromhex("4b111f557de003005a000f000233")
    assert decode_command(frame, e2e=False) == (msg, None)


def test_set_tbr_hand_computed_frame() -> None:
    msg = SetTbrAdjustment(TbrType.RELATIVE, 150.0, 120, template_number=3, delivery_context=0x55, change_tbr=True)
    frame = encode_command(msg, counter=0)
    body = bytes.fromhex("ff0f073c96007800035500")
    assert frame == body + crc16_bitwise(body).to_bytes(2, "little")
    assert decode_command(frame, e2e=True) == (msg, 0)
    assert decode_command(frame, e2e=True)[0].delivery_context is TbrDeliveryContext.AP_CONTROLLER  # type: ignore[union-attr]


def test_short_messages_hand_computed() -> None:
    assert encode_command(CancelTbrAdjustment(), counter=None) == bytes.fromhex("1111")
    assert encode_command(CancelBolus(0x1234), counter=None) == bytes.fromhex("78113412")
    assert encode_response(SetBolusResponse(0x0102), counter=None) == bytes.fromhex("77110201")
    assert encode_response(CancelBolusResponse(9), counter=None) == bytes.fromhex("87110900")
    rc = ResponseCode(CommandOpCode.SET_BOLUS, ResponseCodeValue.MAXIMUM_BOLUS_NUMBER_REACHED)
    assert encode_response(rc, counter=None) == bytes.fromhex("550f4b1176")
    decoded, counter = decode_response(bytes.fromhex("550f4b1176"), e2e=False)
    assert counter is None
    assert isinstance(decoded, ResponseCode)
    assert decoded.request_opcode is CommandOpCode.SET_BOLUS
    assert decoded.value is ResponseCodeValue.MAXIMUM_BOLUS_NUMBER_REACHED


# ----------------------------------------------------------------------------------------- round-trips


# Doses SFLOAT carries exactly: mantissa * 10**exponent with 0.01 IU resolution, capped at 200 IU.
def enum_or_raw(enum_cls: type[enum.IntEnum]) -> st.SearchStrategy[int]:
    """Known members, and raw values nobody defined (which must survive as plain ints)."""
    return st.one_of(st.sampled_from(list(enum_cls)), u8)


set_bolus = st.builds(
    SetBolus,
    enum_or_raw(BolusType),
    doses,
    doses,
    u16,
    st.none() | u16,
    st.none() | u8,
    st.none() | enum_or_raw(BolusActivationType),
    st.booleans(),
    st.booleans(),
)
set_tbr = st.builds(
    SetTbrAdjustment,
    enum_or_raw(TbrType),
    doses,
    u16,
    st.none() | u8,
    st.none() | enum_or_raw(TbrDeliveryContext),
    st.booleans(),
)
commands = st.one_of(set_bolus, set_tbr, st.builds(CancelBolus, u16), st.just(CancelTbrAdjustment()))
responses = st.one_of(
    st.builds(SetBolusResponse, u16),
    st.builds(CancelBolusResponse, u16),
    st.builds(ResponseCode, st.one_of(st.sampled_from(list(CommandOpCode)), u16), enum_or_raw(ResponseCodeValue)),
)
counters = st.none() | u8


@FAST
@given(commands, counters)
def test_command_round_trip(msg: ids.IddCommand, counter: int | None) -> None:
    frame = encode_command(msg, counter=counter)
    assert decode_command(frame, e2e=counter is not None) == (msg, counter)


@FAST
@given(responses, counters)
def test_response_round_trip(msg: ids.IddResponse, counter: int | None) -> None:
    frame = encode_response(msg, counter=counter)
    assert decode_response(frame, e2e=counter is not None) == (msg, counter)


@FAST
@given(set_bolus)
def test_decoded_enums_are_members_when_known(msg: SetBolus) -> None:
    decoded, _ = decode_command(encode_command(msg, counter=None), e2e=False)
    assert isinstance(decoded, SetBolus)
    assert (type(decoded.bolus_type) is BolusType) == (int(msg.bolus_type) in set(BolusType))
    if decoded.activation_type is not None:
        known = int(msg.activation_type or 0) in set(BolusActivationType)
        assert (type(decoded.activation_type) is BolusActivationType) == known


# -------------------------------------------------------------------------------------- malformed input


@FAST
@given(commands, counters)
def test_command_truncations_invalid(msg: ids.IddCommand, counter: int | None) -> None:
    assert_truncations_invalid(decode_cmd(counter is not None), encode_command(msg, counter=counter))


@FAST
@given(responses, counters)
def test_response_truncations_invalid(msg: ids.IddResponse, counter: int | None) -> None:
    assert_truncations_invalid(decode_rsp(counter is not None), encode_response(msg, counter=counter))


@FAST
@given(commands, u8, st.data())
def test_command_trailing_byte_invalid(msg: ids.IddCommand, extra: int, data: st.DataObject) -> None:
    e2e = data.draw(st.booleans())
    frame = encode_command(msg, counter=None) + bytes([extra])
    if e2e:
        frame += bytes([0]) + crc16_mcrf4xx(frame + bytes([0])).to_bytes(2, "little")
    with pytest.raises(InvalidFrame):
        decode_command(frame, e2e=e2e)


@FAST
@given(data=st.binary(max_size=24), e2e=st.booleans())
def test_random_bytes_raise_only_invalid_frame(data: bytes, e2e: bool) -> None:
    for decode in (decode_cmd(e2e), decode_rsp(e2e)):
        with contextlib.suppress(InvalidFrame):
            decode(data)


@FAST
@given(st.one_of(commands, responses), u8, st.data())
def test_single_bit_flip_in_e2e_frame_detected(msg: Any, counter: int, data: st.DataObject) -> None:
    is_command = isinstance(msg, SetBolus | SetTbrAdjustment | CancelBolus | CancelTbrAdjustment)
    frame = encode_command(msg, counter=counter) if is_command else encode_response(msg, counter=counter)
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    corrupted = bytearray(frame)
    corrupted[bit // 8] ^= 1 << (bit % 8)
    decode = decode_cmd(True) if is_command else decode_rsp(True)
    # The CRC is verified before anything is parsed, so every single-bit error is reported as a CRC error.
    with pytest.raises(InvalidFrame, match="E2E-CRC"):
        decode(bytes(corrupted))


def e2e(body: bytes, counter: int = 0) -> bytes:
    framed = body + bytes([counter])
    return framed + crc16_mcrf4xx(framed).to_bytes(2, "little")


@pytest.mark.parametrize(
    ("name", "frame", "decode"),
    [
        ("unknown op code", bytes.fromhex("3412"), decode_cmd(False)),
        ("unsupported known op code", bytes.fromhex("5a0f33"), decode_cmd(False)),
        ("get available boluses", bytes.fromhex("8811"), decode_cmd(False)),
        ("response op code as command", bytes.fromhex("77110100"), decode_cmd(False)),
        ("command op code as response", bytes.fromhex("78110100"), decode_rsp(False)),
        ("set bolus reserved flag", bytes.fromhex("4b112033190000000000"), decode_cmd(False)),
        ("set bolus flags promise delay", bytes.fromhex("4b110133190000000000"), decode_cmd(False)),
        ("set bolus NaN amount", bytes.fromhex("4b110033ff0700000000"), decode_cmd(False)),
        ("set bolus NRes amount", bytes.fromhex("4b110033000800000000"), decode_cmd(False)),
        ("set bolus +INF amount", bytes.fromhex("4b1100330000fe070000"), decode_cmd(False)),
        ("set bolus negative amount", bytes.fromhex("4b110033ffff00000000"), decode_cmd(False)),
        ("set tbr reserved flag", bytes.fromhex("ff0f08330a001e00"), decode_cmd(False)),
        ("set tbr flags promise context", bytes.fromhex("ff0f02330a001e00"), decode_cmd(False)),
        ("set tbr negative", bytes.fromhex("ff0f0033f6ff1e00"), decode_cmd(False)),
        ("cancel tbr with operand", bytes.fromhex("111100"), decode_cmd(False)),
        ("cancel bolus short id", bytes.fromhex("781101"), decode_cmd(False)),
        ("response code long", bytes.fromhex("550f4b110f00"), decode_rsp(False)),
        ("e2e reserved flag", e2e(bytes.fromhex("4b112033190000000000")), decode_cmd(True)),
        ("e2e unknown op code", e2e(bytes.fromhex("3412")), decode_rsp(True)),
        ("e2e too short", bytes.fromhex("0000ff"), decode_cmd(True)),
    ],
)
def test_malformed_frames(name: str, frame: bytes, decode: Decoder) -> None:
    with pytest.raises(InvalidFrame) as info:
        decode(frame)
    # Error fields name the frame's shape, never a dose: no SFLOAT-valued field is ever carried.
    assert info.value.fields["characteristic"] == "idd_command_control_point"
    assert set(info.value.fields) <= {
        "characteristic",
        "opcode",
        "length",
        "operand_length",
        "expected",
        "reserved_bits",
        "field",
    }


def test_decoders_accept_bytearray_and_memoryview() -> None:
    frame = encode_command(SetBolus(BolusType.FAST, 1.0, 0.0, 0), counter=3)
    assert decode_command(bytearray(frame), e2e=True) == decode_command(memoryview(frame), e2e=True)


# ------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize(
    "msg",
    [
        SetBolus(BolusType.FAST, 199.99, 0.0, 0),  # 12-bit mantissa: 199.99 would be rounded to 200.0
        SetBolus(BolusType.FAST, 0.0001, 0.0, 0),  # finer than SFLOAT's decimals: would round to 0
        SetBolus(BolusType.FAST, -1.0, 0.0, 0),
        SetBolus(BolusType.FAST, math.nan, 0.0, 0),
        SetBolus(BolusType.FAST, 1.0, math.inf, 0),
        SetBolus(BolusType.FAST, 1.0, 0.0, 0x10000),
        SetBolus(BolusType.FAST, 1.0, 0.0, 0, delay_min=-1),
        SetBolus(BolusType.FAST, 1.0, 0.0, 0, template_number=256),
        SetBolus(BolusType.FAST, 1.0, 0.0, 0, activation_type=256),
        SetBolus(0x100, 1.0, 0.0, 0),
        SetTbrAdjustment(TbrType.ABSOLUTE, 12.345, 30),  # would be rounded to 12.34
        SetTbrAdjustment(TbrType.ABSOLUTE, -0.5, 30),
        SetTbrAdjustment(0x100, 1.0, 30),
        SetTbrAdjustment(TbrType.ABSOLUTE, 1.0, 30, delivery_context=-1),
        CancelBolus(0x10000),
    ],
)
def test_encode_command_refuses_what_the_wire_cannot_carry_exactly(msg: ids.IddCommand) -> None:
    with pytest.raises(ValueError, match=r"must be|not exactly"):
        encode_command(msg, counter=None)


@pytest.mark.parametrize("counter", [-1, 256])
def test_encode_refuses_bad_counter(counter: int) -> None:
    with pytest.raises(ValueError, match="counter"):
        encode_command(CancelTbrAdjustment(), counter=counter)
    with pytest.raises(ValueError, match="counter"):
        encode_response(SetBolusResponse(1), counter=counter)


def test_encode_refuses_wrong_direction() -> None:
    with pytest.raises(TypeError):
        encode_command(SetBolusResponse(1), counter=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_response(CancelBolus(1), counter=None)  # type: ignore[arg-type]


def test_messages_are_frozen() -> None:
    msg = CancelBolus(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.bolus_id = 2  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------- E2E


def test_counter_starts_at_zero_and_wraps() -> None:
    counter = E2ECounter()
    assert [counter.next() for _ in range(258)] == [*range(256), 0, 1]


def test_tracker_accepts_in_order_and_wraps() -> None:
    tracker = E2ECounterTracker()
    assert tracker.expected is None
    for value in [250, 251, 252, 253, 254, 255, 0, 1, 2]:
        tracker.check(value)
    assert tracker.expected == 3


@pytest.mark.parametrize("first", [0, 7, 255])
def test_tracker_accepts_any_first_counter(first: int) -> None:
    tracker = E2ECounterTracker()
    tracker.check(first)
    assert tracker.expected == (first + 1) % 256


def test_tracker_rejects_repeat_and_keeps_state() -> None:
    tracker = E2ECounterTracker()
    tracker.check(4)
    tracker.check(5)
    with pytest.raises(InvalidFrame, match="repeated") as info:
        tracker.check(5)  # a replayed or duplicated message
    assert info.value.fields == {"characteristic": "idd_command_control_point", "expected": 6, "received": 5}
    with pytest.raises(InvalidFrame):
        tracker.check(4)  # an older message replayed
    tracker.check(6)  # the genuine next message is still accepted


def test_tracker_rejects_skip_until_reset() -> None:
    tracker = E2ECounterTracker()
    tracker.check(255)
    with pytest.raises(InvalidFrame, match="out of sequence"):
        tracker.check(1)  # 0 was lost
    with pytest.raises(InvalidFrame):
        tracker.check(2)  # still out of sequence: resynchronising is the caller's decision
    tracker.reset()
    tracker.check(2)
    tracker.check(3)


def test_tracker_refuses_non_uint8() -> None:
    with pytest.raises(ValueError, match="received"):
        E2ECounterTracker().check(256)


@FAST
@given(st.integers(0, 255), st.integers(1, 600))
def test_counter_and_tracker_agree(start_skip: int, n: int) -> None:
    counter = E2ECounter()
    for _ in range(start_skip):
        counter.next()
    tracker = E2ECounterTracker()
    for _ in range(n):
        tracker.check(counter.next())


@FAST
@given(st.lists(u8, min_size=2, max_size=20))
def test_tracker_accepts_exactly_the_successor(received: list[int]) -> None:
    tracker = E2ECounterTracker()
    tracker.check(received[0])
    for value in received[1:]:
        expected = tracker.expected
        if value == expected:
            tracker.check(value)
        else:
            with pytest.raises(InvalidFrame):
                tracker.check(value)
            assert tracker.expected == expected


def test_end_to_end_sequence_through_codec() -> None:
    """A sender numbering its frames and a receiver checking them catch a replayed Set Bolus."""
    sender = E2ECounter()
    receiver = E2ECounterTracker()
    bolus = encode_command(SetBolus(BolusType.FAST, 2.5, 0.0, 0), counter=sender.next())
    cancel = encode_command(CancelTbrAdjustment(), counter=sender.next())
    for frame in (bolus, cancel):
        _, counter = decode_command(frame, e2e=True)
        assert counter is not None
        receiver.check(counter)
    _, replayed = decode_command(bolus, e2e=True)
    assert replayed is not None
    with pytest.raises(InvalidFrame):
        receiver.check(replayed)
