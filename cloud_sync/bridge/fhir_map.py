"""Sync-API batches to FHIR R4 transaction Bundles, shaped by the PHD and PoCD implementation guides.  Pure.

Per message, one transaction Bundle of conditional creates (`ifNoneExist` on a business identifier), so the
server creates each resource once however often the message is delivered:

- the gateway as a Device (type MDC_MOC_VMS_MDS_AHD, the PHD IG's gateway), identifier `{gateway}`;
- each device as a Device whose `parent` is the gateway, identifier `{gateway}/{device}`;
- each (device, quantity) as a DeviceMetric (PoCD: one per channel metric), `{gateway}/{device}/{mdc code}`;
- each value as an Observation, identifier `{gateway}/{event id}`: the MDC code (urn:iso:std:iso:11073:10101),
  the LOINC code where `LOINC` has a standard one, the value in UCUM, `effective` at the device's time (the
  gateway's receive time when the device has no clock), `issued` at the gateway's receive time, `device` the
  DeviceMetric, and the PHD IG's gateway-device extension naming the gateway;
- a waveform segment as an Observation with valueSampledData (origin, period in ms, factor, the raw samples);
- an alarm event as an Observation coded MDC_EVT_ALARM whose components carry the IHE PCD-04 facets (alert
  source, event phase, alarm state, inactivation state, priority, alert type): see docs/INTEGRATION.md for why.

References inside a Bundle use `urn:uuid:` full URLs derived from the identifiers, which the server rewrites to
the resources it created or found.  Bad items raise `MappingError` (a `Poison`), never anything else.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from cloud_sync.bridge.errors import MappingError
from gateway.core.model import Lane
from gateway.core.nomenclature import BY_CODE
from gateway.core.wire import Batch

MDC = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
GATEWAY_DEVICE_EXT = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
# Identifier systems of this bridge (URNs: no resolvable host is implied).
SYSTEM_GATEWAY = "urn:iomt-gateway:gateway"
SYSTEM_DEVICE = "urn:iomt-gateway:device"
SYSTEM_METRIC = "urn:iomt-gateway:device-metric"
SYSTEM_EVENT = "urn:iomt-gateway:event"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_URN_NAMESPACE = uuid.UUID("0f4c3b8e-2f61-4c1e-9f6a-2b9d6c1e7a43")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# MDC terms used for the gateway and for alarms (context-free codes, IEEE 11073-10101).
MDC_MOC_VMS_MDS_AHD = 531981  # the PHD IG's type for a personal health gateway
MDC_EVT_ALARM = 196616
MDC_ATTR_ALERT_SOURCE = 68480
MDC_ATTR_EVENT_PHASE = 68481
MDC_ATTR_ALARM_STATE = 68482
MDC_ATTR_ALARM_INACTIVATION_STATE = 68483
MDC_ATTR_ALARM_PRIORITY = 68484
MDC_ATTR_ALERT_TYPE = 68485


@dataclass(frozen=True, slots=True)
class Loinc:
    code: str
    display: str
    vital_sign: bool = True


_SPO2 = (
    Loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
    Loinc("2708-6", "Oxygen saturation in Arterial blood"),
)
_RESP = (Loinc("9279-1", "Respiratory rate"),)
# MDC reference id -> LOINC codes with a standard mapping: the FHIR R4 vital-signs profiles' codes (heart rate,
# respiratory rate, oxygen saturation with the pulse-oximetry code, body temperature, blood pressure), the
# LOINC body-temperature-by-site terms, and glucose (LOINC's interstitial-fluid and glucometer terms).  A
# quantity not listed here is coded in MDC only: no mapping is asserted that a standard does not make.
LOINC: Mapping[str, tuple[Loinc, ...]] = {
    "MDC_ECG_HEART_RATE": (Loinc("8867-4", "Heart rate"),),
    "MDC_PULS_OXIM_SAT_O2": _SPO2,
    "MDC_RESP_RATE": _RESP,
    "MDC_AWAY_RESP_RATE": _RESP,
    "MDC_TTHOR_RESP_RATE": _RESP,
    "MDC_CO2_RESP_RATE": _RESP,
    "MDC_TEMP_BODY": (Loinc("8310-5", "Body temperature"),),
    "MDC_TEMP_CORE": (Loinc("8329-5", "Body temperature - Core"),),
    "MDC_TEMP_ORAL": (Loinc("8331-1", "Oral temperature"),),
    "MDC_TEMP_RECT": (Loinc("8332-9", "Rectal temperature"),),
    "MDC_TEMP_TYMP": (Loinc("8333-7", "Tympanic membrane temperature"),),
    "MDC_PRESS_BLD_NONINV_SYS": (Loinc("8480-6", "Systolic blood pressure"),),
    "MDC_PRESS_BLD_NONINV_DIA": (Loinc("8462-4", "Diastolic blood pressure"),),
    "MDC_PRESS_BLD_NONINV_MEAN": (Loinc("8478-0", "Mean blood pressure"),),
    "MDC_CONC_GLU_ISF": (Loinc("99504-3", "Glucose [Mass/volume] in Interstitial fluid", vital_sign=False),),
    "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD": (
        Loinc("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer", vital_sign=False),
    ),
}

_PRIORITY = {"high": "PH", "medium": "PM", "low": "PL"}
_ALERT_TYPE = {"physiological": "SP", "technical": "ST"}
# gateway alarm state -> (PCD-04 event phase, alarm state, inactivation state)
_ALARM_FACETS = {
    "active": ("start", "active", "enabled"),
    "cleared": ("end", "inactive", "enabled"),
    "acknowledged": ("update", "active", "alert-acknowledged"),
    "silenced": ("update", "active", "audio-paused"),
}

PatientLookup = Callable[[str | None], dict[str, Any] | None]
"""A batch's patient pseudonym -> a FHIR Reference (or None: no subject)."""


