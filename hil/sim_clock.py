"""A clock for tests and HIL rigs: the wall clock, the monotonic clock, the boot and the kernel's NTP state,
each movable without touching the machine's clock (a Raspberry Pi booting without NTP, a clock set 6 h back)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from gateway.clock import KernelTimeState


@dataclass
class SimulatedClock:
    """Real time shifted by offsets; `synchronised` is what the kernel would say (STA_UNSYNC cleared or set)."""

    wall_offset_ns: int = 0
    mono_offset_ns: int = 0
    synchronised: bool = True
    max_error_us: int = 20_000
    boot: str = field(default_factory=lambda: str(uuid.uuid4()))

    def wall_ns(self) -> int:
        return time.time_ns() + self.wall_offset_ns

    def monotonic_ns(self) -> int:
        return time.monotonic_ns() + self.mono_offset_ns

    def boot_id(self) -> str:
        return self.boot

    def kernel_state(self) -> KernelTimeState:
        return KernelTimeState(self.synchronised, self.max_error_us)

    def jump_wall(self, seconds: float) -> None:
        """Set the wall clock by hand (the monotonic clock does not move)."""
        self.wall_offset_ns += round(seconds * 1e9)

    def advance(self, seconds: float) -> None:
        """Let time pass (both clocks move)."""
        self.wall_offset_ns += round(seconds * 1e9)
        self.mono_offset_ns += round(seconds * 1e9)

    def reboot(self) -> None:
        """A new boot: the monotonic clock starts again near zero and the boot id changes."""
        self.mono_offset_ns = -time.monotonic_ns()
        self.boot = str(uuid.uuid4())
