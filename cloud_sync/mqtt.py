"""The product's MQTT client: asyncio over paho-mqtt's public external-event-loop API, with PUBACK reason codes.

Under MQTT 5 a broker can acknowledge a publish and still refuse it (reason code >= 0x80, e.g. 0x87 "not
authorized" when an ACL denies the topic).  A row may only leave the buffer on a successful PUBACK, so
`MqttClient.publish` returns the code.  Under MQTT 3.1.1 the broker has no way to say so (Mosquitto acks and
discards a denied publish); that is why the gateway defaults to MQTT 5.

paho owns the protocol (packets, session state, keepalive); this module owns the I/O: paho's `on_socket_*`
callbacks add and remove the socket from the event loop, which calls `loop_read`/`loop_write`, and a task calls
`loop_misc` every second.  paho's connect is blocking (TCP and the TLS handshake), so it runs in the loop's
default executor; the socket joins the loop once that returns, and a connect abandoned meanwhile (cancelled,
timed out) has its socket closed when the thread finishes.  Every wait is an `asyncio.timeout` or a plain
future, never `asyncio.wait_for`, which on Python 3.11 drops a cancellation that lands in the same loop turn as
the answer (CPython gh-86296): a stop is never lost.

Memory is bounded: at most `max_inflight` publishes wait for their PUBACK (fewer if the broker's Receive Maximum
says so; more wait for a slot), and incoming messages wait in a queue of `max_queued_messages`,
which drops the oldest when full and counts it.

With `manual_ack=True` a QoS 1/2 message is acknowledged only when the application calls `ack(message)`
(paho's public `manual_ack` and `Client.ack`): a message taken but never acknowledged stays with a persistent
session, and the broker delivers it again after the next connect.  Such a client should also set
`receive_maximum` (MQTT 5): the broker then holds back anything beyond that many unacknowledged messages, so
the incoming queue never drops one (a dropped message would sit unacknowledged until the next session).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.core.errors import SyncError
from gateway.core.logs import get_logger

log = get_logger(__name__)

SUCCESS = 0
NO_MATCHING_SUBSCRIBERS = 0x10  # a success: the broker took the message, nobody is subscribed yet
REFUSED = 0x80  # reason codes from here up are failures
MISC_INTERVAL_S = 1.0  # how often paho checks keepalive (its own loop uses the same second)


class MqttError(SyncError):
    """The broker could not be reached, refused the connection or a call, or went away."""


class MqttConnectError(MqttError):
    """The broker answered the CONNECT with a failure; `reason` is its CONNACK reason code."""

    def __init__(self, message: str, *, reason: int, reason_name: str) -> None:
        super().__init__(message, reason=reason, reason_name=reason_name)
        self.reason = reason


class MqttConnectionLostError(MqttError):
    """The connection closed while a call waited for the broker's answer (or before the call was made)."""


class MqttTimeoutError(MqttError):
    """The broker did not answer in time."""


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for the client when the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming PUBLISH; `mid` is its packet identifier (0 for QoS 0), what `MqttClient.ack` answers."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int = field(default=0, compare=False)

    def matches(self, topic_filter: str) -> bool:
        """Whether the topic matches a subscription filter (`+` and `#` wildcards)."""
        return paho.topic_matches_sub(topic_filter, self.topic)


class Messages:
    """Async iterator over a client's incoming messages; ends with the connection's error once it closes."""

    def __init__(self, next_message: Callable[[], Awaitable[Message]]) -> None:
        self._next_message = next_message

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Message:
        return await self._next_message()


