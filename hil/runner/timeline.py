"""What happened during a scenario, second by second: the steps played, what the gateway raised, what the cloud
received.  Expectations are judged on it, and a failed one shows the part of it around its window."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["scenario", "gateway", "cloud"]


@dataclass(frozen=True)
class Event:
    t_s: float  # seconds from the scenario's start
    source: Source
    kind: str  # step, fault, command-sent, alarm, value, waveform, image, device-status, command-result
    text: str  # one line for a report
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.t_s:7.2f} s  {self.source:<8}  {self.text}"


@dataclass(frozen=True)
class Interval:
    """An alarm's active span on the gateway or the cloud (end None: still active at the end)."""

    condition: str
    device: str
    kind: str
    priority: str
    start_s: float
    end_s: float | None

    def overlaps(self, lo: float, hi: float) -> bool:
        return self.start_s <= hi and (self.end_s is None or self.end_s >= lo)


class Timeline:
    """Events as they happen, in scenario seconds (started by `start`)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._t0 = time.monotonic()

    def start(self) -> None:
        """Second 0 is now; what happened while setting up keeps its (now negative) time."""
        shift = time.monotonic() - self._t0
        self._t0 += shift
        self.events = [Event(round(e.t_s - shift, 3), e.source, e.kind, e.text, e.data) for e in self.events]

    def now(self) -> float:
        return time.monotonic() - self._t0

    def at(self, monotonic_s: float) -> float:
        return monotonic_s - self._t0

    def add(self, source: Source, kind: str, text: str, /, *, t_s: float | None = None, **data: Any) -> Event:
        event = Event(round(self.now() if t_s is None else t_s, 3), source, kind, text, data)
        self.events.append(event)
        return event

    def of(self, source: Source, kind: str) -> list[Event]:
        return [e for e in self.events if e.source == source and e.kind == kind]

    def alarm_intervals(self, source: Source) -> list[Interval]:
        """Each alarm's active span, from its raise to its clear, by alarm id."""
        open_: dict[str, Event] = {}
        spans: list[Interval] = []
        for event in sorted(self.of(source, "alarm"), key=lambda e: e.t_s):
            alarm_id = str(event.data.get("alarm_id") or event.data.get("id"))
            if event.data.get("state") == "cleared":
                raised = open_.pop(alarm_id, None)
                if raised is not None:
                    spans.append(_interval(raised, event.t_s))
            elif alarm_id not in open_ and event.data.get("state") == "active":
                open_[alarm_id] = event
        spans.extend(_interval(raised, None) for raised in open_.values())
        return sorted(spans, key=lambda s: s.start_s)

    def around(self, lo: float, hi: float, *, margin_s: float = 5.0, limit: int = 60) -> list[str]:
        """The report's lines from `margin_s` before `lo` to `margin_s` after `hi` (waveform chunks left out,
        at most `limit` lines: the first and the last of them)."""
        shown = [e for e in self.events if e.kind != "waveform"]
        if shown and lo - margin_s > shown[-1].t_s:  # a window after the end: show how the run ended
            lo = hi = shown[-1].t_s
        lines = [e.line() for e in shown if lo - margin_s <= e.t_s <= hi + margin_s]
        if len(lines) > limit:
            half = limit // 2
            lines = [*lines[:half], f"          ... {len(lines) - limit} lines ...", *lines[-half:]]
        return lines


def _interval(raised: Event, end_s: float | None) -> Interval:
    data = raised.data
    return Interval(
        str(data.get("condition")),
        str(data.get("device")),
        str(data.get("kind")),
        str(data.get("priority")),
        raised.t_s,
        end_s,
    )
