"""The scenario file format: devices, a timeline of physiology, faults and commands, and expectations.

A scenario is a YAML file (docs/HIL.md; `iomt-gateway hil run --schema` prints its JSON Schema).  Times are
seconds from the scenario's start.  Every mistake in a file is a `ScenarioError` naming the file and the place,
raised before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.core.errors import GatewayError


class ScenarioError(GatewayError):
    """A scenario file that cannot be played: unreadable, not YAML, or not a scenario."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Seconds = Annotated[float, Field(ge=0)]

# What each kind of simulated device is, and which settings a `set` step may change on it.
DeviceKind = Literal[
    "ecg_patch",  # BLE: Heart Rate Service + Polar PMD ECG at 130 Hz (rhythm analysis, arrhythmia alarms)
    "pulse_oximeter",  # BLE: Pulse Oximeter Service, continuous SpO2 and pulse rate
    "cgm",  # BLE: CGM Service with RACP and E2E-CRC (time runs 60x: a minute's record each second)
    "insulin_pump",  # BLE: Insulin Delivery Service with E2E protection, history, commands
    "nonin_oximeter",  # serial: a Nonin OEM module (data format 2) on a serial line
    "hl7_monitor",  # network/serial: a bedside monitor sending IHE PCD-01 ORU^R01 over MLLP
    "medication_fridge",  # Modbus TCP: a medication fridge's cabinet temperature and door
    "dicom_modality",  # DICOM: a point-of-care imager storing images to the gateway (C-STORE)
]


class Rig(Model):
    """Where a simulator runs on real hardware instead of a virtual transport (docs/HIL.md, "Real transports").

    - `ble_transport`: a BLE kind's peripheral on a real HCI controller, in bumble's syntax (`usb:0`,
      `serial:/dev/ttyACM0,1000000`, `hci-socket:1`, `tcp-client:HOST:PORT`); it advertises from `ble_address`
      (default: an address derived from the device id).  The in-process gateway then connects over the air
      with bleak on BlueZ (every BLE device of the scenario must be on a rig, then).
    - `serial`: the Nonin oximeter's or the HL7 monitor's end of a serial cable (path, baudrate, bytesize,
      parity, stopbits, rtscts, xonxoff); the device's `address` is the gateway's end.
    - `modbus`: where the fridge serves: `tcp://HOST:PORT` or `rtu:///dev/ttyUSB1?baudrate=19200&parity=E`.
    """

    ble_transport: str | None = None
    ble_address: str | None = None
    serial: dict[str, Any] | None = None
    modbus: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Rig:
        if sum(x is not None for x in (self.ble_transport, self.serial, self.modbus)) != 1:
            raise ValueError("a rig is exactly one of: ble_transport, serial, modbus")
        return self


class Device(Model):
    """A device the scenario's patient(s) wear or the ward has.  `simulated: false` with an `address`: a real
    device the gateway reaches at that address; the scenario then cannot change its physiology."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    kind: DeviceKind
    patient: str | None = None
    simulated: bool = True
    address: str | None = None  # the gateway's address of the device (default: the simulator's)
    initial: dict[str, Any] = Field(default_factory=dict)  # settings at start (as a `set` step's)
    rig: Rig | None = None  # the simulator on real hardware (default: virtual transports)

    @model_validator(mode="after")
    def _rig_fits(self) -> Device:
        rig = self.rig
        if rig is None:
            return self
        ble = self.kind in ("ecg_patch", "pulse_oximeter", "cgm", "insulin_pump")
        fits = (
            (rig.ble_transport is not None and ble)
            or (rig.serial is not None and self.kind in ("nonin_oximeter", "hl7_monitor"))
            or (rig.modbus is not None and self.kind == "medication_fridge")
        )
        if not fits:
            raise ValueError(
                f"a {self.kind} cannot take that rig (BLE kinds: ble_transport; Nonin and HL7: serial; fridge: modbus)"
            )
        if rig.serial is not None and self.address is None:
            raise ValueError("a device on a serial rig needs its `address`: the gateway's end of the cable")
        return self


class SetStep(Model):
    """Change a simulated device's physiology or behaviour (the keys a kind takes: docs/HIL.md)."""

    device: str
    values: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        """`{device: ecg-1, rhythm: vt}` is read as `{device: ecg-1, values: {rhythm: vt}}`."""
        if isinstance(data, dict) and "values" not in data:
            return {"device": data.get("device"), "values": {k: v for k, v in data.items() if k != "device"}}
        return data


