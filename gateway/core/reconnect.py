"""One reconnect policy for every loop that retries: the supervisor's tasks, the uplink, the local alarm channel
and the buffer's commits (after aioesphomeapi's ReconnectLogic).

Backoff doubles from `initial_s` up to `max_s`, each wait drawn uniformly from the upper half of its ceiling (so
a fleet restarted together does not retry in step); a failure that retrying fast cannot fix (a configuration or
authentication error, a pinned key that does not match) waits the maximum at once.  A success resets it.  The
policy also says how to log: the first failure of an episode as a warning, repeats at debug, the recovery once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class ReconnectState(StrEnum):
    CONNECTED = "connected"  # the last attempt succeeded (or none failed yet)
    BACKING_OFF = "backing_off"  # failed `failures` times in a row; waiting before the next attempt


@dataclass
class ReconnectPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    failures: int = 0  # in a row

    @property
    def state(self) -> ReconnectState:
        return ReconnectState.BACKING_OFF if self.failures else ReconnectState.CONNECTED

    @property
    def first_failure(self) -> bool:
        """The failure just recorded began an episode (log it as a warning; repeats at debug)."""
        return self.failures == 1

    def failed(self, *, hopeless: bool = False) -> float:
        """Record a failed attempt; the seconds to wait before the next one (`hopeless`: the maximum)."""
        self.failures += 1
        if hopeless:
            return self.max_s
        ceiling = min(self.max_s, self.initial_s * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography

    def succeeded(self) -> int:
        """Record a success; the failures in a row it ended (0: nothing to recover from, log nothing)."""
        ended, self.failures = self.failures, 0
        return ended
