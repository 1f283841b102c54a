"""The local alarm channel: every alarm event published at once on a local broker, apart from the cloud.

`{topic_prefix}/{gateway}/alarms/{device}` carries one JSON alarm per message (QoS 1): the same fields as the
uplink's alarm items.  Off loopback the channel is mutual TLS (as the uplink), with optional username/password.
A full queue drops the oldest event and counts it: a local display must get the newest
alarms, and the uplink still carries every alarm durably.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time

from cloud_sync.mqtt import MqttClient, MqttError
from gateway.config import LocalAlarmChannel
from gateway.core.logs import get_logger
from gateway.core.model import Alarm
from gateway.core.reconnect import ReconnectPolicy

log = get_logger(__name__)

QUEUE = 1000
PUBLISH_TIMEOUT_S = 10.0


class LocalAlarmPublisher:
    def __init__(
        self,
        config: LocalAlarmChannel,
        gateway_id: str,
        *,
        tls_context: ssl.SSLContext | None = None,
        password: str | None = None,
    ) -> None:
        self._config = config
        self._gateway_id = gateway_id
        self._tls = tls_context
        self._password = password
        self._queue: asyncio.Queue[Alarm] = asyncio.Queue(QUEUE)
        self.published = 0
        self.dropped = 0

    def offer(self, alarm: Alarm) -> None:
        """Called by the pipeline the moment an alarm is raised, changed or cleared; never blocks."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(alarm)

    async def run(self) -> None:
        reconnect = ReconnectPolicy(initial_s=0.4, max_s=10.0)
        unsent: Alarm | None = None  # taken from the queue but not acknowledged when the broker went away
        while True:
            try:
                async with MqttClient(
                    self._config.host,
                    self._config.port,
                    client_id=f"iomt-local-alarms-{self._gateway_id}",
                    protocol=self._config.protocol,
                    username=self._config.username,
                    password=self._password,
                    tls_context=self._tls,
                    timeout_s=PUBLISH_TIMEOUT_S,
                ) as client:
                    if reconnect.succeeded():
                        log.info("local alarm broker reachable again", host=self._config.host)
                    while True:
                        alarm = unsent if unsent is not None else await self._queue.get()
                        unsent = alarm
                        await client.publish(self._topic(alarm), self._payload(alarm), timeout_s=PUBLISH_TIMEOUT_S)
                        unsent = None
                        self.published += 1
            except MqttError:
                delay = reconnect.failed()
                if reconnect.first_failure:
                    log.warning(
                        "local alarm broker unreachable; will retry", host=self._config.host, port=self._config.port
                    )
                await asyncio.sleep(delay)

    def _topic(self, alarm: Alarm) -> str:
        return f"{self._config.topic_prefix}/{self._gateway_id}/alarms/{alarm.device_id}"

    @staticmethod
    def _payload(alarm: Alarm) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "id": alarm.id,
                "alarm_id": alarm.alarm_id,
                "device": alarm.device_id,
                "condition": alarm.condition,
                "kind": alarm.kind.value,
                "priority": alarm.priority.value,
                "state": alarm.state.value,
                "code": alarm.quantity.code if alarm.quantity else None,
                "detail": alarm.detail,
                "t_gw": alarm.gateway_time_ns,
                "published_ns": time.time_ns(),
            }
        ).encode()
