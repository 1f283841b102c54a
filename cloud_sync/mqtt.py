"""aiomqtt's client, plus what store-and-forward needs that aiomqtt does not give: the PUBACK reason code, and
calls that never lose a stop.

Under MQTT 5 a broker can acknowledge a publish and still refuse it (reason code >= 0x80, e.g. 0x87 "not
authorized" when an ACL denies the topic).  A row may only leave the buffer on a successful PUBACK, so the
uplink needs the code.  Under MQTT 3.1.1 the broker has no way to say so (Mosquitto acks and discards a
denied publish); that is why the gateway defaults to MQTT 5.

aiomqtt bounds each call with asyncio.wait_for, which on Python 3.11 returns the result when the broker's answer
and a cancellation land in the same turn of the event loop: the cancellation is lost (CPython gh-86296, fixed in
3.12 where wait_for is built on asyncio.timeout).  A SIGTERM that met a SUBACK or a PUBACK so left one of the
uplink's loops running (the downlink waiting for messages, the health loop sleeping), and the task group that
stops them waited for it forever: the daemon hung on shutdown (paho then logs an on_subscribe KeyError for the
SUBACK of a subscribe that was cancelled).  `call_keeping_stop` and `raise_if_stopping` give the stop back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

SUCCESS = 0
NO_MATCHING_SUBSCRIBERS = 0x10  # a success: the broker took the message, nobody is subscribed yet

T = TypeVar("T")


def raise_if_stopping() -> None:
    """Raise CancelledError if the running task was asked to stop yet is still running (a call lost the stop)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def call_keeping_stop(call: Awaitable[T]) -> T:
    """Await an aiomqtt call; if a stop arrived together with its answer and the call dropped it, raise it."""
    result = await call
    raise_if_stopping()
    return result


class AckingClient(aiomqtt.Client):
    """An aiomqtt Client whose `publish_acked` returns the broker's PUBACK reason code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reasons: dict[int, int] = {}

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        if len(self._reasons) > 65_536:  # mids of cancelled publishes: bounded by the 16-bit mid space
            self._reasons.clear()
        self._reasons[mid] = reason_code.value
        super()._on_publish(client, userdata, mid, reason_code, properties)

    @property
    def socket(self) -> object:
        """The connected socket (an ssl.SSLSocket under TLS), for checks such as key pinning."""
        return self._client.socket()

    async def publish_acked(self, topic: str, payload: bytes, *, qos: int = 1, timeout_s: float | None = None) -> int:
        """Publish and wait for the broker's acknowledgement; its reason code (< 0x80 means accepted)."""
        if not self._connected.done() or self._disconnected.done():
            raise aiomqtt.MqttError("not connected")
        info = self._client.publish(topic, payload, qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if not info.is_published():
            confirmation = asyncio.Event()
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await self._wait_for(confirmation.wait(), timeout=timeout_s)
        return self._reasons.pop(info.mid, SUCCESS)
