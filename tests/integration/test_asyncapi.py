"""The AsyncAPI document is the contract: what the gateway publishes validates against its schemas."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from jsonschema import Draft202012Validator

from cloud_sync.mqtt import MqttClient
from cloud_sync.uplink import _state_payload
from gateway.core.model import (
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    CommandOutcome,
    CommandResult,
    ConnectionState,
    DeviceStatus,
    Lane,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
)
from gateway.core.nomenclature import quantity
from gateway.core.wire import WAVEFORM_MAGIC, encode_batch, encode_message
from tests.conftest import Mosquitto, make_config
from tests.support.harness import running_gateway

DOC = yaml.safe_load((Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml").read_text())


def validator(schema: str) -> Draft202012Validator:
    return Draft202012Validator({**DOC, "$ref": f"#/components/schemas/{schema}"})


def test_document_is_asyncapi_3_with_every_lane() -> None:
    assert DOC["asyncapi"].startswith("3.")
    lanes = DOC["channels"]["uplink"]["parameters"]["lane"]["enum"]
    assert lanes == [lane.topic_name for lane in Lane]
    for example in DOC["components"]["messages"]["jsonMessage"]["examples"]:
        validator("JsonMessage").validate(example["payload"])


def _events() -> dict[Lane, list[Any]]:
    q = quantity("MDC_PULS_OXIM_SAT_O2")
    return {
        Lane.NUMERICS: [
            Observation(new_id(), "ox", q, 97.5, None, now_ns()),
            Observation(new_id(), "ox", q, float("nan"), 5, now_ns()),
        ],
        Lane.DEVICE_STATUS: [
            DeviceStatus(new_id(), "ox", ConnectionState.CONNECTED, now_ns(), battery_pct=80.0, detail={"reason": "x"})
        ],
        Lane.ALARMS: [
            Alarm(
                new_id(),
                "ox",
                "MDC_PULS_OXIM_SAT_O2.low",
                AlarmKind.PHYSIOLOGICAL,
                AlarmPriority.HIGH,
                AlarmState.ACTIVE,
                now_ns(),
                q,
            ),
            Alarm(
                new_id(),
                "gw",
                "buffer_evicting",
                AlarmKind.TECHNICAL,
                AlarmPriority.MEDIUM,
                AlarmState.ACTIVE,
                now_ns(),
                detail={"rows": "3"},
            ),
        ],
        Lane.COMMAND_RESULTS: [CommandResult(new_id(), "cmd-1", "pump", CommandOutcome.REJECTED, now_ns(), "expired")],
    }


@pytest.mark.parametrize("lane", [Lane.NUMERICS, Lane.DEVICE_STATUS, Lane.ALARMS, Lane.COMMAND_RESULTS])
def test_json_lane_messages_validate(lane: Lane) -> None:
    events = _events()[lane]
    message = encode_message(lane, [encode_batch("gw", "ox", "pt-1", lane, events)] * 2)
    validator("JsonMessage").validate(json.loads(message))


@pytest.mark.parametrize(
    ("lane", "schema"),
    [
        (Lane.NUMERICS, "NumericItem"),
        (Lane.DEVICE_STATUS, "StatusItem"),
        (Lane.ALARMS, "AlarmItem"),
        (Lane.COMMAND_RESULTS, "CommandResultItem"),
    ],
)
def test_every_field_sent_is_documented(lane: Lane, schema: str) -> None:
    """A field the gateway adds to an item appears in the contract (the schemas allow unknown fields)."""
    documented = set(DOC["components"]["schemas"][schema]["properties"])
    for item in json.loads(encode_batch("gw", "ox", None, lane, _events()[lane]))["items"]:
        assert set(item) <= documented, set(item) - documented


def test_alarm_events_carry_the_alarm_id() -> None:
    raised = _events()[Lane.ALARMS][0]
    acked = Alarm(
        new_id(),
        "ox",
        raised.condition,
        raised.kind,
        raised.priority,
        AlarmState.ACKNOWLEDGED,
        now_ns(),
        alarm_id=raised.alarm_id,
    )
    items = json.loads(encode_batch("gw", "ox", None, Lane.ALARMS, [raised, acked]))["items"]
    assert [i["alarm_id"] for i in items] == [raised.id, raised.id] and items[0]["id"] != items[1]["id"]
    for item in items:
        validator("AlarmItem").validate(item)
    legacy = {k: v for k, v in items[0].items() if k != "alarm_id"}  # stored before the field existed
    validator("AlarmItem").validate(legacy)


def test_waveform_headers_validate() -> None:
    chunk = WaveformChunk(
        new_id(), "ecg", quantity("MDC_ECG_ELEC_POTL"), np.arange(50, dtype=np.int32), 130.0, 1.0, 0.0, 0, now_ns()
    )
    payload = encode_batch("gw", "ecg", None, Lane.WAVEFORMS, [chunk])
    assert payload.startswith(WAVEFORM_MAGIC)
    (length,) = struct.unpack_from(">I", payload, len(WAVEFORM_MAGIC) + 1)
    header = json.loads(payload[len(WAVEFORM_MAGIC) + 5 : len(WAVEFORM_MAGIC) + 5 + length])
    validator("WaveformHeader").validate(header)


async def test_state_and_health_as_published_validate(tmp_path: Path, mosquitto: Mosquitto) -> None:
    validator("State").validate(json.loads(_state_payload("online")))
    config = make_config(tmp_path / "state", mosquitto.port, mqtt={"health_interval_s": 0.2})
    async with running_gateway(config) as run:
        await run.wait_until(lambda: run.gateway.metrics.publishes > 3)
        await asyncio.sleep(0.5)
        async with MqttClient("127.0.0.1", mosquitto.port, client_id=f"h-{time.time_ns()}") as client:
            await client.subscribe("iomt/v1/test-gw/health", qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(client.messages))
        health = json.loads(bytes(message.payload))
        validator("Health").validate(health)
        assert health["devices"]["ox-1"]["received"] > 0
        await run.finish()
