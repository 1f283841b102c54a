"""Builds the driver for each configured device; transports plug in here (one entry per transport)."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drivers.base import Driver
from drivers.ble.driver import BleDeviceDriver
from drivers.ble.link import GattLinkFactory
from drivers.modbus.driver import ClientFactory, ModbusDeviceDriver, make_client
from drivers.modbus.profile import load_profile
from drivers.serial.driver import SerialDeviceDriver
from drivers.serial.listener import ListenerPolicy
from gateway.config import (
    BleDeviceSection,
    DeviceSection,
    DicomDeviceSection,
    ModbusDeviceSection,
    SerialDeviceSection,
)
from gateway.errors import ConfigError


@dataclass
class Backends:
    """Transport backends, injectable so tests and HIL rigs connect simulators without patching."""

    ble: GattLinkFactory | None = None
    modbus: ClientFactory = make_client
    # The wall clock when it can be trusted, None when not: a device's clock is only ever set from it.
    trusted_time: Callable[[], int | None] | None = None


def build_driver(
    device: DeviceSection,
    backends: Backends,
    secret_path: Callable[[str], Path] | None = None,
    state_dir: Path | None = None,
) -> Driver:
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
    if isinstance(device, DicomDeviceSection):
        return _dicom_driver(device, secret_path or Path, state_dir)
    if isinstance(device, SerialDeviceSection):
        path = secret_path or Path
        return SerialDeviceDriver(
            device.id,
            device.address,
            device.profile,
            baudrate=device.baudrate,
            silent_link_timeout_s=device.silent_link_timeout_s,
            policy=ListenerPolicy.with_allowed(
                device.allowed_sources,
                max_connections=device.max_connections,
                max_per_source=device.max_connections_per_source,
                idle_timeout_s=device.idle_timeout_s,
                # A connection quiet this long may be replaced when every slot is taken; a monitor sending every
                # few seconds never is.
                stale_after_s=min(10.0, device.idle_timeout_s / 2),
            ),
            allowed_facilities=device.allowed_facilities,
            unmapped_ack=device.unmapped_ack,
            ssl_context=_server_tls(path, device.tls_cert, device.tls_key, device.tls_client_ca),
        )
    if isinstance(device, BleDeviceSection):
        if backends.ble is None:
            raise ConfigError(f"devices: {device.id} needs a BLE backend, and none is available")
        return BleDeviceDriver(
            device.id,
            device.address,
            device.profile,
            backends.ble,
            silent_link_timeout_s=device.silent_link_timeout_s,
            trusted_time=backends.trusted_time,
        )
    raise ConfigError(f"devices: transport {device.transport!r} has no driver")  # pragma: no cover


def _server_tls(
    secret_path: Callable[[str], Path], cert: str | None, key: str | None, client_ca: str | None
) -> ssl.SSLContext | None:
    """A listener's TLS context (TLS 1.2+); with `client_ca`, peers must present a certificate it issued."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(secret_path(cert), secret_path(key))
    if client_ca is not None:
        context.load_verify_locations(secret_path(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _dicom_driver(device: DicomDeviceSection, secret_path: Callable[[str], Path], state_dir: Path | None) -> Driver:
    from drivers.dicom.deidentify import Deidentifier  # noqa: PLC0415 - pydicom only when DICOM is configured
    from drivers.dicom.intake import DicomIntakeDriver  # noqa: PLC0415

    deidentifier = None
    if device.deidentify and device.deidentify_key is not None:
        deidentifier = Deidentifier(secret_path(device.deidentify_key).read_bytes())
    context = _server_tls(secret_path, device.tls_cert, device.tls_key, None)
    return DicomIntakeDriver(
        device.id,
        device.address,
        ae_title=device.ae_title,
        allowed_calling_aes=device.allowed_calling_aes,
        deidentifier=deidentifier,
        pseudonym=device.patient,
        chunk_bytes=device.chunk_bytes,
        ssl_context=context,
        # Sealed, with per-object keys that die with the process; wiped at start.
        spool_dir=(state_dir or Path(tempfile.gettempdir())) / "dicom-spool",
        idle_timeout_s=device.idle_timeout_s,
        max_associations=device.max_associations,
        max_associations_per_source=device.max_associations_per_source,
    )
