"""In-process counters: what each device sent, what the buffer accepted, what the broker acknowledged."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DriverStats:
    """What a driver saw on its link; nothing a device sent disappears without being counted here."""

    notifications: int = 0  # frames received from the device and decoded (or rejected)
    invalid_frames: int = 0  # frames that failed decoding (logged, typed error)
    dropped_notifications: int = 0  # frames lost because the driver's queue was full
    unmapped_codes: dict[str, int] = field(default_factory=dict)  # observations with codes the gateway does not map


@dataclass
class DeviceCounters:
    received: int = 0  # events the driver decoded and handed to the pipeline
    accepted: int = 0  # events committed to the buffer (durable)
    delivered: int = 0  # events in payloads the broker acknowledged (PUBACK)
    samples_received: int = 0  # waveform samples within `received`
    last_seen_ns: int | None = None


@dataclass
class Metrics:
    devices: dict[str, DeviceCounters] = field(default_factory=dict)
    alarms_raised: int = 0
    invalid_frames: int = 0
    publishes: int = 0
    publish_errors: int = 0
    publish_refused: int = 0
    rows_quarantined: int = 0
    commands_dropped: int = 0
    command_rejections: Counter[str] = field(default_factory=Counter)  # by reason
    wire_bytes: Counter[str] = field(default_factory=Counter)  # per lane, acknowledged messages
    evicted_rows: Counter[str] = field(default_factory=Counter)  # per lane
    evicted_items: Counter[str] = field(default_factory=Counter)  # per lane
    reconnects: int = 0
    rows_written: int = 0
    implausible_values: int = 0  # physically impossible values kept out of the data (a technical alarm each episode)
    storage_failures: int = 0  # commits the buffer refused (full disk, lock, I/O); each is retried
    shed_items: Counter[str] = field(default_factory=Counter)  # per lane: dropped over the memory bound in an outage
    rows_deleted: int = 0
    restarts: Counter[str] = field(default_factory=Counter)
    drivers: dict[str, DriverStats] = field(default_factory=dict)

    def device(self, device_id: str) -> DeviceCounters:
        counters = self.devices.get(device_id)
        if counters is None:
            counters = self.devices[device_id] = DeviceCounters()
        return counters
