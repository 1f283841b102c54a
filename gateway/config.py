"""Gateway configuration: one TOML file, validated completely before anything starts.

Every error names the key (as a dotted path), the form of the bad value and what was expected, on one line.
Unknown keys are rejected, so a typo never silently falls back to a default.  Secrets are never inlined: the
config references files, either by path or as `credential:NAME`, which resolves inside the systemd
credentials directory ($CREDENTIALS_DIRECTORY, see systemd.exec LoadCredential=).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from cloud_sync.config import MqttSection, TlsSection
from drivers.registry import check_devices, device_sections, transports
from drivers.registry import secret_refs as device_secret_refs
from drivers.transport import DEVICE_ID_PATTERN, DeviceSection
from edge_ml.alarm_set import RhythmSettings
from gateway.core.errors import ConfigError
from gateway.core.nomenclature import BY_REFERENCE, Kind
from gateway.core.settings import SecretRef, Section, config_file, is_loopback, resolve_secret

# /etc/iomt-gateway/gateway.toml on a gateway, else the one the package ships (config/gateway.toml in a clone).
DEFAULT_CONFIG_PATH = config_file("gateway.toml")


class GatewaySection(Section):
    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    state_dir: str


class LoggingSection(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class BufferSection(Section):
    path: str = "buffer.sqlite3"
    key_file: SecretRef
    synchronous: Literal["full", "normal"] = "normal"
    # Disk budget for buffered data; over it, the oldest rows of the lowest lanes are evicted (never alarms or
    # command results).  Free disk below the floor is treated the same way.
    max_mb: Annotated[int, Field(ge=1, le=10_000_000)] = 2048
    min_free_disk_mb: Annotated[int, Field(ge=0, le=1_000_000)] = 256
    flush_interval_ms: Annotated[int, Field(ge=1, le=5000)] = 200
    max_batch_items: Annotated[int, Field(ge=1, le=100_000)] = 512
    # Waveforms are committed in records of up to this much signal per lead (longer records compress
    # better; a waveform sample waits at most this long before it is durable and counted as accepted).
    waveform_record_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    queue_size: Annotated[int, Field(ge=16, le=1_000_000)] = 10_000
    # While the buffer cannot commit (full disk, locked database), events are held in memory up to this much;
    # over it the oldest waveforms, then device status, then numerics are shed (never alarms or command results).
    outage_memory_mb: Annotated[int, Field(ge=1, le=4096)] = 64


class SupervisorSection(Section):
    backoff_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    watchdog_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0


# The device sections come from the transports (drivers/transport.py): each transport package owns its section,
# and this union is assembled from the registry, so adding a transport does not touch this file.
if TYPE_CHECKING:
    AnyDeviceSection = DeviceSection
else:
    # Union[...] over a tuple built at run time: the `|` form needs the members spelled out.
    AnyDeviceSection = Annotated[Union[device_sections()], Field(discriminator="transport")]  # noqa: UP007


class LimitRule(Section):
    quantity: str
    device: str | None = None  # only this device (e.g. one patient's oximeter); none: every device
    low: float | None = None
    high: float | None = None
    priority: Literal["high", "medium", "low"] = "medium"
    delay_s: Annotated[float, Field(ge=0, le=600)] = 0.0
    hysteresis: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("quantity")
    @classmethod
    def _known_numeric(cls, value: str) -> str:
        q = BY_REFERENCE.get(value)
        if q is None or q.kind is not Kind.NUMERIC:
            raise ValueError("expected the MDC reference id of a numeric quantity, e.g. MDC_PULS_OXIM_SAT_O2")
        return value

    @model_validator(mode="after")
    def _has_a_limit(self) -> LimitRule:
        if self.low is None and self.high is None:
            raise ValueError("a limit rule needs low, high or both")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError("low must be below high")
        return self


class LocalAlarmChannel(Section):
    """Alarms published at once to a broker on the ward or in the home (nurse call, a bedside display),
    independent of the cloud uplink, so they keep flowing when the internet is down.

    Secured like the uplink: mutual TLS (`[alarms.local.tls]`, the same keys as `[mqtt.tls]`), plaintext only
    to a loopback broker; optionally a username and a password file for brokers that also want those.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = "iomt/local"
    protocol: Literal["5", "3.1.1"] = "5"
    tls: TlsSection | None = None
    username: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    password_file: SecretRef | None = None

    @model_validator(mode="after")
    def _secured(self) -> LocalAlarmChannel:
        if self.tls is None and not is_loopback(self.host):
            raise ValueError("[alarms.local.tls] is required for a broker off this machine (loopback only without)")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        return self


