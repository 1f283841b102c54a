"""Reference cloud receiver: subscribes to gateways' uplink, decodes, de-duplicates by id, and counts.

It is what a cloud team's ingestion would do first, and what the demo and the tests use to check that every
value arrives exactly once.  Its id memory is a set (fine for tests and demos; a production receiver would
keep ids in its database with a retention window).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cloud_sync.mqtt import MqttClient, MqttError
from gateway.core.logs import get_logger
from gateway.core.model import Lane
from gateway.core.wire import Batch, InvalidPayload, decode_message

log = get_logger(__name__)


@dataclass
class ReceiverStats:
    unique: Counter[str] = field(default_factory=Counter)  # per device
    duplicates: Counter[str] = field(default_factory=Counter)  # per device
    by_lane: Counter[str] = field(default_factory=Counter)
    samples: Counter[str] = field(default_factory=Counter)  # waveform samples per device
    invalid_payloads: int = 0
    messages: int = 0
    wire_bytes: int = 0


MAX_CHUNKS = 1 << 20  # an object of more chunks than this is not one the gateway sends
SESSION_EXPIRY_S = 24 * 3600  # MQTT 5: the broker keeps the receiver's session through a day offline
MAX_QUEUED_MESSAGES = 100_000  # messages are handled as they come; this only bounds a stalled consumer


class ReferenceReceiver:
    """Subscribes to `{prefix}/+/up/#` with a persistent session, so nothing is missed across reconnects."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        topic_prefix: str = "iomt/v1",
        client_id: str = "reference-receiver",
        tls_context: ssl.SSLContext | None = None,
        protocol: Literal["5", "3.1.1"] = "5",
    ) -> None:
        self._host = host
        self._protocol = protocol
        self._port = port
        self._prefix = topic_prefix
        self._client_id = client_id
        self._tls = tls_context
        self.stats = ReceiverStats()
        self.seen: set[str] = set()
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}
        self.alarms: list[dict[str, Any]] = []
        self.items: dict[str, dict[str, Any]] = {}
        self.keep_items = False
        # Called with (device, lane topic name, item) for each item the first time it arrives (e.g. a HIL rig's
        # timeline); a listener must not raise.
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        # Objects (images lane): chunks until complete, then the verified whole; failures by object id.
        self._partial: dict[tuple[str, int], dict[int, bytes]] = {}
        self.objects: dict[str, bytes] = {}
        self.object_meta: dict[str, dict[str, Any]] = {}
        self.object_failures: dict[str, str] = {}
        self.subscribed = asyncio.Event()
        self.arrived = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with MqttClient(
                    self._host,
                    self._port,
                    client_id=self._client_id,
                    protocol=self._protocol,
                    clean_start=False,
                    session_expiry_s=SESSION_EXPIRY_S,
                    tls_context=self._tls,
                    max_queued_messages=MAX_QUEUED_MESSAGES,
                ) as client:
                    await client.subscribe(f"{self._prefix}/+/up/#", qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        self.handle(message.payload)
            except MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.5)

    def handle(self, payload: bytes) -> None:
        self.stats.messages += 1
        self.stats.wire_bytes += len(payload)
        try:
            batches = decode_message(payload)
        except InvalidPayload as err:
            self.stats.invalid_payloads += 1
            log.warning("invalid payload", **err.log_fields())
            return
        for batch in batches:
            self._take(batch)
        self.arrived.set()

    def _take(self, batch: Batch) -> None:
        for item in batch.items:
            ident = item["id"]
            if ident in self.seen:
                self.stats.duplicates[batch.device] += 1
                continue
            self.seen.add(ident)
            # A waveform item may carry several contiguous chunks (events): count events, as the gateway does.
            self.stats.unique[batch.device] += int(item.get("chunks", 1))
            self.stats.by_lane[batch.lane.topic_name] += 1
            for listener in self.listeners:
                listener(batch.device, batch.lane.topic_name, item)
            if self.keep_items:
                self.items[ident] = {
                    "device": batch.device,
                    "lane": batch.lane.topic_name,
                    "patient": batch.patient,
                    **item,
                }
            if batch.lane is Lane.WAVEFORMS:
                self.stats.samples[batch.device] += int(item.get("n", 0))
            elif batch.lane is Lane.NUMERICS:
                self.latest[(batch.device, str(item.get("ref")))] = item
            elif batch.lane is Lane.ALARMS:
                self.alarms.append({"device": batch.device, "received_ns": time.time_ns(), **item})
            elif batch.lane is Lane.IMAGES:
                self._take_chunk(batch.device, item)

    def _take_chunk(self, device: str, item: dict[str, Any]) -> None:
        """Collect one object chunk; when all are in, reassemble and check the SHA-256 of the whole."""
        try:
            object_id, index, count = str(item["object"]), int(item["index"]), int(item["count"])
            data, digest, total = item["data"], str(item["sha256"]), int(item["total_bytes"])
        except (KeyError, TypeError, ValueError):
            self.stats.invalid_payloads += 1
            log.warning("object chunk without its fields")
            return
        if object_id in self.objects or not 0 < count <= MAX_CHUNKS or not 0 <= index < count:
            return
        # Keyed by the chunk count too: the same object re-sent with another chunk size is another set.
        parts = self._partial.setdefault((object_id, count), {})
        parts[index] = bytes(data)
        if len(parts) < count:
            return
        whole = b"".join(parts[i] for i in range(count))
        del self._partial[(object_id, count)]
        if len(whole) != total or hashlib.sha256(whole).hexdigest() != digest:
            self.object_failures[object_id] = "sha256 or length mismatch"
            log.error("object failed verification", length=len(whole))
            return
        self.objects[object_id] = whole
        self.object_meta[object_id] = {"device": device, **dict(item.get("meta") or {})}

    async def wait_for(self, device_counts: dict[str, int], timeout_s: float) -> bool:
        """Wait until every device has at least the given number of unique items; False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while any(self.stats.unique[d] < n for d, n in device_counts.items()):
                    self.arrived.clear()
                    await self.arrived.wait()
                return True
        return False
