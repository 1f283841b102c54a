"""The bridge benchmark: G gateways' uplink through Mosquitto to W FHIR bridge workers sharing one subscription.

Each simulated gateway publishes, as its uplink does (QoS 1, the sync API's wire format), a backlog of numerics
messages from four devices (25 values each) and a few alarm messages; one message in twenty is published twice,
as a gateway that lost the PUBACK sends it again.  W `iomt-gateway bridge fhir` worker processes (the installed
command, as a cloud team runs it) share `$share/bench/...` and write to the FHIR test server (`hil.fhir_server`,
validating every resource with fhir.resources when it is installed).

- resources_per_s: FHIR resources created (Observations, Devices, DeviceMetrics) per second of wall time, from
  the first publish until the last value is in the store.
- duplicates: resources in the store that share an identifier (must be 0).
- lost: values published but not in the store (must be 0).
- *_cpu_s: CPU seconds of the workers, the FHIR server (this process, with the publishers) and the broker: on
  2 cores, the one near the wall time is the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cloud_sync.mqtt import REFUSED, MqttClient
from gateway.core.model import Alarm, AlarmKind, AlarmPriority, AlarmState, Lane, Observation, new_id, now_ns
from gateway.core.nomenclature import quantity
from gateway.core.wire import encode_batch, encode_message
from hil.bench.sync import LoopbackBroker
from hil.fhir_server import FhirTestServer

GATEWAYS = 50
WORKERS = 2
MESSAGES_PER_DEVICE = 5
VALUES_PER_MESSAGE = 25
DEVICES = ("monitor", "oximeter", "cgm", "patch")
QUANTITIES = ("MDC_ECG_HEART_RATE", "MDC_PULS_OXIM_SAT_O2", "MDC_RESP_RATE", "MDC_TEMP_BODY", "MDC_CONC_GLU_ISF")
RESEND_EVERY = 20
TARGETS = {"duplicates": ("<=", 0), "lost": ("<=", 0)}


def _cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), None where unavailable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _traffic(gateway: str) -> tuple[list[tuple[str, bytes]], set[str]]:
    """One gateway's messages (topic, payload) and the event ids they carry."""
    messages: list[tuple[str, bytes]] = []
    ids: set[str] = set()
    t0 = now_ns() - 3600 * 10**9
    for d, device in enumerate(DEVICES):
        for m in range(MESSAGES_PER_DEVICE):
            events = []
            for v in range(VALUES_PER_MESSAGE):
                t = t0 + ((m * VALUES_PER_MESSAGE + v) * 10**9)
                q = quantity(QUANTITIES[(d + v) % len(QUANTITIES)])
                events.append(Observation(new_id(), device, q, 60.0 + v, t, t + 1000))
            ids.update(e.id for e in events)
            payload = encode_message(
                Lane.NUMERICS, [encode_batch(gateway, device, f"pt-{gateway}-{d}", Lane.NUMERICS, events)]
            )
            messages.append((f"iomt/v1/{gateway}/up/numerics", payload))
    spo2 = quantity("MDC_PULS_OXIM_SAT_O2")
    alarms = [
        Alarm(new_id(), "oximeter", "spo2.low", AlarmKind.PHYSIOLOGICAL, AlarmPriority.HIGH, state, now_ns(), spo2)
        for state in (AlarmState.ACTIVE, AlarmState.CLEARED)
    ]
    ids.update(a.id for a in alarms)
    messages.append(
        (
            f"iomt/v1/{gateway}/up/alarms",
            encode_message(Lane.ALARMS, [encode_batch(gateway, "oximeter", None, Lane.ALARMS, alarms)]),
        )
    )
    return messages + messages[::RESEND_EVERY], ids


async def _publish(port: int, gateway: str, messages: list[tuple[str, bytes]]) -> int:
    """Publish as the uplink does (QoS 1, one at a time); how many the broker refused (PUBACK >= 0x80)."""
    refused = 0
    async with MqttClient("127.0.0.1", port, client_id=f"bench-{gateway}") as client:
        for topic, payload in messages:
            refused += await client.publish(topic, payload, qos=1) >= REFUSED
    return refused


def _start_worker(index: int, group: str, broker_port: int, fhir_base: str, folder: Path) -> subprocess.Popen[bytes]:
    log = (folder / f"worker-{index}.log").open("ab")
    # The installed command, with fixed arguments built here: no shell, no outside input.
    return subprocess.Popen(  # noqa: S603
        [
            sys.executable, "-m", "gateway", "bridge", "fhir",
            f"--broker=mqtt://127.0.0.1:{broker_port}", f"--fhir-base={fhir_base}",
            f"--client-id={group}-{index}", f"--group={group}", f"--park-dir={folder / 'parked'}",
            "--retry-max-s=2", "--concurrency=4",
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


async def _wait_subscribed(folder: Path, workers: int, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = [folder / f"worker-{i}.log" for i in range(workers)]
        if all(p.exists() and '"bridge subscribed"' in p.read_text(errors="replace") for p in logs):
            return True
        await asyncio.sleep(0.1)
    return False


async def bench_bridge(gateways: int = GATEWAYS, workers: int = WORKERS, **_: Any) -> dict[str, Any]:
    gateways = max(1, gateways or GATEWAYS)
    workers = max(1, workers or WORKERS)
    group = f"bench-{new_id()[-8:]}"
    with tempfile.TemporaryDirectory(prefix="iomt-bench-bridge-") as tmp, FhirTestServer() as fhir:
        folder = Path(tmp)
        broker = LoopbackBroker(folder)
        await broker.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if broker.name != "mosquitto":
                return {"error": "bench bridge needs Mosquitto (MQTT 5 shared subscriptions); install mosquitto"}
            procs = [_start_worker(i, group, broker.port, fhir.base_url, folder) for i in range(workers)]
            if not await _wait_subscribed(folder, workers):
                return {"error": "bridge workers did not subscribe in 30 s (see their logs)"}
            traffic = [_traffic(f"gw{g:03d}") for g in range(gateways)]
            expected = {f"gw{g:03d}/{i}" for g, (_, ids) in enumerate(traffic) for i in ids}
            published = sum(len(m) for m, _ in traffic)
            resent = published - sum(len(DEVICES) * MESSAGES_PER_DEVICE + 1 for _ in traffic)
            cpu_before = time.process_time()
            start = time.perf_counter()
            refused = await asyncio.gather(
                *(_publish(broker.port, f"gw{g:03d}", m) for g, (m, _) in enumerate(traffic))
            )
            publish_s = time.perf_counter() - start
            deadline = time.monotonic() + 120
            while fhir.store.count("Observation") < len(expected) and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the store's count
                await asyncio.sleep(0.02)
            wall_s = time.perf_counter() - start
            server_cpu = time.process_time() - cpu_before
            await asyncio.sleep(0.5)  # a late duplicate would land now
            worker_cpu = [_cpu_s(p.pid) for p in procs]
            broker_cpu = _cpu_s(broker._process.pid if broker._process else None)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(proc.wait, 15)
            await broker.stop()
        stored = {
            i["value"]
            for o in fhir.store.of_type("Observation")
            for i in o["identifier"]
            if i["system"] == "urn:iomt-gateway:event"
        }
        parked = len(list((folder / "parked").glob("*.json"))) if (folder / "parked").exists() else 0
        resources = fhir.store.created
        figures: dict[str, Any] = {
            "resources_per_s": round(resources / wall_s, 1),
            "observations_per_s": round(len(stored) / wall_s, 1),
            "duplicates": fhir.store.duplicates(),
            "lost": len(expected - stored),
            "resources_created": resources,
            "conditional_matches": fhir.store.matched,
            "values": len(expected),
            "messages_published": published,
            "messages_resent": resent,
            "messages_refused": sum(refused),
            "parked": parked,
            "wall_s": round(wall_s, 2),
            "publish_s": round(publish_s, 2),
            "workers_cpu_s": round(sum(c for c in worker_cpu if c is not None), 2),
            "server_and_publishers_cpu_s": round(server_cpu, 2),
            "broker_cpu_s": round(broker_cpu, 2) if broker_cpu is not None else None,
            "fhir_validation": "fhir.resources R4B" if fhir.store.validating else "off (fhir.resources not installed)",
            "fhir_transactions": fhir.store.transactions,
            "gateways": gateways,
            "workers": workers,
            "cpus": os.cpu_count(),
            "broker": broker.name,
        }
    figures["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
    figures["targets_met"] = all(figures[k] <= v for k, (_, v) in TARGETS.items())
    return figures
