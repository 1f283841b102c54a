"""The FHIR bridge against a real Mosquitto and the FHIR test server: idempotent, retrying, parking, never stuck."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_sync.bridge.fhir import FhirSink
from cloud_sync.bridge.fhir_client import FhirClient
from cloud_sync.bridge.patients import PatientDirectory
from cloud_sync.bridge.worker import BridgeWorker, BrokerSettings, Parking
from gateway.core.model import AlarmState, Lane, new_id
from hil.fhir_server import FhirTestServer
from tests.conftest import Mosquitto
from tests.support.bridging import (
    alarm,
    linked_device,
    message,
    numerics,
    observation_ids,
    publish,
    running_workers,
    topic,
    validate_all,
    wait_until,
    waveform,
)


@pytest.fixture
def fhir() -> Iterator[FhirTestServer]:
    with FhirTestServer() as server:
        assert server.store.validating, "fhir.resources must be installed for the bridge tests"
        server.store.seed({"resourceType": "Patient", "id": "p1", "active": True})
        yield server


def _worker(
    broker: Mosquitto, fhir: FhirTestServer, park: Path, name: str, group: str, **options: object
) -> BridgeWorker:
    sink = FhirSink(FhirClient(fhir.base_url, timeout_s=5), PatientDirectory(mapping={"pt-ZX81Q": "Patient/p1"}))
    return BridgeWorker(
        BrokerSettings("127.0.0.1", broker.port, None),
        sink,
        Parking(park),
        group=group,
        client_id=f"{group}-{name}",
        retry_initial_s=0.05,
        retry_max_s=0.2,
        report_interval_s=3600,
        **options,  # type: ignore[arg-type]
    )


async def test_every_value_once_across_workers_and_redeliveries(
    mosquitto: Mosquitto, fhir: FhirTestServer, tmp_path: Path
) -> None:
    group = f"g{new_id()[-10:]}"
    workers = [_worker(mosquitto, fhir, tmp_path / "park", f"w{i}", group) for i in range(2)]
    sent = []
    for g in range(3):
        gateway = f"gw-{group}-{g}"
        sent += [
            (topic(gateway, Lane.NUMERICS), message(gateway, "ox-1", Lane.NUMERICS, numerics("ox-1", 20))),
            (topic(gateway, Lane.WAVEFORMS), message(gateway, "ecg-1", Lane.WAVEFORMS, waveform("ecg-1"))),
            (
                topic(gateway, Lane.ALARMS),
                message(gateway, "ox-1", Lane.ALARMS, [alarm("ox-1"), alarm("ox-1", AlarmState.CLEARED)]),
            ),
        ]
    expected = 3 * (20 + 2 + 2)
    async with running_workers(workers):
        await publish(mosquitto.port, sent, client_id=f"{group}-pub")
        await wait_until(lambda: len(observation_ids(fhir.store)) >= expected, what="every value in FHIR")
        # A gateway that lost its PUBACKs sends everything again: nothing new may appear.
        await publish(mosquitto.port, sent, client_id=f"{group}-pub")
        await wait_until(lambda: sum(w.stats.messages for w in workers) >= 2 * len(sent), what="the resend consumed")
    ids = observation_ids(fhir.store)
    assert len(ids) == expected and len(set(ids)) == expected
    assert fhir.store.duplicates() == 0
    assert sum(w.stats.existing for w in workers) > 0  # the resend hit the conditional creates
    assert all(w.stats.messages > 0 for w in workers)  # the shared subscription split the stream
    assert validate_all(fhir.store) > expected
    devices = {d["identifier"][0]["value"]: d for d in fhir.store.of_type("Device")}
    assert set(devices) >= {f"gw-{group}-0", f"gw-{group}-0/ox-1", f"gw-{group}-0/ecg-1"}
    for observation in fhir.store.of_type("Observation"):
        device = linked_device(fhir.store, observation)
        gateway = observation["identifier"][0]["value"].split("/")[0]
        assert device["identifier"][0]["value"].startswith(gateway + "/")
        assert fhir.store.get(device["parent"]["reference"])["identifier"][0]["value"] == gateway  # type: ignore[index]
        assert observation["subject"] == {"reference": "Patient/p1"}
    kinds = Counter(
        "sampled" if "valueSampledData" in o else "alarm" if "component" in o else "numeric"
        for o in fhir.store.of_type("Observation")
    )
    assert kinds == {"numeric": 60, "sampled": 6, "alarm": 6}


async def test_poison_is_parked_and_the_stream_goes_on(
    mosquitto: Mosquitto, fhir: FhirTestServer, tmp_path: Path
) -> None:
    group = f"g{new_id()[-10:]}"
    gateway = f"gw-{group}"
    worker = _worker(mosquitto, fhir, tmp_path / "park", "w0", group, concurrency=1)
    good = numerics("ox-1", 3)
    bad_unit = numerics("ox-1", 1)[0]
    batch = json.loads(message(gateway, "ox-1", Lane.NUMERICS, [*good, bad_unit]))
    batch["batches"][0]["items"][-1]["unit"] = "m  g"  # FHIR's code type forbids the double space: a 400
    batch["batches"][0]["items"][0]["id"] = "not an id"  # the bridge cannot make an identifier of it
    async with running_workers([worker]):
        await publish(
            mosquitto.port,
            [
                (topic(gateway, Lane.NUMERICS), b"\x00garbage"),
                (topic(gateway, Lane.NUMERICS), json.dumps(batch).encode()),
                (topic(gateway, Lane.ALARMS), message(gateway, "ox-1", Lane.ALARMS, [alarm("ox-1")])),
            ],
            client_id=f"{group}-pub",
        )
        await wait_until(lambda: worker.stats.messages == 3, what=f"all three messages acknowledged {worker.stats}")
    written = set(observation_ids(fhir.store))
    assert {f"{gateway}/{e.id}" for e in good[1:]} <= written
    assert f"{gateway}/{bad_unit.id}" not in written
    files = list((tmp_path / "park").glob("*.json"))
    assert all(p.stat().st_mode & 0o077 == 0 for p in files)  # parked payloads hold patient data
    parked = [json.loads(p.read_text()) for p in files]
    reasons = sorted(p["reason"] for p in parked)
    assert reasons == ["bad-id", "http-400:invalid", "invalid-payload"]
    assert worker.stats.by_reason == {"invalid-payload": 1, "bad-id": 1, "http-400": 1}


async def test_server_faults_are_retried_and_repeated_500_is_parked(
    mosquitto: Mosquitto, fhir: FhirTestServer, tmp_path: Path
) -> None:
    group = f"g{new_id()[-10:]}"
    gateway = f"gw-{group}"
    worker = _worker(mosquitto, fhir, tmp_path / "park", "w0", group, concurrency=1, max_server_errors=3)
    first, second = numerics("ox-1", 2), numerics("ox-1", 2)
    async with running_workers([worker]):
        fhir.store.fail_next(503, 4)  # unavailable: retried however long it lasts
        fhir.store.fail_next(429, 1)
        await publish(mosquitto.port, [(topic(gateway, Lane.NUMERICS), message(gateway, "ox-1", Lane.NUMERICS, first))])
        await wait_until(lambda: worker.stats.messages == 1)
        assert worker.stats.retries == 5
        fhir.store.fail_next(500, 3)  # the same message breaks the server every time: parked, not retried forever
        await publish(
            mosquitto.port, [(topic(gateway, Lane.NUMERICS), message(gateway, "ox-1", Lane.NUMERICS, second))]
        )
        await wait_until(lambda: worker.stats.messages == 2)
    assert set(observation_ids(fhir.store)) == {f"{gateway}/{e.id}" for e in first}
    assert worker.stats.by_reason == {"repeated-server-error": 1}


async def test_a_refused_bundle_is_split_so_good_values_still_land(
    mosquitto: Mosquitto, fhir: FhirTestServer, tmp_path: Path
) -> None:
    group = f"g{new_id()[-10:]}"
    gateway = f"gw-{group}"
    worker = _worker(mosquitto, fhir, tmp_path / "park", "w0", group, concurrency=1)
    values = numerics("ox-1", 5)
    async with running_workers([worker]):
        fhir.store.fail_next(422, 1)  # the whole Bundle refused once: the sink sends the values one by one
        await publish(
            mosquitto.port, [(topic(gateway, Lane.NUMERICS), message(gateway, "ox-1", Lane.NUMERICS, values))]
        )
        await wait_until(lambda: worker.stats.messages == 1)
    assert set(observation_ids(fhir.store)) == {f"{gateway}/{e.id}" for e in values}
    assert worker.stats.parked_items == 0
