"""`iomt-gateway demo`: the whole data path on one machine, with nothing to install or configure.

Simulated BLE devices (hil/) -> gateway (pipeline, alarms, encrypted buffer) -> embedded MQTT broker (amqtt,
loopback only) -> reference cloud receiver.  A live terminal view shows alarms, devices, latest vitals, buffer
depth and sync state, and fits the terminal (80x24 included) with the alarms first; `--json` runs unattended
and prints one summary, whose `values_lost` must be 0.  The gateway's admin socket is printed, so the
technician's commands (`iomt-gateway alarms`, `status`, ...) can be tried against the demo from another shell.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cloud_sync.receiver import ReferenceReceiver
from drivers.registry import Backends
from gateway.cli import SOCKET_ENV
from gateway.config import Config, parse_config
from gateway.core.logs import configure_logging
from gateway.core.model import Alarm, AlarmState, ConnectionState, Observation
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


async def _wired_devices(hl7_port: int, fridge: Any, monitor: Any, started: float) -> None:
    """The HL7 monitor connects to the gateway and sends a message a second; the fridge's door opens and closes.
    The monitor stays connected until cancelled, after the gateway has stopped (a stop is not a disconnection)."""
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


MAX_ALARM_ROWS = 8


def _alarm_text(alarm: Alarm) -> str:
    """A limit alarm by its quantity's name and side ("SpO2 low"), any other by its condition in words."""
    if alarm.quantity is not None and alarm.condition.startswith(f"{alarm.quantity.reference_id}."):
        return f"{alarm.quantity.display} {alarm.condition.rsplit('.', 1)[-1]}"
    return alarm.condition.replace("_", " ")


def _reading(obs: Observation) -> str:
    """A value as a person reads it: the quantity's name, the value, the unit as written (°C, mmHg, IU)."""
    unit = obs.quantity.display_unit
    return f"{obs.quantity.display}: {obs.value:g}" + (f" {unit}" if unit else "")


@dataclass
class DeviceLine:
    device: str
    profile: str
    link: str
    received: int
    delivered: int
    readings: list[Observation] = field(default_factory=list)


@dataclass
class ViewState:
    """What the live view shows at one instant (taken from the running demo; built directly in tests)."""

    sync: str
    buffer_rows: int
    pipeline_backlog: int
    published: int
    elapsed_s: float
    admin_socket: Path
    devices: list[DeviceLine]
    alarms: list[Alarm]  # oldest first
    stopped: bool = False


def view_state(run: DemoRun, backlog_rows: int, *, stopped: bool = False) -> ViewState:
    gateway = run.gateway
    parts = gateway.parts
    latest = parts.pipeline.latest if parts else {}
    devices = []
    for device in run.config.devices:
        device_status = parts.pipeline.latest_status.get(device.id) if parts else None
        connected = device_status is not None and device_status.connection is ConnectionState.CONNECTED
        devices.append(
            DeviceLine(
                device.id,
                device.profile,
                "up" if connected else "down",
                gateway.metrics.device(device.id).received,
                run.receiver.stats.unique[device.id],
                [obs for (dev, _), obs in sorted(latest.items()) if dev == device.id],
            )
        )
    return ViewState(
        sync=parts.uplink.state.value if parts else "starting",
        buffer_rows=backlog_rows,
        pipeline_backlog=parts.pipeline.backlog if parts else 0,
        published=gateway.metrics.publishes,
        elapsed_s=time.monotonic() - run.started,
        admin_socket=run.config.admin_socket,
        devices=devices,
        alarms=list(run.alarms),
        stopped=stopped,
    )


