"""The pipeline: events from drivers -> alarm rules -> batches per (lane, device) -> encrypted buffer.

Drivers `emit` into one ordered FIFO.  When it holds `queue_size` events, `emit` waits, and that wait reaches
back to the device link (backpressure instead of unbounded memory).  `emit_nowait` (for rare must-not-block
events such as a disconnect status) appends to the same FIFO, so the order of events from one device is kept.
An event counts as received once it is in the FIFO, and as accepted once the transaction holding it has
committed.  The pipeline commits every pending batch in one transaction (group commit) each flush interval,
or at once when an alarm is pending.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from cloud_sync.wire import encode_batch
from edge_ml.beats import BeatClassifier, ModelBeatClassifier, RuleBeatClassifier
from edge_ml.rhythm import ChannelKind, RhythmAnalyzer
from edge_ml.runtime import Model
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.buffer.store import Eviction, NewRecord
from gateway.errors import StorageError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import (
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    DeviceStatus,
    Event,
    Lane,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
)

log = get_logger(__name__)

MAX_WAVEFORM_SAMPLES_PER_RECORD = 32_768
RETRY_DELAY_S = 0.5
CLOSE_DEADLINE_S = 10.0

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
        waveform_record_s: float = 5.0,
        max_payload_bytes: int = 100_000,
        beat_model: Model | None = None,
    ) -> None:
        self.beat_model = beat_model
        # The beat classifier the rhythm analysis uses: the model when it loaded, else the rules.
        self._classifier: BeatClassifier = ModelBeatClassifier(beat_model) if beat_model else RuleBeatClassifier()
        self._buffer = buffer
        self._alarms = alarms
        self._metrics = metrics
        self._gateway_id = gateway_id
        self._patients = patients
        self._flush_interval = flush_interval_s
        self._max_batch_items = max_batch_items
        self._queue_size = queue_size
        self._waveform_record_s = waveform_record_s
        self._max_payload_bytes = max_payload_bytes
        self._pending_since: dict[tuple[Lane, str], float] = {}
        # Seconds of signal pending per (lane, device), per waveform quantity: a record holds up to
        # `waveform_record_s` of each signal, so multi-lead devices fill records as fast as single-lead ones.
        self._pending_signal_s: dict[tuple[Lane, str], dict[int, float]] = {}
        self._fifo: deque[Event] = deque()
        self._space = asyncio.Event()
        self._space.set()
        self._wake = asyncio.Event()
        self._closing = False
        self._pending: dict[tuple[Lane, str], list[Event]] = {}
        self._pending_count = 0
        self._urgent = False
        self.heartbeat = time.monotonic()  # last loop iteration; the systemd watchdog checks it
        self.stored = asyncio.Event()  # set after each commit; the uplink waits on it
        self.alarm_listeners: list[AlarmListener] = []
        self._episode: Eviction | None = None
        self._rhythm: dict[str, RhythmAnalyzer] = {}  # per device: every ECG lead, pleth and pressure it sends
        # Latest value per (device, quantity), for the local display only; never logged.
        self.latest: dict[tuple[str, str], Observation] = {}
        self.latest_status: dict[str, DeviceStatus] = {}
        # Events whose emitters wait until they are committed (a DICOM object before its C-STORE success).
        self._durable: dict[str, list[asyncio.Future[None]]] = {}
        self.battery: dict[str, float] = {}

    # -- EventSink -------------------------------------------------------------------------------------------
    async def emit(self, event: Event) -> None:
        while len(self._fifo) >= self._queue_size:
            self._space.clear()
            await self._space.wait()
        self._append(event)

    def emit_nowait(self, event: Event) -> None:
        self._append(event)

    def _append(self, event: Event) -> None:
        self._fifo.append(event)
        self._count_received(event)
        self._wake.set()

    def _count_received(self, event: Event) -> None:
        """Count an event entering the pipeline (from a driver, or an alarm the pipeline raised)."""
        counters = self._metrics.device(event.device_id)
        counters.received += 1
        counters.last_seen_ns = event.gateway_time_ns
        if isinstance(event, WaveformChunk):
            counters.samples_received += len(event.samples)

    def when_durable(self, event_id: str) -> asyncio.Future[None]:
        """A future that completes when the event with this id is committed to the buffer.  Register before emit."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable.setdefault(event_id, []).append(future)
        future.add_done_callback(lambda f: self._forget_durable(event_id, f))
        return future

    def _forget_durable(self, event_id: str, future: asyncio.Future[None]) -> None:
        waiters = self._durable.get(event_id)
        if waiters is not None and future in waiters:
            waiters.remove(future)
            if not waiters:
                del self._durable[event_id]

    # -- processing ------------------------------------------------------------------------------------------
    @property
    def backlog(self) -> int:
        return len(self._fifo) + self._pending_count

    async def run(self) -> None:
        """Process until `close()`; then commit everything emitted before it and return.

        Raises StorageError if the buffer still refuses the last batches when the close deadline passes, so
        the daemon exits non-zero and the loss is visible.
        """
        next_flush = time.monotonic() + self._flush_interval
        close_deadline: float | None = None
        next_escalation = time.monotonic() + 1.0
        while True:
            self.heartbeat = time.monotonic()
            self._take_available()
            if self.heartbeat >= next_escalation:
                next_escalation = self.heartbeat + 1.0
                for alarm in self._alarms.escalate(now_ns()):
                    self._raise(alarm)
            due = (
                self._closing
                or self._urgent
                or time.monotonic() >= next_flush
                or self._pending_count >= self._pending_cap
            )
            if due and self._pending and not await self.flush():
                await asyncio.sleep(RETRY_DELAY_S)
            if due:
                next_flush = time.monotonic() + self._flush_interval
            if self._closing:
                if not self._fifo and not self._pending:
                    return
                close_deadline = close_deadline or time.monotonic() + CLOSE_DEADLINE_S
                if time.monotonic() > close_deadline:
                    lost = self._pending_count + len(self._fifo)
                    log.error("buffer refused the last batches at shutdown", items=lost)
                    raise StorageError("events could not be committed before shutdown", items=lost)
                continue
            if not self._fifo:
                self._wake.clear()
                try:
                    async with asyncio.timeout(max(0.0, next_flush - time.monotonic())):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    def close(self) -> None:
        """Stop after draining: `run` commits everything already emitted and returns."""
        self._closing = True
        self._wake.set()

    @property
    def _pending_cap(self) -> int:
        return self._max_batch_items * 8

    def _take_available(self) -> None:
        """Move FIFO events into pending batches, up to the pending cap (over it, emitters wait)."""
        while self._fifo and self._pending_count < self._pending_cap:
            self._add(self._fifo.popleft())
        if len(self._fifo) < self._queue_size:
            self._space.set()

    def _analyse_rhythm(self, chunk: WaveformChunk, kind: ChannelKind) -> list[Alarm]:
        """Rhythm analysis of a device's signals, chunk by chunk: each ECG lead, pleth and arterial pressure
        wave feeds the device's analyser, which judges each second once every signal has covered it."""
        analyser = self._rhythm.get(chunk.device_id)
        if analyser is None:
            settings = self._alarms.rhythm_settings(chunk.device_id)
            analyser = self._rhythm[chunk.device_id] = RhythmAnalyzer(settings, self._classifier)
        values = chunk.physical()
        if kind is ChannelKind.ECG and chunk.unit == "uV":
            values = values / 1000.0  # the analysis works in millivolts
        raised: list[Alarm] = []
        start_s = (chunk.gateway_time_ns - chunk.duration_ns) / 1e9  # the chunk ends when it arrived
        for rhythm in analyser.feed(chunk.quantity.reference_id, kind, chunk.sample_rate_hz, values, start_s):
            if rhythm.pulsing:
                self._alarms.note_pulse(chunk.device_id, chunk.gateway_time_ns)
            raised += self._alarms.evaluate_rhythm(chunk.device_id, rhythm, chunk.gateway_time_ns)
        return raised

    def _add(self, event: Event) -> None:
        raised = self._alarms.evaluate(event)
        if isinstance(event, WaveformChunk):
            kind = rhythm_kind(event.quantity.reference_id)
            if kind is not None:
                raised += self._analyse_rhythm(event, kind)
        if isinstance(event, Observation):
            self.latest[(event.device_id, event.quantity.reference_id)] = event
        elif isinstance(event, DeviceStatus):
            self.latest_status[event.device_id] = event
            if event.battery_pct is not None:
                self.battery[event.device_id] = event.battery_pct
        for alarm in raised:
            self._raise(alarm)
        key = (event.lane, event.device_id)
        self._pending.setdefault(key, []).append(event)
        self._pending_since.setdefault(key, time.monotonic())
        if isinstance(event, WaveformChunk):
            spans = self._pending_signal_s.setdefault(key, {})
            spans[event.quantity.code] = spans.get(event.quantity.code, 0.0) + event.duration_ns / 1e9
        self._pending_count += 1
        if raised or event.lane is Lane.ALARMS:
            self._urgent = True

    def _due_keys(self) -> list[tuple[Lane, str]]:
        """Batches to commit now: all but young waveform batches, which wait to fill a record."""
        now = time.monotonic()
        due = []
        for key in self._pending:
            if (
                key[0] is not Lane.WAVEFORMS
                or self._closing
                or max(self._pending_signal_s.get(key, {}).values(), default=0.0) >= self._waveform_record_s
                or now - self._pending_since[key] >= self._waveform_record_s
                or self._pending_count >= self._pending_cap
            ):
                due.append(key)
        return due

    def _raise(self, alarm: Alarm) -> None:
        """An alarm from the rules: tell the local channel at once, and commit it at the next flush (now)."""
        self._metrics.alarms_raised += 1
        self._announce(alarm)

    def _announce(self, alarm: Alarm) -> None:
        """Any alarm (a device's or the gateway's own): listeners now, the ALARMS lane at the next flush (now)."""
        self._count_received(alarm)
        for listener in self.alarm_listeners:
            listener(alarm)
        self._pending.setdefault((Lane.ALARMS, alarm.device_id), []).append(alarm)
        self._pending_since.setdefault((Lane.ALARMS, alarm.device_id), time.monotonic())
        self._pending_count += 1
        self._urgent = True

    def _records(self, keys: list[tuple[Lane, str]]) -> tuple[list[NewRecord], list[tuple[str, int]]]:
        records: list[NewRecord] = []
        counted: list[tuple[str, int]] = []
        for key in keys:
            lane, device = key
            patient = self._patients.get(device)
            for chunk in _split(self._pending[key], self._max_batch_items, lane, self._waveform_record_s):
                for part, payload in self._encode_within_limit(device, patient, lane, chunk):
                    records.append(NewRecord(lane, device, payload, len(part)))
                    counted.append((device, len(part)))
        return records, counted

    def _encode_within_limit(
        self, device: str, patient: str | None, lane: Lane, events: list[Event]
    ) -> list[tuple[list[Event], bytes]]:
        """Encode a batch; halve it until each payload fits one uplink message (a lone event always goes)."""
        payload = encode_batch(self._gateway_id, device, patient, lane, events)
        if len(payload) <= self._max_payload_bytes or len(events) == 1:
            return [(events, payload)]
        middle = len(events) // 2
        return self._encode_within_limit(device, patient, lane, events[:middle]) + self._encode_within_limit(
            device, patient, lane, events[middle:]
        )

    async def flush(self) -> bool:
        """Commit every due batch in one transaction; False (batches kept for a retry) if the buffer failed."""
        keys = self._due_keys()
        if not keys:
            return True
        records, counted = self._records(keys)
        try:
            result = await self._buffer.append(records)
        except StorageError as err:
            # Keep the batches; intake pauses while pending is over its cap, so emitters wait (backpressure).
            log.error("buffer commit failed; will retry", rows=len(records), **err.log_fields())
            return False
        # Images evicted in this very commit (the quota made room) are not durable: their senders must keep them.
        images_evicted = Lane.IMAGES in result.eviction.by_lane
        for key in keys:
            if self._durable:
                for event in self._pending[key]:
                    for waiter in list(self._durable.get(event.id, ())):
                        if waiter.done():
                            continue
                        if images_evicted and event.lane is Lane.IMAGES:
                            waiter.set_exception(StorageError("evicted by the buffer quota in the same commit"))
                        else:
                            waiter.set_result(None)
            self._pending_count -= len(self._pending.pop(key))
            self._pending_since.pop(key, None)
            self._pending_signal_s.pop(key, None)
        self._urgent = False
        self._metrics.rows_written += len(records)
        for device, items in counted:
            self._metrics.device(device).accepted += items
        self._track_eviction(result.eviction)
        self.stored.set()
        return True

    def _track_eviction(self, eviction: Eviction) -> None:
        """Count evictions, and report an eviction episode as a technical alarm (raised, then cleared)."""
        for lane, items in eviction.by_lane.items():
            self._metrics.evicted_items[lane.topic_name] += items
        if eviction.rows:
            self._metrics.evicted_rows["total"] += eviction.rows
            if self._episode is None:
                self._episode = Eviction()
                log.warning("buffer over quota: evicting oldest low-priority data", rows=eviction.rows)
                self._raise_gateway_alarm(AlarmState.ACTIVE, eviction)
            self._episode.rows += eviction.rows
            self._episode.items += eviction.items
            self._episode.bytes += eviction.bytes
            for lane, items in eviction.by_lane.items():
                self._episode.by_lane[lane] = self._episode.by_lane.get(lane, 0) + items
        elif self._episode is not None:
            log.info("buffer back within quota", rows=self._episode.rows, items=self._episode.items)
            self._raise_gateway_alarm(AlarmState.CLEARED, self._episode)
            self._episode = None

    def _raise_gateway_alarm(self, state: AlarmState, eviction: Eviction) -> None:
        detail = {
            "rows": str(eviction.rows),
            "items": str(eviction.items),
            "bytes": str(eviction.bytes),
            "lanes": ",".join(sorted(lane.topic_name for lane in eviction.by_lane)),
            "over_quota": str(eviction.over_quota).lower(),
        }
        alarm = Alarm(
            new_id(),
            self._gateway_id,
            "buffer_evicting",
            AlarmKind.TECHNICAL,
            AlarmPriority.MEDIUM,
            state,
            now_ns(),
            detail=detail,
        )
        self._announce(alarm)


