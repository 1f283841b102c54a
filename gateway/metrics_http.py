"""Prometheus metrics on a loopback HTTP port (off by default): rates, gaps, backlog, sync, evictions.

Served by a minimal asyncio HTTP responder (GET /metrics only), rendered with prometheus_client's exposition
format from a snapshot of the gateway's counters; no threads, no values, no patient identifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.core.logs import get_logger
from gateway.status import GatewayControl, StatusSnapshot

log = get_logger(__name__)


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class _Snapshot(Collector):
    def __init__(self, snapshot: StatusSnapshot) -> None:
        self._snap = snapshot

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        snap, metrics = self._snap, self._snap.metrics
        now = time.time_ns()
        received = CounterMetricFamily(
            "iomt_device_values_received", "Values received from a device", labels=["device"]
        )
        accepted = CounterMetricFamily(
            "iomt_device_values_accepted", "Values committed to the buffer", labels=["device"]
        )
        delivered = CounterMetricFamily(
            "iomt_device_values_delivered", "Values acknowledged by the broker", labels=["device"]
        )
        gap = GaugeMetricFamily(
            "iomt_device_last_seen_age_seconds", "Seconds since the device last sent anything", labels=["device"]
        )
        invalid = CounterMetricFamily("iomt_device_invalid_frames", "Frames that failed decoding", labels=["device"])
        for device, counters in metrics.devices.items():
            received.add_metric([device], counters.received)
            accepted.add_metric([device], counters.accepted)
            delivered.add_metric([device], counters.delivered)
            if counters.last_seen_ns is not None:
                gap.add_metric([device], (now - counters.last_seen_ns) / 1e9)
        for device, stats in metrics.drivers.items():
            invalid.add_metric([device], stats.invalid_frames)
        yield from (received, accepted, delivered, gap, invalid)
        rows = GaugeMetricFamily("iomt_buffer_rows", "Rows waiting in the buffer", labels=["lane"])
        size = GaugeMetricFamily("iomt_buffer_bytes", "Bytes waiting in the buffer", labels=["lane"])
        age = GaugeMetricFamily(
            "iomt_buffer_oldest_age_seconds", "Age of the oldest row (the sync lag)", labels=["lane"]
        )
        for lane in snap.lanes:
            rows.add_metric([lane.lane.topic_name], lane.rows)
            size.add_metric([lane.lane.topic_name], lane.bytes)
            age.add_metric([lane.lane.topic_name], lane.oldest_age_s or 0.0)
        yield from (rows, size, age)
        online = GaugeMetricFamily("iomt_sync_online", "1 when the uplink is connected")
        online.add_metric([], 1.0 if snap.sync_state == "online" else 0.0)
        yield online
        yield CounterMetricFamily("iomt_sync_publishes", "Messages acknowledged by the broker", value=metrics.publishes)
        yield CounterMetricFamily("iomt_sync_publish_errors", "Publishes that failed", value=metrics.publish_errors)
        yield CounterMetricFamily(
            "iomt_sync_publish_refused", "Publishes the broker refused", value=metrics.publish_refused
        )
        yield CounterMetricFamily("iomt_sync_reconnects", "Broker reconnections", value=metrics.reconnects)
        shed = CounterMetricFamily(
            "iomt_buffer_shed_values",
            "Values shed over the memory bound while the buffer was unavailable",
            labels=["lane"],
        )
        for lane_name, count in metrics.shed_items.items():
            shed.add_metric([lane_name], count)
        yield shed
        yield CounterMetricFamily(
            "iomt_buffer_storage_failures", "Commits the buffer refused (retried)", value=metrics.storage_failures
        )
        yield CounterMetricFamily(
            "iomt_values_implausible",
            "Physically impossible values kept out of the data",
            value=metrics.implausible_values,
        )
        evicted = CounterMetricFamily(
            "iomt_buffer_evicted_values", "Values evicted to stay within quota", labels=["lane"]
        )
        for lane_name, count in metrics.evicted_items.items():
            evicted.add_metric([lane_name], count)
        yield evicted
        rejections = CounterMetricFamily("iomt_command_rejections", "Commands rejected, by reason", labels=["reason"])
        for reason, count in metrics.command_rejections.items():
            rejections.add_metric([reason], count)
        yield rejections
        restarts = CounterMetricFamily("iomt_task_restarts", "Supervised task restarts", labels=["task"])
        for task, count in metrics.restarts.items():
            restarts.add_metric([task], count)
        yield restarts
        yield GaugeMetricFamily("iomt_alarms_active", "Active alarms", value=len(snap.active_alarms))
        model = snap.model
        if model is not None:
            runs = CounterMetricFamily("iomt_model_runs", "Model inferences", labels=["model"])
            runs.add_metric([model.name], model.runs)
            yield runs
            latency = GaugeMetricFamily("iomt_model_latency_p99_ms", "99th percentile inference time", labels=["model"])
            latency.add_metric([model.name], model.latency_p99_ms or 0.0)
            yield latency
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory", value=_rss_bytes())


def render_metrics(snapshot: StatusSnapshot) -> str:
    """The Prometheus text exposition of one status snapshot."""
    registry = CollectorRegistry()
    registry.register(_Snapshot(snapshot))
    return generate_latest(registry).decode()


class MetricsServer:
    """GET /metrics on a loopback port."""

    def __init__(self, gateway: GatewayControl, host: str, port: int) -> None:
        self._gateway = gateway
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers: not needed
            if request.split()[:2] == [b"GET", b"/metrics"]:
                body = render_metrics(await self._gateway.snapshot()).encode()
                head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            else:
                body, head = b"only GET /metrics\n", b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError, IndexError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
