"""A token bucket that holds publishes under a per-second cap (AWS IoT Core allows 100/s per connection)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`acquire()` waits for a token.  The burst is a tenth of the rate, so any one-second window carries at
    most 1.1 x the rate, never the 2x a full-second bucket would allow."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate = rate_per_s
        self.capacity = max(1.0, rate_per_s / 10)
        self._tokens = self.capacity
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        while True:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self.rate)

    def refund(self) -> None:
        """Give back a token that was not used (nothing to send after all)."""
        self._tokens = min(self.capacity, self._tokens + 1.0)