FaultKind = Literal[
    "link_loss",  # the device's link drops (BLE out of range, serial cable pulled, Modbus server gone)
    "garbage",  # the device sends corrupted frames among good ones (`every`: one in N)
    "silence",  # the device stays connected and sends nothing
    "broker_outage",  # the cloud's MQTT broker stops, then starts again
    "disk_full",  # the gateway's state directory runs out of space (in-process gateway, needs mount rights)
    "clock_jump",  # the gateway's wall clock jumps by `seconds` (in-process gateway)
]


class FaultStep(Model):
    kind: FaultKind
    device: str | None = None  # the device faults' target
    for_s: Seconds | None = None  # how long it lasts (default: to the end)
    every: Annotated[int, Field(ge=1)] = 3  # garbage: one frame in `every`
    seconds: float = 0.0  # clock_jump: how far (negative: back)

    @model_validator(mode="after")
    def _target(self) -> FaultStep:
        needs_device = self.kind in ("link_loss", "garbage", "silence")
        if needs_device and self.device is None:
            raise ValueError(f"a {self.kind} fault needs a device")
        if not needs_device and self.device is not None:
            raise ValueError(f"a {self.kind} fault is not a device's: remove `device`")
        if self.kind == "clock_jump" and self.seconds == 0:
            raise ValueError("a clock_jump needs `seconds` (how far the clock jumps)")
        return self


class CommandStep(Model):
    """A command from the test cloud, signed with the scenario's test keys (`signers`); `forge` signs with a key
    that is not the signer's (a bad signature); `valid_s` and `issued_offset_s` shape the validity window."""

    name: str  # the expectations' handle on it
    device: str
    type: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    signers: tuple[str, ...] = ("ops-1",)
    valid_s: Annotated[float, Field(gt=0)] = 300.0
    issued_offset_s: float = 0.0
    forge: bool = False


class Step(Model):
    at_s: Seconds
    set: SetStep | None = None
    fault: FaultStep | None = None
    command: CommandStep | None = None

    @model_validator(mode="after")
    def _one(self) -> Step:
        if sum(x is not None for x in (self.set, self.fault, self.command)) != 1:
            raise ValueError("a step is exactly one of: set, fault, command")
        return self


class AlarmExpectation(Model):
    """An alarm of `condition` goes active within [after_s, after_s + within_s] (seen on the gateway itself:
    it must sound even offline; `at: cloud` checks it reached the sync API instead)."""

    condition: str
    device: str | None = None
    priority: Literal["low", "medium", "high"] | None = None
    after_s: Seconds = 0.0
    within_s: Annotated[float, Field(gt=0)]
    at: Literal["gateway", "cloud"] = "gateway"


class NoAlarmExpectation(Model):
    """No alarm of `condition` (or, with `kind: physiological`, none of that kind) goes active in the window."""

    condition: str | None = None
    kind: Literal["physiological", "technical"] | None = None
    device: str | None = None
    from_s: Seconds = 0.0
    to_s: Seconds | None = None  # default: the end

    @model_validator(mode="after")
    def _what(self) -> NoAlarmExpectation:
        if (self.condition is None) == (self.kind is None):
            raise ValueError("say either the condition or the kind of alarm that must not sound")
        return self


class DeliveredExpectation(Model):
    """A value of `device` (of `quantity`, an MDC reference id, if given; in [min, max] if given) reaches the
    cloud within [after_s, after_s + within_s]."""

    device: str
    quantity: str | None = None
    min: float | None = None
    max: float | None = None
    after_s: Seconds = 0.0
    within_s: Annotated[float, Field(gt=0)]


class NothingLostExpectation(Model):
    """Every value the gateway accepted from these devices (default: all) reached the cloud exactly once by
    the end, and every frame a simulated BLE device sent was received."""

    devices: tuple[str, ...] = ()


class CommandExpectation(Model):
    """The command named `name` ends in `outcome` (with `reason` if given) within `within_s` of being sent."""

    name: str
    outcome: Literal["confirmed", "rejected", "failed", "expired", "outcome-unknown"]
    reason: str | None = None
    within_s: Annotated[float, Field(gt=0)] = 15.0


