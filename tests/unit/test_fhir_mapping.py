"""Sync-API items to FHIR R4: the shape the PHD and PoCD IGs give, validated by fhir.resources (R4B models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fhir.resources.R4B import get_fhir_model_class

from cloud_sync.bridge.fhir_map import GATEWAY_DEVICE_EXT, LOINC, MDC, UCUM, fhir_instant, to_bundle
from cloud_sync.bridge.patients import DEFAULT_SYSTEM, PatientDirectory
from cloud_sync.bridge.worker import BrokerSettings
from gateway.core.errors import ConfigError
from gateway.core.model import AlarmState, Lane, Observation
from gateway.core.nomenclature import BY_REFERENCE
from gateway.core.wire import decode_message
from tests.support.bridging import alarm, message, numerics, waveform


def _validate(resource: dict[str, Any]) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(
        {k: v for k, v in resource.items() if k != "resourceType"}
    )


def _bundle(payload: bytes, patients: PatientDirectory | None = None) -> list[dict[str, Any]]:
    mapped = to_bundle(decode_message(payload), patients or PatientDirectory())
    assert mapped.rejected == []
    assert mapped.bundle is not None
    get_fhir_model_class("Bundle").model_validate({k: v for k, v in mapped.bundle.items() if k != "resourceType"})
    for entry in mapped.bundle["entry"]:
        _validate(entry["resource"])
        assert entry["request"]["ifNoneExist"].startswith("identifier=")
    return [e["resource"] for e in mapped.bundle["entry"]]


def _observations(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == "Observation"]


def test_the_loinc_table_only_names_quantities_the_gateway_emits() -> None:
    assert set(LOINC) <= set(BY_REFERENCE)
    assert all(code.code.count("-") == 1 for codes in LOINC.values() for code in codes)


def test_a_numeric_is_an_observation_with_mdc_loinc_ucum_and_both_times() -> None:
    events = numerics("ox-1", 1)
    resources = _bundle(message("gw-1", "ox-1", Lane.NUMERICS, events))
    types = sorted(r["resourceType"] for r in resources)
    assert types == ["Device", "Device", "DeviceMetric", "Observation"]  # the gateway, the device, the channel
    (obs,) = _observations(resources)
    event = events[0]
    assert isinstance(event, Observation)
    assert obs["code"]["coding"][0] == {"system": MDC, "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2"}
    assert [c["code"] for c in obs["code"]["coding"][1:]] == ["59408-5", "2708-6"]
    assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
    assert obs["valueQuantity"] == {"value": 90.0, "unit": "%", "system": UCUM, "code": "%"}
    assert obs["effectiveDateTime"] == fhir_instant(event.device_time_ns or 0)
    assert obs["issued"] == fhir_instant(event.gateway_time_ns)
    assert obs["extension"][0]["url"] == GATEWAY_DEVICE_EXT
    assert obs["subject"] == {"identifier": {"system": DEFAULT_SYSTEM, "value": "pt-ZX81Q"}}
    assert obs["identifier"] == [{"system": "urn:iomt-gateway:event", "value": f"gw-1/{event.id}"}]


def test_a_device_reading_off_its_scale_is_data_absent_not_a_number() -> None:
    doc = json.loads(message("gw-1", "cgm-1", Lane.NUMERICS, numerics("cgm-1", 1)))
    doc["batches"][0]["items"][0].update(value=None, special="-inf")
    (obs,) = _observations(_bundle(json.dumps(doc).encode()))
    assert "valueQuantity" not in obs
    assert obs["dataAbsentReason"]["coding"][0]["code"] == "negative-infinity"


def test_a_waveform_segment_is_sampled_data_that_gives_back_the_physical_values() -> None:
    (chunk,) = waveform("ecg-1", 1, samples=50)
    (obs,) = _observations(_bundle(message("gw-1", "ecg-1", Lane.WAVEFORMS, [chunk])))
    data = obs["valueSampledData"]
    samples = np.array([int(v) for v in data["data"].split()])
    physical = samples * data["factor"] + data["origin"]["value"]
    assert np.allclose(physical, chunk.physical())  # type: ignore[union-attr]
    assert data["period"] == 4.0 and data["origin"]["code"] == "uV"
    assert obs["effectivePeriod"]["end"] > obs["effectivePeriod"]["start"]


def test_an_alarm_carries_the_pcd04_facets() -> None:
    events = [alarm("ox-1"), alarm("ox-1", AlarmState.CLEARED)]
    active, cleared = _observations(_bundle(message("gw-1", "ox-1", Lane.ALARMS, events)))
    facets = {c["code"]["coding"][0]["code"]: c.get("valueString") for c in active["component"]}
    assert facets == {
        "68480": None,
        "68481": "start",
        "68482": "active",
        "68483": "enabled",
        "68484": "PH",
        "68485": "SP",
    }
    assert active["code"]["coding"][0]["code"] == "196616"
    assert active["interpretation"][0]["coding"][0]["code"] == "L"
    assert {c["code"]["coding"][0]["code"]: c.get("valueString") for c in cleared["component"]}["68481"] == "end"
    assert active["device"]["reference"].startswith("urn:uuid:")


def test_patients_come_from_the_map_else_by_identifier(tmp_path: Path) -> None:
    path = tmp_path / "patients.json"
    path.write_text(json.dumps({"pt-ZX81Q": "Patient/42"}))
    directory = PatientDirectory.from_file(path)
    assert directory("pt-ZX81Q") == {"reference": "Patient/42"}
    assert directory("pt-OTHER") == {"identifier": {"system": DEFAULT_SYSTEM, "value": "pt-OTHER"}}
    assert directory(None) is None
    path.write_text(json.dumps({"pt-ZX81Q": "http://elsewhere/Patient/1"}))
    with pytest.raises(ConfigError):
        PatientDirectory.from_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError):
        PatientDirectory.from_file(path)


def test_unmappable_items_come_back_with_a_reason_and_the_rest_is_written() -> None:
    doc = json.loads(message("gw-1", "ox-1", Lane.NUMERICS, numerics("ox-1", 3)))
    items = doc["batches"][0]["items"]
    items[0]["id"] = "spaces are not ids"
    items[1]["t_gw"] = "yesterday"
    mapped = to_bundle(decode_message(json.dumps(doc).encode()), PatientDirectory())
    assert sorted(r.reason for r in mapped.rejected) == ["bad-id", "bad-t_gw"]
    assert mapped.observations == 1


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("mqtt://broker.example:1883", {}),  # plaintext off loopback
        ("mqtts://broker.example", {}),  # TLS without the client's certificate
        ("http://127.0.0.1:1883", {}),
        ("mqtt://127.0.0.1:notaport", {}),
    ],
)
def test_broker_urls_that_are_refused(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BrokerSettings.from_url(url, **options)


def test_a_loopback_broker_may_be_plaintext() -> None:
    settings = BrokerSettings.from_url("mqtt://127.0.0.1:1884")
    assert (settings.host, settings.port, settings.tls) == ("127.0.0.1", 1884, None)