class MqttClient:
    """One MQTT connection: `async with MqttClient(...) as client:` connects (CONNACK received) and disconnects."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        protocol: Literal["5", "3.1.1"] = "5",
        clean_start: bool = True,
        session_expiry_s: int | None = None,
        keepalive_s: int = 60,
        tls_context: ssl.SSLContext | None = None,
        will: Will | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        max_inflight: int = 20,
        max_queued_messages: int = 1000,
        receive_maximum: int | None = None,
        manual_ack: bool = False,
    ) -> None:
        if receive_maximum is not None and (protocol != "5" or not 0 < receive_maximum < 2**16):
            raise ValueError("receive_maximum is an MQTT 5 property from 1 to 65535")
        self._host = host
        self._port = port
        self._v5 = protocol == "5"
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._manual_ack = manual_ack
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self._v5 else clean_start,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
        )
        self._paho.connect_timeout = timeout_s
        self._paho.max_inflight_messages = max_inflight
        if tls_context is not None:
            self._paho.tls_set_context(tls_context)
        if will is not None:
            self._paho.will_set(will.topic, will.payload, will.qos, will.retain)
        if username is not None:
            self._paho.username_pw_set(username, password)
        self._paho.on_connect = self._on_connect
        self._paho.on_disconnect = self._on_disconnect
        self._paho.on_publish = self._on_publish
        self._paho.on_subscribe = self._on_subscribe
        self._paho.on_message = self._on_message
        self._paho.on_socket_close = self._on_socket_close
        self._paho.on_socket_register_write = self._on_socket_register_write
        self._paho.on_socket_unregister_write = self._on_socket_unregister_write
        self._max_inflight = max_inflight
        self._window = asyncio.Semaphore(max_inflight)
        self._acks: dict[int, asyncio.Future[int]] = {}  # mid -> PUBACK reason code; at most max_inflight
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._incoming: deque[Message] = deque(maxlen=max_queued_messages)
        self._incoming_changed = asyncio.Event()
        self._unacked: dict[int, Message] = {}  # mid -> message taken with manual_ack and not yet acknowledged
        self.messages_dropped = 0
        self.messages = Messages(self._next_message)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._fd: int | None = None  # the socket while it is attached to the event loop
        self._connack: asyncio.Future[None] | None = None
        self._closed_reason: str | None = None  # set once the connection has ended
        self._closed = asyncio.Event()
        self._misc: asyncio.Task[None] | None = None

    # -- the connection -----------------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connack = self._loop.create_future()
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._open_socket()
                self._attach()
                await self._connack
        except TimeoutError:
            self._connack.cancel()
            self._close_now("connect timed out")
            raise MqttTimeoutError("no CONNACK in time", timeout_s=self._timeout_s) from None
        except BaseException:
            self._connack.cancel()  # nobody will wait for it
            self._close_now("connect failed")
            raise
        self._misc = asyncio.create_task(self._misc_loop(), name=f"mqtt-misc-{self._host}:{self._port}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._paho.is_connected():
                self._paho.disconnect()  # queued; the writer sends it and paho closes the socket
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._timeout_s):
                        await self._closed.wait()
        finally:
            if self._misc is not None:
                self._misc.cancel()
                await asyncio.wait({self._misc})
            self._close_now("client closed")

    async def _open_socket(self) -> None:
        """paho's blocking connect (TCP, TLS handshake, CONNECT queued) in a worker thread."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        properties = None
        if self._v5 and (self._session_expiry_s is not None or self._receive_maximum is not None):
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if self._session_expiry_s is not None:
                properties.SessionExpiryInterval = self._session_expiry_s
            if self._receive_maximum is not None:
                properties.ReceiveMaximum = self._receive_maximum

        def deliver(error: BaseException | None) -> None:
            if opened.cancelled():  # the caller gave up meanwhile: close what the thread opened
                self._discard_socket()
            elif error is not None:
                opened.set_exception(error)
            else:
                opened.set_result(None)

        def connect() -> None:
            error: BaseException | None = None
            try:
                if self._v5:
                    self._paho.connect(
                        self._host, self._port, self._keepalive_s, clean_start=self._clean_start, properties=properties
                    )
                else:
                    self._paho.connect(self._host, self._port, self._keepalive_s)
            except (OSError, ValueError) as err:  # ssl.CertificateError is a ValueError too
                error = MqttError(
                    "cannot connect to the broker", host=self._host, port=self._port, error=type(err).__name__
                )
            except Exception as err:  # noqa: BLE001 -- a bug, not the network: handed to the caller as it is
                error = err
            try:
                loop.call_soon_threadsafe(deliver, error)
            except RuntimeError:  # the loop is closed: nobody will ever attach the socket
                self._discard_socket()

        _ = loop.run_in_executor(None, connect)
        await opened

    def _discard_socket(self) -> None:
        sock = self._paho.socket()
        if sock is not None:
            sock.close()

    def _attach(self) -> None:
        """Hand the connected socket to the event loop (reads always; writes while paho has bytes to send)."""
        loop = asyncio.get_running_loop()
        sock = self._paho.socket()
        if sock is None:
            raise MqttConnectionLostError("connection closed while connecting")
        self._fd = sock.fileno()
        loop.add_reader(self._fd, self._on_readable)
        loop.add_writer(self._fd, self._on_writable)  # the CONNECT paho queued

    def _detach(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None

    def _close_now(self, reason: str) -> None:
        """End the connection without a DISCONNECT (after one was sent, or when there is no session)."""
        self._detach()
        self._discard_socket()
        self._ended(reason)

    def _ended(self, reason: str) -> None:
        """The connection is over: every waiting call fails, the message iterator ends after what is queued."""
        if self._closed_reason is None:
            self._closed_reason = reason
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttConnectionLostError("connection closed before CONNACK", reason=reason))
        for waiters in (self._acks, self._subacks):
            for future in waiters.values():
                if not future.done():
                    future.set_exception(MqttConnectionLostError("connection lost", reason=reason))
        self._incoming_changed.set()
        self._closed.set()

    def _lost(self) -> MqttConnectionLostError:
        return MqttConnectionLostError("not connected", reason=self._closed_reason or "not connected yet")

    @property
    def socket(self) -> object:
        """The connected socket (an ssl.SSLSocket under TLS), for checks such as key pinning."""
        return self._paho.socket()

    # -- calls --------------------------------------------------------------------------------------------------
    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float | None = None
    ) -> int:
        """Publish; for QoS 1, wait for the PUBACK and return its reason code (< 0x80 means accepted).

        Without `timeout_s` the wait ends with the PUBACK or with the connection (keepalive finds a dead link):
        a large message on a slow link may take long, and a timeout would only re-send it.
        """
        try:
            async with asyncio.timeout(timeout_s), self._window:
                return await self._publish(topic, payload, qos, retain)
        except TimeoutError:
            raise MqttTimeoutError("no PUBACK in time", timeout_s=timeout_s) from None

    async def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        if self._closed_reason is not None or not self._paho.is_connected():
            raise self._lost()
        info = self._paho.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttConnectionLostError("publish not sent", rc=paho.error_string(info.rc))
        if qos == 0:
            return SUCCESS
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = ack  # at most max_inflight entries: each holds a slot of the window
        try:
            return await ack
        finally:
            del self._acks[info.mid]

    async def subscribe(self, topic_filter: str, qos: int = 1) -> list[int]:
        """Subscribe and wait for the SUBACK; its reason codes (granted QoS, or >= 0x80 when refused)."""
        if self._closed_reason is not None or not self._paho.is_connected():
            raise self._lost()
        rc, mid = self._paho.subscribe(topic_filter, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttConnectionLostError("subscribe not sent", rc=paho.error_string(rc))
        answer: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = answer
        try:
            async with asyncio.timeout(self._timeout_s):
                return await answer
        except TimeoutError:
            raise MqttTimeoutError("no SUBACK in time", timeout_s=self._timeout_s) from None
        finally:
            del self._subacks[mid]

    def ack(self, message: Message) -> None:
        """Acknowledge a message this connection delivered (needs `manual_ack=True`); QoS 0 needs nothing.

        Acknowledging twice, or after the connection ended, sends nothing: an unacknowledged message is the
        session's, and the broker delivers it again on the next connection.
        """
        if not self._manual_ack:
            raise RuntimeError("ack() needs MqttClient(manual_ack=True): paho acknowledges every message itself")
        if message.qos == 0 or self._unacked.get(message.mid) is not message:
            return
        del self._unacked[message.mid]
        if self._closed_reason is None and self._paho.is_connected():
            self._paho.ack(message.mid, message.qos)

    async def _next_message(self) -> Message:
        while True:
            if self._incoming:
                return self._incoming.popleft()
            if self._closed_reason is not None:
                raise self._lost()
            self._incoming_changed.clear()
            await self._incoming_changed.wait()

    # -- the event loop's side ----------------------------------------------------------------------------------
    def _on_readable(self) -> None:
        self._paho.loop_read()
        sock = self._paho.socket()
        # TLS may hold decrypted bytes the socket no longer signals as readable.
        while isinstance(sock, ssl.SSLSocket) and sock.pending() and self._paho.socket() is sock:
            self._paho.loop_read()

    def _on_writable(self) -> None:
        self._paho.loop_write()
        if self._fd is not None and not self._paho.want_write() and self._loop is not None:
            self._loop.remove_writer(self._fd)

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if self._paho.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return

    # -- paho's callbacks (on the loop's thread, except those the connect thread triggers, which are ignored) ----
    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._on_loop_thread() and self._fd is not None and self._loop is not None:
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._on_loop_thread() and self._fd is not None and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._on_loop_thread():
            self._detach()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connack is None or self._connack.done():
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None)  # MQTT 5; paho does not apply it itself
        if isinstance(receive_maximum, int) and 0 < receive_maximum < self._max_inflight:
            # More unacknowledged publishes than the broker's Receive Maximum is a protocol error a broker may
            # disconnect for (Mosquitto tolerates it).  No publish can hold a slot yet: the window is replaced.
            self._window = asyncio.Semaphore(receive_maximum)
        if reason_code.is_failure:
            self._connack.set_exception(
                MqttConnectError(
                    "the broker refused the connection", reason=reason_code.value, reason_name=str(reason_code)
                )
            )
        else:
            self._connack.set_result(None)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._ended(f"disconnected: {reason_code}")

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        ack = self._acks.get(mid)  # absent when the publisher was cancelled
        if ack is not None and not ack.done():
            ack.set_result(reason_code.value)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        answer = self._subacks.get(mid)
        if answer is not None and not answer.done():
            answer.set_result([code.value for code in reason_codes])

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # not a valid topic name: nothing could subscribe to it
            if self._manual_ack:
                self._paho.ack(message.mid, message.qos)  # nobody will, and it would hold a slot of the session
            return
        if len(self._incoming) == self._incoming.maxlen:
            self.messages_dropped += 1
            if self.messages_dropped == 1:
                log.warning("incoming message queue full; dropping the oldest", host=self._host)
        received = Message(topic, bytes(message.payload), message.qos, bool(message.retain), message.mid)
        if self._manual_ack and received.qos > 0:
            self._unacked[received.mid] = received  # a mid is reused only once acknowledged: at most 65535 here
        self._incoming.append(received)
        self._incoming_changed.set()
