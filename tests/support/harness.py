"""A running gateway with simulated devices and a reference receiver, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from cloud_sync.receiver import ReferenceReceiver
from drivers.registry import Backends
from gateway.clock import TrustedClock
from gateway.commands.ceilings import SafetyCeilings
from gateway.config import Config
from gateway.daemon import Gateway
from hil.ble_radio import VirtualRadio
from hil.ble_sim import SimBleWorld
from hil.sim_clock import SimulatedClock


@dataclass
class Running:
    gateway: Gateway
    world: SimBleWorld | VirtualRadio
    receiver: ReferenceReceiver
    stop: asyncio.Event
    task: asyncio.Task[None]

    def received(self, device: str) -> int:
        return self.gateway.metrics.device(device).received

    async def wait_until(self, predicate: object, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)

    async def wait_connected(self, device: str, timeout_s: float = 20.0) -> None:
        """Until the command target `device` is connected (its link up and subscribed)."""
        parts = self.gateway.parts
        if parts is None or parts.commands is None:
            raise AssertionError("the gateway runs without commands")
        target = parts.commands._targets[device]  # the service's own view of the device
        await self.wait_until(lambda: target.connected, timeout_s)

    async def finish(self, drain_s: float = 20.0) -> None:
        """Stop the gateway and wait until the receiver holds everything the buffer accepted."""
        self.stop.set()
        await self.task
        accepted = {d.id: self.gateway.metrics.device(d.id).accepted for d in self.gateway.config.devices}
        await self.receiver.wait_for(accepted, timeout_s=drain_s)


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run `work` as a task for the block's duration; cancelled and awaited on the way out."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_gateway(
    config: Config,
    *,
    receiver_id: str = "test-receiver",
    world: SimBleWorld | VirtualRadio | None = None,
    drain_s: float = 20.0,
    receiver_tls: ssl.SSLContext | None = None,
    receiver_port: int | None = None,
    clock: SimulatedClock | None = None,
    ceilings: SafetyCeilings | None = None,
) -> AsyncIterator[Running]:
    """A gateway with its receiver.  Its clock is the machine's, with the kernel's NTP state simulated as
    synchronised unless `clock` says otherwise (a test machine's own NTP state must not decide a test)."""
    receiver = ReferenceReceiver(
        config.mqtt.host,
        receiver_port or config.mqtt.port,
        client_id=f"{receiver_id}-{time.time_ns()}",
        tls_context=receiver_tls,
    )
    receiver.keep_items = True
    receiver_task = asyncio.create_task(receiver.run(), name="receiver")
    try:
        await asyncio.wait_for(receiver.subscribed.wait(), 10)
        if world is None:
            world = SimBleWorld.for_devices(config.devices)
        trusted = TrustedClock(
            clock or SimulatedClock(), max_error_s=config.clock.max_error_s, skew_s=config.commands.clock_skew_s
        )
        gateway = Gateway(config, Backends({"ble": world.link}), clock=trusted, ceilings=ceilings)
        stop = asyncio.Event()
        task = asyncio.create_task(gateway.run(stop, drain_uplink_s=drain_s), name="gateway")
        await asyncio.wait_for(gateway.started.wait(), 10)
        running = Running(gateway, world, receiver, stop, task)
        try:
            yield running
        finally:
            if not task.done():
                stop.set()
                await task
            if isinstance(world, VirtualRadio):
                await world.stop()
    finally:
        receiver_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver_task


def bench_figures(name: str, *args: str, timeout_s: float = 300) -> dict[str, Any]:
    """`iomt-gateway bench NAME --json ARGS` in a fresh interpreter, as a technician runs it: its figures."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "bench", name, "--json", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures
