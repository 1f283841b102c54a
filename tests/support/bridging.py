"""Helpers for the bridge tests: sync-API messages as a gateway publishes them, worker processes, FHIR checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fhir.resources.R4B import get_fhir_model_class

from cloud_sync.bridge.fhir_map import SYSTEM_EVENT
from cloud_sync.bridge.worker import BridgeWorker
from cloud_sync.mqtt import REFUSED, MqttClient
from gateway.core.model import (
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    Event,
    Lane,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
)
from gateway.core.nomenclature import quantity
from gateway.core.wire import encode_batch, encode_message
from hil.fhir_server import FhirStore


def numerics(device: str, n: int, *, t0: int | None = None) -> list[Event]:
    t = t0 or now_ns()
    names = ("MDC_PULS_OXIM_SAT_O2", "MDC_PULS_OXIM_PULS_RATE", "MDC_ECG_HEART_RATE", "MDC_TEMP_BODY")
    return [
        Observation(new_id(), device, quantity(names[i % len(names)]), 90.0 + i % 10, t + i * 10**9, t + i * 10**9 + 5)
        for i in range(n)
    ]


def waveform(device: str, n: int = 2, samples: int = 250) -> list[Event]:
    t = now_ns()
    return [
        WaveformChunk(
            new_id(),
            device,
            quantity("MDC_ECG_ELEC_POTL_II"),
            np.arange(samples, dtype=np.int32) - 100,
            250.0,
            2.5,
            0.0,
            t + k * 10**9 * 10,  # gaps between chunks: one item each
            t,
        )
        for k in range(n)
    ]


def alarm(device: str, state: AlarmState = AlarmState.ACTIVE) -> Alarm:
    return Alarm(
        new_id(),
        device,
        "MDC_PULS_OXIM_SAT_O2.low",
        AlarmKind.PHYSIOLOGICAL,
        AlarmPriority.HIGH,
        state,
        now_ns(),
        quantity("MDC_PULS_OXIM_SAT_O2"),
    )


def message(gateway: str, device: str, lane: Lane, events: Sequence[Event], patient: str | None = "pt-ZX81Q") -> bytes:
    return encode_message(lane, [encode_batch(gateway, device, patient, lane, events)])


def topic(gateway: str, lane: Lane, prefix: str = "iomt/v1") -> str:
    return f"{prefix}/{gateway}/up/{lane.topic_name}"


async def publish(port: int, messages: Sequence[tuple[str, bytes]], *, client_id: str = "test-gw-pub") -> None:
    """Publish (topic, payload) pairs with QoS 1 and wait for each PUBACK, as the uplink does."""
    async with MqttClient("127.0.0.1", port, client_id=client_id) as client:
        for name, payload in messages:
            assert await client.publish(name, payload, qos=1) < REFUSED, f"the broker refused a publish to {name}"


@contextlib.asynccontextmanager
async def running_workers(workers: Sequence[BridgeWorker]) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(w.run(), name=f"bridge-{w.client_id}") for w in workers]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.subscribed.wait() for w in workers)), 10)
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_until(predicate: Any, timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout_s} s")
        await asyncio.sleep(0.05)


def observation_ids(store: FhirStore) -> list[str]:
    """The event ids (`{gateway}/{id}`) of every stored Observation, duplicates included."""
    return [
        i["value"] for o in store.of_type("Observation") for i in o.get("identifier", []) if i["system"] == SYSTEM_EVENT
    ]


def validate_all(store: FhirStore) -> int:
    """Validate every stored resource with fhir.resources (R4B); the number validated."""
    count = 0
    for resource_type in list(store.resources):
        for resource in store.of_type(resource_type):
            model = get_fhir_model_class(resource_type)
            model.model_validate({k: v for k, v in resource.items() if k != "resourceType"})
            count += 1
    return count


def linked_device(store: FhirStore, observation: dict[str, Any]) -> dict[str, Any]:
    """The Device an Observation was measured by (through its DeviceMetric for values, directly for alarms)."""
    target = store.get(observation["device"]["reference"])
    assert target is not None, "Observation.device does not resolve"
    if target["resourceType"] == "DeviceMetric":
        target = store.get(target["source"]["reference"])
        assert target is not None, "DeviceMetric.source does not resolve"
    assert target["resourceType"] == "Device"
    return target


@dataclass
class WorkerProcess:
    """`iomt-gateway bridge ...` as a real process, its log in a file."""

    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "bridge", *self.args],
                stdout=out,
                stderr=out,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def subscriptions(self) -> int:
        return self.log.read_text("utf-8", errors="replace").count('"bridge subscribed"')

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        code = self.process.returncode
        self.process = None
        return code
