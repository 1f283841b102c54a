"""IHE PCD-01 (ORU^R01, v2.6) on the receiving side: which OBX become `Observation`s, their units (an MDC dimension
or UCUM, converted to the quantity's UCUM unit), their times and stable ids; `assess` and `parse_and_ack` combine
this with the acknowledgement rules.  Pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from drivers.serial.hl7.ack import ACCEPT_VERSIONS, AckCode, Issue, acceptance_issues, build_ack
from drivers.serial.hl7.grammar import OBX, CodedElement, HL7ParseError, Hl7Timestamp, Message, parse
from gateway.core.model import Observation, now_ns, stable_id
from gateway.core.nomenclature import BY_CODE, BY_REFERENCE, Kind, Quantity

_MAPPED_STATUSES: Final = frozenset({"", "F", "R", "C", "P"})  # not X (no result), D (deleted), W (wrong)...
_NM: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")


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
