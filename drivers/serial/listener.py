"""Admission for the MLLP listener: who may hold one of its few connection slots, and for how long.

A listener with a fixed number of slots can be held: anyone who reaches the port opens idle connections (a
byte every few seconds defeats a read timeout) and the real monitor's reconnect is refused.  The rules here
make that impossible without starving a monitor that talks:

* an allow-list of source addresses (IPs or networks; empty: any), checked at accept;
* a cap per source address (a monitor needs one connection, two allow for its own reconnect race);
* an idle timeout on *messages*, not bytes: a connection that completes no acknowledged message for
  `idle_timeout_s` is closed, however many bytes trickle in;
* replacement instead of refusal: a new connection from a source at its cap replaces that source's stalest
  connection, and when every slot is taken a new connection replaces the connection idle longest, as long as
  that one has been idle for `stale_after_s` (a monitor sending every few seconds is never the one replaced).

The sending facility (MSH-4) allow-list is applied per message by the codec (AR for others, nothing kept).
Pure bookkeeping: no sockets, no asyncio; the driver calls `admit` and `release`, and `heard` per message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ListenerPolicy:
    max_connections: int = 8
    max_per_source: int = 2
    idle_timeout_s: float = 120.0
    stale_after_s: float = 10.0
    allowed_networks: tuple[Network, ...] = ()

    @classmethod
    def with_allowed(cls, addresses: Iterable[str], **kw: float) -> ListenerPolicy:
        """A policy whose allow-list holds these addresses or networks ("10.20.0.7", "10.20.0.0/24")."""
        networks = tuple(ipaddress.ip_network(a, strict=False) for a in addresses)
        return cls(allowed_networks=networks, **kw)  # type: ignore[arg-type]

    def allows(self, address: str) -> bool:
        if not self.allowed_networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allowed_networks)


@dataclass
class Slot(Generic[T]):
    """One admitted connection: its source, when it connected and when it last completed a message."""

    source: str
    opened: float
    handle: T
    last_message: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_message = self.opened

    def idle_for(self, now: float) -> float:
        return now - self.last_message


@dataclass(frozen=True)
class Admission(Generic[T]):
    """The decision for a new connection: admitted (with the slot it must vacate first, if any) or refused."""

    slot: Slot[T] | None
    evict: Slot[T] | None = None
    refused: str | None = None


class Slots(Generic[T]):
    """The listener's connection slots under a policy."""

    def __init__(self, policy: ListenerPolicy) -> None:
        self.policy = policy
        self.held: list[Slot[T]] = []
        self.refused: dict[str, int] = {}
        self.replaced = 0

    def admit(self, source: str, handle: T, now: float) -> Admission[T]:
        policy = self.policy
        if not policy.allows(source):
            return self._refuse("source_not_allowed")
        evict: Slot[T] | None = None
        same = [s for s in self.held if s.source == source]
        if len(same) >= policy.max_per_source:
            evict = max(same, key=lambda s: s.idle_for(now))  # this source's reconnect replaces its stalest
        elif len(self.held) >= policy.max_connections:
            stalest = max(self.held, key=lambda s: s.idle_for(now))
            if stalest.idle_for(now) < policy.stale_after_s:
                return self._refuse("all_slots_active")
            evict = stalest
        if evict is not None:
            self.held.remove(evict)
            self.replaced += 1
        slot = Slot(source, now, handle)
        self.held.append(slot)
        return Admission(slot, evict)

    def release(self, slot: Slot[T]) -> None:
        if slot in self.held:
            self.held.remove(slot)

    @staticmethod
    def heard(slot: Slot[T], now: float) -> None:
        slot.last_message = now

    def _refuse(self, reason: str) -> Admission[T]:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return Admission(None, refused=reason)
