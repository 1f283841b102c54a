"""The pipeline: events from drivers -> alarm rules -> batches per (lane, device) -> encrypted buffer.

Drivers `emit` into one ordered FIFO.  When it holds `queue_size` events, `emit` waits, and that wait reaches
back to the device link (backpressure instead of unbounded memory).  `emit_nowait` (for rare must-not-block
events such as a disconnect status) appends to the same FIFO, so the order of events from one device is kept.
An event counts as received once it is in the FIFO, and as accepted once the transaction holding it has
committed.  The pipeline commits every pending batch in one transaction (group commit) each flush interval,
or at once when an alarm is pending.

A commit runs beside the loop, not in it: while the buffer is slow or failing (a full disk, a database locked
by another process) the pipeline keeps taking events and evaluating alarms, and the local alarm channel hears
them at once.  A failed commit keeps its batches and is retried with backoff (`gateway.storage_health`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_ml.alarm_set import ChannelKind
from gateway import plausibility
from gateway.alarms import AlarmEngine
from gateway.core.backlog import AppendResult, Eviction, NewRecord, Store
from gateway.core.errors import StorageError
from gateway.core.logs import get_logger
from gateway.core.model import (
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
from gateway.core.stats import Metrics
from gateway.core.wire import encode_batch
from gateway.storage_health import SHED_ORDER, StorageHealth, held_bytes, not_durable

if TYPE_CHECKING:
    from edge_ml.beats import BeatClassifier
    from edge_ml.rhythm import RhythmAnalyzer
    from edge_ml.runtime import Model

log = get_logger(__name__)

MAX_WAVEFORM_SAMPLES_PER_RECORD = 32_768
CLOSE_DEADLINE_S = 10.0
DEFAULT_MEMORY_BOUND_BYTES = 64 * 1024 * 1024
DEFAULT_IMAGE_BYTES_HELD = 4 * 1024 * 1024

AlarmListener = Callable[[Alarm], None]
Key = tuple[Lane, str]


class Pipeline:
    """Receives events from drivers and makes them durable in the buffer."""

    def __init__(
        self,
        buffer: Store,
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
        load_beat_model: Callable[[], Model | None] | None = None,
        memory_bound_bytes: int = DEFAULT_MEMORY_BOUND_BYTES,
        image_bytes_held: int = DEFAULT_IMAGE_BYTES_HELD,
    ) -> None:
        self.beat_model = beat_model
        # The beat classifier the rhythm analysis uses: the model when it loaded, else the rules.  With a loader,
        # the model (and LiteRT) is loaded when the first device's rhythm is analysed: a gateway with no ECG,
        # pleth or pressure device never pays for it.
        self._load_beat_model = load_beat_model
        self._classifier: BeatClassifier | None = None
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
        self._eviction_alarm_id = ""  # the buffer_evicting alarm of the current episode: raise and clear share it
        self._rhythm: dict[str, RhythmAnalyzer] = {}  # per device: every ECG lead, pleth and pressure it sends
        self._staged: dict[str, int] = {}  # devices with signal staged for analysis: their latest chunk's time
        # Latest value per (device, quantity), for the local display only; never logged.
        self.latest: dict[tuple[str, str], Observation] = {}
        self.latest_status: dict[str, DeviceStatus] = {}
        # Events whose emitters wait until they are committed (a DICOM object before its C-STORE success).
        self._durable: dict[str, list[asyncio.Future[None]]] = {}
        self.battery: dict[str, float] = {}
        # Memory: bytes held (queued, pending or being committed); images have their own, smaller budget
        # (a DICOM object's chunks wait at `emit`), and a storage outage sheds over `memory_bound_bytes`.
        self._memory_bound = memory_bound_bytes
        self._image_budget = image_bytes_held
        self._held = 0
        self._image_held = 0
        self.health = StorageHealth(gateway_id, clock=time.monotonic)
        self._commit: asyncio.Task[AppendResult] | None = None
        self._inflight: dict[Key, list[Event]] = {}
        self._inflight_since: dict[Key, float] = {}
        self._counted: list[tuple[str, int]] = []
        self._rows = 0

    # -- EventSink -------------------------------------------------------------------------------------------
    async def emit(self, event: Event) -> None:
        while len(self._fifo) >= self._queue_size or (
            event.lane is Lane.IMAGES and self._image_held >= self._image_budget
        ):
            self._space.clear()
            await self._space.wait()
        self._append(event)

    def emit_nowait(self, event: Event) -> None:
        self._append(event)

    def _append(self, event: Event) -> None:
        self._fifo.append(event)
        self._hold(event)
        self._count_received(event)
        self._wake.set()

    def _hold(self, event: Event) -> None:
        size = held_bytes(event)
        self._held += size
        if event.lane is Lane.IMAGES:
            self._image_held += size

    def _release(self, events: list[Event]) -> None:
        for event in events:
            size = held_bytes(event)
            self._held -= size
            if event.lane is Lane.IMAGES:
                self._image_held -= size
        self._space.set()

    @property
    def held_bytes(self) -> int:
        """Bytes of events held in memory (queued, pending or being committed), roughly."""
        return self._held

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
        try:
            while True:
                self.heartbeat = now = time.monotonic()
                self._take_available()
                if now >= next_escalation:
                    next_escalation = now + 1.0
                    for alarm in self._alarms.escalate(now_ns()) + self._alarms.check_liveness(now_ns()):
                        self._raise(alarm)
                if self._commit is not None and self._commit.done():
                    self._finish_commit()
                due = self._closing or self._urgent or now >= next_flush or self._pending_count >= self._pending_cap
                if due and self._commit is None and now >= self.health.retry_at:
                    self._start_commit()
                    next_flush = now + self._flush_interval
                if self._closing:
                    if not self._fifo and not self._pending and self._commit is None:
                        return
                    close_deadline = close_deadline or now + CLOSE_DEADLINE_S
                    if now > close_deadline:
                        lost = self._pending_count + len(self._fifo)
                        log.error("buffer refused the last batches at shutdown", items=lost)
                        raise StorageError("events could not be committed before shutdown", items=lost)
                await self._idle(next_flush, next_escalation)
        finally:
            if self._commit is not None:
                self._commit.cancel()

    async def _idle(self, next_flush: float, next_escalation: float) -> None:
        """Wait for the next thing to do: an event, a finished commit, the flush interval or a retry; with nothing
        to commit, only an event or the once-a-second alarm checks (an idle gateway does not tick 5 times a second)."""
        self._wake.clear()
        if self._fifo and (self.health.degraded or self._pending_count < self._pending_cap):
            await asyncio.sleep(0)  # more to take at once; let emitters run first
            return
        if self._commit is not None:
            # The commit's end wakes the loop (its done callback); a flush that fell due meanwhile waits for it, so
            # the loop must not wake for it (a past flush time was a zero timeout: a busy loop beside the commit).
            wake_at = next_escalation
        elif self._pending:
            wake_at = next_flush
        else:
            wake_at = max(next_flush, next_escalation)
        if self._commit is None and self._pending:
            wake_at = min(wake_at, self.health.retry_at) if self.health.degraded else wake_at
            if self._closing:
                wake_at = self.health.retry_at
        try:
            async with asyncio.timeout(max(0.0, wake_at - time.monotonic())):
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
        """Move FIFO events into pending batches, up to the pending cap (over it, emitters wait).

        While the buffer is unavailable every event is taken, so alarm rules keep running; memory is then
        bounded by shedding the lowest lanes instead.
        """
        degraded = self.health.degraded
        while self._fifo and (degraded or self._pending_count < self._pending_cap):
            self._add(self._fifo.popleft())
        self._analyse_staged()
        if degraded and self._held > self._memory_bound:
            self._shed()
        if len(self._fifo) < self._queue_size:
            self._space.set()

    def _shed(self) -> None:
        """Over the memory bound during an outage: drop the oldest held events of the lowest lanes first."""
        for lane in SHED_ORDER:
            for key in [k for k in self._pending if k[0] is lane]:
                if self._held <= self._memory_bound:
                    return
                events = self._pending[key]
                count = freed = 0
                while count < len(events) and self._held - freed > self._memory_bound:
                    freed += held_bytes(events[count])
                    count += 1
                shed, rest = events[:count], events[count:]
                not_durable(shed, self._durable, "shed while the buffer was unavailable")
                self._release(shed)
                self._pending_count -= count
                self._metrics.shed_items[lane.topic_name] += count
                self.health.note_shed(lane, count)
                if rest:
                    self._pending[key] = rest
                    self._recount_signal(key)
                else:
                    self._forget(key)

    def _forget(self, key: Key) -> None:
        self._pending.pop(key, None)
        self._pending_since.pop(key, None)
        self._pending_signal_s.pop(key, None)

    def _recount_signal(self, key: Key) -> None:
        if key[0] is not Lane.WAVEFORMS:
            return
        spans: dict[int, float] = {}
        for event in self._pending.get(key, ()):
            if isinstance(event, WaveformChunk):
                spans[event.quantity.code] = spans.get(event.quantity.code, 0.0) + event.duration_ns / 1e9
        self._pending_signal_s[key] = spans

    def _beat_classifier(self) -> BeatClassifier:
        from edge_ml.beats import ModelBeatClassifier, RuleBeatClassifier  # noqa: PLC0415 - numpy with the first rhythm
        from edge_ml.runtime import ModelError  # noqa: PLC0415

        if self._classifier is None:
            loader, self._load_beat_model = self._load_beat_model, None
            if loader is not None:
                self.beat_model = loader()
            self._classifier = RuleBeatClassifier()
            if self.beat_model is not None:
                try:
                    self._classifier = ModelBeatClassifier(self.beat_model)
                except ModelError as err:
                    log.error("beat model refused; the rules classify beats", **err.log_fields())
        return self._classifier

    def _stage_rhythm(self, chunk: WaveformChunk, kind: ChannelKind) -> None:
        """Rhythm analysis of a device's signals, chunk by chunk: each ECG lead, pleth and arterial pressure wave
        feeds the device's analyser, which judges each second once every signal has covered it.

        The ECG leads' seconds are staged, and analysed together (every device's, `_analyse_staged`) when the
        events at hand are taken, or before a lead would stage a second second: under load a second of many
        leads is analysed at once, for a fraction of the cost of analysing each apart, and with the same
        results."""
        analyser = self._rhythm.get(chunk.device_id)
        if analyser is None:
            settings = self._alarms.rhythm_settings(chunk.device_id)
            from edge_ml.rhythm import RhythmAnalyzer  # noqa: PLC0415 - the signal stack only where rhythm is analysed

            analyser = self._rhythm[chunk.device_id] = RhythmAnalyzer(settings, self._beat_classifier())
        if analyser.staged(chunk.quantity.reference_id):
            self._analyse_staged()
        values = chunk.physical()
        if kind is ChannelKind.ECG and chunk.unit == "uV":
            values /= 1000.0  # the analysis works in millivolts (physical() gives a new array)
        start_s = (chunk.gateway_time_ns - chunk.duration_ns) / 1e9  # the chunk ends when it arrived
        analyser.stage(chunk.quantity.reference_id, kind, chunk.sample_rate_hz, values, start_s, chunk.gateway_time_ns)
        self._staged[chunk.device_id] = chunk.gateway_time_ns

    def _analyse_staged(self) -> None:
        """Analyse the staged seconds of every device, then judge each device's complete seconds and raise what
        they show: all devices' seconds in the order their last signal arrived, each timed by that arrival, as
        if each had been judged the moment it was complete (a pulse on one device vetoes another's asystole
        just as it would have)."""
        if not self._staged:
            return
        from edge_ml.rhythm import analyse_staged  # noqa: PLC0415 - the signal stack only where rhythm is analysed

        staged, self._staged = self._staged, {}
        analyse_staged(self._rhythm[device] for device in staged)
        judged = [
            (rhythm.arrived_ns if rhythm.arrived_ns is not None else latest, n, device, rhythm)
            for device, latest in staged.items()
            for n, rhythm in enumerate(self._rhythm[device].fuse())
        ]
        judged.sort(key=lambda j: j[0])  # (stable: a device's seconds, and devices of one arrival, keep their order)
        for gateway_time_ns, _, device, rhythm in judged:
            if rhythm.pulsing:
                self._alarms.note_pulse(device, gateway_time_ns)
            raised = self._alarms.evaluate_rhythm(device, rhythm, gateway_time_ns)
            for alarm in raised:
                self._raise(alarm)
            if raised:
                self._urgent = True

    def _add(self, event: Event) -> None:
        if isinstance(event, Observation) and not self._plausible(event):
            return
        raised = self._alarms.evaluate(event)
        if isinstance(event, WaveformChunk):
            kind = rhythm_kind(event.quantity.reference_id)
            if kind is not None:
                self._stage_rhythm(event, kind)
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

    def _plausible(self, obs: Observation) -> bool:
        """An impossible value is a technical alarm, not data: it is neither stored nor evaluated by the rules."""
        keep, alarms = plausibility.check(obs, self._alarms)
        for alarm in alarms:
            self._raise(alarm)
        if not keep:
            self._metrics.implausible_values += 1
            self._release([obs])
            for waiter in list(self._durable.get(obs.id, ())):
                if not waiter.done():
                    waiter.set_result(None)  # dealt with: the sender's retry would carry the same value
        return keep

    def _due_keys(self) -> list[Key]:
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
        self._hold(alarm)
        for listener in self.alarm_listeners:
            try:
                listener(alarm)
            except Exception:  # a listener's fault must not stop the alarm reaching the buffer
                log.exception("alarm listener failed", condition=alarm.condition)
        self._pending.setdefault((Lane.ALARMS, alarm.device_id), []).append(alarm)
        self._pending_since.setdefault((Lane.ALARMS, alarm.device_id), time.monotonic())
        self._pending_count += 1
        self._urgent = True

    def _records(self, batches: dict[Key, list[Event]]) -> tuple[list[NewRecord], list[tuple[str, int]]]:
        records: list[NewRecord] = []
        counted: list[tuple[str, int]] = []
        for key, events in batches.items():
            lane, device = key
            patient = self._patients.get(device)
            for chunk in _split(events, self._max_batch_items, lane, self._waveform_record_s):
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

    def _start_commit(self) -> None:
        """Take every due batch out of pending and commit them in one transaction, beside the loop."""
        keys = self._due_keys()
        if not keys:
            return
        self._inflight = {key: self._pending.pop(key) for key in keys}
        self._inflight_since = {key: self._pending_since.pop(key) for key in keys}
        for key in keys:
            self._pending_signal_s.pop(key, None)
        self._urgent = False
        records, counted = self._records(self._inflight)
        self._counted = counted
        task = asyncio.get_running_loop().create_task(self._buffer.append(records), name="pipeline-commit")
        task.add_done_callback(lambda _: self._wake.set())
        self._commit = task
        self._rows = len(records)

    def _finish_commit(self) -> None:
        task, self._commit = self._commit, None
        batches, self._inflight = self._inflight, {}
        since, self._inflight_since = self._inflight_since, {}
        assert task is not None  # noqa: S101 - only called for a finished commit
        try:
            result = task.result()
        except Exception as exc:  # noqa: BLE001 - whatever failed the commit, the batches are kept and retried
            err = exc if isinstance(exc, StorageError) else StorageError("commit failed", error=type(exc).__name__)
            # Keep the batches, ahead of what arrived since, and retry after the backoff.
            for key, events in batches.items():
                self._pending[key] = events + self._pending.get(key, [])
                self._pending_since[key] = min(since[key], self._pending_since.get(key, since[key]))
                self._recount_signal(key)
                if key[0] is Lane.ALARMS:
                    self._urgent = True
            self._metrics.storage_failures += 1
            alarm = self.health.failed(err, self._pending_count)
            if alarm is not None:
                self._announce(alarm)
            return
        # Images evicted in this very commit (the quota made room) are not durable: their senders must keep them.
        images_evicted = Lane.IMAGES in result.eviction.by_lane
        for key, events in batches.items():
            if self._durable:
                if images_evicted and key[0] is Lane.IMAGES:
                    not_durable(events, self._durable, "evicted by the buffer quota in the same commit")
                for event in events:
                    for waiter in list(self._durable.get(event.id, ())):
                        if not waiter.done():
                            waiter.set_result(None)
            self._pending_count -= len(events)
            self._release(events)
        self._metrics.rows_written += self._rows
        for device, items in self._counted:
            self._metrics.device(device).accepted += items
        self._track_eviction(result.eviction)
        cleared = self.health.succeeded()
        if cleared is not None:
            self._announce(cleared)
        self.stored.set()

    def _track_eviction(self, eviction: Eviction) -> None:
        """Count evictions, and report an eviction episode as a technical alarm (raised, then cleared)."""
        for lane, items in eviction.by_lane.items():
            self._metrics.evicted_items[lane.topic_name] += items
        if eviction.rows:
            self._metrics.evicted_rows["total"] += eviction.rows
            if self._episode is None:
                self._episode = Eviction()
                self._eviction_alarm_id = new_id()
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
            alarm_id=self._eviction_alarm_id,
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
