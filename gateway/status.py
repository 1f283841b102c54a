"""What the local services (admin API, Prometheus metrics) see of a running gateway: one snapshot, and the few
actions a technician may take.  The daemon implements `GatewayControl`; the services import only this module,
never the daemon, so nothing reaches into the supervisor's tasks or the pipeline's model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.core.backlog import LaneStats
from gateway.core.model import Alarm, AlarmState
from gateway.core.stats import Metrics


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """A supervised task (a driver, the uplink)."""

    running: bool
    restarts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A configured device as the pipeline last heard of it."""

    device_id: str
    profile: str
    transport: str
    connection: str | None  # the newest link status's connection state; None before any
    battery_pct: float | None
    rssi_dbm: int | None


@dataclass(frozen=True, slots=True)
class ModelStats:
    name: str
    runs: int
    latency_p99_ms: float | None


@dataclass(frozen=True)
class StatusSnapshot:
    """The gateway at one instant.  `metrics` is the live counter set (read it, never write it)."""

    gateway_id: str
    uptime_s: float
    started: bool  # the pipeline, the buffer and the uplink exist (False while starting)
    sync_state: str
    sync_last_error: str | None
    sync_inflight: int
    pipeline_backlog: int
    metrics: Metrics
    devices: list[DeviceView] = field(default_factory=list)
    tasks: dict[str, TaskStatus] = field(default_factory=dict)
    lanes: list[LaneStats] = field(default_factory=list)
    active_alarms: list[Alarm] = field(default_factory=list)
    model: ModelStats | None = None


class GatewayControl(Protocol):
    """What a technician's tools may read and do on a running gateway."""

    async def snapshot(self) -> StatusSnapshot: ...

    def set_alarm_state(self, alarm_id: str, state: AlarmState) -> Alarm | None:
        """Acknowledge or silence an active alarm (uplinked like the alarm itself); None when there is none."""
        ...

    def sync_now(self) -> str | None:
        """Wake the uplink; its state, or None while the gateway is starting."""
        ...

    def configuration(self) -> dict[str, Any]:
        """The running configuration as a document (the caller redacts it)."""
        ...