class RhythmLimits(Section):
    """One patient's arrhythmia alarm definitions, replacing the general ones for that device (unset: general)."""

    device: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    asystole_s: Annotated[float, Field(ge=2, le=30)] | None = None
    extreme_brady_bpm: Annotated[float, Field(ge=10, le=100)] | None = None
    extreme_brady_beats: Annotated[int, Field(ge=2, le=30)] | None = None
    extreme_tachy_bpm: Annotated[float, Field(ge=100, le=350)] | None = None
    extreme_tachy_beats: Annotated[int, Field(ge=2, le=60)] | None = None
    vt_bpm: Annotated[float, Field(ge=60, le=300)] | None = None
    vt_beats: Annotated[int, Field(ge=3, le=30)] | None = None
    vf_s: Annotated[float, Field(ge=2, le=30)] | None = None


class AlarmsSection(Section):
    low_battery_pct: Annotated[float, Field(ge=0, le=100)] = 15.0
    # Arrhythmia alarms from every ECG lead, pleth and arterial pressure a patient has (docs/ALARMS.md).  The
    # defaults are IEC 60601-2-27's and the PhysioNet/CinC Challenge 2015's definitions.
    asystole_s: Annotated[float, Field(ge=2, le=30)] = 4.0
    extreme_brady_bpm: Annotated[float, Field(ge=10, le=100)] = 40.0
    extreme_brady_beats: Annotated[int, Field(ge=2, le=30)] = 5
    extreme_tachy_bpm: Annotated[float, Field(ge=100, le=350)] = 140.0
    extreme_tachy_beats: Annotated[int, Field(ge=2, le=60)] = 17
    vt_bpm: Annotated[float, Field(ge=60, le=300)] = 100.0
    vt_beats: Annotated[int, Field(ge=3, le=30)] = 5
    vf_s: Annotated[float, Field(ge=2, le=30)] = 4.0
    rhythm_delay_s: Annotated[float, Field(ge=0, le=60)] = 0.0  # extra persistence before an arrhythmia alarm
    rhythm_hold_s: Annotated[float, Field(ge=0, le=60)] = 2.0  # an arrhythmia alarm stays this long after its cause
    rhythm: Annotated[tuple[RhythmLimits, ...], Field(strict=False)] = ()  # per-patient definitions
    # An active alarm nobody acknowledged for this long is escalated one priority (low -> medium -> high).
    escalate_after_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    local: LocalAlarmChannel | None = None
    # CGM: rate-of-change alarms (from consecutive readings, device time) and sensor life.
    glucose_fall_mg_dl_min: Annotated[float, Field(lt=0, ge=-20)] = -2.0
    glucose_rise_mg_dl_min: Annotated[float, Field(gt=0, le=20)] = 3.0
    cgm_sensor_life_h: Annotated[float, Field(gt=0, le=24 * 30)] = 240.0
    cgm_expiry_warning_h: Annotated[float, Field(gt=0, le=72)] = 24.0
    poor_signal_s: Annotated[float, Field(gt=0, le=600)] = 15.0  # a lead poor this long raises ecg_poor_signal
    poor_signal_clear_s: Annotated[float, Field(gt=0, le=600)] = 30.0  # ... and good this long clears it
    limits: Annotated[tuple[LimitRule, ...], Field(strict=False)] = ()

    def rhythm_settings(self, device_id: str) -> RhythmSettings:
        """The arrhythmia definitions for one device: its own where configured, else the general ones."""
        values: dict[str, Any] = {
            "asystole_s": self.asystole_s,
            "brady_bpm": self.extreme_brady_bpm,
            "brady_beats": self.extreme_brady_beats,
            "tachy_bpm": self.extreme_tachy_bpm,
            "tachy_beats": self.extreme_tachy_beats,
            "vt_bpm": self.vt_bpm,
            "vt_beats": self.vt_beats,
            "vf_s": self.vf_s,
        }
        for own in self.rhythm:
            if own.device == device_id:
                renamed = {"extreme_brady_bpm": "brady_bpm", "extreme_brady_beats": "brady_beats"}
                renamed |= {"extreme_tachy_bpm": "tachy_bpm", "extreme_tachy_beats": "tachy_beats"}
                for key, value in own.model_dump(exclude={"device"}, exclude_none=True).items():
                    values[renamed.get(key, key)] = value
        return RhythmSettings(**values)


