"""Commissioning BLE devices: find them by scanning, then add one to the configuration file.

`scan` listens to advertisements through bleak (the platform stack, or any bleak backend) and recognises the
health profile from the advertised Bluetooth SIG service UUIDs.  `add_device` appends a `[[devices]]` table to
the TOML file, keeping the technician's comments and layout, after validating the whole resulting config; the
file is replaced atomically and keeps its permissions.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

from drivers.ble import cgms, fields, hrs, ids, plxs
from gateway.config import parse_config
from gateway.core.errors import ConfigError
from gateway.storage.atomic import write_atomically

# The advertised service that names a profile (first match wins: a pump that also has a Battery Service is a pump).
PROFILE_BY_SERVICE: dict[str, str] = {
    ids.INSULIN_DELIVERY_SERVICE: "insulin_pump",
    cgms.CGM_SERVICE: "cgm",
    plxs.PULSE_OXIMETER_SERVICE: "pulse_oximeter",
    hrs.HEART_RATE_SERVICE: "ecg_patch",
    fields.uuid16(0x1810): "blood_pressure",
    fields.uuid16(0x1809): "thermometer",
    fields.uuid16(0x1808): "glucose_meter",
}


@dataclass
class Found:
    """A device heard during a scan."""

    address: str
    name: str | None
    rssi_dbm: int
    services: list[str] = field(default_factory=list)
    profile: str | None = None
    advertisements: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "rssi_dbm": self.rssi_dbm,
            "profile": self.profile,
            "services": self.services,
            "advertisements": self.advertisements,
        }


def profile_for(services: list[str]) -> str | None:
    for service, profile in PROFILE_BY_SERVICE.items():
        if service in services:
            return profile
    return None


async def scan(
    duration_s: float,
    *,
    backend: type[BaseBleakScanner] | None = None,
    backend_kwargs: dict[str, Any] | None = None,
    on_found: Callable[[Found], None] | None = None,
    on_tick: Callable[[float], None] | None = None,
    health_only: bool = True,
) -> list[Found]:
    """Listen for `duration_s`; return the devices heard, strongest signal first.

    `on_found` is called for each new or updated device, `on_tick` with the elapsed seconds (for a progress bar).
    With `health_only`, devices advertising none of the known health services are left out.
    """
    found: dict[str, Found] = {}

    def detected(device: BLEDevice, adv: AdvertisementData) -> None:
        profile = profile_for(adv.service_uuids)
        if health_only and profile is None:
            return
        entry = found.get(device.address)
        if entry is None:
            entry = found[device.address] = Found(device.address, adv.local_name, adv.rssi)
        entry.name = adv.local_name or entry.name
        entry.rssi_dbm = adv.rssi
        entry.services = sorted(set(entry.services) | set(adv.service_uuids))
        entry.profile = profile_for(entry.services)
        entry.advertisements += 1
        if on_found is not None:
            on_found(entry)

    scanner = BleakScanner(detected, backend=backend, **(backend_kwargs or {}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with scanner:
        while (elapsed := loop.time() - started) < duration_s:
            if on_tick is not None:
                on_tick(elapsed)
            await asyncio.sleep(min(0.1, duration_s - elapsed))
    if on_tick is not None:
        on_tick(duration_s)
    return sorted(found.values(), key=lambda f: -f.rssi_dbm)


def add_device(
    path: Path, *, device_id: str, address: str, profile: str, patient: str | None = None, transport: str = "ble"
) -> None:
    """Append a device to the config file at `path`; ConfigError (file untouched) if the result is invalid."""
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    existing = data.get("devices", [])
    if not isinstance(existing, list):
        raise ConfigError("devices: must be an array of tables")
    for other in existing:
        if isinstance(other, dict) and other.get("id") == device_id:
            raise ConfigError(f"devices: a device with id {device_id} is already configured")
        if isinstance(other, dict) and str(other.get("address", "")).upper() == address.upper():
            raise ConfigError(f"devices: address {address} is already configured as {other.get('id')}")
    entry: dict[str, Any] = {"id": device_id, "transport": transport, "profile": profile, "address": address}
    if patient is not None:
        entry["patient"] = patient
    # Validate the whole file as it will be, before touching it (secrets are checked by the daemon).
    parse_config({**data, "devices": [*existing, entry]}, check_secrets=False)
    block = "\n[[devices]]\n" + tomli_w.dumps(entry)
    new_text = text if text.endswith("\n") or not text else text + "\n"
    write_atomically(path, (new_text + block).encode("utf-8"), mode=path.stat().st_mode & 0o7777)
