"""HL7 v2 as IHE PCD-01 "Communicate PCD Data" uses it (v2.6 ORU^R01): parse, acknowledge, map to events.  Pure.

`parse` turns one message (the MLLP payload) into typed MSH/PID/OBR/OBX segments.  Segments are separated by CR
(LF and CRLF are accepted too); the field, component, repetition, escape and subcomponent separators are read
from MSH-1/MSH-2, and the escape sequences \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ and \\Xhh..\\ are decoded.  It raises
only `HL7ParseError` (an `InvalidFrame`), whose fields never carry message content.

`parse_and_ack` applies the acknowledgement rules and always returns an ACK^R01 rather than raising:

* AR (reject): the bytes are not an HL7 message, or not one the gateway accepts: not ORU^R01, a version outside
  ``accept_versions``, no MSH-10 control id;
* AE (error): the message is accepted but some content is wrong: no OBX at all, or an OBX with a numeric value
  (OBX-2 NM, OBX-5 present) whose value is not an HL7 number, whose unit is unknown or not convertible, or whose
  time stamp is malformed.  The other OBX are still good, and `observations` maps them;
* AA otherwise.  MSA-2 echoes MSH-10; AE and AR carry one ERR per problem (HL7 table 0357 codes, location).

A numeric OBX whose code the gateway does not map (say end-tidal CO2 on a monitor whose other values it knows)
is not an error of the message: `assess` answers AA and keeps the mapped observations, listing the unmapped
codes so the receiver counts them (`unmapped="error"` answers AE naming them instead, still keeping the rest).

Which OBX become `Observation`s: OBX-2 NM with a value, a result status other than X/D/W/I/N, and an MDC code in
`gateway.core.nomenclature`; the OBX-3 numeric code is authoritative (monitors use several reference ids for one code).
Device-hierarchy OBX (MDS/VMD/channel headers, no value) and other value types are context, not observations.
Units come from OBX-6 as an MDC dimension or a UCUM code and are converted to the quantity's UCUM unit where they
differ (kPa to mm[Hg], degF to Cel).  The observation time is OBX-14, else the parent OBR-7; it places the value on
the UTC axis only when it carries a time zone offset.  Ids are stable: (device, code, OBX-4 sub-id, time), so a
message resent after a lost ACK maps to the same ids.

The patient identifier (PID-3) is kept as an opaque string that appears in no repr and no error.
"""

from __future__ import annotations

import calendar
import enum
import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from gateway.core.errors import InvalidFrame
from gateway.core.model import Observation, new_id, now_ns, stable_id
from gateway.core.nomenclature import BY_CODE, BY_REFERENCE, Kind, Quantity, quantity

__all__ = [
    "Encoding",
    "DEFAULT_ENCODING",
    "escape",
    "unescape",
    "HL7ParseError",
    "Segment",
    "CodedElement",
    "HierarchicDesignator",
    "EntityIdentifier",
    "MessageType",
    "TimePrecision",
    "Hl7Timestamp",
    "parse_timestamp",
    "format_timestamp",
    "MSH",
    "PID",
    "OBR",
    "OBX",
    "Message",
    "parse",
    "AckCode",
    "Issue",
    "ACCEPT_VERSIONS",
    "acceptance_issues",
    "application_issues",
    "build_ack",
    "parse_and_ack",
    "Assessment",
    "assess",
    "observations",
    "OruObservation",
    "build_oru",
]


# ------------------------------------------------------------------------------------------ encoding, escapes


@dataclass(frozen=True, slots=True)
class Encoding:
    """The separators of one message, from MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def msh2(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


DEFAULT_ENCODING: Final = Encoding()
_HEX_PAIRS: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def unescape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Decode HL7 escape sequences; unknown or unterminated sequences are kept verbatim."""
    esc = enc.escape
    if esc not in text:
        return text
    known = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition, "E": enc.escape}
    out: list[str] = []
    i = 0
    while i < len(text):
        start = text.find(esc, i)
        if start < 0:
            out.append(text[i:])
            break
        end = text.find(esc, start + 1)
        if end < 0:
            out.append(text[i:])
            break
        out.append(text[i:start])
        sequence = text[start + 1 : end]
        if sequence in known:
            out.append(known[sequence])
        elif sequence[:1] == "X" and _HEX_PAIRS.fullmatch(sequence[1:]):
            out.append(bytes.fromhex(sequence[1:]).decode("latin-1"))
        else:
            out.append(text[start : end + 1])
        i = end + 1
    return "".join(out)


def escape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """Escape the separators (and CR/LF, which would end the segment) for use inside one field component."""
    specials = {
        enc.escape: "E",
        enc.field: "F",
        enc.component: "S",
        enc.subcomponent: "T",
        enc.repetition: "R",
        "\r": "X0D",
        "\n": "X0A",
    }
    if not any(c in text for c in specials):
        return text
    return "".join(f"{enc.escape}{specials[c]}{enc.escape}" if c in specials else c for c in text)


# ---------------------------------------------------------------------------------------------------- errors


class HL7ParseError(InvalidFrame):
    """The bytes are not a parseable HL7 v2 message.  ``header`` is the MSH when that much could be read."""

    def __init__(
        self, message: str, *, reason: str, error_code: int = 100, segment: int | None = None, header: MSH | None = None
    ) -> None:
        super().__init__(message, reason=reason, error_code=error_code, segment=segment)
        self.reason = reason
        self.error_code = error_code
        self.header = header


# -------------------------------------------------------------------------------------------------- segments


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment's raw (still escaped) fields; ``fields[n]`` is field n (for MSH, n=1 is the field separator)."""

    name: str
    fields: tuple[str, ...] = field(repr=False)

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def repetitions(self, n: int, enc: Encoding) -> list[str]:
        value = self.raw(n)
        return value.split(enc.repetition) if value else []

    def components(self, n: int, enc: Encoding, repetition: int = 0) -> list[str]:
        """The unescaped components of one repetition (first subcomponent of each)."""
        reps = self.repetitions(n, enc)
        if repetition >= len(reps):
            return []
        return [unescape(c.split(enc.subcomponent)[0], enc) for c in reps[repetition].split(enc.component)]

    def value(self, n: int, enc: Encoding, component: int = 0) -> str:
        """One component (0-based) of the first repetition, unescaped; "" when absent."""
        parts = self.components(n, enc)
        return parts[component] if component < len(parts) else ""


def _component(parts: Sequence[str], index: int) -> str:
    return parts[index] if index < len(parts) else ""


@dataclass(frozen=True, slots=True)
class CodedElement:
    """The first triplet of a CWE/CE: identifier ^ text ^ coding system."""

    identifier: str
    text: str
    coding_system: str

    @classmethod
    def of(cls, parts: Sequence[str]) -> CodedElement | None:
        if not any(parts[:3]):
            return None
        return cls(_component(parts, 0), _component(parts, 1), _component(parts, 2))

    @property
    def code(self) -> int | None:
        """The identifier as a number (MDC context-free code), None if it is not one."""
        return int(self.identifier) if re.fullmatch(r"[0-9]{1,10}", self.identifier) else None


@dataclass(frozen=True, slots=True)
class HierarchicDesignator:
    """HD: namespace id ^ universal id ^ universal id type (e.g. an EUI-64)."""

    namespace_id: str
    universal_id: str = ""
    universal_id_type: str = ""

    @classmethod
    def of(cls, parts: Sequence[str]) -> HierarchicDesignator:
        return cls(_component(parts, 0), _component(parts, 1), _component(parts, 2))


@dataclass(frozen=True, slots=True)
class EntityIdentifier:
    """EI: entity id ^ namespace id ^ universal id ^ universal id type."""

    entity_id: str
    namespace_id: str = ""
    universal_id: str = ""
    universal_id_type: str = ""

    @classmethod
    def of(cls, parts: Sequence[str]) -> EntityIdentifier:
        return cls(_component(parts, 0), _component(parts, 1), _component(parts, 2), _component(parts, 3))


@dataclass(frozen=True, slots=True)
class MessageType:
    """MSH-9: message code ^ trigger event ^ message structure."""

    code: str
    trigger: str
    structure: str


# ------------------------------------------------------------------------------------------------ timestamps


class TimePrecision(enum.IntEnum):
    YEAR = 1
    MONTH = 2
    DAY = 3
    HOUR = 4
    MINUTE = 5
    SECOND = 6
    FRACTION = 7


_DTM: Final = re.compile(
    r"([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,4}))?)?)?)?)?)?"
    r"(?:([+-])([0-9]{2})([0-9]{2}))?"
)


@dataclass(frozen=True, slots=True)
class Hl7Timestamp:
    """An HL7 DTM: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ], with its precision and optional UTC offset."""

    text: str
    precision: TimePrecision
    year: int
    month: int = 1
    day: int = 1
    hour: int = 0
    minute: int = 0
    second: int = 0
    nanosecond: int = 0
    utc_offset_minutes: int | None = None

    @property
    def epoch_ns(self) -> int | None:
        """Nanoseconds since the Unix epoch, or None when the time has no offset (local time of unknown zone)."""
        if self.utc_offset_minutes is None:
            return None
        seconds = calendar.timegm((self.year, self.month, self.day, self.hour, self.minute, self.second))
        return (seconds - self.utc_offset_minutes * 60) * 1_000_000_000 + self.nanosecond


