"""What the pipeline does while the buffer cannot commit: back off, raise `buffer_unavailable`, shed within a bound.

A failed commit (a full disk, a database locked by another process, an I/O error) is an episode: the first
failure raises the high-priority technical alarm `buffer_unavailable` and logs a warning, repeats log at debug,
and the first successful commit clears the alarm and logs the recovery once, with the episode's totals.
Retries back off with jitter up to `RETRY_MAX_S`.

While an episode lasts the pipeline keeps evaluating every event (so alarms keep reaching the local channel)
and holds what it cannot commit in memory, up to a byte bound.  Over the bound it sheds the oldest held events
of the lowest lanes first (images, waveforms, device status, numerics), counting each per lane; alarms and
command results are never shed.  An emitter waiting for a shed event to be durable (an HL7 ACK, a DICOM
C-STORE response) is told it is not, so nothing shed was ever acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.core.errors import StorageError
from gateway.core.logs import get_logger
from gateway.core.model import (
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    Event,
    Lane,
    ObjectChunk,
    WaveformChunk,
    new_id,
    now_ns,
)
from gateway.core.reconnect import ReconnectPolicy

log = get_logger(__name__)

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 5.0
SHED_ORDER = (Lane.IMAGES, Lane.WAVEFORMS, Lane.DEVICE_STATUS, Lane.NUMERICS)  # never alarms or command results
EVENT_OVERHEAD_BYTES = 400  # a dataclass, its id and detail strings, list slots: roughly, per event


def held_bytes(event: Event) -> int:
    """What holding an event in memory costs, roughly: its payload plus a fixed overhead."""
    if isinstance(event, WaveformChunk):
        return int(event.samples.nbytes) + EVENT_OVERHEAD_BYTES
    if isinstance(event, ObjectChunk):
        return len(event.data) + EVENT_OVERHEAD_BYTES
    return EVENT_OVERHEAD_BYTES


@dataclass
class _Episode:
    started_ns: int
    failures: int = 0
    error: str = ""
    alarm_id: str = field(default_factory=new_id)  # raise and clear name one alarm


class StorageHealth:
    """Outage episodes of the buffer as the pipeline sees them: backoff, alarm raise and clear."""

    def __init__(self, gateway_id: str, *, clock: Callable[[], float]) -> None:
        self._gateway_id = gateway_id
        self._clock = clock
        self._episode: _Episode | None = None
        self._retry = ReconnectPolicy(RETRY_INITIAL_S, RETRY_MAX_S)
        self.retry_at = 0.0
        self.failures = 0  # every failed commit since start
        self.shed: dict[Lane, int] = {}  # items shed during the current episode

    @property
    def degraded(self) -> bool:
        return self._episode is not None

    def failed(self, err: StorageError, held_items: int) -> Alarm | None:
        """A commit failed: schedule the retry; the alarm to raise if this starts an episode."""
        self.failures += 1
        fields = err.log_fields(items=held_items)
        episode = self._episode
        if episode is None:
            episode = self._episode = _Episode(now_ns())
        episode.failures += 1
        episode.error = str(fields.get("error", type(err).__name__))
        delay = self._retry.failed()
        self.retry_at = self._clock() + delay
        if episode.failures > 1:
            log.debug("buffer commit failed again", attempt=episode.failures, delay_s=round(delay, 2), **fields)
            return None
        log.warning("buffer unavailable: holding events in memory and retrying", delay_s=round(delay, 2), **fields)
        return self._alarm(AlarmState.ACTIVE, {"error": episode.error, "items": str(held_items)}, episode.alarm_id)

    def succeeded(self) -> Alarm | None:
        """A commit succeeded: the clearing alarm if an episode just ended."""
        episode, self._episode = self._episode, None
        self.retry_at = 0.0
        self._retry.succeeded()
        if episode is None:
            return None
        shed = sum(self.shed.values())
        elapsed = round((now_ns() - episode.started_ns) / 1e9, 1)
        log.info("buffer available again", attempt=episode.failures, elapsed_s=elapsed, items=shed)
        detail = {
            "error": episode.error,
            "failures": str(episode.failures),
            "duration_s": str(elapsed),
            "shed": str(shed),
            "lanes": ",".join(sorted(lane.topic_name for lane in self.shed)),
        }
        self.shed = {}
        return self._alarm(AlarmState.CLEARED, detail, episode.alarm_id)

    def note_shed(self, lane: Lane, items: int) -> None:
        if not self.shed:
            log.warning("memory bound reached while the buffer is unavailable: shedding low-priority data")
        self.shed[lane] = self.shed.get(lane, 0) + items

    def _alarm(self, state: AlarmState, detail: dict[str, str], alarm_id: str) -> Alarm:
        return Alarm(
            new_id(),
            self._gateway_id,
            "buffer_unavailable",
            AlarmKind.TECHNICAL,
            AlarmPriority.HIGH,
            state,
            now_ns(),
            detail=detail,
            alarm_id=alarm_id,
        )


def not_durable(events: Iterable[Event], waiters: dict[str, list[asyncio.Future[None]]], reason: str) -> None:
    """Tell whoever waits for these events to be durable that they will not be (shed, or evicted at once)."""
    for event in events:
        for waiter in list(waiters.get(event.id, ())):
            if not waiter.done():
                waiter.set_exception(StorageError(reason))
