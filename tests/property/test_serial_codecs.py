"""Tests for the wired-device codecs: framing (MLLP, STX/ETX, lines), HL7 v2 / IHE PCD-01, Nonin DF2/DF7."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial import hl7
from drivers.serial.framing import (
    MAX_PENDING_PROBLEMS,
    Checksum,
    ChecksumSpec,
    FramingError,
    LineEnding,
    LineFramer,
    MllpFramer,
    StxEtxFramer,
    compute_checksum,
    line_wrap,
    mllp_wrap,
    stx_etx_wrap,
)
from drivers.serial.hl7 import HL7ParseError, OruObservation
from drivers.serial.nonin import (
    DataFormat,
    NoninDecoder,
    NoninMapper,
    NoninPacket,
    Perfusion,
    Status,
    encode_frame,
    encode_packet,
    perfusion,
)
from gateway.core.model import CONDITIONS_KEY, DeviceStatus, Observation, WaveformChunk
from tests.support.fuzzing import FAST, Mutation, mutate, mutations

Problem = tuple[str, int, int]


def summary(problems: Sequence[FramingError]) -> list[Problem]:
    return [(str(p.fault), p.offset, p.length) for p in problems]


def run(
    make: Callable[[], MllpFramer | StxEtxFramer | LineFramer], chunks: Sequence[bytes]
) -> tuple[list[bytes], list[Problem]]:
    framer = make()
    frames: list[bytes] = []
    problems: list[Problem] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
        problems += summary(framer.take_problems())
    problems += summary(framer.flush())
    return frames, problems


def assert_split_invariant(make: Callable[[], MllpFramer | StxEtxFramer | LineFramer], stream: bytes) -> None:
    """Splitting the stream at any byte boundary, or feeding it byte by byte, changes neither frames nor problems."""
    whole = run(make, [stream])
    for cut in range(len(stream) + 1):
        assert run(make, [stream[:cut], stream[cut:]]) == whole, cut
    assert run(make, [stream[i : i + 1] for i in range(len(stream))]) == whole


# ------------------------------------------------------------------------------------------------------ MLLP


def test_mllp_garbage_truncated_oversize_and_bad_terminator_are_skipped_and_reported() -> None:
    stream = (
        b"noise"  # 0..4
        + mllp_wrap(b"MSH|first")  # 5..16
        + b"\x0bcut short"  # 17..26: a frame cut by the next VT
        + mllp_wrap(b"X" * 40)  # 27..69: over max_frame
        + mllp_wrap(b"MSH|second")
        + b"\x0bbad\x1cZ"  # FS not followed by CR
        + mllp_wrap(b"MSH|third")
    )
    frames, problems = run(lambda: MllpFramer(max_frame=32), [stream])
    assert frames == [b"MSH|first", b"MSH|second", b"MSH|third"]
    bad_at = stream.index(b"\x0bbad")
    assert problems == [
        ("garbage", 0, 5),
        ("truncated", 17, 10),
        ("oversize", 27, 43),
        ("bad_terminator", bad_at, 5),
        ("garbage", bad_at + 5, 1),
    ]
    assert_split_invariant(lambda: MllpFramer(max_frame=32), stream)


def test_mllp_oversize_never_buffers_and_the_next_frame_decodes() -> None:
    framer = MllpFramer(max_frame=1000)
    frames = framer.feed(b"\x0b" + b"A" * 5000)
    assert frames == [] and framer.buffered == 0
    frames += framer.feed(b"B" * 5000 + b"\x1c\r" + mllp_wrap(b"MSH|ok"))
    assert frames == [b"MSH|ok"]
    # One run of 10003 bytes (VT, payload, FS, CR), reported in run_cap pieces (4096 here) as it goes on.
    assert summary(framer.take_problems()) == [
        ("oversize", 0, 4096),
        ("oversize", 4096, 4096),
        ("oversize", 8192, 1811),
    ]
    assert framer.stats.discarded_bytes == 10003 and framer.stats.frames == 1


def test_mllp_end_of_stream_reports_the_partial_frame() -> None:
    framer = MllpFramer()
    assert framer.feed(b"\x0bMSH|partial\x1c") == []
    assert summary(framer.flush()) == [("truncated", 0, 13)]  # VT, 11 payload bytes, FS


def test_mllp_wrap_refuses_payloads_it_cannot_frame() -> None:
    with pytest.raises(ValueError, match="VT"):
        mllp_wrap(b"a\x0bb")
    with pytest.raises(ValueError, match="FS"):
        mllp_wrap(b"a\x1cb")


def test_pending_problems_are_bounded_and_counted() -> None:
    framer = MllpFramer(max_frame=4)
    framer.feed(b"\x0bxx\x1cZ" * (MAX_PENDING_PROBLEMS + 10))  # each frame a separate bad terminator run
    problems = framer.take_problems()
    assert len(problems) == MAX_PENDING_PROBLEMS
    assert framer.stats.problems_dropped + len(problems) == framer.stats.discarded_runs
    assert framer.stats.discarded_bytes == 5 * (MAX_PENDING_PROBLEMS + 10)


# --------------------------------------------------------------------------------------------------- STX/ETX


def test_checksums_by_definition() -> None:
    data = bytes([0x01, 0x02, 0x04, 0xF0])
    assert compute_checksum(data, Checksum.XOR) == 0xF7
    assert compute_checksum(data, Checksum.SUM8) == 0xF7
    assert compute_checksum(data, Checksum.LRC) == 0x09  # data + LRC sums to 0 modulo 256
    assert (sum(data) + compute_checksum(data, Checksum.LRC)) % 256 == 0
    assert compute_checksum(b"\xff\xff", Checksum.SUM8) == 0xFE
    assert ChecksumSpec(Checksum.SUM8, include_etx=True, ascii_hex=True).encode(b"\x10") == b"13"


SPECS = [
    ChecksumSpec(Checksum.XOR),
    ChecksumSpec(Checksum.SUM8),
    ChecksumSpec(Checksum.LRC, include_etx=True),
    ChecksumSpec(Checksum.SUM8, ascii_hex=True),
    ChecksumSpec(Checksum.NONE),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.algorithm.value}-etx{s.include_etx}-hex{s.ascii_hex}")
def test_stx_etx_frames_with_each_checksum_variant(spec: ChecksumSpec) -> None:
    good = [b"SPO2 97", b"PR 072", b"\x00\xff binary ok"]
    stream = b"\x00junk" + b"".join(stx_etx_wrap(p, spec) for p in good[:2]) + b"\x02cut" + stx_etx_wrap(good[2], spec)
    frames, problems = run(lambda: StxEtxFramer(spec), [stream])
    assert frames == good
    assert problems[0] == ("garbage", 0, 5)
    assert ("truncated", stream.index(b"\x02cut"), 4) in problems
    assert_split_invariant(lambda: StxEtxFramer(spec, max_frame=16), stream)


def test_stx_etx_bad_checksum_is_reported_and_a_lost_check_byte_does_not_cost_the_next_frame() -> None:
    spec = ChecksumSpec(Checksum.XOR)
    first = stx_etx_wrap(b"abc", spec)
    corrupted = first[:-1] + bytes([first[-1] ^ 0xFF])
    lost_check = first[:-1]  # its check byte never arrived: the next STX is taken as the check, then re-examined
    stream = corrupted + lost_check + stx_etx_wrap(b"next", spec)
    frames, problems = run(lambda: StxEtxFramer(spec), [stream])
    assert frames == [b"next"]
    assert problems == [("checksum", 0, 5), ("garbage", 5, 1), ("checksum", 6, 5)]
    assert_split_invariant(lambda: StxEtxFramer(spec), stream)


def test_stx_etx_ascii_hex_check_rejects_non_hex_digits() -> None:
    spec = ChecksumSpec(Checksum.SUM8, ascii_hex=True)
    framer = StxEtxFramer(spec)
    good = stx_etx_wrap(b"x", spec)
    assert framer.feed(good[:-2] + good[-2:].lower()) == [b"x"]  # hex digits in either case
    assert framer.feed(b"\x02x\x03+x") == []
    assert summary(framer.take_problems())[0][0] == "checksum"


def test_stx_etx_oversize_then_next_frame() -> None:
    spec = ChecksumSpec(Checksum.SUM8)
    stream = stx_etx_wrap(b"Y" * 100, spec) + stx_etx_wrap(b"small", spec)
    frames, problems = run(lambda: StxEtxFramer(spec, max_frame=10), [stream])
    assert frames == [b"small"]
    assert problems == [("oversize", 0, 103)]


def test_stx_etx_wrap_refuses_markers_in_the_payload() -> None:
    with pytest.raises(ValueError, match="STX"):
        stx_etx_wrap(b"\x02")


# ----------------------------------------------------------------------------------------------------- lines


# Nonin's ASCII real-time output as its operator manuals print it ("SPO2=XXX HR=YYY", "---" when no data,
# once a second, CR/LF) -- Nonin 9600/8600V/BT4000 manuals, "Real-Time Patient Data Output".
NONIN_ASCII = [b"SPO2=097 HR=072", b"SPO2=--- HR=---", b"SPO2=096 HR=071*"]


@pytest.mark.parametrize("ending", list(LineEnding))
def test_lines_with_each_ending(ending: LineEnding) -> None:
    stream = b"".join(line_wrap(line, ending) for line in NONIN_ASCII)
    frames, problems = run(lambda: LineFramer(ending), [stream])
    assert frames == NONIN_ASCII and problems == []
    assert_split_invariant(lambda: LineFramer(ending, max_frame=12), stream + b"\xffbad\r\n" + stream)


def test_any_ending_counts_crlf_once_and_skips_empty_lines() -> None:
    frames, problems = run(lambda: LineFramer(LineEnding.ANY), [b"a\r\nb\rc\n\r\n\n"])
    assert frames == [b"a", b"b", b"c"] and problems == []


def test_long_and_non_ascii_lines_are_discarded_and_the_next_line_decodes() -> None:
    stream = b"x" * 50 + b"\r\n" + b"\x80\x81" + b"\r\n" + b"SPO2=097 HR=072\r\n" + b"tail-without-end"
    frames, problems = run(lambda: LineFramer(LineEnding.CRLF, max_frame=20), [stream])
    assert frames == [b"SPO2=097 HR=072"]
    assert problems == [("oversize", 0, 50), ("non_ascii", 52, 2), ("truncated", 73, 16)]


def test_crlf_mode_keeps_a_bare_cr_as_content() -> None:
    frames, _ = run(lambda: LineFramer(LineEnding.CRLF, ascii_only=False), [b"a\rb\r\n"])
    assert frames == [b"a\rb"]


# ------------------------------------------------------------------------------------------- framing fuzzing

stream_bytes = st.lists(
    st.one_of(st.sampled_from([0x0B, 0x1C, 0x0D, 0x0A, 0x02, 0x03, 0x41]), st.integers(0, 255)), max_size=300
).map(bytes)
cuts = st.lists(st.integers(0, 300), max_size=8)


def chunks_of(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(min(c, len(data)) for c in at)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@FAST
@given(stream_bytes, cuts)
def test_mllp_random_bytes_never_raise_stay_bounded_and_account_for_every_byte(data: bytes, at: list[int]) -> None:
    framer = MllpFramer(max_frame=16, run_cap=64)
    frames: list[bytes] = []
    for chunk in chunks_of(data, at):
        frames += framer.feed(chunk)
        assert framer.buffered <= 16 + 2
    problems = framer.flush()
    assert framer.stats.discarded_bytes == sum(p.length for p in problems)
    assert framer.stats.discarded_bytes + sum(len(f) + 3 for f in frames) == len(data)
    assert run(lambda: MllpFramer(max_frame=16, run_cap=64), [data]) == (frames, summary(problems))


@FAST
@given(stream_bytes, cuts, st.sampled_from(SPECS))
def test_stx_etx_random_bytes_never_raise_stay_bounded_and_account_for_every_byte(
    data: bytes, at: list[int], spec: ChecksumSpec
) -> None:
    framer = StxEtxFramer(spec, max_frame=16, run_cap=64)
    frames: list[bytes] = []
    for chunk in chunks_of(data, at):
        frames += framer.feed(chunk)
        assert framer.buffered <= 16 + 2 + spec.length
    problems = framer.flush()
    assert framer.stats.discarded_bytes == sum(p.length for p in problems)
    assert framer.stats.discarded_bytes + sum(len(f) + 2 + spec.length for f in frames) == len(data)


@FAST
@given(stream_bytes, cuts, st.sampled_from(list(LineEnding)))
def test_lines_random_bytes_never_raise_and_stay_bounded(data: bytes, at: list[int], ending: LineEnding) -> None:
    framer = LineFramer(ending, max_frame=16)
    frames: list[bytes] = []
    for chunk in chunks_of(data, at):
        frames += framer.feed(chunk)
        assert framer.buffered <= 16 + 1
    problems = framer.flush()
    assert framer.stats.discarded_bytes == sum(p.length for p in problems)
    assert all(0 < len(f) <= 16 and b"\r" not in f and b"\n" not in f for f in frames)
    assert run(lambda: LineFramer(ending, max_frame=16), [data]) == (frames, summary(problems))


# ------------------------------------------------------------------------------------------------ HL7 samples

# A PCD-01 ORU^R01 from a blood-pressure monitor in the layout of the Continua Design Guidelines (ITU-T H.812 Annex
# E, PCD-01 over the WAN interface), verbatim from HAPI HL7v2's test suite
# (ca.uhn.hl7v2.validation.MessageValidatorTest.testWithdrawnDatatype).  The same message is used by openehealth
# IPF's PCD-01 tests (TransactedRouteTest.WAN_REQUEST) and by Inera's Swedish PCD-01 specification.
CONTINUA_BP = (
    b"MSH|^~\\&|AcmeInc^ACDE48234567ABCD^EUI-64||||20090713090030+0000||ORU^R01^ORU_R01|MSGID1234|P|2.6|||NE|AL"
    b"|||||IHE PCD ORU-R01 2006^HL7^2.16.840.1.113883.9.n.m^HL7\r"
    b"PID|||1^^^Imaginary Hospital^PI ||Doe^John^Joseph^^^^L^A|||M|||||0123456789\r"
    b"OBR|1|AB12345^AcmeAHDInc^ACDE48234567ABCD^EUI-64|CD12345^AcmeAHDInc^ACDE48234567ABCD^EUI-64"
    b"|182777000^monitoring of patient^SNOMED-CT|||20090813095715+0000\r"
    b"OBX|1|CWE|68220^MDC_TIME_SYNC_PROTOCOL^MDC|0.0.0.1|532224^MDC_TIME_SYNC_NONE^MDC|||||R\r"
    b"OBX|2||528391^MDC_DEV_SPEC_PROFILE_BP^MDC|1|||||||X|||||||0123456789ABCDEF^EUI-64\r"
    b"OBX|3||150020^MDC_PRESS_BLD_NONINV^MDC|1.0.1|||||||X|||20090813095715+0000\r"
    b"OBX|4|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.0.1.1|120|266016^MDC_DIM_MMHG^MDC|||||R\r"
    b"OBX|5|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.0.1.2|80|266016^MDC_DIM_MMHG^MDC|||||R\r"
    b"OBX|6|NM|150023^MDC_PRESS_BLD_NONINV_MEAN^MDC|1.0.1.3|100|266016^MDC_DIM_MMHG^MDC|||||R\r"
    b"OBX|7|DTM|67975^MDC_ATTR_TIME_ABS^MDC|1.0.0.1|20091028123702||||||R|||20091028173702+0000\r"
)

# GE B40/B20 Patient Monitor HL7 Reference Manual 2062665-001 G (PCD-01 DOR): the MSH/PID/PV1/OBR/OBX-1 header of
# "Example 1" (p. 19), with the OBX samples the manual prints on p. 15 (ECG, invasive pressure) and p. 24 (SpO2,
# respiration, temperature).  Segments are verbatim, re-joined where the PDF wraps lines; the manual splits its
# examples over pages, so the header and each page's OBX are assembled here into one message.
GE_HEADER = (
    "MSH|^~\\&|VSP^080019FFFE134535^EUI-64|GE Healthcare|||20130122134100||ORU^R01^ORU_R01|004097134535|P|2.6"
    "|||NE|AL||UNICODE UTF-8|||PCD_DEC_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r"
    "PID|||HED12^^^PID^MR||LAZY^KITTY^^^^^L|||\r"
    "PV1||R|SURGERY^^V2\r"
    "OBR|1|080019FFFE13453520130122134100^VSP^080019FFFE134535^EUI-64"
    "|080019FFFE13453520130122134100^VSP^080019FFFE134535^EUI-64|182777000^monitoring of patient^SCT"
    "|||20130122134100\r"
    "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X\r"
)
GE_EQUIPMENT = "|||||R|||||||080019FFFE0B4020^B40_GE\r"
GE_PAGE_15 = (
    "OBX|11|NM|147842^MDC_ECG_HEART_RATE^MDC|1.5.1.1|80|264864^MDC_DIM_BEAT_PER_MIN^MDC" + GE_EQUIPMENT
    + "OBX|12|NM|148066^MDC_ECG_V_P_C_RATE^MDC|1.5.1.2|0|264864^MDC_DIM_BEAT_PER_MIN^MDC" + GE_EQUIPMENT
    + "OBX|2||69854^MDC_DEV_METER_PRESS_BLD_VMD^MDC|1.13.0.0|||||||X\r"
    + "OBX|3||69855^MDC_DEV_METER_PRESS_BLD_CHAN^MDC|1.13.1.0|||||||X\r"
    + "OBX|4|NM|150033^MDC_PRESS_BLD_ART_SYS^MDC|1.13.1.1|112|266016^MDC_DIM_MMHG^MDC" + GE_EQUIPMENT
    + "OBX|5|NM|150034^MDC_PRESS_BLD_ART_DIA^MDC|1.13.1.2|76|266016^MDC_DIM_MMHG^MDC" + GE_EQUIPMENT
    + "OBX|6|NM|150035^MDC_PRESS_BLD_ART_MEAN^MDC|1.13.1.3|95|266016^MDC_DIM_MMHG^MDC" + GE_EQUIPMENT
    + "OBX|7|NM|149522^MDC_BLD_PULS_RATE_INV^MDC|1.13.1.4|80|264864^MDC_DIM_BEAT_PER_MIN^MDC" + GE_EQUIPMENT
)  # fmt: skip
GE_PAGE_24 = (
    "OBX|43|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.22.1.2|100|262688^MDC_DIM_PERCENT^MDC" + GE_EQUIPMENT
    + "OBX|44||69682^MDC_DEV_ANALY_AWAY_MULTI_PARAM_VMD^MDC|1.20.0.0|||||||X\r"
    + "OBX|45|NM|151562^MDC_RESP_RATE^MDC|1.20.1.1|18|264928^MDC_DIM_RESP_PER_MIN^MDC" + GE_EQUIPMENT
    + "OBX|46||70666^MDC_DEV_ECG_RESP_VMD^MDC|1.6.0.0|||||||X\r"
    + "OBX|47|NM|151562^MDC_RESP_RATE^MDC|1.6.1.1|30|264928^MDC_DIM_RESP_PER_MIN^MDC" + GE_EQUIPMENT
    + "OBX|48||69902^MDC_DEV_METER_TEMP_VMD^MDC|1.26.0.0|||||||X\r"
    + "OBX|49|NM|150344^MDC_TEMP^MDC|1.26.1.1|37.1|268192^MDC_DIM_DEGC^MDC" + GE_EQUIPMENT
    + "OBX|50|NM|150344^MDC_TEMP^MDC|1.26.1.2|36.5|268192^MDC_DIM_DEGC^MDC" + GE_EQUIPMENT
)  # fmt: skip
GE_VITALS = (GE_HEADER + GE_PAGE_24).encode()
GE_ECG_IBP = (GE_HEADER + GE_PAGE_15).encode()

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ack_fields(ack: bytes) -> dict[str, list[hl7.Segment]]:
    parsed = hl7.parse(ack)
    assert parsed.msh.message_type == hl7.MessageType("ACK", "R01", "ACK")
    found: dict[str, list[hl7.Segment]] = {}
    for seg in parsed.segments:
        found.setdefault(seg.name, []).append(seg)
    return found


def msa(ack: bytes) -> tuple[str, str]:
    seg = ack_fields(ack)["MSA"][0]
    enc = hl7.DEFAULT_ENCODING
    return seg.value(1, enc), seg.value(2, enc)


def err_codes(ack: bytes) -> list[tuple[str, str]]:
    enc = hl7.DEFAULT_ENCODING
    return [(seg.raw(2), seg.value(3, enc)) for seg in ack_fields(ack).get("ERR", [])]


def test_continua_pcd01_blood_pressure_sample() -> None:
    message = hl7.parse(CONTINUA_BP)
    msh = message.msh
    assert msh.sending_application == hl7.HierarchicDesignator("AcmeInc", "ACDE48234567ABCD", "EUI-64")
    assert (msh.message_type.code, msh.message_type.trigger, msh.control_id) == ("ORU", "R01", "MSGID1234")
    assert (msh.processing_id, msh.version, msh.profile) == ("P", "2.6", "IHE PCD ORU-R01 2006")
    assert message.pid is not None and message.pid.patient_id == "1"
    assert len(message.obr) == 1 and len(message.obx) == 7
    sys_obx = message.obx[3]
    assert sys_obx.identifier == hl7.CodedElement("150021", "MDC_PRESS_BLD_NONINV_SYS", "MDC")
    assert (sys_obx.sub_id, sys_obx.value, sys_obx.result_status) == ("1.0.1.1", "120", "R")
    assert sys_obx.units == hl7.CodedElement("266016", "MDC_DIM_MMHG", "MDC")
    assert message.obx[0].value_coded == hl7.CodedElement("532224", "MDC_TIME_SYNC_NONE", "MDC")
    assert message.obx[1].equipment == (hl7.EntityIdentifier("0123456789ABCDEF", "EUI-64"),)
    stamp = message.obx[6].observation_time
    assert stamp is not None and stamp.utc_offset_minutes == 0
    assert stamp.epoch_ns == int(datetime(2009, 10, 28, 17, 37, 2, tzinfo=UTC).timestamp()) * 10**9

    events = hl7.observations(message, "bp-1")
    assert [(e.quantity.reference_id, e.quantity.code, e.value, e.unit) for e in events] == [
        ("MDC_PRESS_BLD_NONINV_SYS", 150021, 120.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_NONINV_DIA", 150022, 80.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_NONINV_MEAN", 150023, 100.0, "mm[Hg]"),
    ]
    # No OBX-14 on the numerics: the OBR-7 time applies, and its offset places it on the UTC axis.
    obr_time = int(datetime(2009, 8, 13, 9, 57, 15, tzinfo=UTC).timestamp()) * 10**9
    assert all(e.device_time_ns == obr_time for e in events)

    parsed, ack = hl7.parse_and_ack(CONTINUA_BP, now=NOW)
    assert parsed is not None and msa(ack) == ("AA", "MSGID1234")
    assert "ERR" not in ack_fields(ack)
    receiver = ack_fields(ack)["MSH"][0]
    assert receiver.raw(5) == "AcmeInc^ACDE48234567ABCD^EUI-64" and receiver.raw(12) == "2.6"


def test_ge_monitor_vitals_sample() -> None:
    message, ack = hl7.parse_and_ack(GE_VITALS, now=NOW)
    assert message is not None and msa(ack) == ("AA", "004097134535")
    assert message.msh.sending_facility.namespace_id == "GE Healthcare"
    assert message.msh.character_set == "UNICODE UTF-8"
    events = hl7.observations(message, "bed-7")
    assert [(e.quantity.reference_id, e.value, e.unit) for e in events] == [
        ("MDC_PULS_OXIM_SAT_O2", 100.0, "%"),
        ("MDC_RESP_RATE", 18.0, "/min"),
        ("MDC_RESP_RATE", 30.0, "/min"),
        ("MDC_TEMP", 37.1, "Cel"),
        ("MDC_TEMP", 36.5, "Cel"),
    ]
    # Local time without an offset: identifies the reading, but is not placed on the UTC axis.
    assert all(e.device_time_ns is None for e in events)
    assert len({e.id for e in events}) == 5  # two respiration rates, told apart by their OBX-4 sub-id
    assert message.obx[1].equipment == (hl7.EntityIdentifier("080019FFFE0B4020", "B40_GE"),)


def test_ge_monitor_ecg_and_invasive_pressure_sample() -> None:
    message, ack = hl7.parse_and_ack(GE_ECG_IBP, now=NOW)
    assert message is not None and msa(ack)[0] == "AA"
    assert [(e.quantity.reference_id, e.quantity.code, e.value) for e in hl7.observations(message, "bed-7")] == [
        ("MDC_ECG_HEART_RATE", 147842, 80.0),
        ("MDC_ECG_V_P_C_RATE", 148066, 0.0),
        ("MDC_PRESS_BLD_ART_SYS", 150033, 112.0),
        ("MDC_PRESS_BLD_ART_DIA", 150034, 76.0),
        ("MDC_PRESS_BLD_ART_MEAN", 150035, 95.0),
        ("MDC_BLD_PULS_RATE_INV", 149522, 80.0),
    ]


def test_patient_id_is_opaque_and_never_in_a_repr() -> None:
    message = hl7.parse(GE_VITALS)
    assert message.pid is not None and message.pid.patient_id == "HED12"
    assert "HED12" not in repr(message) and "LAZY" not in repr(message)
    broken = GE_VITALS.replace(b"PV1||R", b"pv1||R")
    with pytest.raises(HL7ParseError) as caught:
        hl7.parse(broken)
    assert "HED12" not in str(caught.value) and "HED12" not in repr(caught.value.log_fields())


def test_ids_are_stable_across_resends_and_distinct_per_sub_id() -> None:
    first = hl7.observations(hl7.parse(CONTINUA_BP), "bp-1")
    again = hl7.observations(hl7.parse(CONTINUA_BP), "bp-1")
    assert [e.id for e in first] == [e.id for e in again]
    other_device = hl7.observations(hl7.parse(CONTINUA_BP), "bp-2")
    assert not {e.id for e in first} & {e.id for e in other_device}


# ------------------------------------------------------------------------------------ escapes, separators, time


def test_escape_sequences_are_decoded() -> None:
    enc = hl7.DEFAULT_ENCODING
    assert hl7.unescape(r"a\F\b\S\c\T\d\R\e\E\f", enc) == "a|b^c&d~e\\f"
    assert hl7.unescape(r"line\X0D0A\end", enc) == "line\r\nend"
    assert hl7.unescape(r"keep \Z\ and \unterminated", enc) == r"keep \Z\ and \unterminated"


def test_custom_separators_from_msh1_and_msh2() -> None:
    raw = (
        "MSH#*$!@#APP*0011223344556677*EUI-64####20240101120000+0100##ORU*R01*ORU_R01#C1#P#2.6\r"
        "OBX#1#ST#1^2*NOTE*LOCAL#1#a!F!b!S!c!T!d!R!e!E!f#\r"
        "OBX#2#NM#150456*MDC_PULS_OXIM_SAT_O2*MDC#1.3.1.2#97#262688*MDC_DIM_PERCENT*MDC######F\r"
    )
    message = hl7.parse(raw)
    assert message.encoding == hl7.Encoding("#", "*", "$", "!", "@")
    assert message.msh.sending_application.universal_id == "0011223344556677"
    assert message.obx[0].identifier == hl7.CodedElement("1^2", "NOTE", "LOCAL")
    assert message.obx[0].value == "a#b*c@d$e!f"
    assert [(e.quantity.reference_id, e.value) for e in hl7.observations(message, "x")] == [
        ("MDC_PULS_OXIM_SAT_O2", 97.0)
    ]


@FAST
@given(st.text(max_size=40))
def test_escape_round_trips_any_text(text: str) -> None:
    for enc in (hl7.DEFAULT_ENCODING, hl7.Encoding("#", "*", "$", "!", "@")):
        escaped = hl7.escape(text, enc)
        assert not {enc.field, enc.component, enc.repetition, enc.subcomponent, "\r", "\n"} & set(escaped)
        assert hl7.unescape(escaped, enc) == text


def test_timestamps_with_precision_and_time_zone() -> None:
    full = hl7.parse_timestamp("20130122134100.1234-0500")
    assert full is not None and full.precision is hl7.TimePrecision.FRACTION
    assert full.nanosecond == 123_400_000 and full.utc_offset_minutes == -300
    expected = datetime(2013, 1, 22, 13, 41, 0, 123400, tzinfo=timezone(timedelta(hours=-5)))
    assert full.epoch_ns == round(expected.timestamp() * 1e6) * 1000
    minute = hl7.parse_timestamp("201301221341")
    assert minute is not None and minute.precision is hl7.TimePrecision.MINUTE and minute.epoch_ns is None
    assert hl7.parse_timestamp("") is None
    for bad in ("20130231", "2013013", "20131301", "20130122250000", "20130122+2500", "2013-01-22"):
        with pytest.raises(ValueError):  # noqa: PT011 - the contract is a plain ValueError for any malformed DTM
            hl7.parse_timestamp(bad)
    assert hl7.format_timestamp(datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)) == "20240501120000.2500+0000"


# ----------------------------------------------------------------------------------------------- ACK rules


def test_ae_when_there_is_no_obx() -> None:
    raw = CONTINUA_BP.split(b"OBX|")[0]
    message, ack = hl7.parse_and_ack(raw, now=NOW)
    assert message is not None and msa(ack) == ("AE", "MSGID1234")
    assert err_codes(ack) == [("OBX", "100")]


def test_an_unmapped_code_costs_only_itself_the_mapped_ones_are_kept_and_acknowledged() -> None:
    # Was: one unmapped OBX made the whole message AE and nothing was stored (issue 16).
    raw = CONTINUA_BP.replace(b"150022^MDC_PRESS_BLD_NONINV_DIA", b"999999^MDC_NOT_A_TERM")
    result = hl7.assess(raw, now=NOW)
    assert msa(result.ack) == ("AA", "MSGID1234") and result.keep
    assert result.unmapped == ("999999^MDC_NOT_A_TERM",)
    assert result.message is not None
    assert [e.quantity.reference_id for e in hl7.observations(result.message, "bp")] == [
        "MDC_PRESS_BLD_NONINV_SYS",
        "MDC_PRESS_BLD_NONINV_MEAN",
    ]
    # Configured to say so: AE naming the unmapped OBX, and the mapped ones are still kept.
    named = hl7.assess(raw, unmapped="error", now=NOW)
    assert msa(named.ack) == ("AE", "MSGID1234") and named.keep
    assert err_codes(named.ack) == [("OBX^5^3", "103")]
    # Any other content problem still keeps nothing (the sender's corrected retry must not be a duplicate).
    both = raw.replace(b"|120|", b"|12x|")
    refused = hl7.assess(both, now=NOW)
    assert msa(refused.ack)[0] == "AE" and not refused.keep


def test_a_sending_facility_outside_the_allow_list_is_rejected() -> None:
    allowed = hl7.assess(GE_VITALS, allowed_facilities=("GE Healthcare",), now=NOW)
    assert allowed.code is hl7.AckCode.ACCEPT
    stranger = hl7.assess(GE_VITALS, allowed_facilities=("WARD7",), now=NOW)
    assert stranger.code is hl7.AckCode.REJECT and not stranger.keep
    assert err_codes(stranger.ack) == [("MSH^1^4", "103")]


def test_ae_when_a_numeric_value_is_not_a_number() -> None:
    for bad in (b"12O", b"1e3", b"nan", b"--5"):
        message, ack = hl7.parse_and_ack(CONTINUA_BP.replace(b"|120|", b"|" + bad + b"|"), now=NOW)
        assert message is not None and msa(ack)[0] == "AE", bad
        assert err_codes(ack) == [("OBX^4^5", "102")]


def test_ae_for_unknown_or_unconvertible_units() -> None:
    unknown = CONTINUA_BP.replace(b"|120|266016^MDC_DIM_MMHG^MDC|", b"|120|furlong^furlong^UCUM|")
    assert err_codes(hl7.parse_and_ack(unknown, now=NOW)[1]) == [("OBX^4^6", "103")]
    wrong = CONTINUA_BP.replace(b"|120|266016^MDC_DIM_MMHG^MDC|", b"|120|262688^MDC_DIM_PERCENT^MDC|")
    assert err_codes(hl7.parse_and_ack(wrong, now=NOW)[1]) == [("OBX^4^6", "103")]


def test_no_reading_and_device_hierarchy_obx_are_context_not_errors() -> None:
    empty = CONTINUA_BP.replace(b"|120|", b"||").replace(b"MDC|||||R\rOBX|5", b"MDC|||||X\rOBX|5")
    message, ack = hl7.parse_and_ack(empty, now=NOW)
    assert message is not None and msa(ack)[0] == "AA"
    assert "MDC_PRESS_BLD_NONINV_SYS" not in [e.quantity.reference_id for e in hl7.observations(message, "bp")]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"this is not HL7 at all", ""),
        (b"\x00\xff\xfe garbage", ""),
        (CONTINUA_BP.replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01"), "MSH^1^9"),
        (CONTINUA_BP.replace(b"ORU^R01^ORU_R01", b"ORU^R30^ORU_R30"), "MSH^1^9"),
        (CONTINUA_BP.replace(b"|P|2.6|", b"|P|2.3|"), "MSH^1^12"),
        (CONTINUA_BP.replace(b"|MSGID1234|", b"||"), "MSH^1^10"),
        (CONTINUA_BP.replace(b"MSH|^~\\&|", b"MSH|^~|"), ""),  # encoding characters incomplete
        (GE_VITALS + "é".encode("latin-1"), ""),  # declares UTF-8, is not
    ],
    ids=["text", "binary", "type", "trigger", "version", "control-id", "msh2", "charset"],
)
def test_ar_for_messages_that_cannot_be_accepted(raw: bytes, error: str) -> None:
    message, ack = hl7.parse_and_ack(raw, now=NOW)
    assert message is None
    code, control_id = msa(ack)
    assert code == "AR"
    assert control_id in ("", "MSGID1234", "004097134535")
    errors = err_codes(ack)
    assert errors and errors[0][0] == error


def test_ar_still_echoes_the_control_id_when_a_later_segment_is_broken() -> None:
    _, ack = hl7.parse_and_ack(CONTINUA_BP.replace(b"OBX|4|", b"0BX|4|"), now=NOW)
    assert msa(ack) == ("AR", "MSGID1234")


def test_build_ack_escapes_error_text_and_echoes_processing_id() -> None:
    message = hl7.parse(CONTINUA_BP.replace(b"|MSGID1234|P|", b"|ID\\S\\7|T|"))  # a literal ^, escaped
    assert message.msh.control_id == "ID^7"
    ack = hl7.build_ack(message, "AE", "bad|value^here", now=NOW, control_id="ACK1")
    fields = ack_fields(ack)
    assert fields["MSH"][0].raw(10) == "ACK1" and fields["MSH"][0].raw(11) == "T"
    enc = hl7.DEFAULT_ENCODING
    assert fields["MSA"][0].raw(2) == "ID\\S\\7" and fields["MSA"][0].value(2, enc) == "ID^7"
    assert fields["ERR"][0].value(8, enc) == "bad|value^here"
    assert ack.endswith(b"\r") and b"\n" not in ack


# --------------------------------------------------------------------------------------------- units, build


def test_units_are_converted_to_the_gateways_ucum_units() -> None:
    readings = [
        OruObservation("MDC_PRESS_BLD_NONINV_SYS", 16.0, "1.1.1.1", unit="kPa"),
        OruObservation("MDC_TEMP_BODY", 98.6, "1.2.1.1", unit="[degF]"),
        OruObservation("MDC_PULS_OXIM_SAT_O2", 96.0, "1.3.1.1"),
    ]
    raw = hl7.build_oru(readings, control_id="C1", timestamp=NOW)
    assert b"kPa^kPa^UCUM" in raw
    got = {e.quantity.reference_id: (e.value, e.unit) for e in hl7.observations(hl7.parse(raw), "m")}
    assert got == {
        "MDC_PRESS_BLD_NONINV_SYS": (round(16.0 * 1000 / 133.322387415, 3), "mm[Hg]"),
        "MDC_TEMP_BODY": (37.0, "Cel"),
        "MDC_PULS_OXIM_SAT_O2": (96.0, "%"),
    }
    mdc_kpa = CONTINUA_BP.replace(b"|120|266016^MDC_DIM_MMHG^MDC|", b"|16|^MDC_DIM_KILO_PASCAL^MDC|")
    assert hl7.observations(hl7.parse(mdc_kpa), "m")[0].value == 120.01


def test_build_oru_round_trip_with_times_and_a_missing_reading() -> None:
    taken = datetime(2024, 5, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    readings = [
        OruObservation("MDC_PULS_OXIM_SAT_O2", 97.0, "1.3.1.1", time=taken),
        OruObservation("MDC_PULS_OXIM_PULS_RATE", 71.5, "1.3.1.2", time=taken),
        OruObservation("MDC_RESP_RATE", None, "1.4.1.1"),
        OruObservation("MDC_PRESS_BLD_NONINV_DIA", 0.00001, "1.5.1.2"),
    ]
    raw = hl7.build_oru(readings, control_id="SIM^1", timestamp=NOW, patient_id="pt|7", device_eui64="0A0B0C0D0E0F1011")
    assert b"IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO" in raw
    assert b"264928^MDC_DIM_RESP_PER_MIN^MDC" in raw and b"0.00001" in raw
    message, ack = hl7.parse_and_ack(raw, now=NOW)
    assert message is not None and msa(ack) == ("AA", "SIM^1")
    assert message.pid is not None and message.pid.patient_id == "pt|7"
    events = hl7.observations(message, "sim")
    assert [(e.quantity.reference_id, e.value) for e in events] == [
        ("MDC_PULS_OXIM_SAT_O2", 97.0),
        ("MDC_PULS_OXIM_PULS_RATE", 71.5),
        ("MDC_PRESS_BLD_NONINV_DIA", 0.00001),
    ]
    assert events[0].device_time_ns == int(taken.timestamp()) * 10**9
    with pytest.raises(ValueError, match="MDC"):
        hl7.build_oru([OruObservation("MDC_NOPE", 1.0, "1")], control_id="x", timestamp=NOW)
    with pytest.raises(ValueError, match="finite"):
        hl7.build_oru([OruObservation("MDC_RESP_RATE", math.inf, "1")], control_id="x", timestamp=NOW)


def test_hl7_over_mllp_end_to_end() -> None:
    stream = b"\x00" + mllp_wrap(CONTINUA_BP) + mllp_wrap(GE_VITALS) + mllp_wrap(b"garbage")
    framer = MllpFramer()
    acks = [hl7.parse_and_ack(frame, now=NOW)[1] for frame in framer.feed(stream)]
    assert [msa(a) for a in acks] == [("AA", "MSGID1234"), ("AA", "004097134535"), ("AR", "")]
    assert summary(framer.take_problems()) == [("garbage", 0, 1)]


# ---------------------------------------------------------------------------------------------- HL7 fuzzing


def assert_is_an_ack(ack: bytes) -> None:
    code, _ = msa(ack)
    assert code in ("AA", "AE", "AR")


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_hl7_parse_error_and_always_get_an_ack(data: bytes) -> None:
    for raw in (data, b"MSH|^~\\&|" + data):
        with contextlib.suppress(HL7ParseError):
            hl7.parse(raw)
        _, ack = hl7.parse_and_ack(raw, now=NOW)
        assert_is_an_ack(ack)


@FAST
@given(mutations, st.sampled_from([CONTINUA_BP, GE_VITALS, GE_ECG_IBP]))
def test_mutated_messages_only_raise_hl7_parse_error_and_always_get_an_ack(mutation: Mutation, valid: bytes) -> None:
    raw = mutate(valid, mutation)
    try:
        message = hl7.parse(raw)
    except HL7ParseError:
        pass
    else:
        hl7.application_issues(message)
        hl7.acceptance_issues(message)
        for event in hl7.observations(message, "fuzz"):
            assert math.isfinite(event.value)
        assert_is_an_ack(hl7.build_ack(message, "AE", "x", now=NOW))
    _, ack = hl7.parse_and_ack(raw, now=NOW)
    assert_is_an_ack(ack)


# ----------------------------------------------------------------------------------------------------- Nonin

# A complete DF2 packet (HR 72, SpO2 97, firmware revision 48) from pez-globo/pufferfish-software (Apache-2.0),
# firmware/ventilator-controller-stm32/Core/Test/Pufferfish/Driver/Serial/Nonin/TestPacketReceiver.cpp,
# "A Valid First Packet": START, STATUS, PLETH, EXTRA, CHK per frame.
PUFFERFISH_PACKET = bytes(
    [
        0x01, 0x81, 0x01, 0x00, 0x83,  # HR MSB (SYNC)
        0x01, 0x80, 0x01, 0x48, 0xCA,  # HR LSB
        0x01, 0x80, 0x01, 0x61, 0xE3,  # SpO2
        0x01, 0x80, 0x01, 0x30, 0xB2,  # REV
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x61, 0xE3,  # SpO2-D
        0x01, 0x80, 0x01, 0x61, 0xE3,  # SpO2 Fast
        0x01, 0x80, 0x01, 0x61, 0xE3,  # SpO2 B-B
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # E-HR MSB
        0x01, 0x80, 0x01, 0x48, 0xCA,  # E-HR LSB
        0x01, 0x80, 0x01, 0x61, 0xE3,  # E-SpO2
        0x01, 0x80, 0x01, 0x61, 0xE3,  # E-SpO2-D
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # HR-D MSB
        0x01, 0x80, 0x01, 0x48, 0xCA,  # HR-D LSB
        0x01, 0x80, 0x01, 0x00, 0x82,  # E-HR-D MSB
        0x01, 0x80, 0x01, 0x48, 0xCA,  # E-HR-D LSB
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
        0x01, 0x80, 0x01, 0x00, 0x82,  # reserved
    ]
)  # fmt: skip


def decode_all(
    data_format: DataFormat, chunks: Sequence[bytes]
) -> tuple[list[NoninPacket], list[Problem], NoninDecoder]:
    decoder = NoninDecoder(data_format)
    packets: list[NoninPacket] = []
    problems: list[Problem] = []
    for chunk in chunks:
        packets += decoder.feed(chunk)
        problems += summary(decoder.take_problems())
    problems += summary(decoder.flush())
    return packets, problems, decoder


def test_nonin_df2_reference_packet() -> None:
    packets, problems, _ = decode_all(DataFormat.DF2, [PUFFERFISH_PACKET])
    assert problems == [] and len(packets) == 1
    packet = packets[0]
    assert (packet.pulse_rate, packet.spo2, packet.firmware_revision) == (72, 97, 48)
    assert (packet.pulse_rate_8beat, packet.pulse_rate_display, packet.pulse_rate_8beat_display) == (72, 72, 72)
    assert (packet.spo2_display, packet.spo2_fast, packet.spo2_beat_to_beat) == (97, 97, 97)
    assert (packet.spo2_8beat, packet.spo2_8beat_display) == (97, 97)
    assert packet.pleth == (1,) * 25 and not (packet.sensor_alarm or packet.out_of_track or packet.low_battery)
    # The encoder reproduces the reference bytes from the values.
    assert encode_packet([1] * 25, spo2=97, pulse_rate=72, firmware_revision=48) == PUFFERFISH_PACKET


def test_status_bits_and_perfusion() -> None:
    # Status bytes of the pufferfish test "A valid Packet with status byte errors set".
    assert perfusion(0x82) is Perfusion.GREEN and perfusion(0x84) is Perfusion.RED
    assert perfusion(0x86) is Perfusion.YELLOW and perfusion(0x80) is Perfusion.NONE
    for status, flag in ((0x88, Status.SNSA), (0x90, Status.OOT), (0xA0, Status.ARTF), (0xC0, Status.SNSD)):
        packet = NoninPacket(DataFormat.DF2, (0x81, status, *[0x80] * 23), (0,) * 25, (0,) * 25)
        assert packet.any_status(flag), hex(status)
    df7 = NoninPacket(DataFormat.DF7, (0xC1, *[0xC0] * 24), (0,) * 25, (0,) * 25)
    assert not df7.sensor_disconnected  # bit 6 is not defined for DF7 by the sources


@FAST
@given(
    st.lists(st.integers(0, 0xFFFF), min_size=25, max_size=25),
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), st.integers(0, 510)),
    st.integers(0, (1 << 14) - 1),
    st.integers(0, 0x7F),
    st.sampled_from(list(DataFormat)),
)
def test_nonin_encode_decode_round_trip(
    pleth: list[int], spo2: int | None, rate: int | None, timer: int, stat2: int, data_format: DataFormat
) -> None:
    if data_format is DataFormat.DF2:
        pleth = [p & 0xFF for p in pleth]
    raw = encode_packet(pleth, spo2=spo2, pulse_rate=rate, data_format=data_format, timer=timer, stat2=stat2)
    packets, problems, _ = decode_all(data_format, [raw])
    assert problems == [] and len(packets) == 1
    packet = packets[0]
    assert (list(packet.pleth), packet.spo2, packet.pulse_rate, packet.timer) == (pleth, spo2, rate, timer)
    assert (packet.low_battery, packet.smartpoint) == (bool(stat2 & 1), bool(stat2 & 0x20))


@pytest.mark.parametrize("data_format", list(DataFormat))
def test_nonin_split_anywhere_gives_the_same_packets_and_problems(data_format: DataFormat) -> None:
    packet = encode_packet(list(range(100, 125)), spo2=95, pulse_rate=88, data_format=data_format)
    stream = b"\x07\x01" + packet[40:] + packet + packet
    whole = decode_all(data_format, [stream])[:2]
    assert len(whole[0]) == 2
    for cut in range(len(stream) + 1):
        assert decode_all(data_format, [stream[:cut], stream[cut:]])[:2] == whole, cut
    assert decode_all(data_format, [stream[i : i + 1] for i in range(len(stream))])[:2] == whole


@pytest.mark.parametrize("data_format", list(DataFormat))
def test_nonin_resyncs_after_a_corrupted_frame_and_a_lost_byte(data_format: DataFormat) -> None:
    packet = encode_packet([50] * 25, spo2=98, pulse_rate=60, data_format=data_format)
    corrupted = bytearray(packet)
    corrupted[5 * 7 + 4] ^= 0x5A  # checksum of frame 8
    lost_byte = packet[:63] + packet[64:]
    stream = packet + bytes(corrupted) + packet + lost_byte + packet
    packets, problems, decoder = decode_all(data_format, [stream])
    assert len(packets) == 3 and all(p.spo2 == 98 and p.pulse_rate == 60 for p in packets)
    faults = {fault for fault, _, _ in problems}
    assert "incomplete_packet" in faults and ("checksum" in faults or "lost_sync" in faults)
    assert ("incomplete_packet", 125, 35) in problems  # the 7 good frames before the corrupted one
    # Every byte is either in a delivered packet or in a reported run.
    assert decoder.stats.discarded_bytes == sum(length for _, _, length in problems)
    assert decoder.stats.discarded_bytes + 125 * decoder.stats.packets == len(stream)


@FAST
@given(st.binary(max_size=400), cuts, st.sampled_from(list(DataFormat)))
def test_nonin_random_bytes_never_raise_and_stay_bounded(data: bytes, at: list[int], data_format: DataFormat) -> None:
    decoder = NoninDecoder(data_format)
    delivered = 0
    for chunk in chunks_of(data, at):
        delivered += 125 * len(decoder.feed(chunk))
        assert decoder.buffered <= 4 + 120
    problems = decoder.flush()
    assert decoder.stats.discarded_bytes == sum(p.length for p in problems)
    assert decoder.stats.discarded_bytes + delivered == len(data)


def test_nonin_events_honour_missing_markers_and_status_bits() -> None:
    mapper = NoninMapper("ox-1")

    def packet(**kwargs: object) -> NoninPacket:
        return decode_all(DataFormat.DF2, [encode_packet([128] * 25, **kwargs)])[0][0]  # type: ignore[arg-type]

    first = mapper.events(packet(spo2=97, pulse_rate=72))
    assert isinstance(first[0], DeviceStatus) and first[0].errors == ()
    chunk = first[1]
    assert isinstance(chunk, WaveformChunk) and chunk.quantity.reference_id == "MDC_PULS_OXIM_PLETH"
    assert chunk.sample_rate_hz == 75.0 and chunk.samples.dtype == np.int32 and len(chunk.samples) == 25
    assert [(e.quantity.reference_id, e.value) for e in first[2:] if isinstance(e, Observation)] == [
        ("MDC_PULS_OXIM_SAT_O2", 97.0),
        ("MDC_PULS_OXIM_PULS_RATE", 72.0),
    ]
    # Same status again: no DeviceStatus; missing values: no observation.
    quiet = mapper.events(packet(spo2=None, pulse_rate=None))
    assert [type(e) for e in quiet] == [WaveformChunk]
    # Out of track: reported, the data still flows.
    oot = mapper.events(packet(spo2=90, pulse_rate=70, status=Status.OOT))
    assert isinstance(oot[0], DeviceStatus) and oot[0].errors == ("out_of_track",)
    assert len([e for e in oot if isinstance(e, Observation)]) == 2
    # Sensor off: an error, and no waveform or numerics from unusable data.
    off = mapper.events(packet(spo2=None, pulse_rate=None, status=Status.SNSD | Status.SNSA, stat2=1))
    assert [type(e) for e in off] == [DeviceStatus]
    assert isinstance(off[0], DeviceStatus)
    assert off[0].errors == ("sensor_disconnected", "sensor_alarm", "low_battery")
    # The list is complete (each condition a technical alarm while listed), with its priority.
    assert off[0].detail[CONDITIONS_KEY] == "complete"
    assert off[0].detail["priority.sensor_disconnected"] == "medium"
    assert off[0].detail["priority.low_battery"] == "low"
    # Back to normal: the recovery is reported once.
    recovered = mapper.events(packet(spo2=96, pulse_rate=70))
    assert isinstance(recovered[0], DeviceStatus) and recovered[0].errors == ()
    assert not any(isinstance(e, DeviceStatus) for e in mapper.events(packet(spo2=96, pulse_rate=70)))


def test_encoders_refuse_values_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError, match="pulse rate"):
        encode_packet([0] * 25, spo2=None, pulse_rate=511)
    with pytest.raises(ValueError, match="SpO2"):
        encode_packet([0] * 25, spo2=101, pulse_rate=None)
    with pytest.raises(ValueError, match="pleth"):
        encode_frame(0x80, 256, 0, DataFormat.DF2)
    with pytest.raises(ValueError, match="25"):
        encode_packet([0] * 24, spo2=None, pulse_rate=None)
