"""The transports, found rather than listed: every subpackage of `drivers` with a `transport` module is one.

The gateway's configuration (the device union, secret references), its drivers and their default backends are
built from what this finds, so adding a transport touches one package (drivers/transport.py is the contract).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import drivers
from drivers.base import Driver
from drivers.transport import BuildContext, DeviceSection, Transport
from gateway.core.errors import ConfigError


@functools.cache
def transports() -> Mapping[str, Transport[Any]]:
    """Every transport by its tag, in package-name order."""
    found: dict[str, Transport[Any]] = {}
    for info in sorted(pkgutil.iter_modules(drivers.__path__), key=lambda i: i.name):
        name = f"drivers.{info.name}.transport"
        if not info.ispkg or importlib.util.find_spec(name) is None:
            continue
        transport: Transport[Any] = importlib.import_module(name).TRANSPORT
        found[transport.name] = transport
    return found


def device_sections() -> tuple[type[DeviceSection], ...]:
    """The configuration section of every transport (the members of the config's device union)."""
    return tuple(t.section for t in transports().values())


def check_devices(devices: Sequence[DeviceSection], max_message_bytes: int) -> None:
    """The rules across devices that each transport states; ValueError naming the first broken one."""
    for device in devices:
        problem = device.message_size_problem(max_message_bytes)
        if problem is not None:
            raise ValueError(problem)
    for transport in transports().values():
        transport.section.check_together([d for d in devices if d.transport == transport.name])


def secret_refs(devices: Sequence[DeviceSection]) -> dict[str, str]:
    """The secret references of the devices, by dotted key (`devices[2].tls_key`)."""
    refs: dict[str, str] = {}
    for index, device in enumerate(devices):
        for name in device.secret_fields:
            ref = getattr(device, name)
            if ref is not None:
                refs[f"devices[{index}].{name}"] = ref
    return refs


@dataclass
class Backends:
    """What each transport's drivers reach their devices through, by transport tag (`backend=` injection): tests
    and HIL rigs hand in simulators here without patching; a transport nobody set uses its default."""

    by_transport: dict[str, object] = field(default_factory=dict)
    # The wall clock when it can be trusted, None when not: a device's clock is only ever set from it.
    trusted_time: Callable[[], int | None] | None = None

    @classmethod
    def defaults(cls, devices: Sequence[DeviceSection]) -> Backends:
        """Each configured transport's default backend, set up once for all of its devices."""
        backends = cls()
        for name, transport in transports().items():
            own = [d for d in devices if d.transport == name]
            if own and transport.default_backend is not None:
                backends.by_transport[name] = transport.default_backend(own)
        return backends


def build_driver(
    device: DeviceSection,
    backends: Backends,
    secret_path: Callable[[str], Path] | None = None,
    state_dir: Path | None = None,
) -> Driver:
    """The driver for one configured device, from its transport's builder."""
    transport = transports().get(device.transport)
    if transport is None:  # pragma: no cover - the config union holds only registered transports
        raise ConfigError(f"devices: transport {device.transport!r} has no driver")
    context = BuildContext(
        backend=backends.by_transport.get(device.transport),
        secret_path=secret_path or Path,
        state_dir=state_dir,
        trusted_time=backends.trusted_time,
    )
    return transport.build(device, context)
