"""Uplink: drain the buffer to the broker, QoS 1, deleting a row only after the broker accepted it.

Rows are read highest-priority lane first and oldest first, with a bounded number in flight.  A new alarm
committed while a backlog drains is read at the next free slot, ahead of the remaining backlog.  On any
connection failure the in-flight rows stay in the buffer and are re-sent after reconnecting (the receiver
de-duplicates by id); reconnects use jittered, capped backoff.  A publish the broker refuses (MQTT 5 PUBACK
reason code >= 0x80) is counted and logged, and its row stays in the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
from collections.abc import Callable
from enum import StrEnum

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_sync.mqtt import AckingClient
from gateway.buffer import Buffer, StoredRecord
from gateway.config import MqttSection
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import Lane

log = get_logger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps the gateway's session through a week-long outage
OFFLINE_NOTICE_TIMEOUT_S = 2.0
REFUSED = 0x80


class SyncState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"


def uplink_topic(prefix: str, gateway_id: str, lane: Lane, device: str) -> str:
    return f"{prefix}/{gateway_id}/up/{lane.topic_name}/{device}"


def state_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/state"


def _state_payload(state: str) -> bytes:
    return json.dumps({"v": 1, "state": state, "t_gw": time.time_ns()}).encode()


def mqtt_client(
    config: MqttSection, client_id: str, tls: ssl.SSLContext | None, will: aiomqtt.Will | None = None
) -> AckingClient:
    """A client with a persistent session, in the configured protocol version."""
    if config.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        return AckingClient(
            config.host,
            config.port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=config.keepalive_s,
            will=will,
            tls_context=tls,
            timeout=10,
        )
    return AckingClient(
        config.host,
        config.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
        clean_session=False,
        keepalive=config.keepalive_s,
        will=will,
        tls_context=tls,
        timeout=10,
    )


class Uplink:
    """Owns the gateway's MQTT connection and drains the buffer through it."""

    def __init__(
        self,
        config: MqttSection,
        buffer: Buffer,
        stored: asyncio.Event,
        metrics: Metrics,
        *,
        gateway_id: str,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        self._config = config
        self._buffer = buffer
        self._stored = stored
        self._metrics = metrics
        self._gateway_id = gateway_id
        self._tls = tls_context
        self._client_id = config.client_id or f"iomt-gateway-{gateway_id}"
        self._inflight: set[int] = set()
        self._quarantined_seen = 0
        self._refusal_logged = False
        self.state = SyncState.CONNECTING
        self.last_error: str | None = None
        self.heartbeat = time.monotonic()  # last loop iteration; the systemd watchdog checks it
        self.state_listeners: list[Callable[[SyncState], None]] = []

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _set_state(self, state: SyncState) -> None:
        self.state = state
        for listener in self.state_listeners:
            listener(state)

    async def run(self) -> None:
        """Connect, drain, and reconnect forever (until cancelled)."""
        failures = 0
        topic = state_topic(self._config.topic_prefix, self._gateway_id)
        while True:
            self.heartbeat = time.monotonic()
            self._set_state(SyncState.CONNECTING)
            will = aiomqtt.Will(topic, _state_payload("offline"), qos=1, retain=True)
            try:
                async with mqtt_client(self._config, self._client_id, self._tls, will) as client:
                    client.pending_calls_threshold = self._config.inflight_window + 10
                    if failures:
                        log.info("broker connection restored", host=self._config.host, attempt=failures)
                        self._metrics.reconnects += 1
                    failures = 0
                    self.last_error = None
                    self._set_state(SyncState.ONLINE)
                    await client.publish(topic, _state_payload("online"), qos=1, retain=True)
                    try:
                        await self._drain(client)
                    except asyncio.CancelledError:
                        # A clean stop: say so, since the broker only sends the will on an unclean one.
                        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                            async with asyncio.timeout(OFFLINE_NOTICE_TIMEOUT_S):
                                await client.publish(topic, _state_payload("offline"), qos=1, retain=True)
                        raise
            except* aiomqtt.MqttError as group:
                failures += 1
                self._inflight = set()
                self.last_error = type(group.exceptions[0]).__name__
                self._set_state(SyncState.OFFLINE)
                delay = min(self._config.reconnect_max_s, self._config.reconnect_initial_s * 2 ** (failures - 1))
                delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter
                if failures == 1:
                    log.warning(
                        "broker connection failed; will retry",
                        host=self._config.host,
                        port=self._config.port,
                        error=self.last_error,
                        delay_s=round(delay, 2),
                    )
                else:
                    log.debug("broker still unreachable", attempt=failures, delay_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _drain(self, client: AckingClient) -> None:
        cursors: dict[Lane, int] = {}
        inflight: set[int] = set()
        self._inflight = inflight
        slot_freed = asyncio.Event()
        acked: list[int] = []
        acked_event = asyncio.Event()
        window = self._config.inflight_window
        async with asyncio.TaskGroup() as group:
            group.create_task(self._delete_acked(acked, acked_event), name="uplink-delete")
            while True:
                self.heartbeat = time.monotonic()
                if len(inflight) >= window:
                    slot_freed.clear()
                    await slot_freed.wait()
                    continue
                self._stored.clear()
                records = await self._buffer.read(cursors, window - len(inflight))
                self._note_quarantine()
                if not records:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._stored.wait()
                    continue
                for record in records:
                    cursors[record.lane] = max(cursors.get(record.lane, 0), record.seq)
                    inflight.add(record.seq)
                    group.create_task(self._publish(client, record, inflight, slot_freed, acked, acked_event))

    async def _publish(
        self,
        client: AckingClient,
        record: StoredRecord,
        inflight: set[int],
        slot_freed: asyncio.Event,
        acked: list[int],
        acked_event: asyncio.Event,
    ) -> None:
        topic = uplink_topic(self._config.topic_prefix, self._gateway_id, record.lane, record.device)
        try:
            reason = await client.publish_acked(topic, record.payload, qos=1)
        except aiomqtt.MqttError:
            self._metrics.publish_errors += 1
            raise
        finally:
            inflight.discard(record.seq)
            slot_freed.set()
        if reason >= REFUSED:
            # The broker refused it (e.g. an ACL): the row stays and is retried after the next reconnect.
            self._metrics.publish_refused += 1
            if not self._refusal_logged:
                self._refusal_logged = True
                log.error(
                    "broker refused a publish; row kept in the buffer",
                    lane=record.lane.topic_name,
                    status=reason,
                    topic=topic,
                )
            return
        self._metrics.publishes += 1
        self._metrics.device(record.device).delivered += record.items
        acked.append(record.seq)
        acked_event.set()

    def _note_quarantine(self) -> None:
        total = self._buffer.quarantined
        if total > self._quarantined_seen:
            log.error("buffer rows failed authentication and were quarantined", count=total - self._quarantined_seen)
            self._metrics.rows_quarantined = total
            self._quarantined_seen = total

    async def _delete_acked(self, acked: list[int], acked_event: asyncio.Event) -> None:
        try:
            while True:
                await acked_event.wait()
                acked_event.clear()
                await asyncio.sleep(0.02)  # let a few acks gather into one delete transaction
                batch = acked[:]
                del acked[: len(batch)]
                await self._buffer.delete(batch)
                self._metrics.rows_deleted += len(batch)
        finally:
            if acked:
                await asyncio.shield(self._buffer.delete(acked[:]))
                self._metrics.rows_deleted += len(acked)
                acked.clear()
