"""The product's MQTT client against a real Mosquitto: PUBACK reason codes, typed errors for refusals, timeouts
and a broker that goes away, stops that are never lost, and bounded message iteration."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.mqtt import (
    NO_MATCHING_SUBSCRIBERS,
    REFUSED,
    SUCCESS,
    Message,
    MqttClient,
    MqttConnectError,
    MqttConnectionLostError,
    MqttError,
    MqttTimeoutError,
)
from tests.conftest import Mosquitto, free_port, start_mosquitto

NOT_AUTHORIZED = 0x87


def client(broker: Mosquitto, name: str, **options: Any) -> MqttClient:
    return MqttClient("127.0.0.1", broker.port, client_id=f"{name}-{time.time_ns()}", **options)


@contextlib.contextmanager
def frozen(broker: Mosquitto) -> Iterator[None]:
    """The broker keeps its connections but answers nothing (SIGSTOP), as a hung broker would."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if broker.process is not None:
            os.kill(broker.process.pid, signal.SIGCONT)


def kill(broker: Mosquitto) -> None:
    """The broker dies at once (SIGKILL works on a stopped process too); the kernel closes its sockets."""
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait(10)
    broker.process = None


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite allowed/#\n")  # anything else is denied
    broker = start_mosquitto(tmp_path, f"acl_file {acl}\n")
    yield broker
    broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker this test may freeze or kill."""
    broker = start_mosquitto(tmp_path)
    yield broker
    broker.stop()


async def test_puback_reason_codes_say_accepted_or_refused_under_mqtt5(acl_broker: Mosquitto) -> None:
    async with client(acl_broker, "acl") as mqtt:
        assert await mqtt.publish("allowed/x", b"1") in {SUCCESS, NO_MATCHING_SUBSCRIBERS}
        refused = await mqtt.publish("denied/x", b"1")
        assert refused == NOT_AUTHORIZED and refused >= REFUSED
        assert await mqtt.publish("allowed/x", b"2", retain=True) < REFUSED  # the connection is still good


async def test_mqtt311_cannot_say_a_publish_was_refused(acl_broker: Mosquitto) -> None:
    """Why the gateway defaults to MQTT 5: under 3.1.1 Mosquitto acks a denied publish and drops it."""
    async with client(acl_broker, "acl311", protocol="3.1.1") as mqtt:
        assert await mqtt.publish("denied/x", b"1") == SUCCESS


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_refused_connect_carries_the_connack_reason(tmp_path: Path, protocol: str) -> None:
    broker = start_mosquitto(tmp_path, "allow_anonymous false\n")
    try:
        with pytest.raises(MqttConnectError) as refused:
            async with client(broker, "anon", protocol=protocol):
                pass
        assert refused.value.reason == NOT_AUTHORIZED  # paho maps 3.1.1's code 5 onto the MQTT 5 code
    finally:
        broker.stop()


async def test_nobody_listening_is_a_plain_mqtt_error() -> None:
    with pytest.raises(MqttError) as failed:
        async with MqttClient("127.0.0.1", free_port(), client_id="nobody"):
            pass
    assert type(failed.value) is MqttError  # what the uplink reports as its last error
    assert failed.value.fields["error"] == "ConnectionRefusedError"


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts TCP connections and never answers: a CONNECT goes unanswered."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_connect_times_out_without_a_connack() -> None:
    async with silent_server() as port:
        started = time.monotonic()
        with pytest.raises(MqttTimeoutError):
            async with MqttClient("127.0.0.1", port, client_id="silent", timeout_s=0.5):
                pass
        assert time.monotonic() - started < 3


async def test_publish_times_out_when_the_broker_stops_answering(own_broker: Mosquitto) -> None:
    async with client(own_broker, "frozen", timeout_s=1.0) as mqtt:
        with frozen(own_broker), pytest.raises(MqttTimeoutError):
            await mqtt.publish("t/x", b"1", timeout_s=0.3)
        assert await mqtt.publish("t/x", b"2", timeout_s=5) < REFUSED  # it answers again once thawed


async def test_broker_going_away_mid_publish_fails_every_waiting_call(own_broker: Mosquitto) -> None:
    async with client(own_broker, "dying", keepalive_s=5) as mqtt:
        await mqtt.subscribe("t/#")
        with frozen(own_broker):
            publishes = [asyncio.create_task(mqtt.publish("t/x", str(n).encode())) for n in range(5)]
            reading = asyncio.create_task(anext(mqtt.messages))
            await asyncio.sleep(0.2)
            assert not any(p.done() for p in publishes), "waiting for PUBACKs the frozen broker cannot send"
            kill(own_broker)
        async with asyncio.timeout(10):
            results = await asyncio.gather(*publishes, reading, return_exceptions=True)
        assert all(isinstance(r, MqttConnectionLostError) for r in results), results
        with pytest.raises(MqttConnectionLostError):
            await mqtt.publish("t/x", b"after")


async def test_a_cancelled_publish_is_cancelled_whenever_the_stop_lands(mosquitto: Mosquitto) -> None:
    """Stopped at successive loop turns, through sending and the PUBACK's arrival: a cancel the task accepted
    always ends it with CancelledError (asyncio.wait_for on Python 3.11 could return the answer instead), and
    the cancelled publishes give their in-flight slots back."""
    outcomes = {"cancelled": 0, "finished first": 0}
    async with client(mosquitto, "stops", max_inflight=2) as mqtt, asyncio.timeout(60):
        # At least 60 instants, and on until the broker's answer beat the stop at least once (a loaded machine
        # needs more loop turns for the PUBACK to arrive).
        for turns in itertools.count():
            if turns >= 60 and outcomes["finished first"] > 0:
                break
            task = asyncio.create_task(mqtt.publish("t/stops", b"x"))
            for _ in range(turns):
                await asyncio.sleep(0)
            if task.cancel():
                with pytest.raises(asyncio.CancelledError):
                    await task
                outcomes["cancelled"] += 1
            else:
                assert task.result() < REFUSED
                outcomes["finished first"] += 1
        assert outcomes["cancelled"] > 0 and outcomes["finished first"] > 0, outcomes
        async with asyncio.timeout(5):
            assert await mqtt.publish("t/stops", b"after") < REFUSED


async def test_a_cancelled_connect_is_cancelled_and_leaves_nothing_open(mosquitto: Mosquitto) -> None:
    """Stopped at successive instants through the connect (a worker thread, then the CONNACK): always a
    CancelledError; the leak check then finds no socket the abandoned connect opened."""

    async def connect_and_hold() -> None:
        async with client(mosquitto, "cancel-connect"):
            await asyncio.Event().wait()

    for delay_ms in (0, 0.1, 0.3, 0.5, 1, 2, 3, 5, 8, 13, 21, 50):
        task = asyncio.create_task(connect_and_hold())
        await asyncio.sleep(delay_ms / 1000)
        assert task.cancel()
        async with asyncio.timeout(10):
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_messages_arrive_in_order_with_their_topic_and_flags(mosquitto: Mosquitto) -> None:
    topic = f"it/{time.time_ns()}"
    async with client(mosquitto, "publisher") as publisher:
        await publisher.publish(f"{topic}/retained", b"kept", retain=True)
        async with client(mosquitto, "reader") as reader:
            assert await reader.subscribe(f"{topic}/#", qos=1) == [1]
            for n in range(3):
                await publisher.publish(f"{topic}/live", str(n).encode())
            received = []
            async with asyncio.timeout(5):
                async for message in reader.messages:
                    received.append(message)
                    if len(received) == 4:
                        break
        await publisher.publish(f"{topic}/retained", b"", retain=True)  # clear it for other tests
    assert [(m.topic, m.payload, m.retain) for m in received] == [
        (f"{topic}/retained", b"kept", True),
        (f"{topic}/live", b"0", False),
        (f"{topic}/live", b"1", False),
        (f"{topic}/live", b"2", False),
    ]
    assert received[1].qos == 1 and received[1].matches(f"{topic}/+") and not received[1].matches("other/#")


async def test_a_reader_that_falls_behind_keeps_the_newest_messages(mosquitto: Mosquitto) -> None:
    topic = f"slow/{time.time_ns()}"
    async with client(mosquitto, "slow-reader", max_queued_messages=5) as reader:
        await reader.subscribe(topic)
        async with client(mosquitto, "fast-publisher") as publisher:
            for n in range(20):
                await publisher.publish(topic, str(n).encode())
        async with asyncio.timeout(5):
            while reader.messages_dropped < 15:
                await asyncio.sleep(0.01)
        kept = [(await anext(reader.messages)).payload for _ in range(5)]
    assert kept == [str(n).encode() for n in range(15, 20)]


async def test_messages_end_with_an_error_once_the_connection_is_gone(own_broker: Mosquitto) -> None:
    async with client(own_broker, "ending") as mqtt:
        await mqtt.subscribe("t/#")
        own_broker.stop()
        async with asyncio.timeout(10):
            with pytest.raises(MqttConnectionLostError):
                await anext(mqtt.messages)


async def test_a_window_wider_than_the_brokers_receive_maximum_is_held_back(tmp_path: Path) -> None:
    """Mosquitto advertises its max_inflight_messages as Receive Maximum (other brokers disconnect a client that
    exceeds theirs): the client narrows its window to it, and every publish of the wider one is still acked."""
    broker = start_mosquitto(tmp_path, "max_inflight_messages 3\n")
    try:
        async with client(broker, "wide", max_inflight=40) as mqtt:
            async with asyncio.timeout(10):
                codes = await asyncio.gather(*(mqtt.publish("t/wide", bytes(2000)) for _ in range(200)))
        assert all(code < REFUSED for code in codes)
    finally:
        broker.stop()


async def test_an_unacknowledged_message_comes_back_to_the_session_and_an_acknowledged_one_does_not(
    mosquitto: Mosquitto,
) -> None:
    """With manual_ack the PUBACK waits for `ack(message)`: what a persistent session took but did not
    acknowledge, the broker delivers again after the next connect; what it acknowledged, never."""
    topic = f"acks/{time.time_ns()}"
    session: dict[str, Any] = {
        "client_id": f"acker-{time.time_ns()}",
        "clean_start": False,
        "session_expiry_s": 300,
        "manual_ack": True,
        "receive_maximum": 10,
    }

    async def next_message(mqtt: MqttClient) -> tuple[str, bytes]:
        async with asyncio.timeout(5):
            message = await anext(mqtt.messages)
        mqtt.ack(message)
        return message.topic, message.payload

    async with client(mosquitto, "acks-publisher") as publisher:
        async with MqttClient("127.0.0.1", mosquitto.port, **session) as reader:
            assert await reader.subscribe(f"{topic}/#", qos=1) == [1]
            await publisher.publish(f"{topic}/acked", b"a")
            await publisher.publish(f"{topic}/kept", b"k")
            async with asyncio.timeout(5):
                acked, kept = await anext(reader.messages), await anext(reader.messages)
            assert (acked.topic, kept.topic, acked.qos, kept.qos) == (f"{topic}/acked", f"{topic}/kept", 1, 1)
            reader.ack(acked)
            reader.ack(acked)  # a second ack sends nothing
        async with MqttClient("127.0.0.1", mosquitto.port, **session) as reader:
            assert await next_message(reader) == (f"{topic}/kept", b"k")  # no resubscribe: the session's
            await publisher.publish(f"{topic}/marker", b"m")
            assert await next_message(reader) == (f"{topic}/marker", b"m")  # "acked" did not come back first
            reader.ack(kept)  # a message of the previous connection: nothing is sent on this one
        async with MqttClient("127.0.0.1", mosquitto.port, **session) as reader:
            await publisher.publish(f"{topic}/marker", b"m2")
            assert await next_message(reader) == (f"{topic}/marker", b"m2")  # everything before was acknowledged
            async with MqttClient("127.0.0.1", mosquitto.port, client_id=session["client_id"]):
                pass  # clean start: the session is discarded


async def test_ack_needs_manual_ack_and_receive_maximum_needs_mqtt5(mosquitto: Mosquitto) -> None:
    async with client(mosquitto, "auto-ack") as mqtt:
        with pytest.raises(RuntimeError):
            mqtt.ack(Message("t/x", b"", 1, False, 1))
    with pytest.raises(ValueError, match="receive_maximum"):
        MqttClient("127.0.0.1", mosquitto.port, client_id="v311", protocol="3.1.1", receive_maximum=10)
