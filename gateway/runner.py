"""The runner: keeps one Gateway running, and applies verified remote configurations so that a power cut at
any instant ends on a vetted configuration.

Applying a configuration, in this order, each step durable (fsync) before the next:

1. the running file is copied to `<config>.previous`;
2. the marker `<config>.pending` (the configuration's id) says an unconfirmed configuration may be in place;
3. the new file replaces the running one atomically;
4. the running gateway stops (draining everything into the buffer), a gateway starts on the new file;
5. healthy within `health_timeout_s` (its uplink online *and* every configured device connected): the marker
   is removed, and the new file is vetted.  Not healthy: the previous file is restored, the marker removed,
   and the gateway restarts on it.

A failed write in 1-3 leaves the old gateway running, untouched (it is only stopped at 4).  At start,
`recover_pending` finds a marker left by a crash or power cut anywhere in 2-5 and restores the previous file
before anything reads the configuration: an unconfirmed configuration never survives a restart.  Either way
the outcome is reported uplink (applied, or rolled back and why), and nothing accepted is lost: the buffer
carries over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import tomli_w

from cloud_sync.uplink import SyncState
from drivers.registry import Backends
from gateway.clock import TrustedClock
from gateway.commands.ceilings import SafetyCeilings
from gateway.config import Config
from gateway.core.logs import get_logger
from gateway.core.model import CommandOutcome, ConnectionState
from gateway.daemon import Gateway
from gateway.storage.atomic import remove_durably, write_atomically

log = get_logger(__name__)

# The apply steps, named for logs and for the fault-injection hook (`on_step`).
STEPS = ("previous-written", "pending-written", "config-written", "old-stopped", "health-window", "confirmed")


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def previous_path(config_path: Path) -> Path:
    return _sibling(config_path, ".previous")


def pending_path(config_path: Path) -> Path:
    return _sibling(config_path, ".pending")


def recover_pending(config_path: Path) -> str | None:
    """At start: roll back a configuration that was never confirmed healthy; its id, or None if there was none."""
    marker = pending_path(config_path)
    if not marker.exists():
        return None
    try:
        config_id = str(json.loads(marker.read_text(encoding="utf-8")).get("config_id", ""))
    except (OSError, ValueError, AttributeError):
        config_id = ""  # a marker cut short by the power cut: still a pending configuration
    previous = previous_path(config_path)
    if previous.exists():
        write_atomically(config_path, previous.read_bytes())
    remove_durably(marker)
    log.warning("unconfirmed remote configuration rolled back at start", command_id=config_id)
    return config_id


def seed_config(config_path: Path, initial: Path | None) -> None:
    """Copy the installed configuration into place on first start (the running copy is the gateway's to change)."""
    if initial is None or config_path.exists() or not initial.exists():
        return
    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(config_path, initial.read_bytes())
    log.info("configuration seeded from the installed file")


class GatewayRunner:
    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        backends: Backends | None = None,
        health_timeout_s: float = 30.0,
        clock: TrustedClock | None = None,
        ceilings: SafetyCeilings | None = None,
        rolled_back_at_start: str | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.config_path = config_path
        self.config = config
        self._backends = backends
        self._health_timeout = health_timeout_s
        self._clock = clock
        self._ceilings = ceilings
        self._rolled_back_at_start = rolled_back_at_start
        self._on_step = on_step or (lambda step: None)
        self.gateway: Gateway | None = None
        self.restarts = 0

    def _step(self, step: str, config_id: str) -> None:
        log.info("remote configuration step", state=step, command_id=config_id)
        self._on_step(step)

    def _start(self, config: Config) -> tuple[Gateway, asyncio.Event, asyncio.Task[None]]:
        gateway = Gateway(config, self._backends, clock=self._clock, ceilings=self._ceilings)
        gateway.config_requests = asyncio.Queue(1)
        self.gateway = gateway
        stop = asyncio.Event()
        return gateway, stop, asyncio.create_task(gateway.run(stop), name="gateway")

    async def run(self, stop: asyncio.Event) -> None:
        gateway, gateway_stop, task = self._start(self.config)
        await self._started(gateway, task)
        if self._rolled_back_at_start is not None:
            gateway.report_configuration(
                self._rolled_back_at_start,
                CommandOutcome.FAILED,
                "rolled back at start: the gateway stopped before the configuration was confirmed healthy",
            )
        try:
            while True:
                assert gateway.config_requests is not None  # noqa: S101 - set in _start
                request = asyncio.ensure_future(gateway.config_requests.get())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({request, stopping, task}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if task.done():
                    request.cancel()
                    task.result()  # a crashed gateway: let the service manager restart us
                    return
                if stop.is_set():
                    request.cancel()
                    return
                config_id, new_config = request.result()
                gateway, gateway_stop, task = await self._apply(gateway, gateway_stop, task, config_id, new_config)
        finally:
            gateway_stop.set()
            if not task.done():
                await task

    async def _started(self, gateway: Gateway, task: asyncio.Task[None]) -> None:
        started = asyncio.ensure_future(gateway.started.wait())
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()

    def _write_files(self, config_id: str, new_config: Config) -> None:
        """Steps 1-3; on OSError the files are as they were (the caller keeps the old gateway running)."""
        current = self.config_path.read_bytes()
        document = new_config.model_dump(mode="json", exclude_none=True)
        marker = pending_path(self.config_path)
        try:
            write_atomically(previous_path(self.config_path), current)
            self._step("previous-written", config_id)
            write_atomically(marker, json.dumps({"config_id": config_id}).encode())
            self._step("pending-written", config_id)
            write_atomically(self.config_path, tomli_w.dumps(document).encode())
            self._step("config-written", config_id)
        except OSError:
            with contextlib.suppress(OSError):
                if self.config_path.read_bytes() != current:
                    write_atomically(self.config_path, current)
                remove_durably(marker)
            raise

    async def _apply(
        self,
        gateway: Gateway,
        gateway_stop: asyncio.Event,
        task: asyncio.Task[None],
        config_id: str,
        new_config: Config,
    ) -> tuple[Gateway, asyncio.Event, asyncio.Task[None]]:
        log.info("applying remote configuration", command_id=config_id)
        try:
            self._write_files(config_id, new_config)
        except OSError as err:
            log.error("remote configuration not written; the gateway keeps running", error=type(err).__name__)
            gateway.report_configuration(
                config_id, CommandOutcome.FAILED, f"not applied: cannot write the configuration ({err.strerror})"
            )
            return gateway, gateway_stop, task
        gateway_stop.set()
        await task
        self._step("old-stopped", config_id)
        self.restarts += 1
        gateway, gateway_stop, task = self._start(new_config)
        healthy = await self._healthy(gateway, task, config_id)
        if healthy:
            remove_durably(pending_path(self.config_path))
            self._step("confirmed", config_id)
            self.config = new_config
            gateway.report_configuration(config_id, CommandOutcome.CONFIRMED, "applied")
            log.info("remote configuration applied", command_id=config_id)
            return gateway, gateway_stop, task
        log.error("remote configuration unhealthy; rolling back", command_id=config_id)
        gateway_stop.set()
        with contextlib.suppress(Exception):
            await task
        write_atomically(self.config_path, previous_path(self.config_path).read_bytes())
        remove_durably(pending_path(self.config_path))
        gateway, gateway_stop, task = self._start(self.config)
        await self._started(gateway, task)
        gateway.report_configuration(
            config_id,
            CommandOutcome.FAILED,
            f"rolled back: uplink not online or a device not connected within {self._health_timeout:g} s of applying",
        )
        return gateway, gateway_stop, task

    async def _healthy(self, gateway: Gateway, task: asyncio.Task[None], config_id: str) -> bool:
        """Healthy: started, the uplink online (remote management still reaches the gateway) and every device
        it connects to connected, within the timeout.  Listeners (HL7, DICOM) wait for their senders and are
        not counted."""
        deadline = time.monotonic() + self._health_timeout
        in_window = False
        devices = [d.id for d in gateway.config.devices if not d.waits_for_sender()]
        while time.monotonic() < deadline:
            if task.done():
                return False
            parts = gateway.parts
            if gateway.started.is_set() and parts is not None:
                if not in_window:
                    in_window = True
                    self._step("health-window", config_id)
                statuses = parts.pipeline.latest_status
                connected = all(
                    (s := statuses.get(d)) is not None and s.connection is ConnectionState.CONNECTED for d in devices
                )
                if parts.uplink.state is SyncState.ONLINE and connected:
                    return True
            await asyncio.sleep(0.1)
        return False
