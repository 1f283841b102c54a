"""The gateway daemon: wires drivers -> pipeline -> buffer -> uplink, supervises them, and stops cleanly.

Shutdown order matters for "nothing lost": drivers stop first (no new data), the pipeline drains its queue
and commits, then the uplink stops (whatever it had not delivered stays durable in the buffer).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from cloud_sync.uplink import Uplink
from drivers.base import CommandTarget, Driver
from drivers.registry import Backends, build_driver
from edge_ml.beats import MODEL_NAME
from edge_ml.runtime import Model, ModelError, bundled, load_model
from gateway.admin import AdminServer
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.clock import TrustedClock
from gateway.commands.ceilings import SafetyCeilings
from gateway.commands.service import CommandService
from gateway.commands.store import CommandStore
from gateway.config import Config
from gateway.core.logs import get_logger
from gateway.core.memory import release_free_memory
from gateway.core.model import Alarm, AlarmState, CommandOutcome, CommandResult, new_id, now_ns
from gateway.core.stats import Metrics
from gateway.liveness import LivenessMonitor, liveness_rules
from gateway.local_alarms import LocalAlarmPublisher
from gateway.metrics_http import MetricsServer
from gateway.pipeline import Pipeline
from gateway.preflight import local_alarm_tls, preflight
from gateway.sdnotify import SystemdNotifier
from gateway.status import DeviceView, ModelStats, StatusSnapshot, TaskStatus
from gateway.supervisor import Supervisor

log = get_logger(__name__)

COMMAND_QUEUE = 1000
TRIM_INTERVAL_S = 60.0


@dataclass
class GatewayParts:
    buffer: Buffer
    pipeline: Pipeline
    uplink: Uplink
    commands: CommandService | None = None
    command_queue: asyncio.Queue[tuple[str, bytes]] | None = None
    command_store: CommandStore | None = None
    supervisor: Supervisor | None = None


class Gateway:
    """One running gateway.  `run(stop)` returns after a clean shutdown once `stop` is set."""

    def __init__(
        self,
        config: Config,
        backends: Backends | None = None,
        notifier: SystemdNotifier | None = None,
        *,
        clock: TrustedClock | None = None,
        ceilings: SafetyCeilings | None = None,
    ) -> None:
        self.config = config
        self.backends = backends if backends is not None else Backends.defaults(config.devices)
        # One trusted clock for every safety decision that rests on time (commands, device clocks).
        self.clock = (
            clock
            if clock is not None
            else TrustedClock(max_error_s=config.clock.max_error_s, skew_s=config.commands.clock_skew_s)
        )
        if self.backends.trusted_time is None:
            self.backends.trusted_time = self.clock.trusted_wall_ns
        self.ceilings = ceilings if ceilings is not None else SafetyCeilings()
        self.metrics = Metrics()
        self.alarms = AlarmEngine(config.alarms, {d.id: d.patient for d in config.devices})
        self.notifier = notifier or SystemdNotifier()
        self.started = asyncio.Event()
        # Set by a GatewayRunner: verified remote configurations to apply (with restart and health check).
        self.config_requests: asyncio.Queue[tuple[str, Config]] | None = None
        self._admin: AdminServer | None = None
        self.local_alarms: LocalAlarmPublisher | None = None
        self._metrics_server: MetricsServer | None = None
        self.parts: GatewayParts | None = None
        self.drivers: dict[str, Driver] = {}  # by device id, once running (diagnostics and tests)
        self.started_at = time.monotonic()

    async def _open(self) -> GatewayParts:
        cfg = self.config
        keyring, tls = preflight(cfg)  # secrets first: a bad certificate must not leave an open buffer behind
        buffer = await Buffer.open(
            cfg.state_dir / cfg.buffer.path,
            keyring,
            cfg.buffer.synchronous,
            max_bytes=cfg.buffer.max_mb * 1024 * 1024,
            min_free_disk_bytes=cfg.buffer.min_free_disk_mb * 1024 * 1024,
            degraded_start=True,  # a full disk or a held lock at start: run, alarm, retry (no crash loop)
        )
        pipeline = Pipeline(
            buffer,
            self.alarms,
            self.metrics,
            gateway_id=cfg.gateway.id,
            patients={d.id: d.patient for d in cfg.devices},
            flush_interval_s=cfg.buffer.flush_interval_ms / 1000,
            max_batch_items=cfg.buffer.max_batch_items,
            queue_size=cfg.buffer.queue_size,
            waveform_record_s=cfg.buffer.waveform_record_s,
            # A stored batch must fit one uplink message, with room for framing and the topic.
            max_payload_bytes=cfg.mqtt.max_message_bytes - 4096,
            beat_model=self._load_beat_model(),
            memory_bound_bytes=cfg.buffer.outage_memory_mb * 1024 * 1024,
        )
        queue: asyncio.Queue[tuple[str, bytes]] | None = asyncio.Queue(COMMAND_QUEUE) if cfg.commands.enabled else None
        uplink = Uplink(
            cfg.mqtt, buffer, pipeline.stored, self.metrics, gateway_id=cfg.gateway.id, tls_context=tls, downlink=queue
        )
        parts = GatewayParts(buffer, pipeline, uplink, command_queue=queue)
        if cfg.commands.enabled:
            parts.command_store = CommandStore(cfg.state_dir / "commands.sqlite3", keyring)
        return parts

    async def run(self, stop: asyncio.Event, *, drain_uplink_s: float = 0.0) -> None:
        """Run until `stop` is set, then stop drivers, commit everything, and optionally let the uplink drain."""
        parts = self.parts = await self._open()
        # Liveness counts from now: a device never heard within its interval is reported silent.
        self.alarms.liveness = LivenessMonitor(liveness_rules(self.config.devices), now_ns())
        try:
            drivers = [
                build_driver(device, self.backends, self.config.secret_path, self.config.state_dir)
                for device in self.config.devices
            ]
            self.drivers = {driver.device_id: driver for driver in drivers}
            for driver in drivers:
                self.metrics.drivers[driver.device_id] = driver.stats
            if parts.command_store is not None:
                targets: dict[str, CommandTarget] = {}
                for driver in drivers:
                    target = driver.command_target
                    if target is not None:
                        targets[driver.device_id] = target
                parts.commands = CommandService(
                    self.config.commands,
                    parts.command_store,
                    targets,
                    parts.pipeline,
                    gateway_id=self.config.gateway.id,
                    clock=self.clock,
                    ceilings=self.ceilings,
                    device_classes={d.id: d.profile for d in self.config.devices},
                )
                rejections = self.metrics.command_rejections
                parts.commands.on_rejection = lambda reason: rejections.update([reason])
            async with asyncio.TaskGroup() as group:
                pipeline_task = group.create_task(parts.pipeline.run(), name="pipeline")
                watchdog_task = group.create_task(self._watchdog(), name="watchdog")
                local_alarms_task = None
                if self.config.alarms.local is not None:
                    self.local_alarms = LocalAlarmPublisher(
                        self.config.alarms.local,
                        self.config.gateway.id,
                        tls_context=local_alarm_tls(self.config),
                        password=self._local_alarm_password(),
                    )
                    parts.pipeline.alarm_listeners.append(self.local_alarms.offer)
                    local_alarms_task = group.create_task(self.local_alarms.run(), name="local-alarms")
                commands_task = None
                if parts.commands is not None and parts.command_queue is not None:
                    commands_task = group.create_task(
                        self._serve_commands(parts.commands, parts.command_queue), name="commands"
                    )
                supervisor = parts.supervisor = Supervisor(
                    group,
                    self.metrics,
                    initial_s=self.config.supervisor.backoff_initial_s,
                    max_s=self.config.supervisor.backoff_max_s,
                )
                # The uplink is supervised like a driver: a storage error while draining restarts the uplink,
                # never the pipeline (which would lose what it has not committed yet).
                uplink = supervisor.start("uplink", parts.uplink.run)
                for driver in drivers:
                    name = f"driver:{driver.device_id}"
                    driver.on_healthy = supervisor.health_reporter(name)
                    supervisor.start(name, partial(driver.run, parts.pipeline))
                await self._start_local_services()
                self.notifier.ready(f"running {len(drivers)} drivers")
                self.started.set()
                log.info("gateway started", gateway_id=self.config.gateway.id, count=len(drivers))

                await stop.wait()

                self.notifier.stopping()
                if commands_task is not None:
                    commands_task.cancel()
                log.info("gateway stopping: draining into the buffer")
                await supervisor.stop(exclude={uplink.name})
                parts.pipeline.close()
                await pipeline_task
                if drain_uplink_s > 0:
                    await self._wait_drained(parts, drain_uplink_s)
                await supervisor.stop()
                watchdog_task.cancel()
                if local_alarms_task is not None:
                    local_alarms_task.cancel()
        finally:
            await self._stop_local_services()
            await parts.buffer.close()
            if parts.command_store is not None:
                parts.command_store.close()
            self.notifier.close()
        devices = self.metrics.devices.values()
        log.info(
            "gateway stopped",
            count=sum(d.received for d in devices),
            items=sum(d.accepted for d in devices),
            rows=self.metrics.rows_written,
            shed=sum(self.metrics.shed_items.values()),
            evicted=sum(self.metrics.evicted_items.values()),
            implausible=self.metrics.implausible_values,
        )

    def _local_alarm_password(self) -> str | None:
        local = self.config.alarms.local
        if local is None or local.password_file is None:
            return None
        return self.config.secret_path(local.password_file).read_text("utf-8").strip()

    def _load_beat_model(self) -> Model | None:
        """The ECG beat model, verified against its manifest; without it the rhythm alarms still run."""
        try:
            return load_model(bundled(MODEL_NAME))
        except ModelError as err:
            log.error("ECG beat model refused; running without it", **err.log_fields())  # no context of our own
            return None

    async def _start_local_services(self) -> None:
        self._admin = AdminServer(self, self.config.admin_socket, self.config.admin.group)
        await self._admin.start()
        if self.config.metrics.enabled:
            self._metrics_server = MetricsServer(self, self.config.metrics.host, self.config.metrics.port)
            await self._metrics_server.start()

    async def _stop_local_services(self) -> None:
        if self._admin is not None:
            await self._admin.stop()
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        self._admin = self._metrics_server = None

    async def _serve_commands(self, service: CommandService, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        """One command at a time, in arrival order: checks such as spacing and daily totals see every
        earlier command's outcome.  A verified configuration goes to the runner, which applies it.  Between
        commands, outcome-unknown commands are settled from their devices' histories when the service asks."""
        while True:
            if service.settle_wanted.is_set():
                await service.settle_unknown_outcomes()
            item = await _next_or_woken(queue, service.settle_wanted)
            if item is None:
                continue
            kind, payload = item
            if kind == "command":
                await service.handle(payload)
                continue
            config_id, config = service.verify_configuration(payload, self.config)
            if config is None:
                continue
            if self.config_requests is None:
                service.report_configuration(config_id, CommandOutcome.FAILED, "this gateway runs without a runner")
                continue
            await self.config_requests.put((config_id, config))

    def report_configuration(self, config_id: str, outcome: CommandOutcome, reason: str | None) -> None:
        """Report the end of a remote configuration update (audited when commands are enabled)."""
        parts = self.parts
        if parts is None:
            return
        if parts.commands is not None:
            parts.commands.report_configuration(config_id, outcome, reason)
        else:
            parts.pipeline.emit_nowait(CommandResult(new_id(), config_id, "gateway", outcome, now_ns(), reason))

    # -- GatewayControl (gateway/status.py): what the admin API and the metrics endpoint see -------------------
    async def snapshot(self) -> StatusSnapshot:
        parts = self.parts
        supervisor = parts.supervisor if parts is not None else None
        tasks = supervisor.tasks if supervisor is not None else {}
        model = parts.pipeline.beat_model if parts is not None else None
        devices = []
        for device in self.config.devices:
            status = parts.pipeline.latest_status.get(device.id) if parts is not None else None
            devices.append(
                DeviceView(
                    device.id,
                    device.profile,
                    device.transport,
                    status.connection.value if status is not None else None,
                    parts.pipeline.battery.get(device.id) if parts is not None else None,
                    status.rssi_dbm if status is not None else None,
                )
            )
        return StatusSnapshot(
            gateway_id=self.config.gateway.id,
            uptime_s=time.monotonic() - self.started_at,
            started=parts is not None,
            sync_state=parts.uplink.state.value if parts is not None else "starting",
            sync_last_error=parts.uplink.last_error if parts is not None else None,
            sync_inflight=parts.uplink.inflight if parts is not None else 0,
            pipeline_backlog=parts.pipeline.backlog if parts is not None else 0,
            metrics=self.metrics,
            devices=devices,
            tasks={
                name: TaskStatus(task.running_since is not None, task.restarts, task.last_error)
                for name, task in tasks.items()
            },
            lanes=await parts.buffer.stats() if parts is not None else [],
            active_alarms=list(self.alarms.active.values()),
            model=None if model is None else ModelStats(model.manifest.name, model.runs, model.latency_ms(99)),
        )

    def set_alarm_state(self, alarm_id: str, state: AlarmState) -> Alarm | None:
        alarm = self.alarms.set_state(alarm_id, state)
        if alarm is not None and self.parts is not None:
            self.parts.pipeline.emit_nowait(alarm)  # the acknowledgement is uplinked like the alarm itself
        return alarm

    def sync_now(self) -> str | None:
        if self.parts is None:
            return None
        self.parts.uplink.wake()
        return self.parts.uplink.state.value

    def configuration(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    async def _wait_drained(self, parts: GatewayParts, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = await parts.buffer.stats()
            if sum(s.rows for s in stats) == 0 and parts.uplink.inflight == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _watchdog(self) -> None:
        """Pings the systemd watchdog only while the pipeline and the uplink loops keep turning."""
        interval = self.notifier.watchdog_interval_s or self.config.supervisor.watchdog_interval_s
        stale_after = max(4 * interval, 2 * self.config.buffer.flush_interval_ms / 1000 + 5.0)
        next_trim = time.monotonic() + TRIM_INTERVAL_S
        while True:
            await asyncio.sleep(interval)
            parts = self.parts
            if parts is None:
                continue
            now = time.monotonic()
            if now >= next_trim:
                next_trim = now + TRIM_INTERVAL_S
                release_free_memory()  # RSS is what is in use, not the last burst's peak (gateway/core/memory.py)
            pipeline_age = now - parts.pipeline.heartbeat
            uplink_age = now - parts.uplink.heartbeat
            # The uplink may sleep through a long reconnect backoff; that is progress too.
            uplink_limit = stale_after + self.config.mqtt.reconnect_max_s
            if pipeline_age > stale_after or uplink_age > uplink_limit:
                log.error(
                    "a core loop is stuck; withholding the watchdog ping",
                    elapsed_s=round(max(pipeline_age, uplink_age), 1),
                )
                continue
            self.notifier.watchdog()
            self.notifier.status(
                f"sync {parts.uplink.state}; {len(self.config.devices)} devices; "
                f"backlog {parts.pipeline.backlog}; rows out {self.metrics.rows_deleted}"
            )


async def _next_or_woken(queue: asyncio.Queue[tuple[str, bytes]], wake: asyncio.Event) -> tuple[str, bytes] | None:
    """The next queued item, or None as soon as `wake` is set first (an item then stays queued)."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({getter, woken}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        if not getter.done():
            getter.cancel()  # asyncio.Queue hands an item it was about to give to the next getter instead
    return getter.result() if getter.done() and not getter.cancelled() else None