_IDENT = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class IssuerKey(Section):
    """A key trusted to sign commands and remote configuration."""

    key_id: Annotated[str, Field(pattern=_IDENT)]
    public_key: Annotated[str, Field(description="Ed25519 public key, 32 raw bytes, base64")]
    revoked: bool = False

    @field_validator("public_key")
    @classmethod
    def _ed25519(cls, value: str) -> str:
        import base64  # noqa: PLC0415
        import binascii  # noqa: PLC0415

        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("expected base64 of a 32-byte Ed25519 public key") from None
        if len(raw) != 32:
            raise ValueError("expected base64 of a 32-byte Ed25519 public key")
        return value


class DevicePolicy(Section):
    """What may be commanded on one device, and within which limits.  Anything not listed is denied."""

    device: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    allowed: Annotated[tuple[str, ...], Field(strict=False)] = ()
    dual_signature: Annotated[tuple[str, ...], Field(strict=False)] = ()  # types needing two distinct issuers
    max_commands_per_hour: Annotated[int, Field(ge=0, le=3600)] = 12
    max_bolus_mu: Annotated[int, Field(ge=0, le=100_000)] | None = None  # milli-units (1000 mU = 1 IU)
    dose_step_mu: Annotated[int, Field(ge=1, le=10_000)] = 50  # the pump's dose resolution
    min_bolus_interval_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    max_basal_mu_per_h: Annotated[int, Field(ge=0, le=100_000)] | None = None
    max_temp_basal_min: Annotated[int, Field(ge=1, le=1440)] = 720
    max_daily_mu: Annotated[int, Field(ge=0, le=1_000_000)] | None = None  # rolling 24 h, bolus + temp basal


KNOWN_COMMAND_TYPES = frozenset({"bolus", "cancel_bolus", "temp_basal", "reconcile", "set_point"})


