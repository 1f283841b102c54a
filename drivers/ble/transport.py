"""The BLE transport: its configuration section, its driver, and where its GATT links come from.

An address is a Bluetooth address (or a macOS CoreBluetooth UUID), reached through bleak on the platform's
stack, or `SCHEME:NAME`, reached through the BLE backend registered under that scheme in the
`iomt_gateway.ble_backends` entry points.  The rigs register theirs (`sim:` an in-process simulated peripheral,
`virtual:` one on a virtual radio reached through bleak over bumble, see hil/); the product never imports them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Annotated, Any, Literal, Protocol, cast

from bleak.backends.scanner import BaseBleakScanner
from pydantic import Field, field_validator

from drivers.base import Driver
from drivers.ble.link import GattLink, GattLinkFactory
from drivers.ble.profiles import PROFILES
from drivers.ble.session import BleSession
from drivers.transport import BuildContext, DeviceSection, Transport
from gateway.core.errors import ConfigError

BACKENDS_ENTRY_POINTS = "iomt_gateway.ble_backends"
_SCHEME = r"[a-z][a-z0-9]{2,15}:[A-Za-z0-9_.-]{1,40}"
ADDRESS_PATTERN = (
    rf"^({_SCHEME}|[0-9A-Fa-f]{{2}}(:[0-9A-Fa-f]{{2}}){{5}}"
    r"|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"
)
# Liveness defaults by how often each profile sends: streams every second or so, a CGM every 5 minutes (two
# missed readings and a minute), a pump's status every few seconds to minutes; spot-check devices only when
# used (a day).
DEFAULT_SILENT_AFTER_S = {
    "ecg_patch": 15.0,
    "pulse_oximeter": 15.0,
    "cgm": 660.0,
    "insulin_pump": 600.0,
    "blood_pressure": 24 * 3600.0,
    "thermometer": 24 * 3600.0,
    "glucose_meter": 24 * 3600.0,
}


def address_scheme(address: str) -> str | None:
    """`sim` for `sim:NAME`; None for a Bluetooth address or a CoreBluetooth UUID."""
    scheme, colon, _ = address.partition(":")
    return scheme if colon and len(scheme) > 2 and scheme.isalnum() and scheme[0].isalpha() else None


class BleDeviceSection(DeviceSection):
    transport: Literal["ble"]
    profile: str  # a name in drivers.ble.profiles.PROFILES
    # A Bluetooth address (or a macOS CoreBluetooth UUID), or SCHEME:NAME for a registered BLE backend.
    address: Annotated[str, Field(pattern=ADDRESS_PATTERN)]
    silent_link_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"expected one of {', '.join(repr(name) for name in PROFILES)}")
        return value

    @field_validator("address")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = address_scheme(value)
        if scheme is not None and scheme not in backend_names():
            known = ", ".join(f"{name}:NAME" for name in sorted(backend_names())) or "none installed"
            raise ValueError(f"a Bluetooth address, or a registered backend's address ({known})")
        return value

    def default_silent_after_s(self) -> float:
        return DEFAULT_SILENT_AFTER_S[self.profile]


@dataclass(frozen=True)
class ScannerBackend:
    """A bleak scanner backend and its arguments (bleak's `backend=` hook), e.g. a virtual radio's."""

    backend: type[BaseBleakScanner]
    kwargs: dict[str, Any] = field(default_factory=dict)


class BleBackend(Protocol):
    """A source of GATT links for the addresses of one scheme, registered as an `iomt_gateway.ble_backends`
    entry point named after the scheme."""

    def link_factory(self, devices: Sequence[BleDeviceSection]) -> GattLinkFactory:
        """Links for these devices (all with this backend's scheme), set up once per gateway."""
        ...

    def scanner(self) -> contextlib.AbstractAsyncContextManager[ScannerBackend]:
        """What `devices scan` listens through to hear this backend's devices."""
        ...


def backend_names() -> set[str]:
    return {entry.name for entry in metadata.entry_points(group=BACKENDS_ENTRY_POINTS)}


def ble_backend(scheme: str) -> BleBackend:
    """The BLE backend registered for `scheme`; ConfigError when none is installed."""
    for entry in metadata.entry_points(group=BACKENDS_ENTRY_POINTS, name=scheme):
        backend: BleBackend = entry.load()
        return backend
    raise ConfigError(f"no BLE backend is registered for addresses {scheme}:NAME")


def default_links(devices: Sequence[BleDeviceSection]) -> GattLinkFactory:
    """bleak on this machine's stack for Bluetooth addresses; each scheme's backend for SCHEME:NAME."""
    from drivers.ble.bleak_link import BleakGattLink  # noqa: PLC0415 - the BlueZ client only when it is used

    by_scheme: dict[str, GattLinkFactory] = {}
    schemes = {address_scheme(d.address) for d in devices} - {None}
    for scheme in sorted(s for s in schemes if s is not None):
        own = [d for d in devices if address_scheme(d.address) == scheme]
        by_scheme[scheme] = ble_backend(scheme).link_factory(own)

    def link(address: str) -> GattLink:
        scheme = address_scheme(address)
        if scheme is None:
            return BleakGattLink(address)
        if scheme not in by_scheme:
            by_scheme[scheme] = ble_backend(scheme).link_factory([])
        return by_scheme[scheme](address)

    return link


def build(device: BleDeviceSection, context: BuildContext) -> Driver:
    if context.backend is None:
        raise ConfigError(f"devices: {device.id} needs a BLE backend, and none is available")
    links = cast(GattLinkFactory, context.backend)  # the BLE backend is a GattLinkFactory (Backends' contract)
    return BleSession(
        device.id,
        device.address,
        device.profile,
        links,
        silent_link_timeout_s=device.silent_link_timeout_s,
        trusted_time=context.trusted_time,
    )


TRANSPORT = Transport("ble", BleDeviceSection, build, default_links)
