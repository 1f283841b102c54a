"""Typed fakes of the product's Protocols: each wraps or stands in for a real component and is checked by mypy
against the Protocol it implements, so a fake cannot drift from what the product calls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.buffer import Buffer
from gateway.core.backlog import AppendResult, LaneStats, NewRecord, Store, StoredRecord
from gateway.core.errors import StorageError
from gateway.core.model import Lane


class FaultyStore:
    """A real buffer whose commits can be made to fail, or to take a while, as a failing or busy disk would.

    (The real faults, a full file system and a lock held by another process, are in test_storage_faults.py.)
    """

    def __init__(self, buffer: Buffer) -> None:
        self.buffer = buffer
        self.failures_left = 0
        self.commit_delay_s = 0.0

    async def append(self, records: Sequence[NewRecord]) -> AppendResult:
        if self.failures_left:
            self.failures_left -= 1
            raise StorageError("disk I/O error (injected)")
        await asyncio.sleep(self.commit_delay_s)
        return await self.buffer.append(records)

    async def read(self, after: dict[Lane, int], limit: int) -> list[StoredRecord]:
        return await self.buffer.read(after, limit)

    async def stats(self) -> list[LaneStats]:
        return await self.buffer.stats()

    async def close(self) -> None:
        await self.buffer.close()


_: type[Store] = FaultyStore  # checked: FaultyStore implements the pipeline's Store
