"""The sync API payload format: round-trips, compactness, and typed errors on any malformed payload."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.model import (
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    ConnectionState,
    DeviceStatus,
    Lane,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
)
from gateway.core.nomenclature import quantity
from gateway.core.wire import (
    InvalidPayload,
    decode_batch,
    decode_message,
    encode_batch,
    encode_message,
    message_overhead,
)
from hil.physiology import SyntheticEcg


def test_numeric_batch_is_plain_json_with_codes_units_and_ids() -> None:
    q = quantity("MDC_PULS_OXIM_SAT_O2")
    events = [
        Observation(new_id(), "ox-1", q, 97.5, None, now_ns()),
        Observation(new_id(), "ox-1", q, float("nan"), 5, now_ns()),
    ]
    payload = encode_batch("gw", "ox-1", "pt-1", Lane.NUMERICS, events)
    doc = json.loads(payload)
    assert doc["v"] == 1 and doc["lane"] == "numerics" and doc["patient"] == "pt-1"
    first, second = doc["items"]
    assert first == {
        "id": events[0].id,
        "code": 150456,
        "ref": "MDC_PULS_OXIM_SAT_O2",
        "unit": "%",
        "value": 97.5,
        "t_dev": None,
        "t_gw": events[0].gateway_time_ns,
    }
    assert second["value"] is None and second["special"] == "nan"
    assert decode_batch(payload).items[0]["id"] == events[0].id


def test_status_and_alarm_batches_round_trip() -> None:
    status = DeviceStatus(
        new_id(), "pump", ConnectionState.CONNECTED, now_ns(), battery_pct=80.0, detail={"therapy_control_state": "run"}
    )
    alarm = Alarm(
        new_id(),
        "ox-1",
        "MDC_PULS_OXIM_SAT_O2.low",
        AlarmKind.PHYSIOLOGICAL,
        AlarmPriority.HIGH,
        AlarmState.ACTIVE,
        now_ns(),
        quantity("MDC_PULS_OXIM_SAT_O2"),
    )
    s = decode_batch(encode_batch("gw", "pump", None, Lane.DEVICE_STATUS, [status]))
    assert s.lane is Lane.DEVICE_STATUS and s.items[0]["battery_pct"] == 80.0
    a = decode_batch(encode_batch("gw", "ox-1", None, Lane.ALARMS, [alarm]))
    assert a.items[0]["priority"] == "high" and a.items[0]["code"] == 150456


def _chunk(samples: np.ndarray) -> WaveformChunk:
    return WaveformChunk(
        new_id(), "ecg", quantity("MDC_ECG_ELEC_POTL"), samples.astype(np.int32), 130.0, 1.0, 0.0, 123, now_ns()
    )


def test_waveforms_round_trip_exactly_in_binary() -> None:
    ecg = SyntheticEcg(130.0)
    chunks = [_chunk(ecg.next(73)) for _ in range(100)]
    payload = encode_batch("gw", "ecg", None, Lane.WAVEFORMS, chunks)
    batch = decode_batch(payload)
    for chunk, item in zip(chunks, batch.items, strict=True):
        assert np.array_equal(item["samples"], chunk.samples)
        assert item["rate_hz"] == 130.0 and item["unit"] == "uV"
    # Samples travel as zstd'd deltas: far below JSON's ~5 bytes a sample even with per-chunk headers.
    assert len(payload) / (73 * 100) < 5.0


@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=300))
@settings(max_examples=200, deadline=None)
def test_waveform_round_trip_any_int32_samples(values: list[int]) -> None:
    chunk = _chunk(np.array(values, dtype=np.int64))
    batch = decode_batch(encode_batch("gw", "ecg", None, Lane.WAVEFORMS, [chunk]))
    assert batch.items[0]["samples"].tolist() == values


@given(st.binary(max_size=512))
@settings(max_examples=500, deadline=None)
def test_random_bytes_raise_only_invalid_payload(data: bytes) -> None:
    with contextlib.suppress(InvalidPayload):
        decode_batch(data)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_corrupted_waveform_payloads_raise_only_invalid_payload(data: st.DataObject) -> None:
    payload = bytearray(encode_batch("gw", "ecg", None, Lane.WAVEFORMS, [_chunk(SyntheticEcg(130.0).next(50))]))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(payload) - 1))
        payload[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    with contextlib.suppress(InvalidPayload):
        decode_batch(bytes(payload[:cut]))


@pytest.mark.parametrize(
    "doc",
    [
        {"v": 2, "gateway": "g", "device": "d", "patient": None, "lane": "numerics", "items": []},
        {"v": 1, "gateway": "g", "device": "d", "patient": None, "lane": "bogus", "items": []},
        {"v": 1, "gateway": "g", "device": "d", "patient": None, "lane": "numerics", "items": [{"value": 1}]},
        {"v": 1, "gateway": 5, "device": "d", "patient": None, "lane": "numerics", "items": []},
        {"v": 1, "gateway": "g", "device": "d", "patient": None, "lane": "waveforms", "items": []},
    ],
)
def test_malformed_envelopes_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(InvalidPayload):
        decode_batch(json.dumps(doc).encode())


def test_contiguous_chunks_travel_as_one_item_and_gaps_split_them() -> None:
    ecg = SyntheticEcg(130.0)
    q = quantity("MDC_ECG_ELEC_POTL")
    period_ns = round(73 * 1e9 / 130.0)
    starts = [0, period_ns, 2 * period_ns, 10 * period_ns]  # a gap before the fourth chunk
    chunks = [WaveformChunk(new_id(), "ecg", q, ecg.next(73), 130.0, 1.0, 0.0, 1_000_000 + t, now_ns()) for t in starts]
    batch = decode_batch(encode_batch("gw", "ecg", None, Lane.WAVEFORMS, chunks))
    assert [(i["n"], i["chunks"]) for i in batch.items] == [(219, 3), (73, 1)]
    assert batch.items[0]["id"] == chunks[0].id and batch.items[1]["id"] == chunks[3].id
    assert np.array_equal(batch.items[0]["samples"], np.concatenate([c.samples for c in chunks[:3]]))


def test_messages_carry_several_batches_of_one_lane() -> None:
    q = quantity("MDC_PULS_OXIM_SAT_O2")
    payloads = [
        encode_batch("gw", f"ox-{i}", None, Lane.NUMERICS, [Observation(new_id(), f"ox-{i}", q, 97.0, None, 1)])
        for i in range(3)
    ]
    message = encode_message(Lane.NUMERICS, payloads)
    assert len(message) == sum(len(p) for p in payloads) + message_overhead(Lane.NUMERICS, 3)
    assert [b.device for b in decode_message(message)] == ["ox-0", "ox-1", "ox-2"]
    waves = [encode_batch("gw", "ecg", None, Lane.WAVEFORMS, [_chunk(SyntheticEcg(130.0).next(40))]) for _ in range(2)]
    binary = encode_message(Lane.WAVEFORMS, waves)
    assert len(binary) == sum(len(w) for w in waves) + message_overhead(Lane.WAVEFORMS, 2)
    assert [len(b.items[0]["samples"]) for b in decode_message(binary)] == [40, 40]


@given(st.binary(max_size=512))
@settings(max_examples=500, deadline=None)
def test_random_bytes_as_a_message_raise_only_invalid_payload(data: bytes) -> None:
    with contextlib.suppress(InvalidPayload):
        decode_message(data)
    with contextlib.suppress(InvalidPayload):
        decode_message(b"IOMTM\x01" + data)


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_corrupted_binary_messages_raise_only_invalid_payload(data: st.DataObject) -> None:
    waves = [encode_batch("gw", "ecg", None, Lane.WAVEFORMS, [_chunk(SyntheticEcg(130.0).next(30))]) for _ in range(2)]
    message = bytearray(encode_message(Lane.WAVEFORMS, waves))
    for _ in range(data.draw(st.integers(1, 4))):
        message[data.draw(st.integers(0, len(message) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InvalidPayload):
        decode_message(bytes(message[: data.draw(st.integers(0, len(message)))]))
