"""What the pipeline writes into durable storage and the uplink drains from it: the records and the two
Protocols that connect them, so neither side names the SQLite buffer that implements both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.model import Lane


@dataclass(frozen=True, slots=True)
class NewRecord:
    """One batch of one lane from one device, encoded in the sync API's format, about to be stored."""

    lane: Lane
    device: str
    payload: bytes
    items: int


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A stored batch: its sequence number (the delete key after PUBACK) and what was stored."""

    seq: int
    lane: Lane
    device: str
    payload: bytes
    items: int
    created_ns: int


@dataclass(frozen=True, slots=True)
class LaneStats:
    lane: Lane
    rows: int
    items: int
    bytes: int
    oldest_age_s: float | None


@dataclass
class Eviction:
    """What one commit evicted to stay within quota."""

    rows: int = 0
    items: int = 0
    bytes: int = 0
    by_lane: dict[Lane, int] = field(default_factory=dict)
    over_quota: bool = False

    def add(self, lane: Lane, size: int, items: int) -> None:
        self.rows += 1
        self.items += items
        self.bytes += size
        self.by_lane[lane] = self.by_lane.get(lane, 0) + items


@dataclass(frozen=True, slots=True)
class AppendResult:
    seqs: list[int]
    eviction: Eviction


class Store(Protocol):
    """Where the pipeline commits: one call is one transaction (`gateway.buffer.Buffer` implements it)."""

    async def append(self, records: Sequence[NewRecord]) -> AppendResult:
        """Store the records durably (evicting old low-priority rows over quota); StorageError if it cannot."""
        ...


class Backlog(Protocol):
    """What the uplink drains: stored batches read by lane priority, deleted once the broker acknowledged them."""

    @property
    def quarantined(self) -> int:
        """Rows that failed authentication so far (moved aside, never sent)."""
        ...

    async def read_message(self, after: dict[Lane, int], max_bytes: int, max_rows: int = 512) -> list[StoredRecord]:
        """The next rows of the most urgent lane that has any after `after`, within one message's budget."""
        ...

    async def delete(self, seqs: Sequence[int]) -> None: ...

    async def stats(self) -> list[LaneStats]: ...
