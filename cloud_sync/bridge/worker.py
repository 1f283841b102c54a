"""A bridge worker: one member of an MQTT 5 shared subscription, acknowledging a message only once it is delivered.

    $share/{group}/{prefix}/+/up/{lane}      QoS 1, persistent session (clean start off, session expiry)

Every worker of a group shares the stream: the broker gives each message to one of them.  A message is
acknowledged (PUBACK, sent by hand) only after the target took it, or after it was parked; a worker that dies
or loses its connection leaves its unacknowledged messages with its session, and the broker delivers them again
(to it when it comes back under the same client id; brokers that redistribute a shared subscription's in-flight
messages give them to another member).  Delivery is idempotent at the target, so a redelivery writes nothing
twice.  The broker never has more than `receive_maximum` messages in flight to one worker (MQTT 5 Receive
Maximum), so no worker hoards the stream.

Per message: decode (a malformed message is parked whole), deliver through the sink with jittered, capped
backoff while the target is unavailable, park what the target refuses for good (`Poison`), acknowledge.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cloud_sync.bridge.errors import Poison, TargetUnavailable
from cloud_sync.mqtt import REFUSED, Message, MqttClient, MqttError
from cloud_sync.tls import client_context
from gateway.core.errors import ConfigError
from gateway.core.logs import get_logger
from gateway.core.model import Lane
from gateway.core.reconnect import ReconnectPolicy
from gateway.core.settings import is_loopback
from gateway.core.wire import Batch, InvalidPayload, decode_message

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    tls: ssl.SSLContext | None
    topic_prefix: str = "iomt/v1"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        topic_prefix: str = "iomt/v1",
    ) -> BrokerSettings:
        """`mqtts://HOST[:PORT]` (mutual TLS: CA, certificate and key required) or `mqtt://` to a loopback host."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("--broker: the port is not a number") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError("--broker must be mqtts://HOST[:PORT] (or mqtt://127.0.0.1:PORT for a loopback broker)")
        if parts.scheme == "mqtt":
            if not is_loopback(parts.hostname):
                raise ConfigError("--broker: plaintext mqtt:// is only allowed to a loopback broker; use mqtts://")
            return cls(parts.hostname, port or 1883, None, topic_prefix)
        if ca_file is None or cert_file is None or key_file is None:
            raise ConfigError("--broker mqtts:// needs --tls-ca, --tls-cert and --tls-key (mutual TLS)")
        return cls(
            parts.hostname,
            port or 8883,
            client_context(ca_file, cert_file, key_file, section="bridge tls"),
            topic_prefix,
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a sink did with one message: resources or messages written, found already there, items to park."""

    written: int = 0
    existing: int = 0
    rejected: Sequence[tuple[dict[str, Any], str]] = ()  # (item as JSON-ready data, reason)


class Sink(Protocol):
    """A bridge's target: FHIR server, HL7 interface engine."""

    name: str
    lanes: frozenset[Lane]

    async def deliver(self, batches: list[Batch]) -> Delivery:
        """Deliver one message's batches; TargetUnavailable to retry, Poison to park the whole message."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class WorkerStats:
    messages: int = 0
    written: int = 0
    existing: int = 0  # conditional creates that found the resource: redeliveries made harmless
    parked_messages: int = 0
    parked_items: int = 0
    retries: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Parking:
    """Parked messages and items, one JSON file each (named by content, so a redelivered poison is one file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def park(self, record: dict[str, Any]) -> Path:
        """Write one record atomically, readable by the bridge's user only (it holds patient data)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = json.dumps(record, separators=(",", ":"), sort_keys=True, default=str).encode()
        name = hashlib.sha256(body).hexdigest()[:32]
        path = self.folder / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        return path


def shared_topics(group: str, prefix: str, lanes: frozenset[Lane]) -> list[str]:
    return [f"$share/{group}/{prefix}/+/up/{lane.topic_name}" for lane in sorted(lanes)]


class BridgeWorker:
    """Consumes a shared subscription into a sink until cancelled; never raises for bad input or target faults."""

    def __init__(
        self,
        broker: BrokerSettings,
        sink: Sink,
        parking: Parking,
        *,
        group: str,
        client_id: str,
        concurrency: int = 4,
        receive_maximum: int | None = None,
        session_expiry_s: int = 3600,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        max_server_errors: int = 5,
        report_interval_s: float = 30.0,
    ) -> None:
        self.broker = broker
        self.sink = sink
        self.parking = parking
        self.group = group
        self.client_id = client_id
        self.concurrency = concurrency
        self.receive_maximum = receive_maximum or 2 * concurrency
        self.session_expiry_s = session_expiry_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.max_server_errors = max_server_errors
        self.report_interval_s = report_interval_s
        self.stats = WorkerStats()
        self.subscribed = asyncio.Event()
        self._target_down = False

    def _client(self) -> MqttClient:
        return MqttClient(
            self.broker.host,
            self.broker.port,
            client_id=self.client_id,
            protocol="5",
            clean_start=False,
            session_expiry_s=self.session_expiry_s,
            receive_maximum=self.receive_maximum,
            manual_ack=True,
            tls_context=self.broker.tls,
            keepalive_s=30,
        )

    async def run(self) -> None:
        policy = ReconnectPolicy(initial_s=self.retry_initial_s, max_s=self.retry_max_s)
        reporter = asyncio.create_task(self._report(), name="bridge-report")
        try:
            while True:
                try:
                    async with self._client() as client:
                        if policy.succeeded():
                            log.info("bridge reconnected", client_id=self.client_id)
                        await self._consume(client)
                except MqttError as err:
                    self.subscribed.clear()
                    delay = policy.failed()
                    (log.warning if policy.first_failure else log.debug)(
                        "bridge broker connection failed",
                        client_id=self.client_id,
                        error=type(err).__name__,
                        delay_s=round(delay, 2),
                    )
                    await asyncio.sleep(delay)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await self.sink.aclose()

    async def _consume(self, client: MqttClient) -> None:
        for topic in shared_topics(self.group, self.broker.topic_prefix, self.sink.lanes):
            granted = await client.subscribe(topic, qos=1)
            if any(code >= REFUSED for code in granted):
                raise ConfigError("the broker refused the bridge's shared subscription", topic=topic)
        self.subscribed.set()
        lanes = ",".join(lane.topic_name for lane in sorted(self.sink.lanes))
        log.info("bridge subscribed", client_id=self.client_id, group=self.group, lanes=lanes)
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for message in client.messages:
                await slots.acquire()
                task = asyncio.create_task(self._handle(client, message, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            # A message in hand when the connection ends is not acknowledged: the broker sends it again.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, client: MqttClient, message: Message, slots: asyncio.Semaphore) -> None:
        try:
            await self._process(message.topic, message.payload)
            client.ack(message)
            self.stats.messages += 1
        finally:
            slots.release()

    async def _process(self, topic: str, payload: bytes) -> None:
        """Deliver or park one message; returns only when it may be acknowledged (or raises CancelledError)."""
        try:
            batches = decode_message(payload)
        except InvalidPayload as err:
            await self._park_message(topic, payload, "invalid-payload", detail=err.message)
            return
        policy = ReconnectPolicy(initial_s=self.retry_initial_s, max_s=self.retry_max_s)
        server_errors = 0
        while True:
            try:
                delivery = await self.sink.deliver(batches)
            except Poison as err:
                await self._park_message(topic, payload, err.reason)
                return
            except TargetUnavailable as err:
                if err.fields.get("status") == 500:
                    server_errors += 1
                    if server_errors >= self.max_server_errors:
                        await self._park_message(topic, payload, f"repeated-server-error:{err.reason}")
                        return
                self.stats.retries += 1
                delay = policy.failed()
                if not self._target_down:
                    self._target_down = True
                    log.warning("bridge target unavailable; retrying", sink=self.sink.name, **err.log_fields())
                else:
                    log.debug(
                        "bridge target still unavailable",
                        sink=self.sink.name,
                        reason=err.reason,
                        delay_s=round(delay, 2),
                    )
                await asyncio.sleep(delay)
                continue
            except Exception as err:
                log.error(
                    "bridge failed on a message; parked", sink=self.sink.name, error=type(err).__name__, exc_info=err
                )
                await self._park_message(topic, payload, f"internal-error:{type(err).__name__}")
                return
            break
        if self._target_down:
            self._target_down = False
            log.info("bridge target available again", sink=self.sink.name)
        self.stats.written += delivery.written
        self.stats.existing += delivery.existing
        for item, reason in delivery.rejected:
            await self._park_item(topic, item, reason)

    def _count(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.stats.by_reason[key] = self.stats.by_reason.get(key, 0) + 1

    async def _park_message(self, topic: str, payload: bytes, reason: str, detail: str | None = None) -> None:
        record = {
            "v": 1,
            "kind": "message",
            "sink": self.sink.name,
            "reason": reason,
            "detail": detail,
            "topic": topic,
            "payload_b64": base64.b64encode(payload).decode(),
            "parked_ns": time.time_ns(),
            "worker": self.client_id,
        }
        await self._write_park(record, reason, topic)
        self.stats.parked_messages += 1

    async def _park_item(self, topic: str, item: dict[str, Any], reason: str) -> None:
        record = {
            "v": 1,
            "kind": "item",
            "sink": self.sink.name,
            "reason": reason,
            "topic": topic,
            "item": item,
            "parked_ns": time.time_ns(),
            "worker": self.client_id,
        }
        await self._write_park(record, reason, topic)
        self.stats.parked_items += 1

    async def _write_park(self, record: dict[str, Any], reason: str, topic: str) -> None:
        self._count(reason)
        while True:
            try:
                self.parking.park(record)
                break
            except OSError as err:
                # Parking is the last resort: without it the message would be lost, so hold it (unacknowledged).
                log.error("bridge cannot park; holding the message", error=type(err).__name__, errno=err.errno)
                await asyncio.sleep(1.0)
        log.warning("bridge parked", sink=self.sink.name, reason=reason, topic=topic, kind=record["kind"])

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval_s)
            s = self.stats
            log.info(
                "bridge progress",
                sink=self.sink.name,
                count=s.messages,
                created=s.written,
                existing=s.existing,
                parked=s.parked_messages + s.parked_items,
                attempt=s.retries,
            )
