"""The HL7 bridge: PCD-01 and PCD-04 over real MLLP sockets to python-hl7's MLLP server, parsed by hl7apy too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import hl7
import hl7.mllp
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message, parse_segment

from cloud_sync.bridge.hl7 import Hl7Sink, MllpClient, SenderIdentity, messages_for
from cloud_sync.bridge.worker import BridgeWorker, BrokerSettings, Parking
from gateway.core.model import AlarmState, Lane, new_id
from gateway.core.wire import decode_message
from tests.conftest import Mosquitto, free_port
from tests.support.bridging import alarm, message, numerics, publish, running_workers, topic, wait_until


@dataclass
class Engine:
    """An interface engine on python-hl7's MLLP server: answers AA unless told otherwise, de-duplicates by MSH-10."""

    port: int
    received: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # MSH-10 -> ACK code (AE, AR)
    drop_once: set[str] = field(default_factory=set)  # MSH-10 whose first delivery gets no ACK (connection closed)
    unique: dict[str, str] = field(default_factory=dict)
    server: asyncio.Server | None = None

    async def _client(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while True:
                try:
                    message = await reader.readmessage()
                except asyncio.IncompleteReadError:
                    return
                text = str(message)
                self.received.append(text)
                control = str(message.segment("MSH")[10])
                if control in self.drop_once:
                    self.drop_once.discard(control)
                    return  # the ACK is lost: the sender must send it again
                code = self.answers.get(control, "AA")
                if code == "AA":
                    self.unique.setdefault(control, text)
                writer.writemessage(message.create_ack(ack_code=code))
                await writer.drain()
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await hl7.mllp.start_hl7_server(self._client, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    server = Engine(free_port())
    await server.start()
    yield server
    await server.stop()


def _worker(broker: Mosquitto, port: int, park: Path) -> BridgeWorker:
    group = f"h{new_id()[-10:]}"
    return BridgeWorker(
        BrokerSettings("127.0.0.1", broker.port, None),
        Hl7Sink(MllpClient("127.0.0.1", port, timeout_s=2), SenderIdentity(facility="WARD_7")),
        Parking(park),
        group=group,
        client_id=f"{group}-w0",
        concurrency=1,
        retry_initial_s=0.05,
        retry_max_s=0.3,
        report_interval_s=3600,
    )


def _check_with_others_parsers(text: str) -> None:
    parsed = hl7.parse(text)  # python-hl7
    kind = str(parsed.segment("MSH")[9])
    if kind == "ORU^R01^ORU_R01":
        strict = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)  # hl7apy
        strict.validate()
    else:
        assert kind == "ORU^R40^ORU_R40"  # hl7apy has no ORU_R40 structure: each segment strictly on its own
        for segment in text.strip("\r").split("\r"):
            parse_segment(segment, version="2.6", validation_level=VALIDATION_LEVEL.STRICT)


async def test_pcd01_and_pcd04_are_accepted_once_even_when_resent(
    mosquitto: Mosquitto, engine: Engine, tmp_path: Path
) -> None:
    worker = _worker(mosquitto, engine.port, tmp_path / "park")
    gateway = f"gw-{worker.group}"
    sent = [
        (topic(gateway, Lane.NUMERICS), message(gateway, "ox-1", Lane.NUMERICS, numerics("ox-1", 8))),
        (topic(gateway, Lane.NUMERICS), message(gateway, "mon-1", Lane.NUMERICS, numerics("mon-1", 3), patient=None)),
        (
            topic(gateway, Lane.ALARMS),
            message(gateway, "ox-1", Lane.ALARMS, [alarm("ox-1"), alarm("ox-1", AlarmState.CLEARED)]),
        ),
        (topic(gateway, Lane.WAVEFORMS), b"not bridged to HL7: never subscribed"),
    ]
    async with running_workers([worker]):
        await publish(mosquitto.port, sent, client_id=f"{worker.group}-pub")
        await wait_until(lambda: len(engine.unique) == 4, what="two ORU^R01 and two ORU^R40")
        await publish(mosquitto.port, sent, client_id=f"{worker.group}-pub")  # a gateway's resend
        await wait_until(lambda: len(engine.received) == 8, what="the resend")
        # The engine has the last message before the worker has read its ACK and counted it.
        await wait_until(lambda: worker.stats.written == 8, what="the worker counting the last ACK")
    assert len(engine.unique) == 4  # the same MSH-10 each time: the engine keeps each once
    kinds = sorted(str(hl7.parse(t).segment("MSH")[9]) for t in engine.unique.values())
    assert kinds == ["ORU^R01^ORU_R01"] * 2 + ["ORU^R40^ORU_R40"] * 2
    for text in engine.received:
        _check_with_others_parsers(text)
    phases = sorted(
        str(seg[5])
        for text in engine.unique.values()
        for seg in hl7.parse(text).segments("OBX")
        if "MDC_ATTR_EVENT_PHASE" in str(seg[3])
    )
    assert phases == ["end", "start"]
    assert worker.stats.written == 8 and worker.stats.parked_items == 0


async def test_refusals_are_parked_and_a_lost_ack_is_retried(
    mosquitto: Mosquitto, engine: Engine, tmp_path: Path
) -> None:
    worker = _worker(mosquitto, engine.port, tmp_path / "park")
    gateway = f"gw-{worker.group}"
    payloads = [message(gateway, "ox-1", Lane.NUMERICS, numerics("ox-1", 2)) for _ in range(3)]
    controls = [messages_for(decode_message(p), SenderIdentity())[0][0].control_id for p in payloads]
    engine.answers[controls[0]] = "AE"
    engine.answers[controls[1]] = "AR"
    engine.drop_once.add(controls[2])
    async with running_workers([worker]):
        await publish(
            mosquitto.port, [(topic(gateway, Lane.NUMERICS), p) for p in payloads], client_id=f"{worker.group}-p"
        )
        await wait_until(lambda: worker.stats.messages == 3, what="three messages settled")
    assert list(engine.unique) == [controls[2]]  # delivered after its lost ACK
    assert engine.received.count(engine.unique[controls[2]]) == 2
    parked = sorted(json.loads(p.read_text())["reason"] for p in (tmp_path / "park").glob("*.json"))
    assert parked == ["hl7-AE:none"] * 2 + ["hl7-AR:none"] * 2  # two items each
    assert worker.stats.retries >= 1


async def test_store_and_forward_while_the_engine_is_down(mosquitto: Mosquitto, tmp_path: Path) -> None:
    engine = Engine(free_port())  # not listening yet
    worker = _worker(mosquitto, engine.port, tmp_path / "park")
    gateway = f"gw-{worker.group}"
    sent = [(topic(gateway, Lane.ALARMS), message(gateway, "ox-1", Lane.ALARMS, [alarm("ox-1")])) for _ in range(3)]
    async with running_workers([worker]):
        await publish(mosquitto.port, sent, client_id=f"{worker.group}-p")
        await wait_until(lambda: worker.stats.retries >= 3, what="retries while the engine is down")
        assert worker.stats.messages == 0  # nothing acknowledged: the broker keeps them
        await engine.start()
        try:
            await wait_until(lambda: len(engine.unique) == 3, what="delivery once the engine is back")
        finally:
            await engine.stop()
    assert worker.stats.parked_items == 0
