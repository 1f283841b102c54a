"""`iomt-gateway demo`: the whole data path on one machine, with nothing to install or configure.

Simulated BLE devices (hil/) -> gateway (pipeline, alarms, encrypted buffer) -> embedded MQTT broker (amqtt,
loopback only) -> reference cloud receiver.  A live terminal view shows devices, latest vitals, alarms, buffer
depth and sync state; `--json` runs unattended and prints one summary, whose `values_lost` must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cloud_sync.receiver import ReferenceReceiver
from drivers.registry import Backends
from gateway.config import Config, parse_config
from gateway.core.logs import configure_logging
from gateway.core.model import Alarm, AlarmState, ConnectionState
from gateway.core.settings import PACKAGE_DEFAULTS_DIR
from gateway.daemon import Gateway
from gateway.storage.keys import generate_key_file
from hil.ble_radio import VirtualRadio
from hil.modbus_sim import MedicationFridge, ModbusSimServer

DEMO_CONFIG = PACKAGE_DEFAULTS_DIR / "demo.toml"  # the demo always runs its own, never the machine's
DRAIN_TIMEOUT_S = 30.0


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_port(port: int, what: str, tries: int = 200) -> None:
    """Wait until something accepts connections on a loopback port (a broker, a simulator) or fail."""
    for _ in range(tries):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"{what} did not start (nothing listening on port {port})")


def demo_config(
    state_dir: Path, port: int, path: Path = DEMO_CONFIG, *, modbus_port: int | None = None, hl7_port: int | None = None
) -> Config:
    """The demo's config; with ports, also the wired devices: a Modbus medication fridge and an HL7 monitor."""
    data = tomllib.loads(path.read_text("utf-8"))
    data["gateway"]["state_dir"] = str(state_dir)
    data["buffer"]["key_file"] = str(state_dir / "buffer.key")
    data["mqtt"]["port"] = port
    if modbus_port is not None:
        data["devices"].append(
            {
                "id": FRIDGE,
                "transport": "modbus",
                "profile": "medication_fridge",
                "address": f"tcp://127.0.0.1:{modbus_port}",
                "poll_interval_s": 1.0,
            }
        )
    if hl7_port is not None:
        data["devices"].append(
            {
                "id": MONITOR,
                "transport": "serial",
                "profile": "hl7_pcd01",
                "address": f"listen://127.0.0.1:{hl7_port}",
                "patient": "pt-3c51e0",
            }
        )
    return parse_config(data)


FRIDGE = "med-fridge-1"
MONITOR = "bedside-monitor-1"
FRIDGE_DOOR_OPEN_S = (8.0, 14.0)  # the fridge door is left open a while: a low-priority technical alarm


async def _wired_devices(hl7_port: int, fridge: Any, started: float) -> None:
    """The HL7 monitor connects to the gateway and sends a message a second; the fridge's door opens and closes."""
    from hil.serial_sim import Hl7Monitor  # noqa: PLC0415

    monitor = Hl7Monitor(interval_s=1.0)
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", hl7_port)
            break
        except OSError:
            await asyncio.sleep(0.1)
    else:
        return
    sender = asyncio.create_task(monitor.run_on(writer, reader))
    try:
        opens, closes = FRIDGE_DOOR_OPEN_S
        await asyncio.sleep(max(0.0, started + opens - time.monotonic()))
        fridge.door_open_at = time.monotonic()
        await asyncio.sleep(closes - opens)
        fridge.door_open_at = None
        await sender
    finally:
        sender.cancel()
        writer.close()


