"""Gateway configuration: one TOML file, validated completely before anything starts.

Every error names the key (as a dotted path), the form of the bad value and what was expected, on one line.
Unknown keys are rejected, so a typo never silently falls back to a default.  Secrets are never inlined: the
config references files, either by path or as `credential:NAME`, which resolves inside the systemd
credentials directory ($CREDENTIALS_DIRECTORY, see systemd.exec LoadCredential=).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError
from gateway.nomenclature import BY_REFERENCE, Kind

if TYPE_CHECKING:
    from edge_ml.rhythm import RhythmSettings

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "gateway.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


SecretRef = Annotated[str, Field(min_length=1, description="a file path, or credential:NAME")]


def resolve_secret(ref: str, base_dir: Path | None = None) -> Path:
    """The file a secret reference points at; `credential:NAME` resolves in $CREDENTIALS_DIRECTORY."""
    if ref.startswith("credential:"):
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"secret {ref!r} needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=), which is unset"
            )
        return Path(directory) / ref.removeprefix("credential:")
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


class GatewaySection(_Section):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    state_dir: str


class LoggingSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class BufferSection(_Section):
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


class TlsSection(_Section):
    ca_file: SecretRef
    cert_file: SecretRef
    key_file: SecretRef
    # Optional pinning: SHA-256 (hex) of the broker certificate's SubjectPublicKeyInfo; any one must match.
    pin_sha256: Annotated[tuple[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")], ...], Field(strict=False)] = ()


class MqttSection(_Section):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = "iomt/v1"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    inflight_window: Annotated[int, Field(ge=1, le=1000)] = 32
    # AWS IoT Core's limits by default: 128 KiB per message (with topic and headers), 100 publishes/s.
    max_message_bytes: Annotated[int, Field(ge=4096, le=256 * 1024 * 1024)] = 120_000
    max_publishes_per_s: Annotated[float, Field(gt=0, le=100_000)] = 100.0
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    tls: TlsSection | None = None
    allow_plaintext_loopback: bool = False
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _tls_or_explicit_loopback(self) -> MqttSection:
        if self.tls is None:
            if not self.allow_plaintext_loopback:
                raise ValueError("[mqtt.tls] is required unless allow_plaintext_loopback = true (loopback broker only)")
            if not _is_loopback(self.host):
                raise ValueError(
                    "allow_plaintext_loopback only permits a loopback host (127.0.0.0/8, ::1 or localhost); "
                    "configure [mqtt.tls] for any other broker"
                )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SupervisorSection(_Section):
    backoff_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    watchdog_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0


ADDRESS_PATTERN = (
    r"^((sim|virtual):[A-Za-z0-9_.-]{1,40}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"
)


class _DeviceBase(_Section):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    patient: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    # Liveness: no data for this long raises the technical alarm device_silent (cleared by the next datum).
    # Unset: the default for the kind of device (gateway/liveness.py); every device has one.
    silent_after_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    silent_priority: Literal["high", "medium", "low"] = "medium"


class BleDeviceSection(_DeviceBase):
    transport: Literal["ble"]
    profile: Literal[
        "ecg_patch", "pulse_oximeter", "cgm", "insulin_pump", "blood_pressure", "thermometer", "glucose_meter"
    ]
    # A Bluetooth address (or a macOS CoreBluetooth UUID); `virtual:NAME` is a simulated peripheral on the
    # built-in virtual radio (bleak over bumble), `sim:NAME` one linked in-process with no radio at all.
    address: Annotated[str, Field(pattern=ADDRESS_PATTERN)]
    silent_link_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0


class ModbusDeviceSection(_DeviceBase):
    """A Modbus device: `tcp://HOST:PORT` or `rtu:///dev/PATH?baudrate=19200&parity=E`, a profile in config/modbus/."""

    transport: Literal["modbus"]
    profile: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
    address: Annotated[str, Field(pattern=r"^(tcp://[A-Za-z0-9_.:\[\]-]+|rtu:///[A-Za-z0-9_./-]+(\?[A-Za-z0-9=&]*)?)$")]
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1
    poll_interval_s: Annotated[float, Field(ge=0.005, le=3600)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 0.5

    @model_validator(mode="after")
    def _profile_exists(self) -> ModbusDeviceSection:
        from drivers.modbus.profile import load_profile  # noqa: PLC0415 - profiles live with the driver

        try:
            load_profile(self.profile)
        except ConfigError as err:
            raise ValueError(err.message) from None
        return self


class SerialDeviceSection(_DeviceBase):
    """A wired device speaking a stream protocol: a serial port or pty, a pyserial URL, or an MLLP listener.

    address: `/dev/ttyUSB0` (or a pty path), `socket://HOST:PORT` / `rfc2217://HOST:PORT` (a serial-to-Ethernet
    converter), or `listen://HOST:PORT` (the gateway listens; HL7 senders connect, as monitors usually do).
    """

    transport: Literal["serial"]
    profile: Literal["hl7_pcd01", "nonin_df2", "nonin_df7"]
    address: Annotated[
        str,
        Field(pattern=r"^(/dev/[A-Za-z0-9_./-]+|(socket|rfc2217|listen)://[A-Za-z0-9_.-]+:[0-9]{1,5})$"),
    ]
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    silent_link_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # HL7: an observation whose code the gateway does not map is counted and answered AA (its message's other
    # observations are kept); "AE" names the unmapped ones in the ACK instead (still keeping the rest).
    unmapped_ack: Literal["AA", "AE"] = "AA"
    # HL7 MSH-4 sending facilities accepted (namespace or universal id); empty: any.  Others are answered AR.
    allowed_facilities: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=64)], ...], Field(strict=False)
    ] = ()
    # The MLLP listener (listen://): source addresses or networks allowed to connect (empty: any), connections
    # at once and per source, and how long a connection may go without completing a message.
    allowed_sources: Annotated[tuple[str, ...], Field(strict=False)] = ()
    max_connections: Annotated[int, Field(ge=1, le=64)] = 8
    max_connections_per_source: Annotated[int, Field(ge=1, le=64)] = 2
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    # MLLP over TLS (listen:// only): the gateway's certificate and key; with tls_client_ca, senders must
    # present a certificate that CA issued.
    tls_cert: SecretRef | None = None
    tls_key: SecretRef | None = None
    tls_client_ca: SecretRef | None = None

    @field_validator("allowed_sources")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for source in value:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ValueError("IP addresses or networks, e.g. 10.20.0.7 or 10.20.0.0/24") from None
        return value

    @model_validator(mode="after")
    def _listener_options(self) -> SerialDeviceSection:
        listening = self.address.startswith("listen://")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not listening and (self.tls_cert is not None or self.allowed_sources):
            raise ValueError("tls_cert and allowed_sources apply to an MLLP listener (listen://HOST:PORT)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self


class DicomDeviceSection(_DeviceBase):
    """A DICOM intake: a Storage SCP (`listen://HOST:PORT`) or a watched drop folder (`folder:///ABS/PATH`).

    With `deidentify`, objects are de-identified (PS3.15 Basic Profile) before they are stored, with the
    device's `patient` binding as the pseudonymous patient id; `deidentify_key` (a secret file) keys the
    consistent UID replacement.  `tls_cert`/`tls_key` make the SCP speak DICOM over TLS.
    """

    transport: Literal["dicom"]
    profile: Literal["storage_scp", "drop_folder"]
    address: Annotated[str, Field(pattern=r"^(listen://[A-Za-z0-9_.-]+:[0-9]{1,5}|folder:///[^\s]*)$")]
    ae_title: Annotated[str, Field(pattern=r"^[ -\[\]-~]{1,16}$")] = "IOMT_GW"
    # Calling AE titles allowed to associate.  Required for a storage_scp unless allow_any_calling_ae = true:
    # an SCP that anyone on the network may store to must be a deliberate choice.
    allowed_calling_aes: Annotated[tuple[str, ...], Field(strict=False)] = ()
    allow_any_calling_ae: bool = False
    # The SCP's idle/size discipline: an association idle this long is released (network timeout), at most this
    # many associations at once and per calling address.
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_associations: Annotated[int, Field(ge=1, le=32)] = 4
    max_associations_per_source: Annotated[int, Field(ge=1, le=32)] = 2
    deidentify: bool = False
    deidentify_key: SecretRef | None = None
    tls_cert: SecretRef | None = None
    tls_key: SecretRef | None = None
    chunk_bytes: Annotated[int, Field(ge=4096, le=100_000)] = 64 * 1024

    @model_validator(mode="after")
    def _consistent(self) -> DicomDeviceSection:
        if (self.profile == "drop_folder") != self.address.startswith("folder://"):
            raise ValueError("a storage_scp listens (listen://HOST:PORT); a drop_folder watches (folder:///PATH)")
        if self.profile == "storage_scp" and not self.allowed_calling_aes and not self.allow_any_calling_ae:
            raise ValueError("a storage_scp needs allowed_calling_aes (or allow_any_calling_ae = true, deliberately)")
        if self.deidentify and self.deidentify_key is None:
            raise ValueError("deidentify needs deidentify_key (a secret file keying the UID replacement)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


DeviceSection = Annotated[
    BleDeviceSection | ModbusDeviceSection | SerialDeviceSection | DicomDeviceSection,
    Field(discriminator="transport"),
]


class LimitRule(_Section):
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


class LocalAlarmChannel(_Section):
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
        if self.tls is None and not _is_loopback(self.host):
            raise ValueError("[alarms.local.tls] is required for a broker off this machine (loopback only without)")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        return self


class RhythmLimits(_Section):
    """One patient's arrhythmia alarm definitions, replacing the general ones for that device (unset: general)."""

    device: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    asystole_s: Annotated[float, Field(ge=2, le=30)] | None = None
    extreme_brady_bpm: Annotated[float, Field(ge=10, le=100)] | None = None
    extreme_brady_beats: Annotated[int, Field(ge=2, le=30)] | None = None
    extreme_tachy_bpm: Annotated[float, Field(ge=100, le=350)] | None = None
    extreme_tachy_beats: Annotated[int, Field(ge=2, le=60)] | None = None
    vt_bpm: Annotated[float, Field(ge=60, le=300)] | None = None
    vt_beats: Annotated[int, Field(ge=3, le=30)] | None = None
    vf_s: Annotated[float, Field(ge=2, le=30)] | None = None


