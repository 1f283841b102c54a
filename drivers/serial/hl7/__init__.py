"""HL7 v2 as IHE PCD-01 "Communicate PCD Data" uses it (v2.6 ORU^R01): parse, acknowledge, map to events.  Pure.

Four modules, each one job: `grammar` (separators, escapes, segments, timestamps, `parse`), `ack` (the
acknowledgement rules and `build_ack`), `pcd01` (OBX to `Observation`, units, `assess`, `parse_and_ack`) and `oru`
(building ORU^R01).  This package re-exports their public names, so callers write `hl7.parse`, `hl7.build_oru`.

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

from drivers.serial.hl7.ack import (
    ACCEPT_VERSIONS,
    AckCode,
    Issue,
    acceptance_issues,
    build_ack,
)
from drivers.serial.hl7.grammar import (
    DEFAULT_ENCODING,
    MSH,
    OBR,
    OBX,
    PID,
    CodedElement,
    Encoding,
    EntityIdentifier,
    HierarchicDesignator,
    HL7ParseError,
    Hl7Timestamp,
    Message,
    MessageType,
    Segment,
    TimePrecision,
    escape,
    format_timestamp,
    parse,
    parse_timestamp,
    unescape,
)
from drivers.serial.hl7.oru import (
    OruObservation,
    build_oru,
)
from drivers.serial.hl7.pcd01 import (
    Assessment,
    application_issues,
    assess,
    observations,
    parse_and_ack,
)

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
    "build_ack",
    "application_issues",
    "parse_and_ack",
    "Assessment",
    "assess",
    "observations",
    "OruObservation",
    "build_oru",
]
