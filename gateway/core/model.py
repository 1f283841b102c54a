"""The gateway's one semantic model: every value a device sends becomes one of these events.

Each event carries an MDC-coded quantity (see `nomenclature`), a UCUM unit, the device's own time (when the
device has a clock) and the gateway's receive time, and a stable id.  The id is fixed when the event is created
and stored with it, so it survives restarts and re-sends: a receiver drops duplicates by id.  Where the device
gives its own time or sequence number, the id is derived from it, so the same reading fetched twice (e.g. a CGM
record re-read through RACP after a disconnect) gets the same id.

Times are integers in nanoseconds since the Unix epoch (UTC): exact, cheap to store and compare, no tz bugs.
"""

from __future__ import annotations

import enum
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.core.nomenclature import Quantity

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_ID_NAMESPACE = uuid.UUID("8f6b1b7e-6d1c-4c59-9a57-5d0c1f3e2a10")


def stable_id(*parts: object) -> str:
    """A deterministic id for an event that the device identifies itself (by device time or sequence)."""
    return uuid.uuid5(_ID_NAMESPACE, "|".join(str(p) for p in parts)).hex


def new_id() -> str:
    """A fresh, time-ordered id (UUIDv7 layout) for an event the device gives no identity of its own."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


def now_ns() -> int:
    return time.time_ns()


class Lane(enum.IntEnum):
    """Buffer and uplink priority lanes; a lower number is drained first and never evicted before a higher."""

    ALARMS = 0
    COMMAND_RESULTS = 1
    NUMERICS = 2
    DEVICE_STATUS = 3
    WAVEFORMS = 4
    IMAGES = 5

    @property
    def topic_name(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class Observation:
    """A numeric value at an instant."""

    id: str
    device_id: str
    quantity: Quantity
    value: float
    device_time_ns: int | None
    gateway_time_ns: int

    lane = Lane.NUMERICS

    @property
    def unit(self) -> str:
        return self.quantity.ucum


@dataclass(frozen=True, slots=True, eq=False)
class WaveformChunk:
    """Consecutive samples of one waveform: physical value = (sample - offset) * gain, in the quantity's unit."""

    id: str
    device_id: str
    quantity: Quantity
    samples: npt.NDArray[np.int32]
    sample_rate_hz: float
    gain: float
    offset: float
    start_device_time_ns: int | None
    gateway_time_ns: int

    lane = Lane.WAVEFORMS

    @property
    def unit(self) -> str:
        return self.quantity.ucum

    @property
    def duration_ns(self) -> int:
        return round(len(self.samples) * 1e9 / self.sample_rate_hz)

    def physical(self) -> npt.NDArray[np.float64]:
        import numpy as np  # noqa: PLC0415 - numpy only where a waveform passes (a lean daemon)

        values: npt.NDArray[np.float64] = np.subtract(self.samples, self.offset, dtype=np.float64)  # in float64
        values *= self.gain
        return values


class ConnectionState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


# DeviceStatus.detail key: "complete" when `errors` lists every condition the device reports now (each a
# technical alarm while listed; "priority.NAME" in detail gives its priority).
CONDITIONS_KEY = "conditions"


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A device's technical state: link, battery, signal strength and the errors it reports."""

    id: str
    device_id: str
    connection: ConnectionState
    gateway_time_ns: int
    battery_pct: float | None = None
    rssi_dbm: int | None = None
    errors: tuple[str, ...] = ()
    device_time_ns: int | None = None
    detail: dict[str, str] = field(default_factory=dict)

    lane = Lane.DEVICE_STATUS


class AlarmPriority(enum.StrEnum):
    """IEC 60601-1-8 alarm priorities."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlarmKind(enum.StrEnum):
    PHYSIOLOGICAL = "physiological"
    TECHNICAL = "technical"


class AlarmState(enum.StrEnum):
    ACTIVE = "active"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    SILENCED = "silenced"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One state change of an alarm (raised, escalated, acknowledged, silenced, cleared).

    `id` is this event's own id (receivers de-duplicate by it); `alarm_id` names the alarm itself and stays the
    same through every state change, from raise to clear (the raising event's id unless given).  `condition`
    is a stable machine name.
    """

    id: str
    device_id: str
    condition: str
    kind: AlarmKind
    priority: AlarmPriority
    state: AlarmState
    gateway_time_ns: int
    quantity: Quantity | None = None
    device_time_ns: int | None = None
    detail: dict[str, str] = field(default_factory=dict)
    alarm_id: str = ""

    lane = Lane.ALARMS

    def __post_init__(self) -> None:
        if not self.alarm_id:
            object.__setattr__(self, "alarm_id", self.id)  # a raise: the alarm is named after its first event


class CommandOutcome(enum.StrEnum):
    RECEIVED = "received"
    VERIFIED = "verified"
    REJECTED = "rejected"
    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"
    OUTCOME_UNKNOWN = "outcome-unknown"


@dataclass(frozen=True, slots=True)
class Command:
    """A control command from the cloud, as received (verification happens in gateway.commands)."""

    command_id: str
    device_id: str
    command_type: str
    parameters: dict[str, Any]
    issued_at_ns: int
    expires_at_ns: int
    issuer_key_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandResult:
    """One transition of a command's state machine, uplinked so the cloud sees every step."""

    id: str
    command_id: str
    device_id: str
    outcome: CommandOutcome
    gateway_time_ns: int
    reason: str | None = None
    detail: dict[str, str] = field(default_factory=dict)

    lane = Lane.COMMAND_RESULTS


@dataclass(frozen=True, slots=True)
class ObjectChunk:
    """One piece of a binary object (a DICOM instance) cut to fit the sync API's messages.

    `object_id` names the object (stable across resends: the gateway derives it from the content), `index`
    counts from 0 to `count - 1`, and `sha256` is the digest of the whole object, which the receiver checks
    after reassembly.  `meta` says what the object is, never whose it is (no patient data).
    """

    id: str
    device_id: str
    object_id: str
    index: int
    count: int
    total_bytes: int
    sha256: str
    content_type: str
    data: bytes = field(repr=False)
    gateway_time_ns: int
    meta: dict[str, str] = field(default_factory=dict)

    lane = Lane.IMAGES


Event = Observation | WaveformChunk | DeviceStatus | Alarm | CommandResult | ObjectChunk
