"""The shipped unit, firewall example and default configuration agree with the ward features they enable.

All three are read as shipped: the default config with its ward examples uncommented (so the examples are
also checked to be valid configuration), the unit's ReadWritePaths= and LoadCredential= lines (active, or
commented next to the feature they belong to), and the nftables example's accepted ports per chain.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from drivers.dicom.transport import DicomDeviceSection
from drivers.modbus.transport import ModbusDeviceSection
from drivers.serial.transport import SerialDeviceSection
from gateway.config import Config, parse_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "iomt-gateway.service"
FIREWALL = REPO / "systemd" / "nftables-iomt-gateway.nft"
CONFIG = REPO / "config" / "gateway.toml"
EXAMPLE_TABLE = re.compile(r"^# (\[\[devices\]\]|\[alarms\.local(\.tls)?\])$")
EXAMPLE_LINE = re.compile(r"^# ([a-z_]+ = .*|\[\[devices\]\]|\[alarms\.local(\.tls)?\])$")


def _with_examples(text: str) -> str:
    """The config with every commented example table (devices, the local alarm channel) uncommented."""
    out, inside = [], False
    for line in text.splitlines():
        if EXAMPLE_TABLE.match(line):
            inside = True
        elif not EXAMPLE_LINE.match(line):
            inside = False
        out.append(line[2:] if inside else line)
    return "\n".join(out)


def _ward_config() -> Config:
    data = tomllib.loads(_with_examples(CONFIG.read_text()))
    return parse_config(data, check_secrets=False)


def _firewall_ports() -> dict[str, set[int]]:
    """chain -> TCP ports it accepts (beyond established traffic)."""
    ports: dict[str, set[int]] = {}
    chain = None
    for line in FIREWALL.read_text().splitlines():
        code = line.split("#", 1)[0]
        if match := re.search(r"chain (\w+)", code):
            chain = match.group(1)
        elif chain and (match := re.search(r"tcp dport (\d+) accept", code)):
            ports.setdefault(chain, set()).add(int(match.group(1)))
    return ports


def _unit_values(key: str, *, commented_too: bool = False) -> list[str]:
    pattern = re.compile(rf"^{'#?' if commented_too else ''}{key}=(.*)$")
    return [m.group(1) for line in UNIT.read_text().splitlines() if (m := pattern.match(line))]


def test_the_examples_are_valid_configuration_and_cover_the_ward_features() -> None:
    config = _ward_config()
    kinds = {type(d).__name__ for d in config.devices}
    assert {"ModbusDeviceSection", "SerialDeviceSection", "DicomDeviceSection"} <= kinds
    assert config.alarms.local is not None and config.alarms.local.tls is not None


def test_listeners_are_open_inbound_and_clients_outbound() -> None:
    config, ports = _ward_config(), _firewall_ports()
    for device in config.devices:
        url = urlsplit(device.address)
        if url.scheme == "listen":
            assert url.port in ports["input"], f"{device.id}: inbound port {url.port} is dropped by the firewall"
        if isinstance(device, ModbusDeviceSection) and url.scheme == "tcp":
            assert url.port in ports["output"], f"{device.id}: Modbus port {url.port} is dropped outbound"
    assert config.alarms.local is not None
    assert config.alarms.local.port in ports["output"], "the local alarm broker is unreachable"
    assert config.mqtt.port in ports["output"], "the cloud broker is unreachable"
    listening = {
        urlsplit(d.address).port
        for d in config.devices
        if isinstance(d, SerialDeviceSection | DicomDeviceSection) and d.address.startswith("listen://")
    }
    assert ports["input"] == listening, "the firewall opens exactly the ports the examples listen on"


def test_folders_the_gateway_writes_are_writable_under_protect_system_strict() -> None:
    config = _ward_config()
    assert "ProtectSystem=strict" in UNIT.read_text()
    writable = [p.lstrip("-") for value in _unit_values("ReadWritePaths") for p in value.split()]
    state = _unit_values("StateDirectory")
    assert state == ["iomt-gateway"] and config.gateway.state_dir == "/var/lib/iomt-gateway"
    for device in config.devices:
        if isinstance(device, DicomDeviceSection) and device.address.startswith("folder://"):
            folder = device.address.removeprefix("folder://")
            assert any(folder == w or folder.startswith(w.rstrip("/") + "/") for w in writable), folder


def test_every_credential_the_config_names_is_loaded_by_the_unit() -> None:
    config = _ward_config()
    loaded = {value.split(":", 1)[0] for value in _unit_values("LoadCredential", commented_too=True)}
    active = {value.split(":", 1)[0] for value in _unit_values("LoadCredential")}
    named = {ref.removeprefix("credential:") for ref in config.secret_refs().values() if ref.startswith("credential:")}
    assert named <= loaded, named - loaded
    # What the default (non-example) configuration uses is loaded unconditionally.
    default = parse_config(tomllib.loads(CONFIG.read_text()), check_secrets=False)
    needed = {r.removeprefix("credential:") for r in default.secret_refs().values() if r.startswith("credential:")}
    assert needed <= active, needed - active


def test_the_shipped_scp_example_restricts_calling_aes() -> None:
    scps = [d for d in _ward_config().devices if isinstance(d, DicomDeviceSection) and d.profile == "storage_scp"]
    assert scps and all(d.allowed_calling_aes and not d.allow_any_calling_ae for d in scps)


def test_a_storage_scp_open_to_any_calling_ae_must_be_deliberate(tmp_path: Path) -> None:
    import pytest  # noqa: PLC0415

    from gateway.core.errors import ConfigError  # noqa: PLC0415
    from tests.conftest import config_dict  # noqa: PLC0415

    data = config_dict(tmp_path / "state", 1883)
    scp = {"id": "us", "transport": "dicom", "profile": "storage_scp", "address": "listen://0.0.0.0:11112"}
    data["devices"] = [scp]
    with pytest.raises(ConfigError, match="allowed_calling_aes"):  # was: any AE could store
        parse_config(data, check_secrets=False)
    data["devices"] = [{**scp, "allow_any_calling_ae": True}]
    assert parse_config(data, check_secrets=False).devices


def test_the_shipped_config_has_no_simulated_device() -> None:
    """A production install has no rig extras: a virtual: or sim: device would stop the daemon at start."""
    devices = tomllib.loads(CONFIG.read_text("utf-8")).get("devices", [])
    assert not [d for d in devices if str(d.get("address", "")).startswith(("virtual:", "sim:"))]


def test_the_unit_sets_each_key_once_and_points_at_no_missing_file() -> None:
    section, seen = "", set[str]()
    # Keys a later line silently overrides (list-valued keys such as LoadCredential= may repeat).
    single = {"Description", "Documentation", "Type", "ExecStart", "User", "Group", "UMask", "Restart"}
    single |= {"StateDirectory", "StateDirectoryMode", "RuntimeDirectory", "RuntimeDirectoryMode", "WatchdogSec"}
    for raw in UNIT.read_text("utf-8").splitlines():
        line = raw.strip()
        if line.startswith("["):
            section, seen = line, set[str]()
            continue
        if not line or line.startswith("#") or "=" not in line:
            continue
        key = line.split("=", 1)[0]
        assert key not in single or key not in seen, f"{section} sets {key}= twice"
        seen.add(key)
        if key == "Documentation":
            assert not line.split("=", 1)[1].startswith("file://"), "pip installs no documentation files"
