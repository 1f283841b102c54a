"""The pipeline: events from drivers -> alarm rules -> batches per (lane, device) -> encrypted buffer.

Drivers `emit` into a bounded queue; when it is full, `emit` waits, and that wait propagates back to the
device link (backpressure instead of unbounded memory).  The pipeline groups events into batches and commits
every pending batch in one transaction (group commit) each flush interval, or at once when an alarm is
pending.  An event counts as accepted only after that commit returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from cloud_sync.wire import encode_batch
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.buffer.store import NewRecord
from gateway.errors import StorageError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import Alarm, Event, Lane, Observation, WaveformChunk

log = get_logger(__name__)

MAX_WAVEFORM_SAMPLES_PER_RECORD = 32_768

AlarmListener = Callable[[Alarm], None]


class Pipeline:
    """Receives events from drivers and makes them durable in the buffer."""

    def __init__(
        self,
        buffer: Buffer,
        alarms: AlarmEngine,
        metrics: Metrics,
        *,
        gateway_id: str,
        patients: dict[str, str | None],
        flush_interval_s: float = 0.2,
        max_batch_items: int = 512,
        queue_size: int = 10_000,
    ) -> None:
        self._buffer = buffer
        self._alarms = alarms
        self._metrics = metrics
        self._gateway_id = gateway_id
        self._patients = patients
        self._flush_interval = flush_interval_s
        self._max_batch_items = max_batch_items
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._urgent: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._pending: dict[tuple[Lane, str], list[Event]] = {}
        self._pending_count = 0
        self.stored = asyncio.Event()  # set after each commit; the uplink waits on it
        self.alarm_listeners: list[AlarmListener] = []
        # Latest value per (device, quantity), for the local display only; never logged.
        self.latest: dict[tuple[str, str], Observation] = {}

    # -- EventSink -------------------------------------------------------------------------------------------
    async def emit(self, event: Event) -> None:
        self._count_received(event)
        await self._queue.put(event)

    def emit_nowait(self, event: Event) -> None:
        self._count_received(event)
        self._urgent.append(event)
        self._wake.set()

    def _count_received(self, event: Event) -> None:
        """Count an event entering the pipeline (from a driver, or an alarm the pipeline raised)."""
        counters = self._metrics.device(event.device_id)
        counters.received += 1
        counters.last_seen_ns = event.gateway_time_ns
        if isinstance(event, WaveformChunk):
            counters.samples_received += len(event.samples)

    # -- processing ------------------------------------------------------------------------------------------
    @property
    def backlog(self) -> int:
        return self._queue.qsize() + len(self._urgent) + self._pending_count

    async def run(self) -> None:
        """Process until `close()`; then drain what is queued, commit it, and return."""
        next_flush = time.monotonic() + self._flush_interval
        while True:
            urgent = self._take_available()
            if urgent or time.monotonic() >= next_flush or self._pending_count >= self._max_batch_items * 8:
                await self.flush()
                next_flush = time.monotonic() + self._flush_interval
            if self._closing and self._queue.empty() and not self._urgent:
                await self.flush()
                return
            timeout = max(0.0, next_flush - time.monotonic())
            if self._queue.empty() and not self._urgent:
                self._wake.clear()
                await self._wait_for_input(timeout)

    async def _wait_for_input(self, wait_s: float) -> None:
        """Sleep until an event is queued, `emit_nowait`/`close` wakes us, or the flush is due."""
        getter = asyncio.ensure_future(self._queue.get())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            _done, _ = await asyncio.wait({getter, waker}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            getter.cancel()
        if getter.done() and not getter.cancelled():
            # A get() that completed in the same tick as the cancel still holds its event: keep it.
            self._add(getter.result())

    def close(self) -> None:
        """Stop after draining: `run` commits everything already emitted and returns."""
        self._closing = True
        self._wake.set()

    def _take_available(self) -> bool:
        """Move queued events into pending batches; True if an alarm is among them."""
        urgent = False
        while self._urgent:
            urgent |= self._add(self._urgent.popleft())
        budget = self._max_batch_items * 8 - self._pending_count
        while budget > 0 and not self._queue.empty():
            urgent |= self._add(self._queue.get_nowait())
            budget -= 1
        return urgent

    def _add(self, event: Event) -> bool:
        raised = self._alarms.evaluate(event)
        if isinstance(event, Observation):
            self.latest[(event.device_id, event.quantity.reference_id)] = event
        for alarm in raised:
            self._metrics.alarms_raised += 1
            self._count_received(alarm)
            for listener in self.alarm_listeners:
                listener(alarm)
            self._pending.setdefault((Lane.ALARMS, alarm.device_id), []).append(alarm)
            self._pending_count += 1
        self._pending.setdefault((event.lane, event.device_id), []).append(event)
        self._pending_count += 1
        return bool(raised) or event.lane is Lane.ALARMS

    def _records(self) -> tuple[list[NewRecord], list[tuple[str, int]]]:
        records: list[NewRecord] = []
        counted: list[tuple[str, int]] = []
        for (lane, device), events in self._pending.items():
            patient = self._patients.get(device)
            for chunk in _split(events, self._max_batch_items, lane):
                records.append(
                    NewRecord(lane, device, encode_batch(self._gateway_id, device, patient, lane, chunk), len(chunk))
                )
                counted.append((device, len(chunk)))
        return records, counted

    async def flush(self) -> None:
        """Commit every pending batch in one transaction."""
        if not self._pending:
            return
        records, counted = self._records()
        try:
            await self._buffer.append(records)
        except StorageError as err:
            # Keep the batches and retry; intake pauses while pending is over its cap (backpressure).
            log.error("buffer commit failed; retrying", rows=len(records), **err.log_fields())
            await asyncio.sleep(0.5)
            return
        self._pending = {}
        self._pending_count = 0
        self._metrics.rows_written += len(records)
        for device, items in counted:
            self._metrics.device(device).accepted += items
        self.stored.set()


def _split(events: list[Event], max_items: int, lane: Lane) -> list[list[Event]]:
    if lane is not Lane.WAVEFORMS:
        return [events[i : i + max_items] for i in range(0, len(events), max_items)]
    out: list[list[Event]] = []
    current: list[Event] = []
    samples = 0
    for event in events:
        n = len(event.samples) if isinstance(event, WaveformChunk) else 0
        if current and (samples + n > MAX_WAVEFORM_SAMPLES_PER_RECORD or len(current) >= max_items):
            out.append(current)
            current, samples = [], 0
        current.append(event)
        samples += n
    if current:
        out.append(current)
    return out
