"""Trusted time: the wall clock is believed only when the kernel says it is synchronised and it is not behind
time an issuer has signed; elapsed time runs on the monotonic clock, across restarts of the same boot.

A Raspberry Pi has no battery-backed clock: after a power cut it boots with the last saved time until NTP
answers, so an unsynchronised or wrong clock is the ordinary case.  The kernel's NTP state (`adjtimex`, as
`timedatectl` reads it) says whether the clock is synchronised and how far off it may be (`maxerror`); setting
the clock by hand marks it unsynchronised (STA_UNSYNC) until NTP corrects it.  Signed command envelopes carry
the issuer's time: the newest one ever verified, advanced by the monotonic time since, is a floor the wall
clock must not be behind.

Every source is injectable (`ClockSource`): tests move the wall clock, the monotonic clock and the kernel's
sync state without touching the machine's clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.core.logs import get_logger

log = get_logger(__name__)

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5  # adjtimex's return value when the clock is not synchronised
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class KernelTimeState:
    """The kernel's view of the system clock: synchronised by NTP (or PTP), and its maximum error."""

    synchronised: bool
    max_error_us: int


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h> (Linux, glibc and musl): 11 trailing padding ints.
    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("padding", ctypes.c_int * 11),
    )


def read_kernel_time_state() -> KernelTimeState:
    """The kernel's NTP state through a read-only `adjtimex` (modes 0); unsynchronised when it cannot be read."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return KernelTimeState(synchronised=False, max_error_us=2**31)
    if state < 0:
        return KernelTimeState(synchronised=False, max_error_us=2**31)
    synchronised = state != _TIME_ERROR and not timex.status & _STA_UNSYNC
    return KernelTimeState(synchronised=synchronised, max_error_us=int(timex.maxerror))


def read_boot_id() -> str:
    """This boot's id: the monotonic clock restarts at each boot, so a monotonic reading is only comparable
    with one taken in the same boot."""
    try:
        return BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


class ClockSource(Protocol):
    """Where time comes from; the system's by default, a simulated one in tests."""

    def wall_ns(self) -> int: ...

    def monotonic_ns(self) -> int: ...

    def boot_id(self) -> str: ...

    def kernel_state(self) -> KernelTimeState: ...


class SystemClock:
    """The machine's clocks and the kernel's NTP state."""

    def __init__(self) -> None:
        self._boot_id = read_boot_id()

    def wall_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def boot_id(self) -> str:
        return self._boot_id

    def kernel_state(self) -> KernelTimeState:
        return read_kernel_time_state()


@dataclass(frozen=True)
class TimePoint:
    """An instant as the wall clock, the monotonic clock and the boot saw it (stored with every decision)."""

    wall_ns: int
    mono_ns: int
    boot_id: str

    def as_dict(self) -> dict[str, int | str]:
        return {"t_gw": self.wall_ns, "mono_ns": self.mono_ns, "boot_id": self.boot_id}

    @classmethod
    def from_dict(cls, body: dict[str, object]) -> TimePoint:
        """From a stored record; records written before monotonic times were kept compare by wall time."""
        wall = body.get("t_gw")
        mono = body.get("mono_ns")
        boot = body.get("boot_id")
        return cls(
            wall if isinstance(wall, int) else 0,
            mono if isinstance(mono, int) else 0,
            boot if isinstance(boot, str) else "",
        )


def elapsed_ns(then: TimePoint, now: TimePoint) -> int:
    """Time from `then` to `now`: monotonic within one boot (a wall-clock jump cannot shorten it), the wall
    clock across boots (only used when the wall clock is trusted)."""
    if then.boot_id and then.boot_id == now.boot_id:
        return now.mono_ns - then.mono_ns
    return now.wall_ns - then.wall_ns


class TrustedClock:
    """Decides whether the wall clock may be used for a safety decision, and gives elapsed time that survives
    wall-clock jumps."""

    def __init__(self, source: ClockSource | None = None, *, max_error_s: float = 1.0, skew_s: float = 30.0) -> None:
        self.source: ClockSource = source if source is not None else SystemClock()
        self._max_error_us = round(max_error_s * 1e6)
        self._skew_ns = round(skew_s * 1e9)
        self._signed: tuple[int, TimePoint] | None = None  # (newest signed time, when it was verified)

    def now(self) -> TimePoint:
        source = self.source
        return TimePoint(source.wall_ns(), source.monotonic_ns(), source.boot_id())

    def note_signed_time(self, signed_ns: int, at: TimePoint) -> None:
        """An issuer's verified signature vouches that real time was at least `signed_ns` at `at`."""
        now = self.now()
        if self._signed is None or self._floor((signed_ns, at), now) > self._floor(self._signed, now):
            self._signed = (signed_ns, at)

    def signed_floor_ns(self, now: TimePoint | None = None) -> int | None:
        """The earliest the real time can be now, from signed time (None before any signature was seen)."""
        if self._signed is None:
            return None
        return self._floor(self._signed, now or self.now())

    @staticmethod
    def _floor(signed: tuple[int, TimePoint], now: TimePoint) -> int:
        signed_ns, at = signed
        if at.boot_id and at.boot_id == now.boot_id:
            return signed_ns + max(0, now.mono_ns - at.mono_ns)
        return signed_ns  # another boot: at least as late as the signature, how much later is unknown

    def distrust(self, now: TimePoint | None = None) -> str | None:
        """Why the wall clock cannot be trusted now (a rejection reason), or None when it can."""
        now = now or self.now()
        state = self.source.kernel_state()
        if not state.synchronised:
            return "clock-unsynchronised"
        if state.max_error_us > self._max_error_us:
            return "clock-error-too-large"
        floor = self.signed_floor_ns(now)
        if floor is not None and now.wall_ns < floor - self._skew_ns:
            return "clock-behind-signed-time"
        return None

    def trusted_wall_ns(self) -> int | None:
        """The wall clock when it can be trusted, None otherwise (e.g. before NTP answered after a boot)."""
        now = self.now()
        return None if self.distrust(now) is not None else now.wall_ns
