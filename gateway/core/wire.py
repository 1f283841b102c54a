"""The sync API's payload format (version 1).  docs/sync-api.md is the contract this module implements.

One payload is one batch of events of one lane from one device.  Lanes other than waveforms are UTF-8 JSON:

    {"v": 1, "gateway": ..., "device": ..., "patient": ..., "lane": "numerics", "items": [ ... ]}

Waveforms are binary, because JSON would cost several bytes per sample:

    b"IOMTW" | u8 version | u32 BE header length | JSON header (as above, items without samples) | zstd blob

The blob is the concatenation, per item in order, of the item's samples delta-encoded (first sample, then
differences) as little-endian int16 when every difference fits, else int32 taken modulo 2**32 (`width` in the
item says which); decoding sums them and wraps to int32, which restores any int32 series exactly.
Every item carries its stable `id`; receivers de-duplicate by it.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zstandard

from gateway.core.errors import ProtocolError
from gateway.core.model import Alarm, CommandResult, DeviceStatus, Event, Lane, ObjectChunk, Observation, WaveformChunk

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

VERSION = 1
WAVEFORM_MAGIC = b"IOMTW"
OBJECT_MAGIC = b"IOMTO"  # images lane: JSON header, then the chunks' bytes (not compressed: DICOM often is)
MESSAGE_MAGIC = b"IOMTM"
_PART_LEN = struct.Struct(">I")
_PART_COUNT = struct.Struct(">H")
MAX_BATCHES_PER_MESSAGE = 65_535
_HEADER_LEN = struct.Struct(">I")
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
MAX_SAMPLES_PER_PAYLOAD = 8 * 1024 * 1024

_compressor = zstandard.ZstdCompressor(level=3)


class InvalidPayload(ProtocolError):
    """A sync payload that does not follow the wire format."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded payload: the envelope fields and its items (waveform items carry a `samples` array)."""

    gateway: str
    device: str
    patient: str | None
    lane: Lane
    items: list[dict[str, Any]]


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _special(value: float) -> str | None:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return None


def _item(event: Event) -> dict[str, Any]:
    if isinstance(event, Observation):
        item: dict[str, Any] = {
            "id": event.id,
            "code": event.quantity.code,
            "ref": event.quantity.reference_id,
            "unit": event.quantity.ucum,
            "value": _number(event.value),
            "t_dev": event.device_time_ns,
            "t_gw": event.gateway_time_ns,
        }
        special = _special(event.value)
        if special:
            item["special"] = special
        return item
    if isinstance(event, DeviceStatus):
        return {
            "id": event.id,
            "connection": event.connection.value,
            "battery_pct": event.battery_pct,
            "rssi_dbm": event.rssi_dbm,
            "errors": list(event.errors),
            "detail": event.detail,
            "t_dev": event.device_time_ns,
            "t_gw": event.gateway_time_ns,
        }
    if isinstance(event, Alarm):
        return {
            "id": event.id,
            "alarm_id": event.alarm_id,
            "condition": event.condition,
            "kind": event.kind.value,
            "priority": event.priority.value,
            "state": event.state.value,
            "code": event.quantity.code if event.quantity else None,
            "ref": event.quantity.reference_id if event.quantity else None,
            "detail": event.detail,
            "t_dev": event.device_time_ns,
            "t_gw": event.gateway_time_ns,
        }
    if isinstance(event, CommandResult):
        return {
            "id": event.id,
            "command_id": event.command_id,
            "outcome": event.outcome.value,
            "reason": event.reason,
            "detail": event.detail,
            "t_gw": event.gateway_time_ns,
        }
    raise TypeError(type(event).__name__)


def _envelope(gateway: str, device: str, patient: str | None, lane: Lane) -> dict[str, Any]:
    return {"v": VERSION, "gateway": gateway, "device": device, "patient": patient, "lane": lane.topic_name}


def encode_batch(gateway: str, device: str, patient: str | None, lane: Lane, events: Sequence[Event]) -> bytes:
    """One payload for events that all belong to `lane` and `device`."""
    if lane is Lane.WAVEFORMS:
        return _encode_waveforms(_envelope(gateway, device, patient, lane), events)
    if lane is Lane.IMAGES:
        return _encode_objects(_envelope(gateway, device, patient, lane), events)
    doc = _envelope(gateway, device, patient, lane)
    doc["items"] = [_item(e) for e in events]
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _contiguous(prev: WaveformChunk, nxt: WaveformChunk) -> bool:
    """Whether `nxt` continues `prev` without a gap: same signal, same scaling, next sample on time."""
    if (prev.quantity.code, prev.sample_rate_hz, prev.gain, prev.offset) != (
        nxt.quantity.code,
        nxt.sample_rate_hz,
        nxt.gain,
        nxt.offset,
    ):
        return False
    if prev.start_device_time_ns is None or nxt.start_device_time_ns is None:
        return False
    expected = prev.start_device_time_ns + round(len(prev.samples) * 1e9 / prev.sample_rate_hz)
    return abs(nxt.start_device_time_ns - expected) <= 0.5e9 / prev.sample_rate_hz


