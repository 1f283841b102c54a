"""HL7 v2 acknowledgement rules (original mode): which problems make an AR or an AE, their ERR segments (HL7 table
0357 codes and locations), and `build_ack`, which always answers, even to bytes that are not HL7.  Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from drivers.serial.hl7.grammar import (
    DEFAULT_ENCODING,
    MSH,
    HierarchicDesignator,
    Message,
    escape,
    format_hd,
    format_timestamp,
    segment_line,
)
from gateway.core.model import new_id

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
        segment_line(
            "MSH",
            enc.msh2,
            e(sending_application),
            e(sending_facility),
            format_hd(receiver_app),
            format_hd(receiver_fac),
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
        segment_line("MSA", ack.value, e(msh.control_id) if msh is not None else ""),
    ]
    if ack is not AckCode.ACCEPT:
        errs = list(issues)[:20] or [Issue("internal_error", 207)]
        for index, issue in enumerate(errs):
            location = f"{issue.segment}^{issue.sequence or ''}^{issue.field_position or ''}".rstrip("^")
            name = _ERROR_NAMES.get(issue.error_code, "")
            message_text = error_text if index == 0 and error_text else issue.text
            segments.append(
                segment_line(
                    "ERR", "", location, f"{issue.error_code}^{e(name)}^HL70357", "E", "", "", "", e(message_text)
                )
            )
    return ("\r".join(segments) + "\r").encode("utf-8")
