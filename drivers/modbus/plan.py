"""Request coalescing: the fewest reads that cover every point of a profile, within the device's limits.

Points of one table are sorted by address and merged into one read while the merged span stays within the
device's maximum request size and the hole between them is at most `max_gap` registers (reading a few unused
registers is cheaper than a second round trip).  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.modbus.profile import ModbusProfile, Point, Table


@dataclass(frozen=True, slots=True)
class Read:
    """One Modbus read request and the points it carries."""

    table: Table
    start: int
    count: int
    points: tuple[Point, ...]


def plan_reads(profile: ModbusProfile, points: tuple[Point, ...] | None = None) -> list[Read]:
    """Coalesced reads for `points` (default: all of the profile's), in table then address order."""
    chosen = profile.points if points is None else points
    reads: list[Read] = []
    for table in ("coil", "discrete", "holding", "input"):
        limit = profile.max_bits_per_read if table in ("coil", "discrete") else profile.max_registers_per_read
        gap = profile.max_gap if table in ("holding", "input") else profile.max_gap * 16
        group = sorted((p for p in chosen if p.table == table), key=lambda p: p.address)
        start, end, members = -1, -1, list[Point]()
        for p in group:
            p_end = p.address + p.width  # exclusive
            if members and p.address - end <= gap and p_end - start <= limit:
                end = max(end, p_end)
                members.append(p)
                continue
            if members:
                reads.append(Read(table, start, end - start, tuple(members)))
            start, end, members = p.address, p_end, [p]
        if members:
            reads.append(Read(table, start, end - start, tuple(members)))
    return reads