def merge_contiguous(chunks: Sequence[WaveformChunk]) -> list[list[WaveformChunk]]:
    """Runs of chunks that continue each other, per signal (leads arrive interleaved); one item per run."""
    open_runs: dict[int, list[WaveformChunk]] = {}  # the latest run of each quantity
    runs: list[list[WaveformChunk]] = []
    for chunk in chunks:
        current = open_runs.get(chunk.quantity.code)
        if current is not None and _contiguous(current[-1], chunk):
            current.append(chunk)
        else:
            current = [chunk]
            open_runs[chunk.quantity.code] = current
            runs.append(current)
    return runs


def _encode_waveforms(doc: dict[str, Any], events: Sequence[Event]) -> bytes:
    import numpy as np  # noqa: PLC0415 - numpy only where a waveform passes (a lean daemon)

    chunks = []
    for event in events:
        if not isinstance(event, WaveformChunk):
            raise TypeError(type(event).__name__)
        chunks.append(event)
    items = []
    parts = []
    for run in merge_contiguous(chunks):
        first = run[0]
        samples = np.concatenate([c.samples for c in run]).astype(np.int64, copy=False)
        deltas = np.empty_like(samples)
        if len(samples):
            deltas[0] = samples[0]
            np.subtract(samples[1:], samples[:-1], out=deltas[1:])
        fits16 = len(samples) == 0 or (np.minimum.reduce(deltas) >= -32768 and np.maximum.reduce(deltas) <= 32767)
        parts.append(deltas.astype("<i2" if fits16 else "<i4").tobytes())
        # A run's id is its first chunk's: the stored payload is re-sent byte for byte, so the id is stable.
        items.append(
            {
                "id": first.id,
                "code": first.quantity.code,
                "ref": first.quantity.reference_id,
                "unit": first.quantity.ucum,
                "rate_hz": first.sample_rate_hz,
                "gain": first.gain,
                "offset": first.offset,
                "n": len(samples),
                "width": 2 if fits16 else 4,
                "chunks": len(run),
                "t_dev": first.start_device_time_ns,
                "t_gw": first.gateway_time_ns,
            }
        )
    doc["items"] = items
    header = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    blob = _compressor.compress(b"".join(parts))
    return WAVEFORM_MAGIC + bytes([VERSION]) + _HEADER_LEN.pack(len(header)) + header + blob


def _encode_objects(doc: dict[str, Any], events: Sequence[Event]) -> bytes:
    items = []
    parts = []
    for event in events:
        if not isinstance(event, ObjectChunk):
            raise TypeError(type(event).__name__)
        parts.append(event.data)
        items.append(
            {
                "id": event.id,
                "object": event.object_id,
                "index": event.index,
                "count": event.count,
                "total_bytes": event.total_bytes,
                "sha256": event.sha256,
                "content_type": event.content_type,
                "n": len(event.data),
                "meta": event.meta,
                "t_gw": event.gateway_time_ns,
            }
        )
    doc["items"] = items
    header = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return OBJECT_MAGIC + bytes([VERSION]) + _HEADER_LEN.pack(len(header)) + header + b"".join(parts)


def _binary(lane: Lane) -> bool:
    return lane in (Lane.WAVEFORMS, Lane.IMAGES)


def message_overhead(lane: Lane, batches: int) -> int:
    """Bytes a message adds around its batches' payloads."""
    if _binary(lane):
        return len(MESSAGE_MAGIC) + 1 + _PART_COUNT.size + _PART_LEN.size * batches
    return len(b'{"v":1,"batches":[]}') + max(0, batches - 1)


def encode_message(lane: Lane, payloads: Sequence[bytes]) -> bytes:
    """One MQTT message carrying one or more batches of one lane.

    JSON lanes: `{"v":1,"batches":[<batch>,...]}` (the stored JSON batches, concatenated, not re-encoded).
    Waveforms: `"IOMTM" | u8 version | u16 BE count | (u32 BE length | batch)*`.
    """
    if not payloads or len(payloads) > MAX_BATCHES_PER_MESSAGE:
        raise ValueError("a message carries 1 to 65535 batches")
    if _binary(lane):
        parts = [MESSAGE_MAGIC, bytes([VERSION]), _PART_COUNT.pack(len(payloads))]
        for payload in payloads:
            parts += [_PART_LEN.pack(len(payload)), payload]
        return b"".join(parts)
    return b'{"v":1,"batches":[' + b",".join(payloads) + b"]}"


