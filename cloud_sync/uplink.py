"""Uplink: drain the buffer to the broker, QoS 1, deleting rows only after the broker accepted them.

Each message carries the rows of one lane, highest-priority lane first and oldest first, up to the message
size cap; a token bucket holds publishes under the rate cap, and a bounded number of messages is in flight.
Rows are read only once a token and an in-flight slot are free, so nothing waits in a queue of its own: an
alarm committed while a backlog drains is in the very next message.  Under load, messages simply grow, so the
rate cap never makes a backlog grow without bound.  On any connection failure the in-flight rows stay in the
buffer and are re-sent after reconnecting (the receiver de-duplicates by id); reconnects use jittered, capped
backoff.  A publish the broker refuses (MQTT 5 PUBACK reason code >= 0x80) is counted and logged, and its
rows stay in the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from enum import StrEnum

from cloud_sync.config import MqttSection
from cloud_sync.mqtt import REFUSED, MqttClient, MqttError, Will
from cloud_sync.ratelimit import TokenBucket
from cloud_sync.tls import peer_certificate, spki_sha256
from gateway.core.backlog import Backlog, StoredRecord
from gateway.core.logs import get_logger
from gateway.core.model import Lane
from gateway.core.reconnect import ReconnectPolicy
from gateway.core.stats import Metrics
from gateway.core.wire import encode_message, message_overhead

log = get_logger(__name__)

MAX_ROWS_PER_MESSAGE = 512
MQTT_HEADER_BYTES = 8  # fixed header, topic length and packet id of a QoS 1 PUBLISH, roughly
SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps the gateway's session through a week-long outage
OFFLINE_NOTICE_TIMEOUT_S = 2.0
CALL_TIMEOUT_S = 10.0  # connect, subscribe, disconnect and the small state and health publishes


class PinMismatchError(MqttError):
    """The broker's certificate chains to the CA but its key is not one of the pinned ones."""


class SyncState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"


def uplink_topic(prefix: str, gateway_id: str, lane: Lane) -> str:
    return f"{prefix}/{gateway_id}/up/{lane.topic_name}"


def commands_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/down/commands"


def config_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/down/config"


def health_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/health"