class Expectation(Model):
    name: str | None = None  # the testcase's name (default: made from the expectation)
    alarm: AlarmExpectation | None = None
    no_alarm: NoAlarmExpectation | None = None
    delivered: DeliveredExpectation | None = None
    nothing_lost: NothingLostExpectation | None = None
    command: CommandExpectation | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_nothing_lost(cls, data: Any) -> Any:
        """`- nothing_lost: true` is the same as `- nothing_lost: {}`."""
        if isinstance(data, dict) and data.get("nothing_lost") is True:
            return {**data, "nothing_lost": {}}
        return data

    @model_validator(mode="after")
    def _one(self) -> Expectation:
        kinds = (self.alarm, self.no_alarm, self.delivered, self.nothing_lost, self.command)
        if sum(x is not None for x in kinds) != 1:
            raise ValueError("an expectation is exactly one of: alarm, no_alarm, delivered, nothing_lost, command")
        return self

    @property
    def what(
        self,
    ) -> AlarmExpectation | NoAlarmExpectation | DeliveredExpectation | NothingLostExpectation | CommandExpectation:
        kinds = (self.alarm, self.no_alarm, self.delivered, self.nothing_lost, self.command)
        return next(x for x in kinds if x is not None)

    def title(self) -> str:
        if self.name:
            return self.name
        what = self.what
        if isinstance(what, AlarmExpectation):
            on = f" on {what.device}" if what.device else ""
            return f"{what.condition}{on} active within {what.within_s:g} s of {what.after_s:g} s ({what.at})"
        if isinstance(what, NoAlarmExpectation):
            end = f"{what.to_s:g} s" if what.to_s is not None else "the end"
            return f"no {what.condition or what.kind} alarm from {what.from_s:g} s to {end}"
        if isinstance(what, DeliveredExpectation):
            of = f" {what.quantity}" if what.quantity else ""
            return f"{what.device}{of} delivered within {what.within_s:g} s of {what.after_s:g} s"
        if isinstance(what, NothingLostExpectation):
            return "nothing lost" + (f" ({', '.join(what.devices)})" if what.devices else "")
        reason = f" ({what.reason})" if what.reason else ""
        return f"command {what.name} {what.outcome}{reason}"


class Scenario(Model):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    description: str
    duration_s: Annotated[float, Field(gt=0, le=3600)]
    devices: tuple[Device, ...]
    gateway: dict[str, Any] = Field(default_factory=dict)  # config sections merged over the runner's defaults
    timeline: tuple[Step, ...] = ()
    expect: Annotated[tuple[Expectation, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be unique")
        known = set(ids)
        commands: set[str] = set()
        for step in self.timeline:
            if step.at_s > self.duration_s:
                raise ValueError(f"a step at {step.at_s:g} s is after the end ({self.duration_s:g} s)")
            device = getattr(step.set or step.fault or step.command, "device", None)
            if device is not None and device not in known:
                raise ValueError(f"a step at {step.at_s:g} s names an unknown device {device!r}")
            if step.command is not None:
                if step.command.name in commands:
                    raise ValueError(f"two commands are named {step.command.name!r}")
                commands.add(step.command.name)
        for expectation in self.expect:
            what = expectation.what
            device = getattr(what, "device", None)
            if device is not None and device not in known:
                raise ValueError(f"expectation {expectation.title()!r} names an unknown device {device!r}")
            if isinstance(what, CommandExpectation) and what.name not in commands:
                raise ValueError(f"expectation {expectation.title()!r} names no command of the timeline")
            if isinstance(what, NothingLostExpectation) and not set(what.devices) <= known:
                raise ValueError("nothing_lost names an unknown device")
        return self

    def device(self, device_id: str) -> Device:
        return next(d for d in self.devices if d.id == device_id)


def load_scenario(path: Path) -> Scenario:
    """Read and check one scenario file; every problem is a ScenarioError naming the file and the place."""
    import yaml  # noqa: PLC0415 - the rigs' dependency ([hil] extra), loaded with the runner

    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ScenarioError(f"{path}: not YAML{where}: {getattr(err, 'problem', None) or err}") from None
    try:
        return Scenario.model_validate(document)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors(include_url=False)
        )
        raise ScenarioError(f"{path}: not a scenario: {problems}") from None


def json_schema() -> dict[str, Any]:
    """The scenario format as a JSON Schema (`iomt-gateway hil run --schema`)."""
    schema: dict[str, Any] = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "iomt-gateway HIL scenario"
    return schema
