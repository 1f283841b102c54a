"""The driver plugin contract: what a transport package exports so that the gateway can configure and build it.

A transport is a subpackage of `drivers` with a module `transport` that exports `TRANSPORT`, a `Transport`:

- `section`: its configuration section, a `DeviceSection` whose `transport` key is a literal tag, with its own
  keys, validation, secret references (`secret_fields`) and defaults (liveness interval);
- `build`: a driver from one section and a `BuildContext` (the transport's injected backend, secrets, state);
- `default_backend`: what its drivers reach devices through when nobody injected one (`Backends`), built once per
  gateway from all of its devices (e.g. one simulated radio for every `virtual:` address).

`drivers/registry.py` finds the transports, and the gateway's config union, secret references and driver
construction are assembled from them: adding a transport adds one package and touches nothing else
(docs/ARCHITECTURE.md walks through it).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field

from drivers.base import Driver
from gateway.core.settings import Section

DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DeviceSection(Section):
    """The keys every configured device has; a transport's section adds its own."""

    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    transport: str  # each transport narrows this to its literal tag (the union's discriminator)
    address: str
    profile: str
    patient: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    # Liveness: no data for this long raises the technical alarm device_silent (cleared by the next datum).
    # Unset: the default for the kind of device (`default_silent_after_s`); every device has one.
    silent_after_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None
    silent_priority: Literal["high", "medium", "low"] = "medium"

    # The keys of this section that are secret references (files, or credential:NAME).
    secret_fields: ClassVar[tuple[str, ...]] = ()

    def default_silent_after_s(self) -> float:
        """How long a device of this kind may send nothing before it is reported silent."""
        raise NotImplementedError

    def waits_for_sender(self) -> bool:
        """A listener (HL7, DICOM) waits for senders: a health check does not expect it to be connected."""
        return False

    def message_size_problem(self, max_message_bytes: int) -> str | None:
        """Why this device's stored items could not fit one uplink message of this size; None when they do."""
        return None

    @classmethod
    def check_together(cls, devices: Sequence[Any]) -> None:
        """Rules across the devices of this transport (e.g. one RS-485 line's settings); ValueError if broken."""


S = TypeVar("S", bound=DeviceSection)


@dataclass(frozen=True)
class BuildContext:
    """What a transport's builder is given besides the device's own section."""

    backend: object | None  # the transport's backend: injected (Backends), its default, or None
    secret_path: Callable[[str], Path]
    state_dir: Path | None = None
    # The wall clock when it can be trusted, None when not: a device's clock is only ever set from it.
    trusted_time: Callable[[], int | None] | None = None


@dataclass(frozen=True)
class Transport(Generic[S]):
    name: str  # the `transport = "..."` tag in the configuration
    section: type[S]
    build: Callable[[S, BuildContext], Driver]
    default_backend: Callable[[Sequence[S]], object] | None = None


def server_tls(
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