def _table(*columns: str, flexible: str) -> Table:
    """One line per row, no borders (the view must fit 80x24): the `flexible` column takes what is left and
    ends in an ellipsis when too long; the others keep their width."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=True, padding=(0, 1))
    for column in columns:
        grows = column == flexible
        table.add_column(column, no_wrap=True, overflow="ellipsis" if grows else "fold", ratio=1 if grows else None)
    return table


def render(state: ViewState, *, width: int, height: int) -> Group:
    """The live view for a terminal of width x height, never taller than height - 1 lines (a taller view
    scrolls and leaves stale copies of its top lines behind).  Alarms come first and keep their rows; devices
    give way first when the terminal is short.  Every dynamic text is a `Text`, never read as markup."""
    status = Text.assemble(
        ("sync ", "bold"),
        state.sync,
        ("  buffer rows ", "bold"),
        str(state.buffer_rows),
        ("  backlog ", "bold"),
        str(state.pipeline_backlog),
        ("  published ", "bold"),
        str(state.published),
        ("  elapsed ", "bold"),
        f"{state.elapsed_s:.0f} s",
        no_wrap=True,
        overflow="ellipsis",
    )
    hint = Text.assemble(
        ("admin ", "bold"),
        f"{SOCKET_ENV}={state.admin_socket}",
        "  stopped" if state.stopped else "  Ctrl-C stops",
        no_wrap=True,
        overflow="fold",
    )
    hint_lines = max(1, -(-len(hint.plain) // max(1, width)))  # the socket path is kept whole: it may fold
    budget = height - 1 - 1 - hint_lines
    alarm_rows = max(1, min(len(state.alarms), MAX_ALARM_ROWS, budget - 3))
    device_rows = min(len(state.devices), budget - 3 - alarm_rows - 3)

    alarms = _table("time", "device", "alarm", "priority", "state", flexible="alarm")
    for alarm in list(reversed(state.alarms))[:alarm_rows]:
        high = alarm.priority == "high" and alarm.state is AlarmState.ACTIVE
        alarms.add_row(
            Text(time.strftime("%H:%M:%S", time.localtime(alarm.gateway_time_ns / 1e9))),
            Text(alarm.device_id),
            Text(_alarm_text(alarm)),
            Text(alarm.priority.value),
            Text(alarm.state.value),
            style="bold red" if high else "",
        )
    if not state.alarms:
        alarms.add_row(Text("-"), Text(""), Text("no alarms"), Text(""), Text(""))
    shown = min(len(state.alarms), alarm_rows)
    title = f"Alarms, newest first ({shown} of {len(state.alarms)})" if len(state.alarms) > shown else "Alarms"
    parts: list[Any] = [status, hint, Text(title, style="bold"), alarms]
    if device_rows >= 1:
        columns = ["device", "link", "received", "delivered", "latest vitals"]
        if width >= 120:
            columns.insert(1, "profile")
        devices = _table(*columns, flexible="latest vitals")
        listed = state.devices if device_rows >= len(state.devices) else state.devices[: device_rows - 1]
        for line in listed:
            cells = [
                line.device,
                line.link,
                str(line.received),
                str(line.delivered),
                ", ".join(map(_reading, line.readings)),
            ]
            if width >= 120:
                cells.insert(1, line.profile)
            devices.add_row(*(Text(cell) for cell in cells))
        if len(listed) < len(state.devices):
            devices.add_row(Text(f"+{len(state.devices) - len(listed)} more"), *(Text("") for _ in columns[1:]))
        parts += [Text("Devices", style="bold"), devices]
    else:
        up = sum(1 for line in state.devices if line.link == "up")
        parts.append(Text(f"devices: {len(state.devices)}, {up} up (a taller terminal lists them)"))
    return Group(*parts)


async def run_demo(duration_s: float | None, *, as_json: bool, live: bool | None = None) -> dict[str, Any]:
    # First of all, before anything can be left half-started: Ctrl-C (and SIGTERM) ask for an orderly stop,
    # which the demo carries out in its order (devices quiet, then the gateway).
    requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, requested.set)
    live = (not as_json and sys.stdout.isatty()) if live is None else live
    try:
        with tempfile.TemporaryDirectory(prefix="iomt-demo-") as tmp:
            return await _run_in(Path(tmp), requested, duration_s, as_json=as_json, live=live)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _run_in(
    state_dir: Path, requested: asyncio.Event, duration_s: float | None, *, as_json: bool, live: bool
) -> dict[str, Any]:
    from hil.serial_sim import Hl7Monitor  # noqa: PLC0415

    generate_key_file(state_dir / "buffer.key")
    port = free_loopback_port()
    fridge = MedicationFridge(unit_id=1)
    modbus = ModbusSimServer([fridge])
    await modbus.start()
    hl7_port = free_loopback_port()
    config = demo_config(state_dir, port, modbus_port=modbus.port, hl7_port=hl7_port)
    announce = f"admin socket: {config.admin_socket}  (try: {SOCKET_ENV}={config.admin_socket} iomt-gateway alarms)"
    if not live:  # the live view shows it; --json keeps stdout for the summary
        print(announce, file=sys.stderr if as_json else sys.stdout, flush=True)
    broker = EmbeddedBroker(port)
    try:
        await broker.start()
        receiver = ReferenceReceiver(
            "127.0.0.1",
            port,
            topic_prefix=config.mqtt.topic_prefix,
            client_id="demo-receiver",
            protocol=config.mqtt.protocol,
        )
        async with asyncio.TaskGroup() as group:
            receiver_task = group.create_task(receiver.run(), name="receiver")
            await asyncio.wait_for(receiver.subscribed.wait(), 10)
            world = VirtualRadio.for_devices(config.devices)
            gateway = Gateway(config, Backends({"ble": world.link}))
            stop = asyncio.Event()  # the gateway's: set once the devices are quiet
            run = DemoRun(config, gateway, world, receiver, [], time.monotonic())
            gateway_task = group.create_task(gateway.run(stop, drain_uplink_s=DRAIN_TIMEOUT_S), name="gateway")
            started = asyncio.ensure_future(gateway.started.wait())
            await asyncio.wait([started, gateway_task], return_when=asyncio.FIRST_COMPLETED)  # a stop may come first
            started.cancel()
            if gateway.parts is not None:
                gateway.parts.pipeline.alarm_listeners.append(run.alarms.append)
            monitor = Hl7Monitor(interval_s=1.0)
            wired = group.create_task(_wired_devices(hl7_port, fridge, monitor, run.started), name="wired-devices")
            deadline = None if duration_s is None else time.monotonic() + duration_s
            await _show(run, requested, deadline, live=live, quiet=as_json)
            await _settle(run)
            # The devices fall quiet first, so what they sent is final before the gateway stops and drains; they
            # stay connected until it has stopped, so its deliberate stop is not taken for a lost device.
            for peripheral in world.peripherals.values():
                peripheral.silent = True
            monitor.faults.silent = True
            await asyncio.sleep(0.5)
            stop.set()
            await gateway_task
            wired.cancel()
            await world.stop()
            accepted = {d.id: gateway.metrics.device(d.id).accepted for d in config.devices}
            await receiver.wait_for(accepted, timeout_s=10)
            receiver_task.cancel()
    finally:
        await broker.stop()
        await modbus.stop()
    return summary(run)


async def _settle(run: DemoRun, timeout_s: float = 5.0) -> None:
    """Before a stop, let BLE connections being set up finish (at most `timeout_s`): the virtual radio's stack
    (bumble) logs errors for a connection cancelled half-way, which a Ctrl-C just after start would show."""
    parts = run.gateway.parts
    radio = [d.id for d in run.config.devices if d.address.startswith("virtual:")]
    deadline = time.monotonic() + timeout_s
    while parts is not None and time.monotonic() < deadline:
        links = [parts.pipeline.latest_status.get(device) for device in radio]
        if all(link is not None and link.connection is ConnectionState.CONNECTED for link in links):
            return
        await asyncio.sleep(0.1)


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

        def frame(rows: int, *, stopped: bool = False) -> Group:
            width, height = console.size
            return render(view_state(run, rows, stopped=stopped), width=width, height=height)

        # Log lines go through the console (above the view), never across it.
        with Live(frame(0), console=console, refresh_per_second=4, vertical_overflow="crop") as view:
            rows = 0
            while not await tick():
                rows = await backlog_rows()
                view.update(frame(rows))
            view.update(frame(rows, stopped=True), refresh=True)  # the last frame says so: nothing stale stays
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


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written: while the live view runs, Rich's proxy, which prints the
    line above the view instead of across it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def cmd_demo(duration_s: float | None, *, as_json: bool) -> int:
    configure_logging("warning", "auto", stream=_CurrentStderr())  # type: ignore[arg-type] # write/flush/isatty is all a log handler uses
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
