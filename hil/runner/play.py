"""Playing one scenario: start the simulated devices, the gateway (in-process) or reach it (remote), play the
timeline, drain, and judge every expectation on what happened.

In-process: a real gateway (`gateway.daemon.Gateway`) in this process with the scenario's devices, a broker on
a loopback port (Mosquitto when installed, with persistence so an outage keeps sessions; else the embedded
amqtt, which cannot play a broker outage) and the test cloud.  Remote: a gateway already running on another
box, reached through its MQTT broker (the sync API) and its admin socket; faults that need the gateway's own
machine (disk_full, clock_jump, broker_outage) are refused for it, before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.logs import get_logger
from hil.runner.cloud import Cloud, Issuers
from hil.runner.expectations import Counts, Verdict, judge
from hil.runner.scenario import FaultStep, Scenario, ScenarioError, Step
from hil.runner.timeline import Timeline
from hil.runner.world import World

log = get_logger(__name__)

GATEWAY_ID = "hil-gw"
DRAIN_S = 20.0
LOCAL_ONLY_FAULTS = frozenset({"disk_full", "clock_jump", "broker_outage"})
DISK_MB = 24  # the small file system a disk_full scenario's gateway keeps its state on
PUMP_POLICY = {"allowed": ["bolus", "cancel_bolus", "temp_basal", "reconcile"], "max_commands_per_hour": 100}


@dataclass
class RemoteGateway:
    """A gateway already running elsewhere: its broker and admin socket."""

    admin_socket: Path
    broker_host: str
    broker_port: int
    gateway_id: str
    topic_prefix: str = "iomt/v1"
    tls: ssl.SSLContext | None = None
    issuers: Issuers | None = None


@dataclass
class Outcome:
    scenario: Scenario | None  # None: the file is not a scenario (`error` says why)
    path: Path
    verdicts: list[Verdict]
    duration_s: float
    timeline: Timeline
    error: str | None = None  # the run could not be carried out (the scenario fails as a whole)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.scenario.name if self.scenario is not None else self.path.stem

    @property
    def passed(self) -> bool:
        return self.error is None and all(v.passed or v.skipped for v in self.verdicts)


def defaults() -> dict[str, Any]:
    """The in-process gateway's configuration before the scenario's own `gateway:` sections are merged in:
    the shipped alarm limits of a monitored patient, fast reconnects, a loopback broker."""
    return {
        "gateway": {"id": GATEWAY_ID},
        "logging": {"level": "warning"},
        "buffer": {"flush_interval_ms": 100},
        "mqtt": {
            "host": "127.0.0.1",
            "allow_plaintext_loopback": True,
            "reconnect_initial_s": 0.2,
            "reconnect_max_s": 1.0,
        },
        "supervisor": {"backoff_initial_s": 0.2, "backoff_max_s": 2.0},
        "alarms": {
            "limits": [
                {"quantity": "MDC_PULS_OXIM_SAT_O2", "low": 90, "priority": "high", "delay_s": 2, "hysteresis": 2},
                {"quantity": "MDC_CONC_GLU_ISF", "low": 70, "high": 250, "priority": "high", "hysteresis": 5},
                {"quantity": "MDC_INS_RESERVOIR", "low": 20, "priority": "low"},
            ]
        },
    }


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_playable(scenario: Scenario, world: World, remote: RemoteGateway | None) -> None:
    """Every step can be carried out here (settings exist, faults have a target that takes them)."""
    for step in scenario.timeline:
        if step.set is not None:
            device = world.devices.get(step.set.device)
            if device is None:
                raise ScenarioError(f"step at {step.at_s:g} s: {step.set.device} is not simulated; nothing to set")
            device.check(step.set.values)
        if step.fault is not None:
            if remote is not None and step.fault.kind in LOCAL_ONLY_FAULTS:
                raise ScenarioError(f"a {step.fault.kind} fault needs the gateway in-process (this run is remote)")
            if step.fault.device is not None and step.fault.device not in world.devices:
                raise ScenarioError(f"step at {step.at_s:g} s: {step.fault.device} is not simulated; it takes no fault")


class _SmallDisk:
    """A tmpfs the gateway keeps its state on, which a disk_full fault fills (needs mount rights)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.filler = folder / "filler"

    def mount(self) -> str | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(  # noqa: S603 - fixed arguments
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(self.folder)],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        return None if result.returncode == 0 else (result.stderr.strip() or "mount failed")[:160]

    def fill(self) -> None:
        with self.filler.open("ab") as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        for _ in range(50):
            if subprocess.run(["umount", str(self.folder)], capture_output=True, check=False).returncode == 0:  # noqa: S603, S607
                return
            time.sleep(0.1)


