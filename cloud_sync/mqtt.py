"""aiomqtt's client, plus the one thing store-and-forward needs that aiomqtt drops: the PUBACK reason code.

Under MQTT 5 a broker can acknowledge a publish and still refuse it (reason code >= 0x80, e.g. 0x87 "not
authorized" when an ACL denies the topic).  A row may only leave the buffer on a successful PUBACK, so the
uplink needs the code.  Under MQTT 3.1.1 the broker has no way to say so (Mosquitto acks and discards a
denied publish); that is why the gateway defaults to MQTT 5.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

SUCCESS = 0
NO_MATCHING_SUBSCRIBERS = 0x10  # a success: the broker took the message, nobody is subscribed yet


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
