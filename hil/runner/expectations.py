"""Judging a scenario's expectations on its timeline: one verdict per expectation, with the reason in words and,
on a failure, the timeline around the window it was about."""

from __future__ import annotations

from dataclasses import dataclass, field

from hil.runner.scenario import (
    AlarmExpectation,
    CommandExpectation,
    DeliveredExpectation,
    Expectation,
    NoAlarmExpectation,
    NothingLostExpectation,
)
from hil.runner.timeline import Source, Timeline

FINAL_OUTCOMES = frozenset({"rejected", "confirmed", "failed", "expired", "outcome-unknown"})


@dataclass(frozen=True)
class Counts:
    """Per device, at the end: what the gateway accepted (or counts as delivered) and what the cloud holds."""

    accepted: dict[str, int]
    received_by_cloud: dict[str, int]
    duplicates: dict[str, int]


@dataclass
class Verdict:
    title: str
    passed: bool
    message: str
    context: list[str] = field(default_factory=list)
    skipped: bool = False


def judge(expectation: Expectation, timeline: Timeline, counts: Counts, end_s: float) -> Verdict:
    what = expectation.what
    title = expectation.title()
    if isinstance(what, AlarmExpectation):
        return _alarm(title, what, timeline, end_s)
    if isinstance(what, NoAlarmExpectation):
        return _no_alarm(title, what, timeline, end_s)
    if isinstance(what, DeliveredExpectation):
        return _delivered(title, what, timeline)
    if isinstance(what, NothingLostExpectation):
        return _nothing_lost(title, what, counts, timeline, end_s)
    return _command(title, what, timeline)


def _alarm(title: str, what: AlarmExpectation, timeline: Timeline, end_s: float) -> Verdict:
    lo, hi = what.after_s, what.after_s + what.within_s
    source: Source = "gateway" if what.at == "gateway" else "cloud"
    spans = [
        s
        for s in timeline.alarm_intervals(source)
        if s.condition == what.condition
        and (what.device is None or s.device == what.device)
        and (what.priority is None or s.priority == what.priority)
    ]
    # An alarm still active at the end was seen active up to the end, not beyond it.
    hit = (
        next((s for s in spans if s.start_s <= end_s and s.overlaps(lo, min(hi, end_s))), None) if lo <= end_s else None
    )
    if hit is not None:
        return Verdict(title, True, f"active from {hit.start_s:.1f} s on {hit.device} ({source})")
    seen = ", ".join(f"{s.start_s:.1f}-{'end' if s.end_s is None else f'{s.end_s:.1f}'} s" for s in spans)
    elsewhere = f"; it was active at {seen}" if seen else "; it never went active"
    message = f"{what.condition} was not active on the {source} between {lo:g} and {hi:g} s{elsewhere}"
    if lo > end_s:
        message += f" (the scenario ends at {end_s:g} s, before that window)"
    return Verdict(title, False, message, timeline.around(lo, hi))


def _no_alarm(title: str, what: NoAlarmExpectation, timeline: Timeline, end_s: float) -> Verdict:
    lo, hi = what.from_s, end_s if what.to_s is None else what.to_s
    spans = [
        s
        for s in timeline.alarm_intervals("gateway")
        if (what.condition is None or s.condition == what.condition)
        and (what.kind is None or s.kind == what.kind)
        and (what.device is None or s.device == what.device)
        and s.overlaps(lo, hi)
    ]
    if not spans:
        return Verdict(title, True, f"none between {lo:g} and {hi:g} s")
    first = spans[0]
    message = f"{first.condition} went active on {first.device} at {first.start_s:.1f} s" + (
        f" (and {len(spans) - 1} more)" if len(spans) > 1 else ""
    )
    return Verdict(title, False, message, timeline.around(first.start_s, first.start_s))


def _delivered(title: str, what: DeliveredExpectation, timeline: Timeline) -> Verdict:
    lo, hi = what.after_s, what.after_s + what.within_s
    candidates = [
        e
        for e in timeline.events
        if e.source == "cloud"
        and e.kind in ("value", "waveform", "image")
        and e.data.get("device") == what.device
        and (what.quantity is None or e.data.get("ref") == what.quantity)
    ]
    in_window = [e for e in candidates if lo <= e.t_s <= hi]
    in_range = [
        e
        for e in in_window
        if (what.min is None or _value(e.data) >= what.min) and (what.max is None or _value(e.data) <= what.max)
    ]
    if in_range:
        return Verdict(title, True, f"first at {in_range[0].t_s:.1f} s ({in_range[0].text})")
    if in_window:
        values = sorted(_value(e.data) for e in in_window)
        message = (
            f"{len(in_window)} values arrived between {lo:g} and {hi:g} s, none in "
            f"[{what.min}, {what.max}] (they ranged {values[0]:g} to {values[-1]:g})"
        )
    else:
        when = f"; the first at {candidates[0].t_s:.1f} s" if candidates else "; none arrived at all"
        message = f"nothing of {what.device} {what.quantity or ''} reached the cloud between {lo:g} and {hi:g} s{when}"
    return Verdict(title, False, message, timeline.around(lo, hi))


def _value(data: dict[str, object]) -> float:
    value = data.get("value")
    return float(value) if isinstance(value, int | float) else float("nan")


def _nothing_lost(
    title: str, what: NothingLostExpectation, counts: Counts, timeline: Timeline, end_s: float
) -> Verdict:
    devices = what.devices or tuple(sorted(counts.accepted))
    missing = {d: counts.accepted.get(d, 0) - counts.received_by_cloud.get(d, 0) for d in devices}
    lost = {d: n for d, n in missing.items() if n > 0}
    table = ", ".join(
        f"{d}: accepted {counts.accepted.get(d, 0)}, at the cloud {counts.received_by_cloud.get(d, 0)}" for d in devices
    )
    if not lost:
        duplicates = sum(counts.duplicates.get(d, 0) for d in devices)
        return Verdict(title, True, f"{table}; duplicates the cloud dropped by id: {duplicates}")
    worst = ", ".join(f"{d} {n}" for d, n in sorted(lost.items()))
    return Verdict(title, False, f"lost: {worst} ({table})", timeline.around(end_s - 10, end_s))


def _command(title: str, what: CommandExpectation, timeline: Timeline) -> Verdict:
    sent = next((e for e in timeline.of("scenario", "command-sent") if e.data.get("name") == what.name), None)
    if sent is None:
        return Verdict(title, False, f"command {what.name} was never sent (the run ended before its step?)")
    command_id = sent.data["command_id"]
    results = [
        e
        for e in timeline.of("cloud", "command-result")
        if command_id in (e.data.get("command_id"), (e.data.get("detail") or {}).get("claimed_command_id"))
    ]
    final = [e for e in results if e.data.get("outcome") in FINAL_OUTCOMES]
    lo, hi = sent.t_s, sent.t_s + what.within_s
    if not final:
        states = " -> ".join(str(e.data.get("outcome")) for e in results) or "no result at all"
        return Verdict(title, False, f"no final outcome (seen: {states})", timeline.around(lo, hi))
    # A command may end more than once: outcome-unknown, then settled from the device's history.
    for outcome in final:
        got, reason = outcome.data.get("outcome"), outcome.data.get("reason")
        if got == what.outcome and (what.reason is None or reason == what.reason) and outcome.t_s <= hi:
            shown = f"{got}" + (f" ({reason})" if reason else "")
            return Verdict(title, True, f"{shown} after {outcome.t_s - lo:.1f} s")
    seen = "; ".join(
        f"{e.data.get('outcome')}"
        + (f" ({e.data.get('reason')})" if e.data.get("reason") else "")
        + f" after {e.t_s - lo:.1f} s"
        for e in final
    )
    expected = what.outcome + (f" ({what.reason})" if what.reason else "") + f" within {what.within_s:g} s"
    return Verdict(title, False, f"expected {expected}; it ended {seen}", timeline.around(lo, max(hi, final[-1].t_s)))
