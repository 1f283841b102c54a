"""The runner: keeps one Gateway running, and applies verified remote configurations safely.

Applying a configuration: the running gateway stops (draining everything into the buffer), the new file
replaces the old one atomically (the old one is kept), and a gateway starts on it.  If it is not healthy
within `health_timeout_s` (its uplink never comes online: a wrong broker, a bad certificate), it is stopped,
the previous file is restored, and the gateway restarts on it.  Either way the outcome is reported uplink
(applied, or rolled back and why), and nothing accepted is lost: the buffer carries over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import tomli_w

from cloud_sync.uplink import SyncState
from drivers.registry import Backends
from gateway.config import Config
from gateway.daemon import Gateway
from gateway.logs import get_logger
from gateway.model import CommandOutcome

log = get_logger(__name__)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a crash leaves the old file or the new one, never half of either."""
    temporary = path.with_name(path.name + ".new")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class GatewayRunner:
    def __init__(
        self, config_path: Path, config: Config, *, backends: Backends | None = None, health_timeout_s: float = 30.0
    ) -> None:
        self.config_path = config_path
        self.config = config
        self._backends = backends
        self._health_timeout = health_timeout_s
        self.gateway: Gateway | None = None
        self.restarts = 0

    def _start(self, config: Config) -> tuple[Gateway, asyncio.Event, asyncio.Task[None]]:
        gateway = Gateway(config, self._backends)
        gateway.config_requests = asyncio.Queue(1)
        self.gateway = gateway
        stop = asyncio.Event()
        return gateway, stop, asyncio.create_task(gateway.run(stop), name="gateway")

    async def run(self, stop: asyncio.Event) -> None:
        gateway, gateway_stop, task = self._start(self.config)
        await self._started(gateway, task)
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

    async def _apply(
        self,
        gateway: Gateway,
        gateway_stop: asyncio.Event,
        task: asyncio.Task[None],
        config_id: str,
        new_config: Config,
    ) -> tuple[Gateway, asyncio.Event, asyncio.Task[None]]:
        log.info("applying remote configuration", command_id=config_id)
        gateway_stop.set()
        await task
        previous = self.config_path.read_bytes()
        document = new_config.model_dump(mode="json", exclude_none=True)
        write_atomically(self.config_path, tomli_w.dumps(document).encode())
        self.restarts += 1
        gateway, gateway_stop, task = self._start(new_config)
        healthy = await self._healthy(gateway, task)
        if healthy:
            self.config = new_config
            gateway.report_configuration(config_id, CommandOutcome.CONFIRMED, "applied")
            log.info("remote configuration applied", command_id=config_id)
            return gateway, gateway_stop, task
        log.error("remote configuration unhealthy; rolling back", command_id=config_id)
        gateway_stop.set()
        with contextlib.suppress(Exception):
            await task
        write_atomically(self.config_path, previous)
        gateway, gateway_stop, task = self._start(self.config)
        await self._started(gateway, task)
        gateway.report_configuration(
            config_id,
            CommandOutcome.FAILED,
            f"rolled back: uplink not online within {self._health_timeout:g} s of applying",
        )
        return gateway, gateway_stop, task

    async def _healthy(self, gateway: Gateway, task: asyncio.Task[None]) -> bool:
        """Healthy: started, and the uplink online within the timeout (the one thing a remote configuration
        can break that the gateway cannot repair by itself)."""
        deadline = time.monotonic() + self._health_timeout
        while time.monotonic() < deadline:
            if task.done():
                return False
            parts = gateway.parts
            if gateway.started.is_set() and parts is not None and parts.uplink.state is SyncState.ONLINE:
                return True
            await asyncio.sleep(0.1)
        return False