class EmbeddedBroker:
    """amqtt on a loopback port: the demo's stand-in for the cloud's broker."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._broker: Any = None

    async def start(self) -> None:
        from amqtt.broker import Broker  # noqa: PLC0415 - optional heavy import, demo only

        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()


@dataclass
class DemoRun:
    config: Config
    gateway: Gateway
    world: VirtualRadio
    receiver: ReferenceReceiver
    alarms: list[Alarm]
    started: float


def summary(run: DemoRun) -> dict[str, Any]:
    """The demo's JSON summary: per device received/accepted/delivered, alarms, and values lost."""
    devices: dict[str, Any] = {}
    for device in run.config.devices:
        counters = run.gateway.metrics.device(device.id)
        driver = run.gateway.metrics.drivers.get(device.id)
        peripheral = run.world.peripherals.get(device.address.removeprefix("virtual:"))
        delivered = run.receiver.stats.unique[device.id]
        sent = peripheral.notifications_sent if peripheral else 0
        decoded = driver.notifications if driver else 0
        devices[device.id] = {
            "profile": device.profile,
            "notifications_sent_by_device": sent,
            "notifications_received": decoded,
            "invalid_frames": driver.invalid_frames if driver else 0,
            "received": counters.received,
            "accepted": counters.accepted,
            "delivered": delivered,
            "samples_received": counters.samples_received,
            "samples_delivered": run.receiver.stats.samples[device.id],
            "lost": max(0, counters.accepted - delivered)
            + (counters.received - counters.accepted)
            + max(0, sent - decoded),
        }
    raised = [a for a in run.alarms if a.state is AlarmState.ACTIVE]
    values = {key: sum(d[key] for d in devices.values()) for key in ("received", "accepted", "delivered")}
    return {
        "duration_s": round(time.monotonic() - run.started, 2),
        "devices": devices,
        "values_received": values["received"],
        "values_accepted": values["accepted"],
        "values_delivered": values["delivered"],
        "values_lost": sum(d["lost"] for d in devices.values()),
        "duplicates_dropped_by_receiver": sum(run.receiver.stats.duplicates.values()),
        "alarms_raised": len(raised),
        "alarms": sorted({f"{a.device_id}:{a.condition}:{a.priority}" for a in raised}),
        "alarms_delivered": sum(1 for a in run.receiver.alarms if a.get("state") == "active"),
        "publishes": run.gateway.metrics.publishes,
        "driver_restarts": sum(run.gateway.metrics.restarts.values()),
    }


_DISPLAY_UNITS = {"[iU]": "IU", "[iU]/h": "IU/h", "Cel": "°C", "mm[Hg]": "mmHg", "1": ""}


def _alarm_text(alarm: Alarm) -> str:
    if alarm.quantity is None:
        return alarm.condition.replace("_", " ")
    side = alarm.condition.rsplit(".", 1)[-1]
    return f"{alarm.quantity.display} {side}"


def _view(run: DemoRun, backlog_rows: int) -> Group:
    gateway = run.gateway
    parts = gateway.parts
    devices = Table(title="Devices", expand=True)
    for column in ("device", "profile", "link", "received", "delivered", "latest vitals"):
        devices.add_column(column)
    latest = parts.pipeline.latest if parts else {}
    for device in run.config.devices:
        counters = gateway.metrics.device(device.id)
        device_status = parts.pipeline.latest_status.get(device.id) if parts else None
        connected = device_status is not None and device_status.connection is ConnectionState.CONNECTED
        link = "up" if connected else "down"
        vitals = ", ".join(
            f"{obs.quantity.display}: {obs.value:g} {obs.unit}"
            for (dev, _), obs in sorted(latest.items())
            if dev == device.id
        )
        devices.add_row(
            device.id, device.profile, link, str(counters.received), str(run.receiver.stats.unique[device.id]), vitals
        )
    alarms = Table(title="Alarms (newest first)", expand=True)
    for column in ("time", "device", "condition", "priority", "state"):
        alarms.add_column(column)
    for alarm in reversed(run.alarms[-8:]):
        style = "bold red" if alarm.priority == "high" and alarm.state is AlarmState.ACTIVE else ""
        alarms.add_row(
            time.strftime("%H:%M:%S", time.localtime(alarm.gateway_time_ns / 1e9)),
            alarm.device_id,
            _alarm_text(alarm),
            alarm.priority.value,
            alarm.state.value,
            style=style,
        )
    sync = parts.uplink.state.value if parts else "starting"
    status = Text.assemble(
        ("sync: ", "bold"),
        sync,
        ("   buffer rows: ", "bold"),
        str(backlog_rows),
        ("   pipeline backlog: ", "bold"),
        str(parts.pipeline.backlog if parts else 0),
        ("   published: ", "bold"),
        str(gateway.metrics.publishes),
        ("   elapsed: ", "bold"),
        f"{time.monotonic() - run.started:.0f} s   (Ctrl-C to stop)",
    )
    return Group(status, devices, alarms)