def parse_timestamp(text: str) -> Hl7Timestamp | None:
    """Parse a DTM; None for an empty field, ValueError for a malformed or impossible one."""
    text = text.strip()
    if not text:
        return None
    match = _DTM.fullmatch(text)
    if match is None:
        raise ValueError("not an HL7 DTM")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    present = [g for g in (year, month, day, hour, minute, second, fraction) if g is not None]
    precision = TimePrecision(len(present))
    y, mo, d, h, mi, sec = (int(g) for g in (year, month or 1, day or 1, hour or 0, minute or 0, second or 0))
    datetime(y, mo, d, h, mi, sec, tzinfo=UTC)  # ValueError for month 13, 30 February, hour 24...
    offset: int | None = None
    if sign is not None:
        if int(off_h) > 14 or int(off_m) > 59:
            raise ValueError("UTC offset out of range")
        offset = (int(off_h) * 60 + int(off_m)) * (1 if sign == "+" else -1)
    nanosecond = int(fraction.ljust(9, "0")) if fraction else 0
    return Hl7Timestamp(text, precision, y, mo, d, h, mi, sec, nanosecond, offset)


def format_timestamp(moment: datetime) -> str:
    """A tz-aware datetime as YYYYMMDDHHMMSS[.SSSS]+ZZZZ (100 microsecond resolution)."""
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError("an HL7 time stamp needs a tz-aware datetime")
    text = moment.strftime("%Y%m%d%H%M%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 100:04d}"
    minutes = round(offset.total_seconds() / 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


# ------------------------------------------------------------------------------------------- typed segments


@dataclass(frozen=True, slots=True)
class MSH:
    """Message header: who sent it, what it is, its control id, processing id and version."""

    encoding: Encoding
    sending_application: HierarchicDesignator
    sending_facility: HierarchicDesignator
    receiving_application: HierarchicDesignator
    receiving_facility: HierarchicDesignator
    timestamp_text: str
    message_type: MessageType
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    character_set: str
    profile: str  # MSH-21 first identifier (e.g. IHE_PCD_001)

    @property
    def timestamp(self) -> Hl7Timestamp | None:
        return parse_timestamp(self.timestamp_text)


@dataclass(frozen=True, slots=True)
class PID:
    """Patient identification: the patient id only, opaque.  It must never be logged: it is in no repr."""

    patient_id: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class OBR:
    """Observation request: the group an OBX belongs to, and the time that applies to OBX without OBX-14."""

    set_id: str
    placer_order: EntityIdentifier
    filler_order: EntityIdentifier
    service: CodedElement | None
    observation_time_text: str
    observation_end_text: str

    @property
    def observation_time(self) -> Hl7Timestamp | None:
        return parse_timestamp(self.observation_time_text)


@dataclass(frozen=True, slots=True)
class OBX:
    """Observation result.  ``value`` is OBX-5's first repetition and component, unescaped."""

    sequence: int  # 1-based occurrence among the message's OBX (the set id OBX-1 may be empty)
    set_id: str
    value_type: str
    identifier: CodedElement | None
    sub_id: str
    value: str
    value_coded: CodedElement | None
    units: CodedElement | None
    reference_range: str
    abnormal_flags: str
    result_status: str
    observation_time_text: str
    equipment: tuple[EntityIdentifier, ...]
    analysis_time_text: str
    obr_index: int | None  # index into Message.obr of the OBR this OBX follows

    @property
    def observation_time(self) -> Hl7Timestamp | None:
        return parse_timestamp(self.observation_time_text)

    @property
    def analysis_time(self) -> Hl7Timestamp | None:
        return parse_timestamp(self.analysis_time_text)


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message: its typed segments, and every segment in order (raw, for what is not typed here)."""

    msh: MSH
    pid: PID | None
    obr: tuple[OBR, ...]
    obx: tuple[OBX, ...]
    segments: tuple[Segment, ...] = field(repr=False)

    @property
    def encoding(self) -> Encoding:
        return self.msh.encoding


# ----------------------------------------------------------------------------------------------------- parse

_SEGMENT_SPLIT: Final = re.compile(r"\r\n|\r|\n")
_SEGMENT_NAME: Final = re.compile(r"[A-Z][A-Z0-9]{2}")
_CHARSETS: Final = {
    "": "utf-8",  # undeclared: ASCII, which UTF-8 decodes identically; lenient for UTF-8 senders that omit it
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "8859/1": "latin-1",
}


def _decode(raw: bytes) -> str:
    first = re.split(rb"\r|\n", raw.lstrip(b"\r\n"), maxsplit=1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        raise HL7ParseError("not an HL7 v2 message (no MSH segment first)", reason="not_hl7")
    fields = first.split(first[3:4])
    declared = fields[17].split(b"~")[0].decode("ascii", "replace").strip().upper() if len(fields) > 17 else ""
    codec = _CHARSETS.get(declared)
    if codec is None:
        raise HL7ParseError("unsupported character set (MSH-18)", reason="charset", error_code=102)
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        raise HL7ParseError("bytes do not match the declared character set", reason="charset", error_code=102) from None


def _encoding_of(line: str) -> Encoding:
    fs = line[3]
    end = line.find(fs, 4)
    msh2 = line[4:] if end < 0 else line[4:end]
    chars = msh2[:4]
    # v2.7+ adds a fifth (truncation) character; anything else is not a valid MSH-2.
    if (
        len(msh2) not in (4, 5)
        or len({fs, *msh2}) != len(msh2) + 1
        or any(c.isalnum() or c.isspace() for c in fs + msh2)
    ):
        raise HL7ParseError("invalid encoding characters (MSH-1/MSH-2)", reason="encoding_characters", segment=0)
    return Encoding(fs, chars[0], chars[1], chars[2], chars[3])


def _split(line: str, enc: Encoding, index: int) -> Segment:
    name = line[:3]
    if not _SEGMENT_NAME.fullmatch(name) or (len(line) > 3 and line[3] != enc.field):
        raise HL7ParseError("invalid segment", reason="segment", segment=index)
    parts = line.split(enc.field)
    if name == "MSH":
        return Segment(name, ("MSH", enc.field, *parts[1:]))
    return Segment(name, tuple(parts))


def _msh(seg: Segment, enc: Encoding) -> MSH:
    def hd(n: int) -> HierarchicDesignator:
        return HierarchicDesignator.of(seg.components(n, enc))

    msg_type = seg.components(9, enc)
    return MSH(
        encoding=enc,
        sending_application=hd(3),
        sending_facility=hd(4),
        receiving_application=hd(5),
        receiving_facility=hd(6),
        timestamp_text=seg.value(7, enc),
        message_type=MessageType(_component(msg_type, 0), _component(msg_type, 1), _component(msg_type, 2)),
        control_id=seg.value(10, enc),
        processing_id=seg.value(11, enc),
        version=seg.value(12, enc),
        accept_ack_type=seg.value(15, enc),
        application_ack_type=seg.value(16, enc),
        character_set=seg.value(18, enc),
        profile=seg.value(21, enc),
    )


_CODED_TYPES: Final = frozenset({"CWE", "CNE", "CE", "CF"})


def _obx(seg: Segment, enc: Encoding, sequence: int, obr_index: int | None) -> OBX:
    value_parts = seg.components(5, enc)
    return OBX(
        sequence=sequence,
        set_id=seg.value(1, enc),
        value_type=seg.value(2, enc),
        identifier=CodedElement.of(seg.components(3, enc)),
        sub_id=seg.value(4, enc),
        value=_component(value_parts, 0),
        value_coded=CodedElement.of(value_parts) if seg.value(2, enc) in _CODED_TYPES else None,
        units=CodedElement.of(seg.components(6, enc)),
        reference_range=seg.value(7, enc),
        abnormal_flags=seg.value(8, enc),
        result_status=seg.value(11, enc),
        observation_time_text=seg.value(14, enc),
        equipment=tuple(EntityIdentifier.of(seg.components(18, enc, r)) for r in range(len(seg.repetitions(18, enc)))),
        analysis_time_text=seg.value(19, enc),
        obr_index=obr_index,
    )


def parse(raw: bytes | str) -> Message:
    """Parse one HL7 v2 message (no MLLP framing).  Raises only HL7ParseError."""
    text = raw if isinstance(raw, str) else _decode(bytes(raw))
    lines = [line for line in _SEGMENT_SPLIT.split(text) if line.strip()]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise HL7ParseError("not an HL7 v2 message (no MSH segment first)", reason="not_hl7")
    enc = _encoding_of(lines[0])
    header = _msh(_split(lines[0], enc, 0), enc)
    segments: list[Segment] = []
    pid: PID | None = None
    obrs: list[OBR] = []
    obxs: list[OBX] = []
    for index, line in enumerate(lines):
        try:
            seg = _split(line, enc, index)
        except HL7ParseError as err:
            err.header = header
            raise
        segments.append(seg)
        if seg.name == "MSH" and index:
            raise HL7ParseError("a second MSH segment", reason="segment", segment=index, header=header)
        if seg.name == "PID" and pid is None:
            pid = PID(seg.value(3, enc))
        elif seg.name == "OBR":
            placer, filler = seg.components(2, enc), seg.components(3, enc)
            obrs.append(
                OBR(
                    set_id=seg.value(1, enc),
                    placer_order=EntityIdentifier.of(placer),
                    filler_order=EntityIdentifier.of(filler),
                    service=CodedElement.of(seg.components(4, enc)),
                    observation_time_text=seg.value(7, enc),
                    observation_end_text=seg.value(8, enc),
                )
            )
        elif seg.name == "OBX":
            obxs.append(_obx(seg, enc, len(obxs) + 1, len(obrs) - 1 if obrs else None))
    return Message(header, pid, tuple(obrs), tuple(obxs), tuple(segments))


# ----------------------------------------------------------------------------------------- acknowledgements


class AckCode(enum.StrEnum):
    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


@dataclass(frozen=True, slots=True)
class Issue:
    """Why a message was not accepted as-is: a machine reason, the HL7 table 0357 code and the location."""

    reason: str
    error_code: int
    segment: str = ""
    sequence: int = 0  # occurrence of that segment in the message, 1-based
    field_position: int = 0

    @property
    def text(self) -> str:
        return _ISSUE_TEXT.get(self.reason, self.reason.replace("_", " "))


_ISSUE_TEXT: Final = {
    "not_hl7": "not an HL7 v2 message",
    "charset": "character set not supported or not matching the bytes",
    "encoding_characters": "invalid encoding characters",
    "segment": "invalid segment",
    "wrong_message_type": "message type not supported (ORU^R01 expected)",
    "unsupported_version": "HL7 version not supported",
    "missing_control_id": "message control id (MSH-10) missing",
    "unknown_sender": "sending facility not accepted by this receiver",
    "no_obx": "no OBX segment",
    "unknown_code": "observation identifier not known to the receiver",
    "not_a_number": "numeric value is not an HL7 number",
    "unknown_unit": "unit missing or unknown",
    "unit_mismatch": "unit not convertible to the observation's unit",
    "bad_timestamp": "malformed time stamp",
    "internal_error": "receiver internal error",
}
_ERROR_NAMES: Final = {
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    203: "Unsupported version id",
    207: "Application internal error",
}
ACCEPT_VERSIONS: Final = frozenset({"2.6"})  # IHE PCD-01 is profiled on HL7 v2.6
_MAPPED_STATUSES: Final = frozenset({"", "F", "R", "C", "P"})  # not X (no result), D (deleted), W (wrong)...
_NM: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")


def acceptance_issues(
    message: Message, accept_versions: Collection[str] = ACCEPT_VERSIONS, allowed_facilities: Collection[str] = ()
) -> list[Issue]:
    """Problems that make the gateway reject (AR) the message: type, version, control id, sending facility.

    `allowed_facilities` (empty: any) names the MSH-4 sending facilities accepted, by namespace id or universal id.
    """
    msh = message.msh
    issues: list[Issue] = []
    facility = msh.sending_facility
    if allowed_facilities and not {facility.namespace_id, facility.universal_id} & set(allowed_facilities):
        issues.append(Issue("unknown_sender", 103, "MSH", 1, 4))
    if msh.message_type.code != "ORU" or msh.message_type.structure not in ("", "ORU_R01"):
        issues.append(Issue("wrong_message_type", 200, "MSH", 1, 9))
    elif msh.message_type.trigger != "R01":
        issues.append(Issue("wrong_message_type", 201, "MSH", 1, 9))
    if msh.version not in accept_versions:
        issues.append(Issue("unsupported_version", 203, "MSH", 1, 12))
    if not msh.control_id.strip():
        issues.append(Issue("missing_control_id", 101, "MSH", 1, 10))
    return issues


# -------------------------------------------------------------------------------------------- units, mapping

# OBX-6 as PCD-01 writes it: "code^reference id^MDC".  A code left empty is matched by reference id only (the
# code was not confirmed against a public sample).
_MDC_UNITS: Final = {
    "262688^MDC_DIM_PERCENT^MDC": "%",
    "264864^MDC_DIM_BEAT_PER_MIN^MDC": "/min",
    "264928^MDC_DIM_RESP_PER_MIN^MDC": "/min",
    "266016^MDC_DIM_MMHG^MDC": "mm[Hg]",
    "268192^MDC_DIM_DEGC^MDC": "Cel",
    "^MDC_DIM_KILO_PASCAL^MDC": "kPa",
    "^MDC_DIM_FAHR^MDC": "[degF]",
    "^MDC_DIM_MILLI_SEC^MDC": "ms",
    "^MDC_DIM_MILLI_G_PER_DL^MDC": "mg/dL",
    "^MDC_DIM_DIMLESS^MDC": "1",
    "^MDC_DIM_MILLI_VOLT^MDC": "mV",
    "^MDC_DIM_MICRO_VOLT^MDC": "uV",
    "^MDC_DIM_X_L_PER_MIN^MDC": "L/min",
    "^MDC_DIM_L_PER_MIN^MDC": "L/min",
}
_MDC_UNIT_BY_CODE: Final = {int(k.split("^")[0]): v for k, v in _MDC_UNITS.items() if k.split("^")[0]}
_MDC_UNIT_BY_REF: Final = {k.split("^")[1]: v for k, v in _MDC_UNITS.items()}
# UCUM codes and the spellings devices use for them.
_UCUM_ALIASES: Final = {
    "%": "%",
    "/min": "/min",
    "{beats}/min": "/min",
    "{breaths}/min": "/min",
    "bpm": "/min",
    "mm[Hg]": "mm[Hg]",
    "mmHg": "mm[Hg]",
    "kPa": "kPa",
    "Cel": "Cel",
    "degC": "Cel",
    "[degF]": "[degF]",
    "degF": "[degF]",
    "ms": "ms",
    "mg/dL": "mg/dL",
    "1": "1",
    "mV": "mV",
    "uV": "uV",
    "L/min": "L/min",
    "l/min": "L/min",
}
_PA_PER_MMHG: Final = 133.322387415  # the conventional millimetre of mercury
_CONVERTED_DECIMALS: Final = 3  # a conversion rounds off binary noise, far below any device's resolution
_CONVERSIONS: Final[dict[tuple[str, str], Callable[[float], float]]] = {
    ("kPa", "mm[Hg]"): lambda v: v * 1000 / _PA_PER_MMHG,
    ("[degF]", "Cel"): lambda v: (v - 32) * 5 / 9,
    ("uV", "mV"): lambda v: v / 1000,
}


def _ucum(units: CodedElement | None) -> str | None:
    """OBX-6 as a UCUM code, or None when it is missing or not understood."""
    if units is None:
        return None
    if units.coding_system == "MDC":
        code = units.code
        if code is not None and code in _MDC_UNIT_BY_CODE:
            return _MDC_UNIT_BY_CODE[code]  # the code is authoritative where we know it
        return _MDC_UNIT_BY_REF.get(units.text)
    return _UCUM_ALIASES.get(units.identifier)


def _quantity_of(identifier: CodedElement | None) -> Quantity | None:
    if identifier is None or identifier.coding_system not in ("MDC", ""):
        return None
    code = identifier.code
    found = BY_CODE.get(code) if code is not None else BY_REFERENCE.get(identifier.text)
    return found if found is not None and found.kind is Kind.NUMERIC else None


@dataclass(frozen=True, slots=True)
class _Mapped:
    quantity: Quantity
    value: float
    time: Hl7Timestamp | None


def _time_of(message: Message, obx: OBX) -> tuple[Hl7Timestamp | None, Issue | None]:
    if obx.observation_time_text:
        try:
            return obx.observation_time, None
        except ValueError:
            return None, Issue("bad_timestamp", 102, "OBX", obx.sequence, 14)
    if obx.obr_index is not None:
        obr = message.obr[obx.obr_index]
        try:
            return obr.observation_time, None
        except ValueError:
            return None, Issue("bad_timestamp", 102, "OBR", obx.obr_index + 1, 7)
    return None, None


def _map(message: Message, obx: OBX) -> _Mapped | Issue | None:
    """An OBX as a value of a known quantity, an Issue, or None when it is context (not a numeric observation)."""
    value = obx.value.strip()
    if obx.value_type != "NM" or value in ("", '""') or obx.result_status not in _MAPPED_STATUSES:
        return None
    q = _quantity_of(obx.identifier)
    if q is None:
        return Issue("unknown_code", 103, "OBX", obx.sequence, 3)
    if not _NM.fullmatch(value) or not math.isfinite(number := float(value)):
        return Issue("not_a_number", 102, "OBX", obx.sequence, 5)
    unit = _ucum(obx.units)
    if unit is None:
        return Issue("unknown_unit", 103, "OBX", obx.sequence, 6)
    if unit != q.ucum:
        convert = _CONVERSIONS.get((unit, q.ucum))
        if convert is None:
            return Issue("unit_mismatch", 103, "OBX", obx.sequence, 6)
        number = round(convert(number), _CONVERTED_DECIMALS)
    time, issue = _time_of(message, obx)
    if issue is not None:
        return issue
    return _Mapped(q, number, time)


def application_issues(message: Message) -> list[Issue]:
    """Content problems that make the gateway answer AE (the mappable OBX are still good)."""
    if not message.obx:
        return [Issue("no_obx", 100, "OBX")]
    return [r for r in (_map(message, obx) for obx in message.obx) if isinstance(r, Issue)]


def observations(message: Message, device_id: str) -> list[Observation]:
    """The numeric observations of a message, in the gateway's units, with ids stable across resends."""
    events: list[Observation] = []
    for obx in message.obx:
        mapped = _map(message, obx)
        if not isinstance(mapped, _Mapped):
            continue
        key = mapped.time.text if mapped.time is not None else f"msh10:{message.msh.control_id}"
        q = mapped.quantity
        events.append(
            Observation(
                stable_id(device_id, q.code, obx.sub_id, key),
                device_id,
                q,
                mapped.value,
                mapped.time.epoch_ns if mapped.time is not None else None,
                now_ns(),
            )
        )
    return events


# ----------------------------------------------------------------------------------------------------- build


def _segment(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


def _hd(hd: HierarchicDesignator) -> str:
    enc = DEFAULT_ENCODING
    return "^".join(escape(x, enc) for x in (hd.namespace_id, hd.universal_id, hd.universal_id_type)).rstrip("^")


_ERROR_VERSIONS: Final = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8"})


def build_ack(
    message: Message | MSH | None,
    code: AckCode | str,
    error_text: str | None = None,
    *,
    issues: Iterable[Issue] = (),
    sending_application: str = "IOMT_GATEWAY",
    sending_facility: str = "",
    control_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """An ACK^R01 for ``message`` (its MSH when that is all that parsed; None when not even that).

    MSA-2 echoes MSH-10.  For AE/AR, one ERR per issue (at most 20); ``error_text`` (escaped) goes to ERR-8 of the
    first, or of an ERR of its own (207, internal error) when there are no issues.  The ACK always uses the
    standard separators, whatever the received message used, and ends every segment with CR.
    """
    ack = AckCode(code)
    msh = message.msh if isinstance(message, Message) else message
    enc = DEFAULT_ENCODING
    version = msh.version if msh is not None and msh.version in _ERROR_VERSIONS else "2.6"

    def e(text: str) -> str:
        return escape(text, enc)

    receiver_app = msh.sending_application if msh is not None else HierarchicDesignator("")
    receiver_fac = msh.sending_facility if msh is not None else HierarchicDesignator("")
    segments = [
        _segment(
            "MSH",
            enc.msh2,
            e(sending_application),
            e(sending_facility),
            _hd(receiver_app),
            _hd(receiver_fac),
            format_timestamp(now or datetime.now(UTC)),
            "",
            "ACK^R01^ACK",
            e(control_id or new_id()[:20]),
            e(msh.processing_id) if msh is not None and msh.processing_id else "P",
            version,
            "",
            "",
            "NE",
            "NE",
            "",
            "UNICODE UTF-8",
        ),
        _segment("MSA", ack.value, e(msh.control_id) if msh is not None else ""),
    ]
    if ack is not AckCode.ACCEPT:
        errs = list(issues)[:20] or [Issue("internal_error", 207)]
        for index, issue in enumerate(errs):
            location = f"{issue.segment}^{issue.sequence or ''}^{issue.field_position or ''}".rstrip("^")
            name = _ERROR_NAMES.get(issue.error_code, "")
            message_text = error_text if index == 0 and error_text else issue.text
            segments.append(
                _segment("ERR", "", location, f"{issue.error_code}^{e(name)}^HL70357", "E", "", "", "", e(message_text))
            )
    return ("\r".join(segments) + "\r").encode("utf-8")


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the receiver makes of one message: the ACK to send, and whether its observations are kept."""

    message: Message | None
    ack: bytes
    code: AckCode
    keep: bool  # store `observations(message)`: AA, or AE only for unmapped codes
    unmapped: tuple[str, ...] = ()  # OBX-3 of numeric OBX whose code is not mapped ("code^reference id")


def _unmapped_code(message: Message, issue: Issue) -> str:
    identifier = message.obx[issue.sequence - 1].identifier
    return f"{identifier.identifier}^{identifier.text}" if identifier is not None else "^"


def assess(
    raw: bytes,
    *,
    accept_versions: Collection[str] = ACCEPT_VERSIONS,
    unmapped: str = "accept",
    allowed_facilities: Collection[str] = (),
    now: datetime | None = None,
) -> Assessment:
    """Parse a message, decide its ACK and what of it is kept.  Never raises.

    Unmapped codes are not errors of the message (`unmapped="accept"`: AA), or AE naming them
    (`unmapped="error"`); either way the mapped observations are kept.  Any other content problem is AE and
    nothing is kept (the sender's corrected retry must not be a duplicate); a rejected message is AR.
    """
    try:
        message = parse(raw)
    except HL7ParseError as err:
        issue = Issue(err.reason, err.error_code)
        return Assessment(None, build_ack(err.header, AckCode.REJECT, issues=[issue], now=now), AckCode.REJECT, False)
    try:
        rejects = acceptance_issues(message, accept_versions, allowed_facilities)
        if rejects:
            ack = build_ack(message, AckCode.REJECT, issues=rejects, now=now)
            return Assessment(None, ack, AckCode.REJECT, False)
        errors = application_issues(message)
        unknown = [issue for issue in errors if issue.reason == "unknown_code"]
        codes = tuple(_unmapped_code(message, issue) for issue in unknown)
    except Exception:  # noqa: BLE001 - a receiver bug must still answer (AR, 207) rather than drop the link
        ack = build_ack(message, AckCode.REJECT, issues=[Issue("internal_error", 207)], now=now)
        return Assessment(None, ack, AckCode.REJECT, False)
    if len(unknown) < len(errors):
        return Assessment(
            message, build_ack(message, AckCode.ERROR, issues=errors, now=now), AckCode.ERROR, False, codes
        )
    if unknown and unmapped == "error":
        ack = build_ack(message, AckCode.ERROR, issues=unknown, now=now)
        return Assessment(message, ack, AckCode.ERROR, True, codes)
    return Assessment(message, build_ack(message, AckCode.ACCEPT, now=now), AckCode.ACCEPT, True, codes)


def parse_and_ack(
    raw: bytes, *, accept_versions: Collection[str] = ACCEPT_VERSIONS, now: datetime | None = None
) -> tuple[Message | None, bytes]:
    """Parse a message and build its ACK: (message, ACK) for AA and AE, (None, ACK with AR) otherwise.  Never raises.

    Unmapped codes are accepted (AA); see `assess` for the choice and for what is kept.
    """
    result = assess(raw, accept_versions=accept_versions, now=now)
    return result.message, result.ack


@dataclass(frozen=True, slots=True)
class OruObservation:
    """One numeric for `build_oru`: an MDC reference id, a value (None: no reading, status X), the OBX-4 sub-id."""

    reference_id: str
    value: float | None
    sub_id: str
    unit: str | None = None  # UCUM; default the quantity's unit
    time: datetime | None = None  # OBX-14, tz-aware


# The MDC dimension written for a UCUM unit (sample-confirmed codes only); others are written as UCUM.
_MDC_DIM_FOR: Final = {
    "%": "262688^MDC_DIM_PERCENT^MDC",
    "mm[Hg]": "266016^MDC_DIM_MMHG^MDC",
    "Cel": "268192^MDC_DIM_DEGC^MDC",
}
_PER_MIN_BREATHS: Final = "264928^MDC_DIM_RESP_PER_MIN^MDC"
_PER_MIN_BEATS: Final = "264864^MDC_DIM_BEAT_PER_MIN^MDC"
_MDS_MONITOR: Final = "69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC"
_PCD01_PROFILE: Final = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
_RESPIRATION: Final = frozenset({"MDC_RESP_RATE", "MDC_AWAY_RESP_RATE", "MDC_TTHOR_RESP_RATE", "MDC_CO2_RESP_RATE"})


def _nm(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("an NM value must be finite")
    if value == int(value):
        return str(int(value))
    return format(Decimal(repr(value)), "f")


def build_oru(
    readings: Sequence[OruObservation],
    *,
    control_id: str,
    timestamp: datetime,
    sending_application: str = "IOMT_SIM",
    device_eui64: str = "0000000000000000",
    patient_id: str | None = None,
    version: str = "2.6",
    processing_id: str = "P",
) -> bytes:
    """A PCD-01 ORU^R01 (segments CR-terminated, no MLLP framing) from a monitor-like device, for simulators.

    MSH, an optional PID, one OBR, an MDS header OBX (as monitors send), then one NM OBX per reading with MDC
    codes from `gateway.core.nomenclature`.  ValueError for an unknown reference id, a naive datetime, a
    non-finite value.
    """
    enc = DEFAULT_ENCODING

    def e(text: str) -> str:
        return escape(text, enc)

    app = f"{e(sending_application)}^{e(device_eui64)}^EUI-64"
    stamp = format_timestamp(timestamp)
    lines = [
        _segment(
            "MSH",
            enc.msh2,
            app,
            "",
            "",
            "",
            stamp,
            "",
            "ORU^R01^ORU_R01",
            e(control_id),
            processing_id,
            version,
            "",
            "",
            "NE",
            "AL",
            "",
            "UNICODE UTF-8",
            "",
            "",
            _PCD01_PROFILE,
        )
    ]
    if patient_id is not None:
        lines.append(_segment("PID", "", "", f"{e(patient_id)}^^^^PI"))
    order = f"{e(control_id)}^{app}"
    lines.append(_segment("OBR", "1", order, order, "182777000^monitoring of patient^SCT", "", "", stamp))
    equipment = f"{e(device_eui64)}^EUI-64"
    lines.append(_segment("OBX", "1", "", _MDS_MONITOR, "1.0.0.0", "", "", "", "", "", "", "X", *[""] * 6, equipment))
    for n, reading in enumerate(readings, start=2):
        try:
            q = quantity(reading.reference_id)
        except KeyError:
            raise ValueError("unknown MDC reference id") from None
        unit = reading.unit or q.ucum
        if unit == "/min":
            unit_field = _PER_MIN_BREATHS if reading.reference_id in _RESPIRATION else _PER_MIN_BEATS
        else:
            unit_field = _MDC_DIM_FOR.get(unit, f"{e(unit)}^{e(unit)}^UCUM")
        value = "" if reading.value is None else _nm(reading.value)
        status = "X" if reading.value is None else "R"
        when = format_timestamp(reading.time) if reading.time is not None else ""
        identifier = f"{q.code}^{q.reference_id}^MDC"
        lines.append(
            _segment(
                "OBX",
                str(n),
                "NM",
                identifier,
                e(reading.sub_id),
                value,
                unit_field,
                "",
                "",
                "",
                "",
                status,
                "",
                "",
                when,
                "",
                "",
                "",
                equipment,
            )
        )
    return ("\r".join(lines) + "\r").encode("utf-8")