def decode_message(data: bytes) -> list[Batch]:
    """The batches of one uplink message; InvalidPayload for anything malformed."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload("message too large", length=len(data))
    if data.startswith(MESSAGE_MAGIC):
        head = len(MESSAGE_MAGIC) + 1 + _PART_COUNT.size
        if len(data) < head or data[len(MESSAGE_MAGIC)] != VERSION:
            raise InvalidPayload("truncated or unknown-version message", length=len(data))
        (count,) = _PART_COUNT.unpack_from(data, head - _PART_COUNT.size)
        batches = []
        position = head
        for _ in range(count):
            if position + _PART_LEN.size > len(data):
                raise InvalidPayload("message part header overruns message", length=len(data))
            (size,) = _PART_LEN.unpack_from(data, position)
            position += _PART_LEN.size
            if position + size > len(data):
                raise InvalidPayload("message part overruns message", length=len(data))
            batches.append(decode_batch(data[position : position + size]))
            position += size
        if position != len(data):
            raise InvalidPayload("bytes after the last message part", length=len(data))
        if any(not _binary(b.lane) for b in batches):
            raise InvalidPayload("binary message carries a JSON-lane batch")
        return batches
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidPayload("message is not JSON", length=len(data)) from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION or not isinstance(doc.get("batches"), list):
        raise InvalidPayload("not a version-1 message", expected=VERSION)
    batches = [_batch_from_doc(b) for b in doc["batches"]]
    if any(_binary(b.lane) for b in batches):
        raise InvalidPayload("binary-lane batch in a JSON message")
    return batches


def decode_batch(payload: bytes) -> Batch:
    """Parse a payload; InvalidPayload for anything that is not a well-formed version-1 batch."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidPayload("payload too large", length=len(payload))
    blob = None
    magic = payload[: len(WAVEFORM_MAGIC)]
    if magic in (WAVEFORM_MAGIC, OBJECT_MAGIC):
        start = len(magic) + 1 + _HEADER_LEN.size
        if len(payload) < start or payload[len(magic)] != VERSION:
            raise InvalidPayload("truncated or unknown-version binary payload", length=len(payload))
        (header_len,) = _HEADER_LEN.unpack_from(payload, start - _HEADER_LEN.size)
        if start + header_len > len(payload):
            raise InvalidPayload("waveform header overruns payload", length=len(payload))
        header = payload[start : start + header_len]
        blob = payload[start + header_len :]
    else:
        header = payload
    try:
        doc = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidPayload("payload is not JSON", length=len(payload)) from None
    return _batch_from_doc(doc, blob, magic if blob is not None else b"")


def _batch_from_doc(doc: Any, blob: bytes | None = None, magic: bytes = b"") -> Batch:
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise InvalidPayload("not a version-1 batch", expected=VERSION)
    try:
        lane = next(lane for lane in Lane if lane.topic_name == doc["lane"])
        gateway, device, patient, items = doc["gateway"], doc["device"], doc["patient"], doc["items"]
    except (KeyError, StopIteration, TypeError):
        raise InvalidPayload("batch envelope incomplete or lane unknown") from None
    if not (isinstance(gateway, str) and isinstance(device, str) and isinstance(items, list)):
        raise InvalidPayload("batch envelope has wrong types")
    if not all(isinstance(item, dict) and isinstance(item.get("id"), str) for item in items):
        raise InvalidPayload("batch item without a string id")
    expected_magic = {Lane.WAVEFORMS: WAVEFORM_MAGIC, Lane.IMAGES: OBJECT_MAGIC}.get(lane, b"")
    if expected_magic != magic:
        raise InvalidPayload("lane and binary framing disagree")
    if blob is not None and lane is Lane.WAVEFORMS:
        _attach_samples(items, blob)
    elif blob is not None:
        _attach_data(items, blob)
    return Batch(gateway, device, patient if isinstance(patient, str) else None, lane, items)


def _attach_data(items: list[dict[str, Any]], blob: bytes) -> None:
    position = 0
    for item in items:
        n = item.get("n")
        if not isinstance(n, int) or n < 0 or position + n > len(blob):
            raise InvalidPayload("object chunk overruns its payload")
        item["data"] = blob[position : position + n]
        position += n
    if position != len(blob):
        raise InvalidPayload("bytes after the last object chunk", length=len(blob))


def _attach_samples(items: list[dict[str, Any]], blob: bytes) -> None:
    import numpy as np  # noqa: PLC0415 - numpy only where a waveform passes (a lean daemon)

    try:
        total = sum(int(item["n"]) * int(item["width"]) for item in items)
        if not 0 <= total <= MAX_SAMPLES_PER_PAYLOAD * 4:
            raise InvalidPayload("waveform sample count out of range")
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=total)
    except (KeyError, TypeError, ValueError, zstandard.ZstdError):
        raise InvalidPayload("waveform blob does not match its header") from None
    if len(raw) != total:
        raise InvalidPayload("waveform blob length does not match its header", length=len(raw), expected=total)
    position = 0
    for item in items:
        n, width = int(item["n"]), int(item["width"])
        if width not in (2, 4) or n < 0:
            raise InvalidPayload("waveform item has a bad width or count")
        deltas = np.frombuffer(raw, dtype="<i2" if width == 2 else "<i4", count=n, offset=position)
        position += n * width
        samples: npt.NDArray[np.int32] = np.cumsum(deltas, dtype=np.int64).astype(np.int32)
        item["samples"] = samples