async def run_demo(duration_s: float | None, *, as_json: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="iomt-demo-") as tmp:
        state_dir = Path(tmp)
        generate_key_file(state_dir / "buffer.key")
        port = free_loopback_port()
        fridge = MedicationFridge(unit_id=1)
        modbus = ModbusSimServer([fridge])
        await modbus.start()
        hl7_port = free_loopback_port()
        config = demo_config(state_dir, port, modbus_port=modbus.port, hl7_port=hl7_port)
        broker = EmbeddedBroker(port)
        await broker.start()
        receiver = ReferenceReceiver(
            "127.0.0.1",
            port,
            topic_prefix=config.mqtt.topic_prefix,
            client_id="demo-receiver",
            protocol=config.mqtt.protocol,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with asyncio.TaskGroup() as group:
                receiver_task = group.create_task(receiver.run(), name="receiver")
                await asyncio.wait_for(receiver.subscribed.wait(), 10)
                world = VirtualRadio.for_devices(config.devices)
                gateway = Gateway(config, Backends({"ble": world.link}))
                run = DemoRun(config, gateway, world, receiver, [], time.monotonic())
                gateway_task = group.create_task(gateway.run(stop, drain_uplink_s=DRAIN_TIMEOUT_S), name="gateway")
                await gateway.started.wait()
                if gateway.parts is not None:
                    gateway.parts.pipeline.alarm_listeners.append(run.alarms.append)
                wired = group.create_task(_wired_devices(hl7_port, fridge, run.started), name="wired-devices")
                deadline = None if duration_s is None else time.monotonic() + duration_s
                await _show(run, stop, deadline, live=not as_json and sys.stdout.isatty(), quiet=as_json)
                wired.cancel()
                # The devices fall quiet first, so what they sent is final before the gateway stops and drains.
                for peripheral in world.peripherals.values():
                    peripheral.silent = True
                await asyncio.sleep(0.5)
                stop.set()
                await gateway_task
                await world.stop()
                accepted = {d.id: gateway.metrics.device(d.id).accepted for d in config.devices}
                await receiver.wait_for(accepted, timeout_s=10)
                receiver_task.cancel()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await broker.stop()
            await modbus.stop()
        return summary(run)


async def _show(run: DemoRun, stop: asyncio.Event, deadline: float | None, *, live: bool, quiet: bool) -> None:
    async def tick() -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()
        return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    async def backlog_rows() -> int:
        parts = run.gateway.parts
        return sum(s.rows for s in await parts.buffer.stats()) if parts else 0

    if live:
        console = Console()
        with Live(_view(run, 0), console=console, refresh_per_second=4) as view:
            while not await tick():
                view.update(_view(run, await backlog_rows()))
        return
    last_print = 0.0
    while not await tick():
        if not quiet and time.monotonic() - last_print >= 2.0:
            last_print = time.monotonic()
            totals = sum(run.gateway.metrics.device(d.id).received for d in run.config.devices)
            print(
                f"[{time.monotonic() - run.started:5.1f} s] values {totals}, delivered "
                f"{sum(run.receiver.stats.unique.values())}, alarms {len(run.alarms)}, "
                f"sync {run.gateway.parts.uplink.state if run.gateway.parts else '-'}",
                flush=True,
            )


def cmd_demo(duration_s: float | None, *, as_json: bool) -> int:
    configure_logging("warning", "auto")
    result = asyncio.run(run_demo(duration_s, as_json=as_json))
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        Console().print_json(json.dumps(result))
    return 0 if result["values_lost"] == 0 else 1


class DemoCommand:
    help = "gateway + simulated devices + embedded broker + reference receiver"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: Ctrl-C)")
        parser.add_argument("--json", action="store_true", help="no live view; print one JSON summary at exit")

    def run(self, args: argparse.Namespace) -> int:
        return cmd_demo(args.duration, as_json=args.json)


COMMAND = DemoCommand()