class AlarmsSection(_Section):
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
        from edge_ml.rhythm import RhythmSettings  # noqa: PLC0415 - the signal stack only where rhythm is analysed

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


class IssuerKey(_Section):
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


class DevicePolicy(_Section):
    """What may be commanded on one device, and within which limits.  Anything not listed is denied."""

    device: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
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


class CommandsSection(_Section):
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


class AdminSection(_Section):
    """The local admin API: a Unix socket, never TCP.  Root, the service user and the group may connect."""

    socket: str = "admin.sock"  # relative to gateway.state_dir unless absolute (systemd: /run/iomt-gateway/...)
    group: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] | None = None


class MetricsSection(_Section):
    """Prometheus metrics over HTTP on a loopback port; off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 9464

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if not _is_loopback(value):
            raise ValueError("a loopback address (127.0.0.0/8, ::1 or localhost); put a proxy in front for more")
        return value


class ClockSection(_Section):
    """When the system clock counts as trusted (commands that change a dose, and setting a device's clock)."""

    # The kernel's estimate of the clock's maximum error (adjtimex maxerror) must stay under this.
    max_error_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class Config(_Section):
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
    devices: Annotated[tuple[DeviceSection, ...], Field(strict=False)] = ()

    @model_validator(mode="after")
    def _unique_device_ids(self) -> Config:
        seen: set[str] = set()
        for device in self.devices:
            if device.id in seen:
                raise ValueError(f"duplicate device id {device.id!r}")
            seen.add(device.id)
            if isinstance(device, DicomDeviceSection) and device.chunk_bytes + 8192 > self.mqtt.max_message_bytes:
                raise ValueError(
                    f"device {device.id}: chunk_bytes must leave 8192 bytes of room under mqtt.max_message_bytes"
                )
        rtu: dict[str, str] = {}
        for device in self.devices:
            if isinstance(device, ModbusDeviceSection) and device.address.startswith("rtu://"):
                path, _, settings = device.address.partition("?")
                if rtu.setdefault(path, settings) != settings:
                    raise ValueError(f"Modbus units on {path} must use the same line settings (one RS-485 line)")
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
        for index, device in enumerate(self.devices):
            for name in ("deidentify_key", "tls_cert", "tls_key", "tls_client_ca"):
                ref = getattr(device, name, None)
                if ref is not None:
                    refs[f"devices[{index}].{name}"] = ref
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


_DEVICE_TAGS = frozenset(
    {"ble", "modbus", "serial", "dicom"}
)  # discriminator tags pydantic puts in a device's error location


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for index, part in enumerate(parts):
        if part in _DEVICE_TAGS and index and isinstance(parts[index - 1], int):
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
