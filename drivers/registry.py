"""Builds the driver for each configured device; transports plug in here (one entry per transport)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import Driver
from drivers.ble.driver import BleDeviceDriver
from drivers.ble.link import GattLinkFactory
from gateway.config import DeviceSection
from gateway.errors import ConfigError


@dataclass
class Backends:
    """Transport backends, injectable so tests and HIL rigs connect simulators without patching."""

    ble: GattLinkFactory | None = None


def build_driver(device: DeviceSection, backends: Backends) -> Driver:
    if device.transport == "ble":
        if backends.ble is None:
            raise ConfigError(f"devices: {device.id} needs a BLE backend, and none is available")
        return BleDeviceDriver(
            device.id, device.address, device.profile, backends.ble, silent_link_timeout_s=device.silent_link_timeout_s
        )
    raise ConfigError(f"devices: transport {device.transport!r} has no driver")
