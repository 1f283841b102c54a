"""The sync benchmark: drain a one-hour backlog of 50 devices through a loopback broker, under the default caps.

- drain_x_realtime: hours of data per hour of draining (backlog span / drain time), publishes capped at
  `mqtt.max_publishes_per_s` (100) and messages at `mqtt.max_message_bytes` (120,000), as for AWS IoT Core.
- publishes_per_s: what the drain actually sent per second (must stay under the cap).
- wire_bytes_per_ecg_sample: waveform-lane bytes on the wire (payload, topic, MQTT header) per ECG sample.
- alarm_latency_p50_ms / _p99_ms: alarms raised while the backlog drains, from the gateway raising them to the
  reference receiver decoding them.

Each simulated device is a bedside monitor: ECG at 360 Hz (MIT-BIH record 100 from ../shared/data, each
device starting at another offset; synthetic when absent) in 0.25 s chunks, plus four numerics a second.
The broker is Mosquitto when installed, else the embedded amqtt (reported in `broker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cloud_sync.config import MqttSection
from cloud_sync.receiver import ReferenceReceiver
from cloud_sync.uplink import Uplink
from edge_ml.wfdb import WfdbError, physionet_dir, read_record
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmsSection
from gateway.core.model import (
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    Event,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
)
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import generate_key_file, load_keyring
from hil.demo import EmbeddedBroker, free_loopback_port, wait_for_port
from hil.physiology import SyntheticEcg

DEVICES = 50
BACKLOG_S = 3600
CHUNK_S = 0.25
ALARM_INTERVAL_S = 0.1
TARGETS = {
    "drain_x_realtime": (">=", 20),
    "wire_bytes_per_ecg_sample": ("<=", 1.2),
    "alarm_latency_p99_ms": ("<=", 200),
}


def _ecg_source(record: Path | None) -> tuple[np.ndarray, float, float, float, str]:
    try:
        rec = read_record(record or physionet_dir() / "100")
        spec = rec.signals[0]
        return rec.data[0], rec.rate_hz(0), 1000.0 / spec.gain, float(spec.baseline), f"WFDB record {rec.name}"
    except WfdbError:
        return SyntheticEcg(360.0).next(650_000), 360.0, 1.0, 0.0, "synthetic ECG (WFDB record not found)"


def _backlog(devices: int, seconds: int, ecg: np.ndarray, rate: float, gain: float, offset: float) -> Iterator[Event]:
    """Events of `devices` monitors over `seconds`, in time order."""
    ecg_q = quantity("MDC_ECG_ELEC_POTL_II")
    numerics = [
        quantity(r) for r in ("MDC_ECG_HEART_RATE", "MDC_PULS_OXIM_SAT_O2", "MDC_PULS_OXIM_PULS_RATE", "MDC_RESP_RATE")
    ]
    step = round(rate * CHUNK_S)
    start_ns = now_ns() - seconds * 10**9
    starts = [(d * len(ecg) // devices) // step * step for d in range(devices)]
    for second in range(seconds):
        t = start_ns + second * 10**9
        for d in range(devices):
            device = f"monitor-{d:02d}"
            for q, value in zip(numerics, (72.0, 97.0, 72.0, 16.0), strict=True):
                yield Observation(new_id(), device, q, value, t, t)
            for k in range(round(1 / CHUNK_S)):
                first = (starts[d] + (second * round(1 / CHUNK_S) + k) * step) % (len(ecg) - step)
                yield WaveformChunk(
                    new_id(),
                    device,
                    ecg_q,
                    ecg[first : first + step],
                    rate,
                    gain,
                    offset,
                    t + round(k * CHUNK_S * 1e9),
                    t,
                )


def _mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        found = "/usr/sbin/mosquitto"
    return found


class LoopbackBroker:
    """Mosquitto on a loopback port when installed (as a user would run it), else the embedded amqtt."""

    def __init__(self, folder: Path, *, persistence: bool = False) -> None:
        self.port = free_loopback_port()
        self.folder = folder
        self.persistence = persistence  # sessions and queued messages survive a stop/start (an outage)
        self.name = "mosquitto"
        self._process: subprocess.Popen[bytes] | None = None
        self._embedded: EmbeddedBroker | None = None

    async def start(self) -> None:
        binary = _mosquitto_binary()
        if binary is None:
            self.name = "amqtt (embedded)"
            self._embedded = EmbeddedBroker(self.port)
            await self._embedded.start()
            return
        conf = self.folder / "mosquitto.conf"
        persist = (
            f"persistence true\npersistence_location {self.folder}/\n" if self.persistence else "persistence false\n"
        )
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persist}"
            f"max_queued_messages 1000000\nmax_inflight_messages 100\nuser {getpass.getuser()}\n"
        )
        # A fixed argument list (the broker binary and our own config file): no shell, no user input.
        self._process = subprocess.Popen(  # noqa: S603, ASYNC220 - a child that lives for the whole bench
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await wait_for_port(self.port, "mosquitto", tries=100)

    @property
    def restartable(self) -> bool:
        """Whether stop() then start() is an outage that keeps sessions (Mosquitto with persistence)."""
        return self._embedded is None and self.persistence

    async def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            await asyncio.to_thread(self._process.wait, 10)
            self._process = None
        if self._embedded is not None:
            await self._embedded.stop()


async def bench_sync(
    record: Path | None = None, devices: int = DEVICES, backlog_s: int = BACKLOG_S, **_: Any
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="iomt-bench-sync-") as tmp:
        folder = Path(tmp)
        key = folder / "bench.key"
        generate_key_file(key)
        buffer = await Buffer.open(folder / "sync.db", load_keyring(key))
        metrics = Metrics()
        pipeline = Pipeline(
            buffer,
            AlarmEngine(AlarmsSection()),
            metrics,
            gateway_id="bench",
            patients={},
            flush_interval_s=0.2,
            max_payload_bytes=120_000 - 4096,
        )
        ecg, rate, gain, offset, source = _ecg_source(record)

        # 1. The backlog: an hour of 50 monitors, written while the gateway was offline.
        build_start = time.perf_counter()
        pipeline_task = asyncio.create_task(pipeline.run())
        ecg_samples = 0
        for event in _backlog(devices, backlog_s, ecg, rate, gain, offset):
            if isinstance(event, WaveformChunk):
                ecg_samples += len(event.samples)
            await pipeline.emit(event)
        while pipeline.backlog:  # noqa: ASYNC110 - polls a counter, the pipeline signals commits not emptiness
            await asyncio.sleep(0.05)
        build_s = time.perf_counter() - build_start
        backlog_rows = sum(s.rows for s in await buffer.stats())

        # 2. Drain it through the broker under the default caps, raising alarms meanwhile.
        broker = LoopbackBroker(folder)
        await broker.start()
        receiver = ReferenceReceiver(
            "127.0.0.1",
            broker.port,
            client_id="bench-receiver",
            protocol="5" if broker.name == "mosquitto" else "3.1.1",
        )
        receiver_task = asyncio.create_task(receiver.run())
        try:
            await asyncio.wait_for(receiver.subscribed.wait(), 10)
            config = MqttSection(
                host="127.0.0.1",
                port=broker.port,
                allow_plaintext_loopback=True,
                protocol="5" if broker.name == "mosquitto" else "3.1.1",
                client_id="bench-gw",
            )
            uplink = Uplink(config, buffer, pipeline.stored, metrics, gateway_id="bench", tls_context=None)
            drain_start = time.perf_counter()
            uplink_task = asyncio.create_task(uplink.run())
            raised: list[Alarm] = []
            while True:
                alarm = Alarm(
                    new_id(),
                    "monitor-00",
                    "MDC_PULS_OXIM_SAT_O2.low",
                    AlarmKind.PHYSIOLOGICAL,
                    AlarmPriority.HIGH,
                    AlarmState.ACTIVE,
                    now_ns(),
                    quantity("MDC_PULS_OXIM_SAT_O2"),
                )
                await pipeline.emit(alarm)
                raised.append(alarm)
                await asyncio.sleep(ALARM_INTERVAL_S)
                remaining = sum(s.rows for s in await buffer.stats())
                if remaining == 0 and uplink.inflight == 0 and pipeline.backlog == 0:
                    break
            drain_s = time.perf_counter() - drain_start
            await receiver.wait_for({"monitor-00": 1}, timeout_s=10)
            uplink_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uplink_task
        finally:
            receiver_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver_task
            pipeline.close()
            await pipeline_task
            await buffer.close()
            await broker.stop()

    latencies = sorted(
        (a["received_ns"] - a["t_gw"]) / 1e6 for a in receiver.alarms if a["condition"].endswith("SAT_O2.low")
    )
    figures: dict[str, Any] = {
        "drain_x_realtime": round(backlog_s / drain_s, 1),
        "wire_bytes_per_ecg_sample": round(metrics.wire_bytes["waveforms"] / ecg_samples, 3),
        "publishes_per_s": round(metrics.publishes / drain_s, 1),
        "alarm_latency_p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "alarm_latency_p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
        "alarms_raised": len(raised),
        "alarms_received": len(latencies),
        "drain_s": round(drain_s, 1),
        "backlog_build_s": round(build_s, 1),
        "backlog_rows": backlog_rows,
        "values_accepted": sum(c.accepted for c in metrics.devices.values()),  # backlog and alarms
        "values_received": sum(receiver.stats.unique.values()),
        "duplicates_dropped": sum(receiver.stats.duplicates.values()),
        "devices": devices,
        "backlog_s": backlog_s,
        "ecg_samples": ecg_samples,
        "ecg_source": source,
        "broker": broker.name,
        "max_publishes_per_s": config.max_publishes_per_s,
        "max_message_bytes": config.max_message_bytes,
    }
    figures["targets"] = {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}
    figures["targets_met"] = all(
        figures[k] is not None and ((figures[k] >= v) if op == ">=" else (figures[k] <= v))
        for k, (op, v) in TARGETS.items()
    )
    return figures