class Player:
    """One scenario's run."""

    def __init__(self, scenario: Scenario, path: Path, remote: RemoteGateway | None = None) -> None:
        self.scenario = scenario
        self.path = path
        self.remote = remote
        self.timeline = Timeline()
        self.clock: Any = None  # the in-process gateway's SimulatedClock (clock_jump)
        self.broker: Any = None
        self.disk: _SmallDisk | None = None
        self.gateway: Any = None
        self._pending: list[asyncio.Task[None]] = []

    async def play(self) -> Outcome:
        started = time.monotonic()
        try:
            verdicts = await self._play()
            error = None
        except ScenarioError as err:
            verdicts, error = [], err.message
        except Exception as err:  # a run that breaks is a failed scenario with its reason, not a crash
            log.exception("scenario run failed")
            verdicts, error = [], f"the run failed: {type(err).__name__}: {err}"
        return Outcome(self.scenario, self.path, verdicts, time.monotonic() - started, self.timeline, error)

    async def _play(self) -> list[Verdict]:
        world = World(self.scenario.devices)
        check_playable(self.scenario, world, self.remote)
        with tempfile.TemporaryDirectory(prefix="iomt-hil-") as tmp:
            try:
                await world.start()
                if self.remote is None:
                    return await self._in_process(world, Path(tmp))
                return await self._against(world, self.remote)
            finally:
                await world.stop()

    # -- in-process --------------------------------------------------------------------------------------------
    async def _in_process(self, world: World, folder: Path) -> list[Verdict]:
        from drivers.registry import Backends  # noqa: PLC0415
        from gateway.clock import TrustedClock  # noqa: PLC0415
        from gateway.config import parse_config  # noqa: PLC0415
        from gateway.daemon import Gateway  # noqa: PLC0415
        from gateway.storage.keys import generate_key_file  # noqa: PLC0415
        from hil.bench.sync import LoopbackBroker  # noqa: PLC0415
        from hil.sim_clock import SimulatedClock  # noqa: PLC0415

        needs_disk = any(s.fault is not None and s.fault.kind == "disk_full" for s in self.scenario.timeline)
        state = folder / "state"
        if needs_disk:
            self.disk = _SmallDisk(state)
            problem = self.disk.mount() if os.geteuid() == 0 else "needs root to mount a small file system"
            if problem is not None:
                self.disk = None
                return [
                    Verdict(e.title(), False, f"skipped: the disk_full fault {problem}", skipped=True)
                    for e in self.scenario.expect
                ]
        try:
            state.mkdir(parents=True, exist_ok=True)
            generate_key_file(state / "buffer.key")
            self.broker = LoopbackBroker(folder / "broker", persistence=True)
            (folder / "broker").mkdir()
            await self.broker.start()
            protocol = "5" if self.broker.name == "mosquitto" else "3.1.1"
            issuers = Issuers.generated()
            pumps = [d.id for d in self.scenario.devices if d.kind == "insulin_pump"]
            base = merge(
                defaults(),
                {
                    "gateway": {"state_dir": str(state)},
                    "buffer": {"key_file": str(state / "buffer.key")},
                    "mqtt": {"port": self.broker.port, "protocol": protocol, "client_id": f"hil-gw-{os.getpid()}"},
                    "commands": {
                        "enabled": bool(pumps),
                        "issuers": issuers.gateway_config(),
                        "devices": [{"device": p, **PUMP_POLICY} for p in pumps],
                    },
                },
            )
            data = merge(base, self.scenario.gateway)
            data["devices"] = [d.gateway_entry() for d in world.devices.values()] + [
                {"id": d.id, "profile": d.kind, "address": d.address} for d in self.scenario.devices if not d.simulated
            ]
            try:
                config = parse_config(data)
            except Exception as err:  # noqa: BLE001 - the config error's own words, as a scenario error
                raise ScenarioError(f"the scenario's gateway config is invalid: {err}") from None
            cloud = Cloud(
                "127.0.0.1",
                self.broker.port,
                gateway_id=GATEWAY_ID,
                timeline=self.timeline,
                issuers=issuers,
                protocol=protocol,
            )
            receiver = asyncio.create_task(cloud.receiver.run(), name="hil-cloud")
            try:
                await cloud.listening()
                self.clock = SimulatedClock()
                trusted = TrustedClock(
                    self.clock, max_error_s=config.clock.max_error_s, skew_s=config.commands.clock_skew_s
                )
                backends = None if world.over_the_air else Backends({"ble": world.radio.link})
                self.gateway = gateway = Gateway(config, backends, clock=trusted)
                stop = asyncio.Event()
                task = asyncio.create_task(gateway.run(stop, drain_uplink_s=DRAIN_S), name="hil-gateway")
                try:
                    try:
                        async with asyncio.timeout(20):
                            await gateway.started.wait()
                    except TimeoutError:
                        raise ScenarioError("the gateway did not start within 20 s") from None
                    if gateway.parts is not None:
                        gateway.parts.pipeline.alarm_listeners.append(self._local_alarm)
                    await world.connect()
                    await self._timeline(world, cloud)
                    await world.quiet()
                finally:
                    stop.set()
                    (ended,) = await asyncio.gather(task, return_exceptions=True)
                if isinstance(ended, BaseException):  # the gateway itself failed: that is the finding, not a detail
                    self.timeline.add("gateway", "crash", f"the gateway stopped: {type(ended).__name__}: {ended}")
                    raise ScenarioError(f"the gateway stopped with an error: {type(ended).__name__}: {ended}")
                accepted = {d.id: gateway.metrics.device(d.id).accepted for d in config.devices}
                await cloud.receiver.wait_for(accepted, timeout_s=DRAIN_S)
                counts = Counts(accepted, dict(cloud.receiver.stats.unique), dict(cloud.receiver.stats.duplicates))
            finally:
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
            return [judge(e, self.timeline, counts, self.scenario.duration_s) for e in self.scenario.expect]
        finally:
            if self.broker is not None:
                await self.broker.stop()
            if self.disk is not None:
                self.disk.unmount()

    def _local_alarm(self, alarm: Any) -> None:
        self.timeline.add(
            "gateway",
            "alarm",
            f"alarm {alarm.condition} {alarm.state.value} on {alarm.device_id} ({alarm.priority.value})",
            id=alarm.id,
            alarm_id=alarm.alarm_id,
            device=alarm.device_id,
            condition=alarm.condition,
            kind=alarm.kind.value,
            priority=alarm.priority.value,
            state=alarm.state.value,
        )

    # -- remote ------------------------------------------------------------------------------------------------
    async def _against(self, world: World, remote: RemoteGateway) -> list[Verdict]:
        from gateway.admin import request  # noqa: PLC0415

        issuers = remote.issuers or Issuers({})
        cloud = Cloud(
            remote.broker_host,
            remote.broker_port,
            gateway_id=remote.gateway_id,
            timeline=self.timeline,
            issuers=issuers,
            topic_prefix=remote.topic_prefix,
            tls=remote.tls,
        )
        receiver = asyncio.create_task(cloud.receiver.run(), name="hil-cloud")
        poller = asyncio.create_task(self._poll_alarms(remote.admin_socket), name="hil-admin")
        try:
            await cloud.listening()
            # The gateway ran before this rig listened: only what it delivers from now on is this run's to check.
            ours = {d.id for d in self.scenario.devices}
            before = await _remote_counts(remote.admin_socket, request)
            seen_before = dict(cloud.receiver.stats.unique)
            await world.connect()
            await self._timeline(world, cloud)
            await world.quiet()
            # Remote: the gateway keeps running; what it counted as delivered (acknowledged by the broker) since the
            # start must be at the cloud.
            after = await _remote_counts(remote.admin_socket, request)
            delivered = {d: after.get(d, 0) - before.get(d, 0) for d in ours if d in after}

            def at_cloud() -> dict[str, int]:
                unique = cloud.receiver.stats.unique
                return {d: unique[d] - seen_before.get(d, 0) for d in delivered}

            deadline = time.monotonic() + DRAIN_S
            while any(at_cloud()[d] < n for d, n in delivered.items()) and time.monotonic() < deadline:
                cloud.receiver.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await cloud.receiver.arrived.wait()
            counts = Counts(delivered, at_cloud(), dict(cloud.receiver.stats.duplicates))
        finally:
            for task in (receiver, poller):
                task.cancel()
            await asyncio.gather(receiver, poller, return_exceptions=True)
        return [judge(e, self.timeline, counts, self.scenario.duration_s) for e in self.scenario.expect]

    async def _poll_alarms(self, socket: Path) -> None:
        """The remote gateway's active alarms through its admin socket, twice a second: a raise is dated by the
        gateway's own `since_s`, a clear by the poll that no longer sees it."""
        from gateway.admin import request  # noqa: PLC0415

        active: dict[str, dict[str, Any]] = {}
        while True:
            with contextlib.suppress(OSError, ValueError):
                answer = await request(socket, "alarms")
                now = self.timeline.now()
                seen = {str(a["id"]): a for a in answer.get("result") or []} if answer.get("ok") else None
                if seen is not None:
                    for alarm_id, alarm in seen.items():
                        if alarm_id not in active:
                            active[alarm_id] = alarm
                            self._remote_alarm(alarm, "active", max(0.0, now - float(alarm.get("since_s") or 0.0)))
                    for alarm_id in [a for a in active if a not in seen]:
                        self._remote_alarm(active.pop(alarm_id), "cleared", now)
            await asyncio.sleep(0.5)

    def _remote_alarm(self, alarm: dict[str, Any], state: str, t_s: float) -> None:
        self.timeline.add(
            "gateway",
            "alarm",
            f"alarm {alarm.get('condition')} {state} on {alarm.get('device')} ({alarm.get('priority')})",
            t_s=t_s,
            alarm_id=str(alarm.get("id")),
            device=alarm.get("device"),
            condition=alarm.get("condition"),
            kind=alarm.get("kind"),
            priority=alarm.get("priority"),
            state=state,
        )

    # -- the timeline ------------------------------------------------------------------------------------------
    async def _timeline(self, world: World, cloud: Cloud) -> None:
        steps: list[tuple[float, int, Step | tuple[FaultStep, bool]]] = []
        for index, step in enumerate(self.scenario.timeline):
            steps.append((step.at_s, index, step))
            if step.fault is not None and step.fault.for_s is not None:
                steps.append((step.at_s + step.fault.for_s, index, (step.fault, False)))
        steps.sort(key=lambda s: (s[0], s[1]))
        self.timeline.start()
        self.timeline.add("scenario", "step", f"start: {self.scenario.name}")
        for at_s, _, due in steps:
            await asyncio.sleep(max(0.0, at_s - self.timeline.now()))
            if isinstance(due, tuple):
                await self._fault(world, due[0], on=False)
                continue
            step = due
            if step.set is not None:
                world.devices[step.set.device].apply(step.set.values)
                shown = ", ".join(f"{k} {v}" for k, v in step.set.values.items())
                self.timeline.add("scenario", "step", f"set {step.set.device}: {shown}")
            elif step.fault is not None:
                await self._fault(world, step.fault, on=True)
            elif step.command is not None:
                self._pending.append(asyncio.create_task(cloud.send(step.command)))
        await asyncio.sleep(max(0.0, self.scenario.duration_s - self.timeline.now()))
        await asyncio.gather(*self._pending, return_exceptions=True)
        self.timeline.add("scenario", "step", "end")

    async def _fault(self, world: World, fault: FaultStep, *, on: bool) -> None:
        target = f" on {fault.device}" if fault.device else ""
        self.timeline.add("scenario", "fault", f"fault {fault.kind}{target} {'begins' if on else 'ends'}")
        if fault.kind == "link_loss":
            await world.devices[str(fault.device)].link_loss(on)
        elif fault.kind == "garbage":
            world.devices[str(fault.device)].garbage(fault.every if on else None)
        elif fault.kind == "silence":
            world.devices[str(fault.device)].silence(on)
        elif fault.kind == "broker_outage":
            if not self.broker.restartable:
                raise ScenarioError("a broker_outage needs Mosquitto installed (the embedded broker cannot restart)")
            await (self.broker.stop() if on else self.broker.start())
        elif fault.kind == "disk_full" and self.disk is not None:
            await asyncio.to_thread(self.disk.fill if on else self.disk.free)
        elif fault.kind == "clock_jump" and on:
            self.clock.jump_wall(fault.seconds)


async def _remote_counts(socket: Path, request: Any) -> dict[str, int]:
    answer = await request(socket, "devices")
    if not answer.get("ok"):
        raise ScenarioError(f"the gateway's admin socket answered: {answer.get('error')}")
    return {str(d["device"]): int(d.get("delivered") or 0) for d in answer["result"]}


async def play_all(paths: list[Path], remote: RemoteGateway | None = None) -> list[Outcome]:
    """Each scenario file in turn; a file that is not a scenario is a failed outcome naming the problem."""
    from hil.runner.scenario import load_scenario  # noqa: PLC0415

    outcomes = []
    for path in paths:
        try:
            scenario = load_scenario(path)
        except ScenarioError as err:
            outcomes.append(_unreadable(path, err.message))
            continue
        outcomes.append(await Player(scenario, path, remote).play())
    return outcomes


def _unreadable(path: Path, message: str) -> Outcome:
    return Outcome(None, path, [], 0.0, Timeline(), error=message)
