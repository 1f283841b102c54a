"""The GATT client interface the BLE driver uses, so the transport behind it can be swapped.

Production uses bleak; tests and HIL rigs plug in simulated peripherals through the same interface
(bleak's `backend=` idea, one level up), so the driver under test is the production driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

NotifyCallback = Callable[[str, bytes], None]


class GattLink(Protocol):
    """A connection to one peripheral.  Methods raise gateway.core.errors.TransportError on link failure."""

    disconnected: asyncio.Event
    rssi_dbm: int | None  # signal strength of the advertisement it connected from, when known

    async def connect(self, timeout_s: float, *, pair: bool = False) -> None:
        """Connect; with `pair`, also pair (and bond) before any characteristic is used."""

    async def disconnect(self) -> None: ...

    async def read(self, uuid: str) -> bytes: ...

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None: ...

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None: ...

    def has_characteristic(self, uuid: str, *, notify: bool = False) -> bool:
        """Whether the peripheral has it (with `notify`: and can notify or indicate it)."""


GattLinkFactory = Callable[[str], GattLink]
