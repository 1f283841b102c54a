"""`hil sim ble`: simulated BLE peripherals as real GATT servers, each advertising on its own HCI controller.

`--device PROFILE:NAME` and `--transport SPEC` go in pairs: the N-th transport hosts the N-th device (a controller
has one identity, as a device has one radio).  Each peripheral advertises from a random static address derived from
its name (`--address` sets one), the same on every run, so the gateway's configuration names it once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.ble_radio import PeripheralHost
    from hil.rig import BlePeripheralConfig

PROFILES = ("ecg_patch", "pulse_oximeter", "cgm", "insulin_pump")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        action="append",
        required=True,
        metavar="PROFILE:NAME",
        help=f"a simulated peripheral (repeatable); PROFILE is one of {', '.join(PROFILES)}",
    )
    parser.add_argument(
        "--transport",
        action="append",
        required=True,
        metavar="SPEC",
        help="the HCI controller for the device in the same position (bumble's syntax): usb:0, "
        "serial:/dev/ttyACM0,1000000, hci-socket:0, tcp-client:HOST:PORT, ...",
    )
    parser.add_argument(
        "--address",
        action="append",
        metavar="AA:BB:CC:DD:EE:FF",
        help="the random static address of the device in the same position (default: derived from its name)",
    )
    parser.add_argument(
        "--keys-dir",
        type=Path,
        metavar="DIR",
        help="keep each device's pairing keys in DIR/NAME.json, so a bonded gateway reconnects after a restart",
    )
    parser.add_argument("--garbage-every", type=int, default=0, metavar="N", help="a malformed value every N-th")


class BleSimulator:
    name = "ble"

    def __init__(self, configs: list[BlePeripheralConfig], garbage_every: int) -> None:
        self.configs = configs
        self.garbage_every = garbage_every
        self.hosts: dict[str, PeripheralHost] = {}

    async def run(self, announce: Callable[[str], None]) -> None:
        from gateway.core.errors import TransportError  # noqa: PLC0415
        from hil.rig import open_ble_host  # noqa: PLC0415

        async with contextlib.AsyncExitStack() as stack:
            for config in self.configs:
                peripheral = config.build()
                peripheral.garbage_every = self.garbage_every
                host = await stack.enter_async_context(
                    open_ble_host(
                        config.transport, peripheral, address=config.resolved_address, keystore=config.keystore
                    )
                )
                self.hosts[config.name] = host
                announce(
                    f"{config.profile} {config.name!r} advertising as {host.address} (random static) "
                    f"on {config.transport.spec}"
                )
            lost = {asyncio.ensure_future(h.hci_lost): name for name, h in self.hosts.items() if h.hci_lost}
            if not lost:
                await asyncio.Event().wait()
            done, _ = await asyncio.wait(lost, return_when=asyncio.FIRST_COMPLETED)
            name = lost[next(iter(done))]
            spec = next(c.transport.spec for c in self.configs if c.name == name)
            raise TransportError(f"the HCI transport {spec} of {name!r} was lost", transport=spec)

    def summary(self) -> dict[str, Any]:
        peripherals = []
        for config in self.configs:
            host = self.hosts.get(config.name)
            p = host.peripheral if host is not None else None
            peripherals.append(
                {
                    "name": config.name,
                    "profile": config.profile,
                    "transport": config.transport.spec,
                    "address": config.resolved_address,
                    "started": host is not None,
                    "connections": p.connections if p else 0,
                    "notifications": p.notifications_sent if p else 0,
                    "values_on_air": host.values_on_air if host else 0,
                    "writes": len(p.writes) if p else 0,
                }
            )
        return {"peripherals": peripherals}

    def failure(self) -> str | None:
        return None


def build(args: argparse.Namespace) -> BleSimulator:
    from gateway.core.errors import ConfigError  # noqa: PLC0415
    from hil.rig import BlePeripheralConfig, BleTransport, validated  # noqa: PLC0415

    devices: list[str] = args.device
    transports: list[str] = args.transport
    addresses: list[str | None] = list(args.address or [])
    if len(transports) != len(devices):
        raise ConfigError(
            f"{len(devices)} --device and {len(transports)} --transport: one controller per device "
            "(the N-th --transport hosts the N-th --device)"
        )
    if addresses and len(addresses) != len(devices):
        raise ConfigError("--address: one per --device, in the same order, or none")
    addresses += [None] * (len(devices) - len(addresses))
    configs = []
    for device, transport, address in zip(devices, transports, addresses, strict=True):
        profile, _, name = device.partition(":")
        if not name:
            raise ConfigError(f"--device {device!r}: use PROFILE:NAME, e.g. pulse_oximeter:ox-1")
        configs.append(
            validated(
                f"--device {device}",
                BlePeripheralConfig,
                {
                    "profile": profile,
                    "name": name,
                    "transport": BleTransport.parse(transport),
                    "address": address,
                    "keystore": args.keys_dir / f"{name}.json" if args.keys_dir else None,
                },
            )
        )
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError("--device: each NAME once")
    if args.keys_dir is not None and not args.keys_dir.is_dir():
        raise ConfigError(f"--keys-dir {args.keys_dir}: no such folder")
    if args.garbage_every < 0:
        raise ConfigError("--garbage-every must be 0 or more")
    return BleSimulator(configs, args.garbage_every)
