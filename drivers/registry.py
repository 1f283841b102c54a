"""Builds the driver for each configured device; transports plug in here (one entry per transport)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import Driver
from drivers.ble.driver import BleDeviceDriver
from drivers.ble.link import GattLinkFactory
from drivers.modbus.driver import ClientFactory, ModbusDeviceDriver, make_client
from drivers.modbus.profile import load_profile
from drivers.serial.driver import SerialDeviceDriver
from gateway.config import BleDeviceSection, DeviceSection, ModbusDeviceSection, SerialDeviceSection
from gateway.errors import ConfigError


@dataclass
class Backends:
    """Transport backends, injectable so tests and HIL rigs connect simulators without patching."""

    ble: GattLinkFactory | None = None
    modbus: ClientFactory = make_client


def build_driver(device: DeviceSection, backends: Backends) -> Driver:
    if isinstance(device, ModbusDeviceSection):
        return ModbusDeviceDriver(
            device.id,
            device.address,
            load_profile(device.profile),
            unit_id=device.unit_id,
            interval_s=device.poll_interval_s,
            timeout_s=device.timeout_s,
            client_factory=backends.modbus,
        )
    if isinstance(device, SerialDeviceSection):
        return SerialDeviceDriver(
            device.id,
            device.address,
            device.profile,
            baudrate=device.baudrate,
            silent_link_timeout_s=device.silent_link_timeout_s,
        )
    if isinstance(device, BleDeviceSection):
        if backends.ble is None:
            raise ConfigError(f"devices: {device.id} needs a BLE backend, and none is available")
        return BleDeviceDriver(
            device.id, device.address, device.profile, backends.ble, silent_link_timeout_s=device.silent_link_timeout_s
        )
    raise ConfigError(f"devices: transport {device.transport!r} has no driver")  # pragma: no cover