def fhir_instant(ns: int) -> str:
    """Integer UTC nanoseconds as a FHIR instant (microseconds kept: FHIR allows arbitrary precision)."""
    if not isinstance(ns, int) or isinstance(ns, bool) or not 0 <= ns < 253402300800 * 10**9:
        raise MappingError("time out of range", reason="bad-time")
    moment = _EPOCH + timedelta(microseconds=ns // 1000)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def urn_for(system: str, value: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_URN_NAMESPACE, f'{system}|{value}')}"


def _identifier(system: str, value: str) -> list[dict[str, str]]:
    return [{"system": system, "value": value}]


def _entry(resource_type: str, system: str, value: str, resource: dict[str, Any]) -> dict[str, Any]:
    resource = {"resourceType": resource_type, "identifier": _identifier(system, value), **resource}
    return {
        "fullUrl": urn_for(system, value),
        "resource": resource,
        "request": {
            "method": "POST",
            "url": resource_type,
            "ifNoneExist": f"identifier={quote(system, safe=':')}|{quote(value, safe='/:._-')}",
        },
    }


def _mdc_coding(code: int) -> dict[str, str]:
    known = BY_CODE.get(code)
    coding = {"system": MDC, "code": str(code)}
    if known is not None:
        coding["display"] = known.reference_id
    return coding


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _int(item: Mapping[str, Any], key: str) -> int:
    value = item.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MappingError(f"item field {key} is not an integer", reason=f"bad-{key}")
    return value


def _opt_int(item: Mapping[str, Any], key: str) -> int | None:
    return None if item.get(key) is None else _int(item, key)


def _str(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise MappingError(f"item field {key} is not a string", reason=f"bad-{key}")
    return value


def _number(item: Mapping[str, Any], key: str) -> float:
    value = item.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise MappingError(f"item field {key} is not a finite number", reason=f"bad-{key}")
    return float(value)


@dataclass
class BundleBuilder:
    """Collects the entries of one transaction Bundle; each resource appears once (keyed by its full URL)."""

    gateway: str
    patient: dict[str, Any] | None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    observations: int = 0

    def _add(self, entry: dict[str, Any]) -> str:
        self.entries.setdefault(entry["fullUrl"], entry)
        return str(entry["fullUrl"])

    def gateway_ref(self) -> str:
        return self._add(
            _entry(
                "Device",
                SYSTEM_GATEWAY,
                self.gateway,
                {
                    "status": "active",
                    "deviceName": [{"name": self.gateway, "type": "user-friendly-name"}],
                    "type": {"coding": [_mdc_coding(MDC_MOC_VMS_MDS_AHD)]},
                },
            )
        )

    def device_ref(self, device: str) -> str:
        parent = self.gateway_ref()
        return self._add(
            _entry(
                "Device",
                SYSTEM_DEVICE,
                f"{self.gateway}/{device}",
                {
                    "status": "active",
                    "deviceName": [{"name": device, "type": "user-friendly-name"}],
                    "parent": {"reference": parent},
                },
            )
        )

    def metric_ref(self, device: str, code: int, unit: str, *, waveform: bool = False) -> str:
        source = self.device_ref(device)
        resource: dict[str, Any] = {
            "type": {"coding": [_mdc_coding(code)]},
            "unit": {"coding": [{"system": UCUM, "code": unit}]},
            "source": {"reference": source},
            "category": "measurement",
        }
        if waveform:
            resource["operationalStatus"] = "on"
        return self._add(_entry("DeviceMetric", SYSTEM_METRIC, f"{self.gateway}/{device}/{code}", resource))

    def _observation(self, event_id: str, resource: dict[str, Any]) -> None:
        if not _SAFE_ID.match(event_id):
            raise MappingError("event id unfit for an identifier", reason="bad-id")
        resource = {
            "extension": [{"url": GATEWAY_DEVICE_EXT, "valueReference": {"reference": self.gateway_ref()}}],
            "status": "final",
            **resource,
        }
        if self.patient is not None:
            resource["subject"] = self.patient
        self._add(_entry("Observation", SYSTEM_EVENT, f"{self.gateway}/{event_id}", resource))
        self.observations += 1

    def numeric(self, device: str, item: Mapping[str, Any]) -> None:
        event_id = _str(item, "id")
        code = _int(item, "code")
        unit = _str(item, "unit")
        t_gw = _int(item, "t_gw")
        t_dev = _opt_int(item, "t_dev")
        ref = item.get("ref")
        codings = [_mdc_coding(code)]
        loinc = LOINC.get(ref, ()) if isinstance(ref, str) else ()
        codings += [{"system": LOINC_SYSTEM, "code": c.code, "display": c.display} for c in loinc]
        resource: dict[str, Any] = {
            "code": {"coding": codings},
            "effectiveDateTime": fhir_instant(t_dev if t_dev is not None else t_gw),
            "issued": fhir_instant(t_gw),
            "device": {"reference": self.metric_ref(device, code, unit)},
        }
        if any(c.vital_sign for c in loinc):
            resource["category"] = [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs"}]}]
        special = item.get("special")
        if item.get("value") is None:
            absent = {"-inf": "negative-infinity", "+inf": "positive-infinity", "nan": "not-a-number"}.get(
                str(special), "unknown"
            )
            resource["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": absent}]}
        else:
            resource["valueQuantity"] = _quantity(_number(item, "value"), unit)
        self._observation(event_id, resource)

    def waveform(self, device: str, item: Mapping[str, Any]) -> None:
        event_id = _str(item, "id")
        code = _int(item, "code")
        unit = _str(item, "unit")
        t_gw = _int(item, "t_gw")
        t_dev = _opt_int(item, "t_dev")
        rate, gain, offset = _number(item, "rate_hz"), _number(item, "gain"), _number(item, "offset")
        samples = item.get("samples")
        if rate <= 0 or gain == 0 or samples is None or not hasattr(samples, "tolist"):
            raise MappingError("waveform item without samples or with a bad rate or gain", reason="bad-waveform")
        values: list[int] = samples.tolist()
        start = t_dev if t_dev is not None else t_gw
        end = start + round(len(values) * 1e9 / rate)
        resource = {
            "code": {"coding": [_mdc_coding(code)]},
            "effectivePeriod": {"start": fhir_instant(start), "end": fhir_instant(end)},
            "issued": fhir_instant(t_gw),
            "device": {"reference": self.metric_ref(device, code, unit, waveform=True)},
            "valueSampledData": {
                # FHIR: value = data * factor + origin; the gateway: value = (sample - offset) * gain.
                "origin": _quantity(_round(-offset * gain), unit),
                "period": _round(1000.0 / rate),
                "factor": gain,
                "dimensions": 1,
                "data": " ".join(str(v) for v in values) if values else "E",
            },
        }
        self._observation(event_id, resource)

    def alarm(self, device: str, item: Mapping[str, Any]) -> None:
        event_id = _str(item, "id")
        condition = _str(item, "condition")
        t_gw = _int(item, "t_gw")
        t_dev = _opt_int(item, "t_dev")
        priority = _PRIORITY.get(str(item.get("priority")))
        kind = _ALERT_TYPE.get(str(item.get("kind")))
        facets = _ALARM_FACETS.get(str(item.get("state")))
        if priority is None or kind is None or facets is None:
            raise MappingError("alarm with an unknown priority, kind or state", reason="bad-alarm")
        phase, state, inactivation = facets
        components: list[dict[str, Any]] = []
        code = item.get("code")
        source_ref = self.device_ref(device)
        if isinstance(code, int) and not isinstance(code, bool):
            components.append(
                {
                    "code": {"coding": [_mdc_coding(MDC_ATTR_ALERT_SOURCE)]},
                    "valueCodeableConcept": {"coding": [_mdc_coding(code)]},
                }
            )
        for facet, value in (
            (MDC_ATTR_EVENT_PHASE, phase),
            (MDC_ATTR_ALARM_STATE, state),
            (MDC_ATTR_ALARM_INACTIVATION_STATE, inactivation),
            (MDC_ATTR_ALARM_PRIORITY, priority),
            (MDC_ATTR_ALERT_TYPE, kind),
        ):
            components.append({"code": {"coding": [{"system": MDC, "code": str(facet)}]}, "valueString": value})
        resource: dict[str, Any] = {
            "code": {"coding": [_mdc_coding(MDC_EVT_ALARM)], "text": condition},
            "effectiveDateTime": fhir_instant(t_dev if t_dev is not None else t_gw),
            "issued": fhir_instant(t_gw),
            "device": {"reference": source_ref},
            "valueCodeableConcept": {"text": condition},
            "component": components,
        }
        if condition.endswith((".low", "_low")):
            resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": "L"}]}]
        elif condition.endswith((".high", "_high")):
            resource["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": "H"}]}]
        self._observation(event_id, resource)

    def bundle(self) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": list(self.entries.values())}