class CommandsSection(Section):
    enabled: bool = False
    config_signatures: Annotated[int, Field(ge=1, le=4)] = 2  # distinct issuers needed for a remote config
    clock_skew_s: Annotated[float, Field(ge=0, le=600)] = 30.0
    max_validity_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0
    response_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    issuers: Annotated[tuple[IssuerKey, ...], Field(strict=False)] = ()
    devices: Annotated[tuple[DevicePolicy, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _consistent(self) -> CommandsSection:
        ids = [k.key_id for k in self.issuers]
        if len(ids) != len(set(ids)):
            raise ValueError("issuer key ids must be unique (a duplicate could undo a revocation)")
        keys = [k.public_key for k in self.issuers]
        if len(keys) != len(set(keys)):
            raise ValueError("each issuer needs its own key (dual signatures must be two people)")
        for policy in self.devices:
            unknown = set(policy.allowed) - KNOWN_COMMAND_TYPES
            if unknown:
                raise ValueError(f"allowed command types are {', '.join(sorted(KNOWN_COMMAND_TYPES))}")
        return self


class AdminSection(Section):
    """The local admin API: a Unix socket, never TCP.  Root, the service user and the group may connect."""

    socket: str = "admin.sock"  # relative to gateway.state_dir unless absolute (systemd: /run/iomt-gateway/...)
    group: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] | None = None


class MetricsSection(Section):
    """Prometheus metrics over HTTP on a loopback port; off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 9464

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if not is_loopback(value):
            raise ValueError("a loopback address (127.0.0.0/8, ::1 or localhost); put a proxy in front for more")
        return value


class ClockSection(Section):
    """When the system clock counts as trusted (commands that change a dose, and setting a device's clock)."""

    # The kernel's estimate of the clock's maximum error (adjtimex maxerror) must stay under this.
    max_error_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class Config(Section):
    gateway: GatewaySection
    logging: LoggingSection = LoggingSection()
    buffer: BufferSection
    mqtt: MqttSection
    supervisor: SupervisorSection = SupervisorSection()
    alarms: AlarmsSection = AlarmsSection()
    commands: CommandsSection = CommandsSection()
    admin: AdminSection = AdminSection()
    metrics: MetricsSection = MetricsSection()
    clock: ClockSection = ClockSection()
    devices: Annotated[tuple[AnyDeviceSection, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _unique_device_ids(self) -> Config:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"duplicate device id {device.id!r}")
            seen.add(device.id)
        check_devices(self.devices, self.mqtt.max_message_bytes)
        return self

    @property
    def state_dir(self) -> Path:
        return Path(self.gateway.state_dir)

    @property
    def admin_socket(self) -> Path:
        path = Path(self.admin.socket)
        return path if path.is_absolute() else self.state_dir / path

    def secret_path(self, ref: str) -> Path:
        return resolve_secret(ref, self.state_dir)

    def secret_refs(self) -> dict[str, str]:
        """Every secret the config references, by dotted key."""
        refs = {"buffer.key_file": self.buffer.key_file}
        local = self.alarms.local
        if local is not None:
            if local.tls is not None:
                refs |= {
                    "alarms.local.tls.ca_file": local.tls.ca_file,
                    "alarms.local.tls.cert_file": local.tls.cert_file,
                    "alarms.local.tls.key_file": local.tls.key_file,
                }
            if local.password_file is not None:
                refs["alarms.local.password_file"] = local.password_file
        if self.mqtt.tls is not None:
            refs |= {
                "mqtt.tls.ca_file": self.mqtt.tls.ca_file,
                "mqtt.tls.cert_file": self.mqtt.tls.cert_file,
                "mqtt.tls.key_file": self.mqtt.tls.key_file,
            }
        refs |= device_secret_refs(self.devices)
        return refs


def _describe(value: Any) -> str:
    """The form of a bad value without the value itself (it may be a secret or a patient id)."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, str):
        return f"a string of length {len(value)}"
    return type(value).__name__


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for index, part in enumerate(parts):
        # pydantic puts the discriminator (the transport's tag) in a device's error location: leave it out.
        if part in transports() and index and isinstance(parts[index - 1], int):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _format_error(err: ValidationError) -> str:
    first = err.errors(include_url=False)[0]
    loc = _loc(tuple(first["loc"]))
    kind = first["type"]
    if kind == "missing":
        return f"{loc}: missing required key"
    if kind == "extra_forbidden":
        return f"{loc}: unknown key (not part of the configuration schema)"
    message = first["msg"].removeprefix("Value error, ")
    message = message[0].lower() + message[1:]
    if isinstance(first.get("input"), dict):
        return f"{loc}: {message}"  # a rule across keys of one table: the message names them
    message = message.removeprefix("input should be ").removeprefix("expected ")
    return f"{loc}: got {_describe(first.get('input'))}; expected {message}"


def parse_config(data: dict[str, Any], *, check_secrets: bool = True) -> Config:
    """Validate a parsed TOML document; ConfigError with a one-line message on the first problem."""
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    if check_secrets:
        for key, ref in config.secret_refs().items():
            try:
                path = config.secret_path(ref)
            except ConfigError as err:
                raise ConfigError(f"{key}: {err.message}") from None
            if not path.is_file():
                raise ConfigError(f"{key}: secret file not found (expected a readable file at {path})")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{key}: secret file not readable by this user ({path})")
    return config


def load_config(path: Path, *, check_secrets: bool = True) -> Config:
    """Read and validate the TOML file at `path`."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    return parse_config(data, check_secrets=check_secrets)