def state_topic(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/state"


def _state_payload(state: str) -> bytes:
    return json.dumps({"v": 1, "state": state, "t_gw": time.time_ns()}).encode()


def mqtt_client(
    config: MqttSection, client_id: str, tls: ssl.SSLContext | None, will: Will | None = None
) -> MqttClient:
    """A client with a persistent session, in the configured protocol version."""
    return MqttClient(
        config.host,
        config.port,
        client_id=client_id,
        protocol=config.protocol,
        clean_start=False,
        session_expiry_s=SESSION_EXPIRY_S,  # MQTT 5; under 3.1.1 a session without clean start never expires
        keepalive_s=config.keepalive_s,
        tls_context=tls,
        will=will,
        timeout_s=CALL_TIMEOUT_S,
        max_inflight=config.inflight_window + 2,  # the data window, the health and the state messages
    )


class Uplink:
    """Owns the gateway's MQTT connection and drains the buffer through it."""

    def __init__(
        self,
        config: MqttSection,
        buffer: Backlog,
        stored: asyncio.Event,
        metrics: Metrics,
        *,
        gateway_id: str,
        tls_context: ssl.SSLContext | None,
        downlink: asyncio.Queue[tuple[str, bytes]] | None = None,
    ) -> None:
        self._config = config
        self._downlink = downlink
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
        self._limiter = TokenBucket(config.max_publishes_per_s)
        self._reconnect = ReconnectPolicy(config.reconnect_initial_s, config.reconnect_max_s)
        self._wake_reconnect = asyncio.Event()
        self._started = time.monotonic()
        # Bytes of records one MQTT message may carry: the broker's limit less topic, framing and MQTT header.
        topic = len(uplink_topic(config.topic_prefix, gateway_id, Lane.COMMAND_RESULTS))
        framing = max(message_overhead(lane, MAX_ROWS_PER_MESSAGE) for lane in Lane)
        self._payload_budget = config.max_message_bytes - topic - framing - MQTT_HEADER_BYTES

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _set_state(self, state: SyncState) -> None:
        self.state = state

    async def run(self) -> None:
        """Connect, drain, and reconnect forever (until cancelled)."""
        topic = state_topic(self._config.topic_prefix, self._gateway_id)
        while True:
            self.heartbeat = time.monotonic()
            self._set_state(SyncState.CONNECTING)
            will = Will(topic, _state_payload("offline"), qos=1, retain=True)
            failure: BaseException | None = None
            try:
                async with mqtt_client(self._config, self._client_id, self._tls, will) as client:
                    self._check_pin(client)
                    ended = self._reconnect.succeeded()
                    if ended:
                        log.info("broker connection restored", host=self._config.host, attempt=ended)
                        self._metrics.reconnects += 1
                    self.last_error = None
                    self._set_state(SyncState.ONLINE)
                    await client.publish(topic, _state_payload("online"), retain=True, timeout_s=CALL_TIMEOUT_S)
                    try:
                        await self._drain(client)
                    except asyncio.CancelledError:
                        # A clean stop: say so, since the broker only sends the will on an unclean one.
                        with contextlib.suppress(MqttError):
                            await client.publish(
                                topic, _state_payload("offline"), retain=True, timeout_s=OFFLINE_NOTICE_TIMEOUT_S
                            )
                        raise
            except* MqttError as group:
                failure = group.exceptions[0]
            # A stop that met a broker error on its way out (a task group reports its children's errors rather
            # than the stop) is still a stop: never a reason to reconnect.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            self._inflight = set()
            self.last_error = type(failure).__name__
            self._set_state(SyncState.OFFLINE)
            # Retrying fast cannot fix a wrong key.
            delay = self._reconnect.failed(hopeless=isinstance(failure, PinMismatchError))
            if self._reconnect.first_failure:
                log.warning(
                    "broker connection failed; will retry",
                    host=self._config.host,
                    port=self._config.port,
                    error=self.last_error,
                    delay_s=round(delay, 2),
                )
            else:
                log.debug("broker still unreachable", attempt=self._reconnect.failures, delay_s=round(delay, 2))
            self._wake_reconnect.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake_reconnect.wait()

    def wake(self) -> None:
        """`sync now`: end a reconnect backoff at once, and look for new rows at once."""
        self._wake_reconnect.set()
        self._stored.set()

    def _check_pin(self, client: MqttClient) -> None:
        """With pins configured, the broker's key must be one of them (on top of CA verification)."""
        tls = self._config.tls
        if tls is None or not tls.pin_sha256:
            return
        der = peer_certificate(client.socket)
        if der is None or spki_sha256(der) not in tls.pin_sha256:
            log.error(
                "broker certificate does not match the pinned key; refusing the connection", host=self._config.host
            )
            raise PinMismatchError("broker public key not pinned")

    async def _drain(self, client: MqttClient) -> None:
        cursors: dict[Lane, int] = {}
        inflight: set[int] = set()
        self._inflight = inflight
        slot_freed = asyncio.Event()
        acked: list[int] = []
        acked_event = asyncio.Event()
        window = self._config.inflight_window
        async with asyncio.TaskGroup() as group:
            group.create_task(self._delete_acked(acked, acked_event), name="uplink-delete")
            group.create_task(self._publish_health(client), name="uplink-health")
            if self._downlink is not None:
                group.create_task(self._receive_commands(client, self._downlink), name="downlink")
            while True:
                self.heartbeat = time.monotonic()
                if len(inflight) >= window:
                    slot_freed.clear()
                    await slot_freed.wait()
                    continue
                await self._limiter.acquire()
                self._stored.clear()
                rows = await self._buffer.read_message(cursors, self._payload_budget, MAX_ROWS_PER_MESSAGE)
                self._note_quarantine()
                if not rows:
                    self._limiter.refund()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._stored.wait()
                    continue
                lane = rows[0].lane
                cursors[lane] = max(cursors.get(lane, 0), rows[-1].seq)
                inflight.add(rows[0].seq)
                group.create_task(self._publish(client, lane, rows, inflight, slot_freed, acked, acked_event))

    async def _publish(
        self,
        client: MqttClient,
        lane: Lane,
        rows: list[StoredRecord],
        inflight: set[int],
        slot_freed: asyncio.Event,
        acked: list[int],
        acked_event: asyncio.Event,
    ) -> None:
        topic = uplink_topic(self._config.topic_prefix, self._gateway_id, lane)
        message = encode_message(lane, [row.payload for row in rows])
        try:
            reason = await client.publish(topic, message)
        except MqttError:
            self._metrics.publish_errors += 1
            raise
        finally:
            inflight.discard(rows[0].seq)
            slot_freed.set()
        if reason >= REFUSED:
            # The broker refused it (e.g. an ACL): the rows stay and are retried after the next reconnect.
            self._metrics.publish_refused += 1
            if not self._refusal_logged:
                self._refusal_logged = True
                log.error(
                    "broker refused a publish; rows kept in the buffer",
                    lane=lane.topic_name,
                    status=reason,
                    topic=topic,
                )
            return
        self._metrics.publishes += 1
        self._metrics.wire_bytes[lane.topic_name] += len(message) + len(topic) + MQTT_HEADER_BYTES
        for row in rows:
            self._metrics.device(row.device).delivered += row.items
            acked.append(row.seq)
        acked_event.set()

    async def _receive_commands(self, client: MqttClient, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        """Hand downlink commands and configuration to the command service, in arrival order (the persistent
        session keeps what was sent while the gateway was offline; expired ones are rejected there)."""
        topics = {
            "command": commands_topic(self._config.topic_prefix, self._gateway_id),
            "config": config_topic(self._config.topic_prefix, self._gateway_id),
        }
        for topic in topics.values():
            await client.subscribe(topic, qos=1)
        async for message in client.messages:
            kind = next((k for k, t in topics.items() if message.matches(t)), None)
            if kind is None:
                continue
            try:
                queue.put_nowait((kind, message.payload))
            except asyncio.QueueFull:
                self._metrics.commands_dropped += 1
                log.error("command queue full; command dropped unprocessed", count=self._metrics.commands_dropped)

    async def _publish_health(self, client: MqttClient) -> None:
        """A retained health summary every `health_interval_s`: counts and ages only, never values."""
        topic = health_topic(self._config.topic_prefix, self._gateway_id)
        while True:
            stats = await self._buffer.stats()
            health = {
                "v": 1,
                "t_gw": time.time_ns(),
                "uptime_s": round(time.monotonic() - self._started, 1),
                "backlog": {
                    s.lane.topic_name: {"rows": s.rows, "items": s.items, "oldest_age_s": s.oldest_age_s} for s in stats
                },
                "devices": {
                    device: {"received": c.received, "accepted": c.accepted, "delivered": c.delivered}
                    for device, c in self._metrics.devices.items()
                },
                "sync": {
                    "publishes": self._metrics.publishes,
                    "refused": self._metrics.publish_refused,
                    "reconnects": self._metrics.reconnects,
                    "quarantined_rows": self._metrics.rows_quarantined,
                },
            }
            await client.publish(topic, json.dumps(health).encode(), retain=True, timeout_s=CALL_TIMEOUT_S)
            await asyncio.sleep(self._config.health_interval_s)

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