def _round(value: float) -> float:
    return float(f"{value:.12g}")


@dataclass(frozen=True, slots=True)
class Rejected:
    """An item that could not be mapped (parked with its reason); the rest of its batch is written."""

    device: str
    lane: str
    item: dict[str, Any]
    reason: str


@dataclass(frozen=True, slots=True)
class Mapped:
    bundle: dict[str, Any] | None  # None: nothing to write
    observations: int
    rejected: list[Rejected]


BRIDGED_LANES = frozenset({Lane.NUMERICS, Lane.WAVEFORMS, Lane.ALARMS})


def to_bundle(batches: list[Batch], patients: PatientLookup) -> Mapped:
    """One transaction Bundle for the bridged lanes' items of one message; unmappable items come back apart."""
    rejected: list[Rejected] = []
    merged: dict[str, dict[str, Any]] = {}
    observations = 0
    for batch in batches:
        if batch.lane not in BRIDGED_LANES:
            continue
        if not _SAFE_NAME.match(batch.gateway) or not _SAFE_NAME.match(batch.device):
            rejected += [Rejected(batch.device[:64], batch.lane.topic_name, _plain(i), "bad-name") for i in batch.items]
            continue
        builder = BundleBuilder(batch.gateway, patients(batch.patient))
        add = {Lane.NUMERICS: builder.numeric, Lane.WAVEFORMS: builder.waveform, Lane.ALARMS: builder.alarm}[batch.lane]
        for item in batch.items:
            try:
                add(batch.device, item)
            except MappingError as err:
                rejected.append(Rejected(batch.device, batch.lane.topic_name, _plain(item), err.reason))
        for url, entry in builder.entries.items():
            merged.setdefault(url, entry)
        observations += builder.observations
    if not observations:
        return Mapped(None, 0, rejected)
    return Mapped(
        {"resourceType": "Bundle", "type": "transaction", "entry": list(merged.values())}, observations, rejected
    )


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as JSON-ready data (waveform samples as a list) for parking."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        out[key] = value.tolist() if hasattr(value, "tolist") else value
    return out
