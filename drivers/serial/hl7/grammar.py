"""HL7 v2 grammar: separators and escapes, segments and data types, timestamps, and `parse` into typed MSH, PID,
OBR and OBX segments.  Pure; raises only `HL7ParseError` (an `InvalidFrame`), whose fields never carry message
content.  The patient identifier (PID-3) is an opaque string that appears in no repr and no error.
"""

from __future__ import annotations

import calendar
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from gateway.core.errors import InvalidFrame

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


def segment_line(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


def format_hd(hd: HierarchicDesignator) -> str:
    enc = DEFAULT_ENCODING
    return "^".join(escape(x, enc) for x in (hd.namespace_id, hd.universal_id, hd.universal_id_type)).rstrip("^")
