"""Tests for the IDS history codecs (drivers/ble/idd_history.py): IDD History Data records and the IDD Record
Access Control Point, with and without E2E.  Recorded frames, delivery byte by byte, and hypothesis."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble import idd_history as h
from drivers.ble.ids import BolusActivationType, BolusType
from gateway.core.errors import InvalidFrame
from tests.support.fuzzing import FAST, check_mutations, decodes_or_invalid, mutations
from tests.support.ids_vectors import crc16_bitwise, doses

Decoder = Callable[[bytes], Any]

# A Bolus Programmed Part 1 of 2 record as a pump with E2E protection sends it, byte by byte.
PROGRAMMED_E2E = bytes(
    [
        0x5A, 0x00,  # event type Bolus Programmed Part 1 of 2 (0x005A)
        0x5A, 0x1B, 0x00, 0x00,  # sequence number 7002
        0x0C, 0x00,  # relative offset 12 s
        0x03, 0x00,  # bolus id 3
        0x33,  # bolus type Fast
        0x0F, 0xF0,  # fast amount 1.5 IU: SFLOAT exponent -1, mantissa 15
        0x00, 0x00,  # extended amount 0
        0x00, 0x00,  # duration 0 min
        0x05,  # E2E-Counter
    ]
)  # fmt: skip
PROGRAMMED_E2E += crc16_bitwise(PROGRAMMED_E2E).to_bytes(2, "little")
# Bolus Delivered Part 1 of 2 without E2E: the values of AndroidBLEParser's BolusDeliveredPart1EventParserTest
# (event info (type, 1, 2); bolus 3, extended, 0 fast, 4 IU extended, 5 min).
DELIVERED_PLAIN = bytes([0x69, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x03, 0x00, 0x3C, 0, 0, 4, 0, 5, 0])
# Bolus Delivered Part 2 of 2 with every optional field: commanded, duration over, annunciation 0x0102.
DELIVERED_PART_2 = bytes(
    [0x96, 0x00, 0x5C, 0x1B, 0x00, 0x00, 0x00, 0x00, 0x07, 0x3C, 0x00, 0x00, 0x00, 0x5A, 0x33, 0x02, 0x01]
)
REFERENCE_TIME = bytes(
    [0x0F, 0x00, 0x58, 0x1B, 0x00, 0x00, 0x00, 0x00, 0x33, 0xEA, 0x07, 6, 30, 12, 5, 9, 4, 0]
)  # set date time, 2026-06-30 12:05:09, UTC+1 h (4 x 15 min), no DST
# Report Stored Records, >=, sequence number filter, 7002, E2E-Counter 0.
REPORT_SINCE_E2E = bytes([0x33, 0x55, 0x0F, 0x5A, 0x1B, 0x00, 0x00, 0x00])
REPORT_SINCE_E2E += crc16_bitwise(REPORT_SINCE_E2E).to_bytes(2, "little")
SUCCESS_PLAIN = bytes([0x0F, 0x0F, 0x33, 0xF0])  # Response Code, Null, to Report Stored Records: Success

RECORDS = {
    "programmed_e2e": (PROGRAMMED_E2E, True),
    "delivered_plain": (DELIVERED_PLAIN, False),
    "delivered_part_2": (DELIVERED_PART_2, False),
    "reference_time": (REFERENCE_TIME, False),
}


def test_recorded_frames_decode_to_what_the_pump_meant() -> None:
    assert h.decode_history_record(PROGRAMMED_E2E, e2e=True) == (
        h.HistoryRecord(
            h.HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2, 7002, 12, h.BolusAmounts(3, BolusType.FAST, 1.5, 0.0, 0)
        ),
        5,
    )
    assert h.decode_history_record(DELIVERED_PLAIN, e2e=False) == (
        h.HistoryRecord(
            h.HistoryEventType.BOLUS_DELIVERED_PART_1_OF_2, 1, 2, h.BolusAmounts(3, BolusType.EXTENDED, 0.0, 4.0, 5)
        ),
        None,
    )
    record, _ = h.decode_history_record(DELIVERED_PART_2, e2e=False)
    assert record.data == h.BolusDeliveredDetails(
        60, BolusActivationType.COMMANDED, h.BolusEndReason.PROGRAMMED_DURATION_OVER, 0x0102
    )
    record, _ = h.decode_history_record(REFERENCE_TIME, e2e=False)
    assert record.data == h.ReferenceTime(h.RecordingReason.SET_DATE_TIME, (2026, 6, 30, 12, 5, 9), 4, 0)
    request = h.decode_racp_request(REPORT_SINCE_E2E, e2e=True)
    assert request == (h.report_records_since(7002), 0)
    assert h.decode_racp_response(SUCCESS_PLAIN, e2e=False) == (
        h.RacpResponseCode(h.RacpOpcode.REPORT_STORED_RECORDS, h.RacpResponseCodeValue.SUCCESS),
        None,
    )
    # Every recorded frame is what the encoder writes for its decoded value.
    for frame, e2e in RECORDS.values():
        decoded, counter = h.decode_history_record(frame, e2e=e2e)
        assert h.encode_history_record(decoded, counter=counter) == frame
    assert h.encode_racp_request(h.report_records_since(7002), counter=0) == REPORT_SINCE_E2E


@pytest.mark.parametrize("name", list(RECORDS))
def test_delivered_byte_by_byte_only_the_whole_record_decodes(name: str) -> None:
    """A notification cut short anywhere (a truncated value, a too-small MTU) is refused, never misread."""
    frame, e2e = RECORDS[name]
    for cut in range(len(frame)):
        with pytest.raises(InvalidFrame):
            h.decode_history_record(frame[:cut], e2e=e2e)
    for cut in range(len(REPORT_SINCE_E2E)):
        with pytest.raises(InvalidFrame):
            h.decode_racp_request(REPORT_SINCE_E2E[:cut], e2e=True)
    for cut in range(len(SUCCESS_PLAIN)):
        with pytest.raises(InvalidFrame):
            h.decode_racp_response(SUCCESS_PLAIN[:cut], e2e=False)
    assert h.decode_history_record(frame, e2e=e2e)[0].sequence_number > 0


def test_e2e_is_checked_first_and_modes_do_not_mix() -> None:
    corrupt = bytearray(PROGRAMMED_E2E)
    corrupt[12] ^= 0x01  # one bit of the fast amount
    with pytest.raises(InvalidFrame, match="E2E-CRC"):
        h.decode_history_record(bytes(corrupt), e2e=True)
    with pytest.raises(InvalidFrame):
        h.decode_history_record(PROGRAMMED_E2E, e2e=False)  # the trailer is not an amount record's bytes
    plain = h.encode_history_record(h.decode_history_record(PROGRAMMED_E2E, e2e=True)[0], counter=None)
    assert plain == PROGRAMMED_E2E[:-3]


@pytest.mark.parametrize("enum_cls", [h.HistoryEventType, h.RacpOpcode, h.RacpOperator, h.RacpFilterType])
def test_enum_values_are_hamming_distance_coded(enum_cls: type[enum.IntEnum]) -> None:
    values = [int(m) for m in enum_cls]
    assert min(bin(a ^ b).count("1") for a, b in itertools.combinations(values, 2)) >= 4


def test_uuids() -> None:
    assert h.IDD_RECORD_ACCESS_CONTROL_POINT == "00002b27-0000-1000-8000-00805f9b34fb"
    assert h.IDD_HISTORY_DATA == "00002b28-0000-1000-8000-00805f9b34fb"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes([0x77, 0x33, 0x0F]), h.RacpResponseCodeValue.OP_CODE_NOT_SUPPORTED),
        (bytes([0x33, 0x0F]), h.RacpResponseCodeValue.INVALID_OPERATOR),
        (bytes([0x33, 0x77, 0x0F]), h.RacpResponseCodeValue.OPERATOR_NOT_SUPPORTED),
        (bytes([0x33, 0x55, 0x0F, 1, 0, 0]), h.RacpResponseCodeValue.INVALID_OPERAND),
        (bytes([0x33, 0x55, 0x77, 1, 0, 0, 0]), h.RacpResponseCodeValue.OPERAND_NOT_SUPPORTED),
        (bytes([0x33, 0x5A, 0x0F, 9, 0, 0, 0, 1, 0, 0, 0]), h.RacpResponseCodeValue.INVALID_OPERAND),
        (bytes([0x33, 0x33]), h.RacpResponseCodeValue.INVALID_OPERAND),  # "all" without its filter type
        (bytes([0x55, 0x0F, 0x0F]), h.RacpResponseCodeValue.INVALID_OPERAND),  # abort takes no operand
    ],
)
def test_a_server_learns_which_response_code_a_bad_request_gets(frame: bytes, code: int) -> None:
    with pytest.raises(InvalidFrame) as refused:
        h.decode_racp_request(frame, e2e=False)
    assert refused.value.fields["response_code"] == code


def test_encoders_refuse_what_the_wire_cannot_carry() -> None:
    amounts = h.BolusAmounts(1, BolusType.FAST, 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="carries"):
        h.encode_history_record(h.HistoryRecord(h.HistoryEventType.REFERENCE_TIME, 1, 0, amounts), counter=None)
    opaque = h.OpaqueEventData(b"\x00" * 9)  # for an interpreted type it would not round-trip
    with pytest.raises(ValueError, match="carries"):
        h.encode_history_record(
            h.HistoryRecord(h.HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2, 1, 0, opaque), counter=None
        )
    inexact = h.BolusAmounts(1, BolusType.FAST, 1.0001, 0.0, 0)
    with pytest.raises(ValueError, match="exactly"):
        h.encode_history_record(
            h.HistoryRecord(h.HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2, 1, 0, inexact), counter=None
        )
    with pytest.raises(ValueError, match="32-bit"):
        h.encode_history_record(
            h.HistoryRecord(h.HistoryEventType.DATA_CORRUPTION, 1 << 32, 0, h.OpaqueEventData(b"")), counter=None
        )
    with pytest.raises(ValueError, match="invalid IDD RACP request"):
        h.encode_racp_request(h.RacpRequest(h.RacpOpcode.REPORT_STORED_RECORDS, h.RacpOperator.NULL), counter=None)


def test_responses_and_their_refusals() -> None:
    count = h.encode_racp_response(h.RacpRecordCount(70_000), counter=9)
    assert h.decode_racp_response(count, e2e=True) == (h.RacpRecordCount(70_000), 9)
    with pytest.raises(InvalidFrame, match="operator must be null"):
        h.decode_racp_response(bytes([0x0F, 0x33, 0x33, 0xF0]), e2e=False)
    with pytest.raises(InvalidFrame, match="not a response"):
        h.decode_racp_response(bytes([0x33, 0x0F, 0x33, 0xF0]), e2e=False)
    # An unknown response code value is kept as an int: the caller decides, and only Success completes.
    response, _ = h.decode_racp_response(bytes([0x0F, 0x0F, 0x33, 0x99]), e2e=False)
    assert response == h.RacpResponseCode(h.RacpOpcode.REPORT_STORED_RECORDS, 0x99)


# --------------------------------------------------------------------------------------------------- hypothesis

sequence_numbers = st.integers(0, h.MAX_SEQUENCE_NUMBER)
u8, u16 = st.integers(0, 0xFF), st.integers(0, 0xFFFF)
date_times = st.tuples(st.integers(1582, 9999), st.integers(0, 12), st.integers(0, 31), st.integers(0, 23),
                       st.integers(0, 59), st.integers(0, 59))  # fmt: skip
activation = st.one_of(st.none(), st.sampled_from(BolusActivationType), u8)
event_data: dict[int, st.SearchStrategy[h.HistoryEventData]] = {
    h.HistoryEventType.REFERENCE_TIME: st.builds(
        h.ReferenceTime, st.sampled_from(h.RecordingReason), date_times, st.integers(-128, 127), u8
    ),
    h.HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2: st.builds(
        h.BolusAmounts, u16, st.sampled_from(BolusType), doses, doses, u16
    ),
    h.HistoryEventType.BOLUS_DELIVERED_PART_1_OF_2: st.builds(h.BolusAmounts, u16, u8, doses, doses, u16),
    h.HistoryEventType.BOLUS_PROGRAMMED_PART_2_OF_2: st.builds(
        h.BolusProgrammedDetails, st.none() | u16, st.none() | u8, activation, st.booleans(), st.booleans()
    ),
    h.HistoryEventType.BOLUS_DELIVERED_PART_2_OF_2: st.builds(
        h.BolusDeliveredDetails,
        st.integers(0, 0xFFFF_FFFF),
        activation,
        st.none() | st.sampled_from(h.BolusEndReason),
        st.none() | u16,
    ),
}
records = st.one_of(
    *(st.builds(h.HistoryRecord, st.just(kind), sequence_numbers, u16, data) for kind, data in event_data.items()),
    st.builds(
        h.HistoryRecord,
        st.sampled_from([h.HistoryEventType.PRIMING_DONE, h.HistoryEventType.DATA_CORRUPTION, 0x1234]),
        sequence_numbers,
        u16,
        st.binary(max_size=16).map(h.OpaqueEventData),
    ),
)
counters = st.none() | u8
requests = st.one_of(
    sequence_numbers.map(h.report_records_since),
    st.just(h.report_last_record()),
    st.builds(
        h.RacpRequest,
        st.sampled_from([h.RacpOpcode.REPORT_STORED_RECORDS, h.RacpOpcode.REPORT_NUMBER_OF_STORED_RECORDS]),
        st.sampled_from([h.RacpOperator.ALL_RECORDS, h.RacpOperator.FIRST_RECORD, h.RacpOperator.LAST_RECORD]),
        st.sampled_from(h.RacpFilterType),
    ),
    st.tuples(sequence_numbers, sequence_numbers).map(
        lambda pair: h.RacpRequest(
            h.RacpOpcode.REPORT_STORED_RECORDS,
            h.RacpOperator.WITHIN_RANGE,
            h.RacpFilterType.SEQUENCE_NUMBER,
            (min(pair), max(pair)),
        )
    ),
    st.just(h.RacpRequest(h.RacpOpcode.ABORT_OPERATION, h.RacpOperator.NULL)),
)
responses = st.one_of(
    st.builds(h.RacpRecordCount, st.integers(0, 0xFFFF_FFFF)),
    st.builds(h.RacpResponseCode, st.sampled_from(h.RacpOpcode), st.sampled_from(h.RacpResponseCodeValue)),
)


@FAST
@given(records, counters)
def test_history_records_round_trip(record: h.HistoryRecord, counter: int | None) -> None:
    frame = h.encode_history_record(record, counter=counter)
    assert h.decode_history_record(frame, e2e=counter is not None) == (record, counter)


@FAST
@given(requests, counters)
def test_racp_requests_round_trip(request: h.RacpRequest, counter: int | None) -> None:
    frame = h.encode_racp_request(request, counter=counter)
    assert h.decode_racp_request(frame, e2e=counter is not None) == (request, counter)


@FAST
@given(responses, counters)
def test_racp_responses_round_trip(response: h.RacpResponse, counter: int | None) -> None:
    frame = h.encode_racp_response(response, counter=counter)
    assert h.decode_racp_response(frame, e2e=counter is not None) == (response, counter)


DECODERS: dict[str, Decoder] = {
    "record_e2e": lambda b: h.decode_history_record(b, e2e=True),
    "record_plain": lambda b: h.decode_history_record(b, e2e=False),
    "request_e2e": lambda b: h.decode_racp_request(b, e2e=True),
    "request_plain": lambda b: h.decode_racp_request(b, e2e=False),
    "response_e2e": lambda b: h.decode_racp_response(b, e2e=True),
    "response_plain": lambda b: h.decode_racp_response(b, e2e=False),
}


@FAST
@given(st.binary(max_size=40))
def test_random_bytes_raise_nothing_but_invalid_frame(data: bytes) -> None:
    for decode in DECODERS.values():
        decodes_or_invalid(decode, data)


@FAST
@given(mutations)
def test_mutated_recorded_frames_raise_nothing_but_invalid_frame(mutation: Any) -> None:
    valid = {
        "record_e2e": PROGRAMMED_E2E,
        "record_plain": DELIVERED_PART_2,
        "request_e2e": REPORT_SINCE_E2E,
        "response_plain": SUCCESS_PLAIN,
    }
    check_mutations(DECODERS, valid, mutation)
