"""Building IHE PCD-01 ORU^R01 messages: a monitor's observations as MSH, PID, OBR and the device-hierarchy OBX a
PCD-01 receiver expects.  Used by the simulators and by anything that sends PCD-01.  Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from drivers.serial.hl7.grammar import DEFAULT_ENCODING, escape, format_timestamp, segment_line
from gateway.core.nomenclature import quantity


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
        segment_line(
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
        lines.append(segment_line("PID", "", "", f"{e(patient_id)}^^^^PI"))
    order = f"{e(control_id)}^{app}"
    lines.append(segment_line("OBR", "1", order, order, "182777000^monitoring of patient^SCT", "", "", stamp))
    equipment = f"{e(device_eui64)}^EUI-64"
    lines.append(
        segment_line("OBX", "1", "", _MDS_MONITOR, "1.0.0.0", "", "", "", "", "", "", "X", *[""] * 6, equipment)
    )
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
            segment_line(
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