def rhythm_kind(reference_id: str) -> ChannelKind | None:
    """Which rhythm signal a waveform is (every ECG lead, the pleth, an arterial pressure), or None."""
    if reference_id.startswith("MDC_ECG_ELEC_POTL"):
        return ChannelKind.ECG
    if reference_id == "MDC_PULS_OXIM_PLETH":
        return ChannelKind.PLETH
    if reference_id == "MDC_PRESS_BLD_ART_ABP":
        return ChannelKind.ABP
    return None


def _split(events: list[Event], max_items: int, lane: Lane, waveform_record_s: float) -> list[list[Event]]:
    """Cut a batch into records: at most `max_items` events, and for waveforms a bounded span of signal."""
    if lane is not Lane.WAVEFORMS:
        return [events[i : i + max_items] for i in range(0, len(events), max_items)]
    out: list[list[Event]] = []
    current: list[Event] = []
    samples = 0
    spans: dict[int, float] = {}
    for event in events:
        n = len(event.samples) if isinstance(event, WaveformChunk) else 0
        code = event.quantity.code if isinstance(event, WaveformChunk) else 0
        span = event.duration_ns / 1e9 if isinstance(event, WaveformChunk) else 0.0
        if current and (
            samples + n > MAX_WAVEFORM_SAMPLES_PER_RECORD
            or len(current) >= max_items
            or spans.get(code, 0.0) + span > waveform_record_s * 1.5  # no tiny tail records
        ):
            out.append(current)
            current, samples, spans = [], 0, {}
        current.append(event)
        samples += n
        spans[code] = spans.get(code, 0.0) + span
    if current:
        out.append(current)
    return out
