"""Acceptance: simulated devices -> gateway -> Mosquitto (mutual TLS) -> 3 bridge worker processes -> FHIR store.

Every value the gateway accepted appears exactly once as a valid Observation linked to its Device, through a
broker outage and a SIGKILL of a worker (restarted under the same client id, as its supervisor would).

Mosquitto (2.0.11 here) does not restore shared subscriptions from its persistence file: after a broker restart a
group has no member until a worker subscribes again, and what arrives before is dropped ("no matching
subscribers"; docs/INTEGRATION.md).  The gateway therefore waits out the outage in a long backoff and is woken
(`sync now`) once every worker is back, as an operator brings a broker back before the gateways' traffic.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cloud_sync.tls import client_context
from gateway.config import parse_config
from hil.fhir_server import FhirTestServer
from tests.conftest import config_dict, start_mosquitto
from tests.support.bridging import WorkerProcess, linked_device, observation_ids, validate_all, wait_until
from tests.support.harness import running_gateway
from tests.support.pki import make_pki, mosquitto_tls_conf

BRIDGED = ("numerics", "waveforms", "alarms")


async def test_devices_to_fhir_exactly_once_through_an_outage_and_a_sigkill(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "broker").mkdir()
    broker = start_mosquitto(tmp_path / "broker", mosquitto_tls_conf(pki), persistence=True)
    data = config_dict(tmp_path / "state", broker.port)
    data["mqtt"].pop("allow_plaintext_loopback")
    data["mqtt"]["tls"] = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    data["mqtt"] |= {"reconnect_initial_s": 60.0, "reconnect_max_s": 60.0}  # until woken, after the workers
    config = parse_config(data)
    with FhirTestServer() as fhir:
        assert fhir.store.validating
        workers = [
            WorkerProcess(
                [
                    "fhir",
                    f"--broker=mqtts://127.0.0.1:{broker.port}",
                    f"--tls-ca={pki.ca}",
                    f"--tls-cert={pki.client_cert}",
                    f"--tls-key={pki.client_key}",
                    f"--fhir-base={fhir.base_url}",
                    f"--client-id=e2e-fhir-{i}",
                    "--group=e2e-fhir",
                    f"--park-dir={tmp_path / 'parked'}",
                    "--retry-max-s=1",
                    "--timeout-s=5",
                ],
                tmp_path / f"worker-{i}.log",
            )
            for i in range(3)
        ]
        try:
            for worker in workers:
                worker.start()
            await wait_until(lambda: all(w.subscriptions() >= 1 for w in workers), 30, "three workers subscribed")
            async with running_gateway(
                config, receiver_tls=client_context(pki.ca, pki.client_cert, pki.client_key)
            ) as run:
                await asyncio.sleep(3)
                broker.stop()  # outage: the gateway buffers, the workers reconnect with backoff
                await asyncio.sleep(2)
                broker.start()
                await wait_until(lambda: all(w.subscriptions() >= 2 for w in workers), 30, "workers subscribed again")
                assert run.gateway.sync_now() == "offline"  # it has not published into the empty group
                await asyncio.sleep(2)
                workers[1].kill()  # a worker dies with messages in hand
                await asyncio.sleep(1.5)
                workers[1].start()  # its supervisor restarts it; its session gives back what it held
                await asyncio.sleep(3)
                await run.finish()
                expected = {f"test-gw/{ident}" for ident, item in run.receiver.items.items() if item["lane"] in BRIDGED}
                accepted = sum(run.gateway.metrics.device(d.id).accepted for d in config.devices)
                assert sum(run.receiver.stats.unique.values()) == accepted
            assert len(expected) > 50
            await wait_until(lambda: set(observation_ids(fhir.store)) >= expected, 60, "every value in FHIR")
            await asyncio.sleep(1)  # anything still in flight would show up as a duplicate now
        finally:
            codes = [w.stop() for w in workers]
            broker.stop()
        ids = observation_ids(fhir.store)
        assert len(ids) == len(set(ids)) == len(expected), "every value exactly once"
        assert set(ids) == expected
        assert fhir.store.duplicates() == 0
        assert validate_all(fhir.store) >= len(expected)
        for observation in fhir.store.of_type("Observation"):
            device = linked_device(fhir.store, observation)
            assert device["identifier"][0]["value"].split("/")[0] == "test-gw"
        assert codes == [0, 0, 0]  # SIGTERM: a clean stop
        assert not list((tmp_path / "parked").glob("*.json"))
        kinds = {("sampled" if "valueSampledData" in o else "value") for o in fhir.store.of_type("Observation")}
        assert kinds == {"sampled", "value"}
