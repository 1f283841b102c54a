"""The scenario's simulated devices on virtual transports, each with the knobs the timeline turns.

Each kind speaks its real protocol to the gateway: the BLE devices run GATT servers on the virtual radio
(bumble controllers on one link, the gateway on bleak over bumble), the HL7 monitor connects over TCP to the
gateway's MLLP listener, the Nonin oximeter writes to a pty the gateway opens as its serial port, the fridge is
a pymodbus TCP server the gateway polls, the DICOM modality stores images over a DICOM association.

`set` keys per kind (a wrong key or value is a ScenarioError before the run starts):
- ecg_patch: rhythm (sinus, vt, vf, asystole), heart_rate_bpm, lead_off (true: a flat line)
- pulse_oximeter, nonin_oximeter: spo2_pct, pulse_bpm (pulse_oximeter also ramp_s, default 2)
- cgm: glucose_mg_dl (with ramp_s, default 3), reading (LO or HI: the sensor's out-of-range readings)
- insulin_pump: annunciate (an IDS annunciation type, e.g. occlusion_detected), confirm_annunciation (the
  person at the pump confirms it), reservoir_iu,
  command_fault (drop-after-write, no-answer, drop-before-acting, refuse, or null)
- medication_fridge: door_open
- dicom_modality: send_images (how many images to store now)
- hl7_monitor: none (it replays a monitor's numerics)

Faults a device takes: link_loss (BLE: out of range; HL7: the connection closes; fridge: the Modbus server
goes away; Nonin: the line goes quiet, which is what a pulled cable looks like on a serial line), garbage,
silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.ble_radio import PeripheralHost, VirtualRadio
from hil.ble_sim import SimCgm, SimEcgPatch, SimInsulinPump, SimPeripheral, SimPulseOximeter
from hil.demo import free_loopback_port
from hil.physiology import RHYTHMS, Episode, Trajectory
from hil.runner.scenario import Device, ScenarioError

FAR_FUTURE_S = 1e9


class _NotOpen:
    """A serial port not opened yet (a rig's port opens when the simulator starts)."""

    async def write(self, data: bytes) -> None:
        raise ScenarioError("the serial port is not open yet")


def _number(device: str, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ScenarioError(f"device {device}: {key} must be a number from {lo:g} to {hi:g}")
    return float(value)


def _flag(device: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"device {device}: {key} must be true or false")
    return value


def _move(trajectory: Trajectory, level: float, ramp_s: float, now_s: float) -> None:
    """From now on the trajectory heads for `level`, reaching it after `ramp_s` (from where it was heading)."""
    if trajectory.episodes:
        trajectory.baseline = trajectory.episodes[-1].level
    trajectory.episodes = (Episode(start_s=now_s, duration_s=FAR_FUTURE_S, level=level, ramp_s=ramp_s),)


def _host_port(spec: Device, scheme: str) -> tuple[str, int] | None:
    """HOST:PORT of a device's configured `address` (`scheme`HOST:PORT), or None when it has none."""
    if spec.address is None:
        return None
    host, _, port = spec.address.removeprefix(scheme).rpartition(":")
    if not spec.address.startswith(scheme) or not host or not port.isdigit():
        raise ScenarioError(f"device {spec.id}: address must be {scheme}HOST:PORT")
    return host, int(port)


class SimulatedDevice:
    """One simulated device: its gateway config entry, its settings and faults, start and stop."""

    keys: frozenset[str] = frozenset()

    def __init__(self, spec: Device) -> None:
        self.spec = spec
        self.id = spec.id
        self.rig = spec.rig
        self._stack = contextlib.AsyncExitStack()  # what a rig opened (a controller, a serial port, a server)

    def gateway_entry(self) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, values: dict[str, Any]) -> None:
        unknown = set(values) - self.keys
        if unknown:
            allowed = ", ".join(sorted(self.keys)) or "none"
            raise ScenarioError(
                f"device {self.id} ({self.spec.kind}) has no setting {sorted(unknown)[0]!r} (has: {allowed})"
            )

    def apply(self, values: dict[str, Any]) -> None:
        """Change settings now (checked by `check` before the run)."""

    async def start(self) -> None:
        """Start the simulator (before the gateway)."""

    async def connect(self) -> None:
        """After the gateway started: devices that dial the gateway do it here."""

    async def stop(self) -> None:
        """Stop the simulator (after the gateway)."""
        await self._stack.aclose()

    async def link_loss(self, lost: bool) -> None:
        raise ScenarioError(f"device {self.id} ({self.spec.kind}) cannot lose its link")

    def garbage(self, every: int | None) -> None:
        raise ScenarioError(f"device {self.id} ({self.spec.kind}) cannot send garbage")

    def silence(self, silent: bool) -> None:
        raise ScenarioError(f"device {self.id} ({self.spec.kind}) cannot fall silent")

    def frames_sent(self) -> int | None:
        """Frames this device sent intact, where the gateway counts the same frames (None: not comparable)."""
        return None


class BleDevice(SimulatedDevice):
    """A BLE peripheral on the virtual radio."""

    def __init__(self, spec: Device, peripheral: SimPeripheral, radio: VirtualRadio) -> None:
        super().__init__(spec)
        self.peripheral = peripheral
        self.radio = radio
        self.host: PeripheralHost | None = None
        if self.rig is None:
            self.host = radio.add(peripheral)

    def gateway_entry(self) -> dict[str, Any]:
        if self.rig is None:
            address = f"virtual:{self.id}"
        else:  # over the air: the gateway finds the peripheral by the address it advertises from
            from hil.rig import random_static_address  # noqa: PLC0415

            address = self.spec.address or (self.rig.ble_address or random_static_address(self.id)).upper()
        entry = {"id": self.id, "transport": "ble", "profile": self.spec.kind, "address": address}
        return entry | ({"patient": self.spec.patient} if self.spec.patient else {})

    async def start(self) -> None:
        if self.rig is not None and self.rig.ble_transport is not None:
            from hil.rig import open_ble_host  # noqa: PLC0415

            self.host = await self._stack.enter_async_context(
                open_ble_host(self.rig.ble_transport, self.peripheral, address=self.rig.ble_address)
            )

    async def link_loss(self, lost: bool) -> None:
        host = self.host or self.radio.host(self.id)
        await (host.go_offline() if lost else host.go_online())

    def garbage(self, every: int | None) -> None:
        self.peripheral.garbage_every = every or 0

    def silence(self, silent: bool) -> None:
        self.peripheral.silent = silent


class EcgPatch(BleDevice):
    keys = frozenset({"rhythm", "heart_rate_bpm", "lead_off"})

    def __init__(self, spec: Device, radio: VirtualRadio) -> None:
        self.patch = SimEcgPatch(spec.id)
        super().__init__(spec, self.patch, radio)

    def check(self, values: dict[str, Any]) -> None:
        super().check(values)
        if "rhythm" in values and values["rhythm"] not in RHYTHMS:
            raise ScenarioError(f"device {self.id}: rhythm must be one of {', '.join(RHYTHMS)}")
        if "heart_rate_bpm" in values:
            _number(self.id, "heart_rate_bpm", values["heart_rate_bpm"], 10, 350)
        if "lead_off" in values:
            _flag(self.id, "lead_off", values["lead_off"])

    def apply(self, values: dict[str, Any]) -> None:
        ecg = self.patch.ecg
        ecg.rhythm = values.get("rhythm", ecg.rhythm)
        ecg.heart_rate_bpm = float(values.get("heart_rate_bpm", ecg.heart_rate_bpm))
        ecg.flat = bool(values.get("lead_off", ecg.flat))


class PulseOximeter(BleDevice):
    keys = frozenset({"spo2_pct", "pulse_bpm", "ramp_s"})

    def __init__(self, spec: Device, radio: VirtualRadio) -> None:
        self.oximeter = SimPulseOximeter(spec.id)
        super().__init__(spec, self.oximeter, radio)

    def check(self, values: dict[str, Any]) -> None:
        super().check(values)
        if "spo2_pct" in values:
            _number(self.id, "spo2_pct", values["spo2_pct"], 50, 100)
        if "pulse_bpm" in values:
            _number(self.id, "pulse_bpm", values["pulse_bpm"], 30, 220)
        if "ramp_s" in values:
            _number(self.id, "ramp_s", values["ramp_s"], 0, 600)

    def apply(self, values: dict[str, Any]) -> None:
        ramp = float(values.get("ramp_s", 2.0))
        now = self.oximeter.elapsed_s
        if "spo2_pct" in values:
            _move(self.oximeter.spo2, float(values["spo2_pct"]), ramp, now)
        if "pulse_bpm" in values:
            _move(self.oximeter.pulse, float(values["pulse_bpm"]), ramp, now)


class Cgm(BleDevice):
    keys = frozenset({"glucose_mg_dl", "ramp_s", "reading"})

    def __init__(self, spec: Device, radio: VirtualRadio) -> None:
        self.cgm = SimCgm(spec.id)
        super().__init__(spec, self.cgm, radio)

    def check(self, values: dict[str, Any]) -> None:
        super().check(values)
        if "glucose_mg_dl" in values:
            _number(self.id, "glucose_mg_dl", values["glucose_mg_dl"], 40, 400)
        if "ramp_s" in values:
            _number(self.id, "ramp_s", values["ramp_s"], 0, 600)
        if "reading" in values and values["reading"] not in ("LO", "HI", None):
            raise ScenarioError(f"device {self.id}: reading must be LO, HI or null (measured)")

    def apply(self, values: dict[str, Any]) -> None:
        if "glucose_mg_dl" in values:
            _move(
                self.cgm.glucose, float(values["glucose_mg_dl"]), float(values.get("ramp_s", 3.0)), self.cgm.elapsed_s
            )
        if "reading" in values:
            self.cgm.reading = {"LO": -math.inf, "HI": math.inf, None: None}[values["reading"]]


class InsulinPump(BleDevice):
    keys = frozenset({"annunciate", "confirm_annunciation", "reservoir_iu", "command_fault"})
    FAULTS = ("drop-after-write", "no-answer", "drop-before-acting", "refuse", None)

    def __init__(self, spec: Device, radio: VirtualRadio) -> None:
        self.pump = SimInsulinPump(spec.id)
        super().__init__(spec, self.pump, radio)

    def check(self, values: dict[str, Any]) -> None:
        from drivers.ble import ids  # noqa: PLC0415

        super().check(values)
        if "annunciate" in values and str(values["annunciate"]).upper() not in ids.AnnunciationType.__members__:
            names = ", ".join(n.lower() for n in ids.AnnunciationType.__members__)
            raise ScenarioError(f"device {self.id}: annunciate must be one of {names}")
        if "reservoir_iu" in values:
            _number(self.id, "reservoir_iu", values["reservoir_iu"], 0, 1000)
        if "confirm_annunciation" in values:
            _flag(self.id, "confirm_annunciation", values["confirm_annunciation"])
        if "command_fault" in values and values["command_fault"] not in self.FAULTS:
            raise ScenarioError(f"device {self.id}: command_fault must be one of {self.FAULTS}")

    def apply(self, values: dict[str, Any]) -> None:
        from drivers.ble import ids  # noqa: PLC0415

        if "reservoir_iu" in values:
            self.pump.reservoir_iu = float(values["reservoir_iu"])
        if "command_fault" in values:
            self.pump.command_fault = values["command_fault"]
        if "annunciate" in values:
            self.pump.annunciate(ids.AnnunciationType[str(values["annunciate"]).upper()])
        if values.get("confirm_annunciation"):
            self.pump.confirm_annunciation()


class Hl7Monitor(SimulatedDevice):
    """A bedside monitor dialling the gateway's MLLP listener."""

    def __init__(self, spec: Device) -> None:
        from hil.serial_sim import Hl7Monitor as Monitor  # noqa: PLC0415

        super().__init__(spec)
        # The gateway's listener: its configured address (a gateway elsewhere), else a free loopback port.
        self.host, self.port = _host_port(spec, "listen://") or ("127.0.0.1", free_loopback_port())
        self.monitor = Monitor(interval_s=1.0)
        self._task: asyncio.Task[None] | None = None

    def gateway_entry(self) -> dict[str, Any]:
        entry = {
            "id": self.id,
            "transport": "serial",
            "profile": "hl7_pcd01",
            "address": f"listen://127.0.0.1:{self.port}",
        }
        return entry | ({"patient": self.spec.patient} if self.spec.patient else {})

    async def connect(self) -> None:
        self._task = asyncio.create_task(self._dial(), name=f"hl7-monitor-{self.id}")

    async def _dial(self) -> None:
        if self.rig is not None and self.rig.serial is not None:  # a serial cable to the gateway
            from hil.rig import SerialPortConfig, open_serial, validated  # noqa: PLC0415

            line = validated(f"device {self.id}: serial rig", SerialPortConfig, self.rig.serial)
            async with open_serial(line) as stream:
                await self.monitor.run_on(stream.writer, stream.reader)
            return
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            try:
                await self.monitor.run_on(writer, reader)
            except (ConnectionError, OSError):
                await asyncio.sleep(0.2)
            finally:
                writer.close()

    async def link_loss(self, lost: bool) -> None:
        if lost and self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        elif not lost and self._task is None:
            await self.connect()

    def garbage(self, every: int | None) -> None:
        self.monitor.faults.garbage_every = every or 0

    def silence(self, silent: bool) -> None:
        self.monitor.faults.silent = silent

    async def stop(self) -> None:
        await self.link_loss(True)
        await super().stop()


class NoninOximeter(SimulatedDevice):
    """A Nonin OEM oximeter writing data format 2 to a pty the gateway opens as its serial port."""

    keys = frozenset({"spo2_pct", "pulse_bpm"})

    def __init__(self, spec: Device) -> None:
        from hil.serial_sim import NoninOximeter as Oximeter  # noqa: PLC0415
        from hil.serial_sim import PtyPort  # noqa: PLC0415

        super().__init__(spec)
        self.pty = PtyPort() if self.rig is None else None  # on a rig: the real port, opened at start
        self.oximeter = Oximeter(self.pty) if self.pty is not None else Oximeter(_NotOpen())
        self._task: asyncio.Task[None] | None = None

    def gateway_entry(self) -> dict[str, Any]:
        address = self.pty.path if self.pty is not None else self.spec.address
        entry = {"id": self.id, "transport": "serial", "profile": "nonin_df2", "address": address}
        return entry | ({"patient": self.spec.patient} if self.spec.patient else {})

    def check(self, values: dict[str, Any]) -> None:
        super().check(values)
        if "spo2_pct" in values:
            _number(self.id, "spo2_pct", values["spo2_pct"], 0, 100)
        if "pulse_bpm" in values:
            _number(self.id, "pulse_bpm", values["pulse_bpm"], 18, 300)

    def apply(self, values: dict[str, Any]) -> None:
        self.oximeter.spo2 = round(values.get("spo2_pct", self.oximeter.spo2))
        self.oximeter.pulse_rate = round(values.get("pulse_bpm", self.oximeter.pulse_rate))

    async def start(self) -> None:
        if self.rig is not None and self.rig.serial is not None:
            from hil.rig import SerialPortConfig, open_serial, validated  # noqa: PLC0415

            line = validated(f"device {self.id}: serial rig", SerialPortConfig, self.rig.serial)
            self.oximeter.port = await self._stack.enter_async_context(open_serial(line))
        self._task = asyncio.create_task(self.oximeter.run(), name=f"nonin-{self.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.pty is not None:
            self.pty.close()
        await super().stop()

    async def link_loss(self, lost: bool) -> None:
        self.oximeter.faults.silent = lost

    def garbage(self, every: int | None) -> None:
        self.oximeter.faults.garbage_every = every or 0

    def silence(self, silent: bool) -> None:
        self.oximeter.faults.silent = silent


class MedicationFridge(SimulatedDevice):
    """A medication fridge as a Modbus TCP server the gateway polls once a second."""

    keys = frozenset({"door_open"})

    def __init__(self, spec: Device) -> None:
        from hil.modbus_sim import MedicationFridge as Fridge  # noqa: PLC0415
        from hil.modbus_sim import ModbusSimServer  # noqa: PLC0415

        super().__init__(spec)
        self.fridge = Fridge(unit_id=1)
        self.server: ModbusSimServer | None = None
        self.serving_at: str | None = None  # on a rig: the gateway's address of the served unit
        if self.rig is None:
            host, port = _host_port(spec, "tcp://") or ("127.0.0.1", free_loopback_port())
            self.server = ModbusSimServer([self.fridge], port=port, host=host)

    def gateway_entry(self) -> dict[str, Any]:
        address = self.server.address if self.server is not None else (self.spec.address or self.serving_at)
        return {
            "id": self.id,
            "transport": "modbus",
            "profile": "medication_fridge",
            "address": address,
            "poll_interval_s": 1.0,
        }

    def check(self, values: dict[str, Any]) -> None:
        super().check(values)
        if "door_open" in values:
            _flag(self.id, "door_open", values["door_open"])

    def apply(self, values: dict[str, Any]) -> None:
        import time  # noqa: PLC0415

        if "door_open" in values:
            self.fridge.door_open_at = time.monotonic() if values["door_open"] else None

    async def start(self) -> None:
        if self.server is not None:
            await self.server.start()
            return
        from hil.rig import parse_modbus_address, serve_modbus  # noqa: PLC0415

        address = parse_modbus_address(self.rig.modbus if self.rig is not None and self.rig.modbus else "")
        serving = await self._stack.enter_async_context(serve_modbus(address, [self.fridge]))
        self.serving_at = serving.gateway_address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        await super().stop()

    async def link_loss(self, lost: bool) -> None:
        if self.server is None:
            raise ScenarioError(f"device {self.id}: a fridge on a rig cannot lose its link (unplug it by hand)")
        if lost:
            await self.server.stop()
        else:
            await self.server.start()


class DicomModality(SimulatedDevice):
    """A point-of-care imager that stores synthetic images (no patient data) to the gateway's DICOM SCP."""

    keys = frozenset({"send_images"})
    AE_TITLE = "POC_US_CART"

    def __init__(self, spec: Device) -> None:
        super().__init__(spec)
        self.port = free_loopback_port()
        self.statuses: list[int | None] = []
        self._sends: list[asyncio.Task[None]] = []
        self._folder = tempfile.TemporaryDirectory(prefix="iomt-hil-dicom-")

    def gateway_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": "dicom",
            "profile": "storage_scp",
            "address": f"listen://127.0.0.1:{self.port}",
            "allowed_calling_aes": [self.AE_TITLE],
        }

    def check(self, values: dict[str, Any]) -> None:
        super().check(values)
        if "send_images" in values:
            _number(self.id, "send_images", values["send_images"], 1, 20)

    def apply(self, values: dict[str, Any]) -> None:
        if "send_images" in values:
            self._sends.append(asyncio.create_task(self._send(int(values["send_images"]))))

    async def _send(self, count: int) -> None:
        from hil.dicom_sim import send_file, write_large_object  # noqa: PLC0415

        for index in range(count):
            path = write_large_object(Path(self._folder.name) / f"image-{len(self.statuses)}-{index}.dcm", 1)
            status = await asyncio.to_thread(send_file, "127.0.0.1", self.port, path, calling_ae=self.AE_TITLE)
            self.statuses.append(status)
            path.unlink()

    async def stop(self) -> None:
        await asyncio.gather(*self._sends, return_exceptions=True)
        self._folder.cleanup()
        await super().stop()


BLE_KINDS = frozenset({"ecg_patch", "pulse_oximeter", "cgm", "insulin_pump"})

BUILDERS: dict[str, Callable[[Device, VirtualRadio], SimulatedDevice]] = {
    "ecg_patch": EcgPatch,
    "pulse_oximeter": PulseOximeter,
    "cgm": Cgm,
    "insulin_pump": InsulinPump,
    "hl7_monitor": lambda spec, _radio: Hl7Monitor(spec),
    "nonin_oximeter": lambda spec, _radio: NoninOximeter(spec),
    "medication_fridge": lambda spec, _radio: MedicationFridge(spec),
    "dicom_modality": lambda spec, _radio: DicomModality(spec),
}


class World:
    """Every simulated device of a scenario, on one virtual radio and loopback ports."""

    def __init__(self, devices: tuple[Device, ...]) -> None:
        ble = [d for d in devices if d.simulated and d.kind in BLE_KINDS]
        on_rig = [d for d in ble if d.rig is not None]
        if on_rig and len(on_rig) != len(ble):
            raise ScenarioError("BLE devices are all on real controllers (rig) or all on the virtual radio, not mixed")
        self.over_the_air = bool(on_rig)  # the gateway uses its own BLE stack (bleak on BlueZ)
        self.radio = VirtualRadio()
        self.devices = {spec.id: BUILDERS[spec.kind](spec, self.radio) for spec in devices if spec.simulated}
        for spec in devices:
            if spec.simulated:
                self.devices[spec.id].check(spec.initial)
                self.devices[spec.id].apply(spec.initial)

    async def start(self) -> None:
        for device in self.devices.values():
            await device.start()

    async def connect(self) -> None:
        for device in self.devices.values():
            await device.connect()

    async def quiet(self, settle_s: float = 1.0) -> None:
        """Every device that can falls silent (and what is on its way arrives), so that what they sent is final
        before the gateway is judged on it."""
        for device in self.devices.values():
            with contextlib.suppress(ScenarioError):
                device.silence(True)
        await asyncio.sleep(settle_s)

    async def stop(self) -> None:
        for device in self.devices.values():
            with contextlib.suppress(Exception):
                await device.stop()
        with contextlib.suppress(Exception):
            await self.radio.stop()
