"""Uplink: drain the buffer to the broker, QoS 1, deleting a row only after the broker's PUBACK.

Rows are read highest-priority lane first and oldest first, with a bounded number in flight.  A new alarm
committed while a backlog drains is read at the next window refill, ahead of the remaining backlog.  On any
connection failure the in-flight rows stay in the buffer and are re-sent after reconnecting (the receiver
de-duplicates by id); reconnects use jittered, capped backoff.
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

from gateway.buffer import Buffer, StoredRecord
from gateway.config import MqttSection
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import Lane

log = get_logger(__name__)

DELETE_BATCH = 64


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
        self.state = SyncState.CONNECTING
        self.inflight = 0
        self.last_error: str | None = None
        self.state_listeners: list[Callable[[SyncState], None]] = []

    def _set_state(self, state: SyncState) -> None:
        self.state = state
        for listener in self.state_listeners:
            listener(state)

    def _client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(
            state_topic(self._config.topic_prefix, self._gateway_id), _state_payload("offline"), qos=1, retain=True
        )
        return aiomqtt.Client(
            self._config.host,
            self._config.port,
            identifier=self._client_id,
            clean_session=False,
            keepalive=self._config.keepalive_s,
            will=will,
            tls_context=self._tls,
            timeout=10,
        )

    async def run(self) -> None:
        """Connect, drain, and reconnect forever (until cancelled)."""
        failures = 0
        while True:
            self._set_state(SyncState.CONNECTING)
            try:
                async with self._client() as client:
                    if failures:
                        log.info("broker connection restored", host=self._config.host, attempt=failures)
                        self._metrics.reconnects += 1
                    failures = 0
                    self.last_error = None
                    self._set_state(SyncState.ONLINE)
                    await client.publish(
                        state_topic(self._config.topic_prefix, self._gateway_id),
                        _state_payload("online"),
                        qos=1,
                        retain=True,
                    )
                    await self._drain(client)
            except* aiomqtt.MqttError as group:
                failures += 1
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

    async def _drain(self, client: aiomqtt.Client) -> None:
        cursors: dict[Lane, int] = {}
        window = asyncio.Semaphore(self._config.inflight_window)
        acked: list[int] = []
        acked_event = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._delete_acked(acked, acked_event), name="uplink-delete")
            while True:
                self._stored.clear()
                free = self._config.inflight_window - self.inflight
                records = await self._buffer.read(cursors, free) if free > 0 else []
                if not records:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._stored.wait()
                    continue
                for record in records:
                    cursors[record.lane] = max(cursors.get(record.lane, 0), record.seq)
                    await window.acquire()
                    self.inflight += 1
                    group.create_task(self._publish(client, record, window, acked, acked_event))

    async def _publish(
        self,
        client: aiomqtt.Client,
        record: StoredRecord,
        window: asyncio.Semaphore,
        acked: list[int],
        acked_event: asyncio.Event,
    ) -> None:
        topic = uplink_topic(self._config.topic_prefix, self._gateway_id, record.lane, record.device)
        try:
            await client.publish(topic, record.payload, qos=1)
        except aiomqtt.MqttError:
            self._metrics.publish_errors += 1
            raise
        finally:
            self.inflight -= 1
            window.release()
        self._metrics.publishes += 1
        self._metrics.device(record.device).delivered += record.items
        acked.append(record.seq)
        acked_event.set()

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
