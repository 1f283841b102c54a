"""Liveness: every configured device has a `device_silent` alarm when no data has arrived for its interval.

A link can be up and still carry nothing: an HL7 listener whose slots are held by idle connections, a BLE
device that stays connected but stops notifying, a Modbus unit that answers with exceptions.  So liveness is
judged on data (observations, waveform chunks, object chunks), whatever the transport, never on link state.
The alarm is technical, medium by default (`silent_priority` per device), raised once the device has been
silent for `silent_after_s` (counted from the gateway's start for a device never heard) and cleared by the
next datum.  Defaults follow how often each kind of device sends; spot-check devices and imaging get a day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.transport import DeviceSection
from gateway.core.model import AlarmPriority, Event, ObjectChunk, Observation, WaveformChunk


@dataclass(frozen=True, slots=True)
class LivenessRule:
    silent_after_ns: int
    priority: AlarmPriority


def liveness_rules(devices: Sequence[DeviceSection]) -> dict[str, LivenessRule]:
    """One rule per configured device: its configured interval (or the default for its kind) and priority."""
    rules = {}
    for device in devices:
        seconds = device.silent_after_s if device.silent_after_s is not None else device.default_silent_after_s()
        rules[device.id] = LivenessRule(round(seconds * 1e9), AlarmPriority(device.silent_priority))
    return rules


def is_data(event: Event) -> bool:
    """Whether an event shows the device is sending what it is for (not only that its link is up)."""
    return isinstance(event, Observation | WaveformChunk | ObjectChunk)


class LivenessMonitor:
    """When each watched device last sent data; which ones are silent now."""

    def __init__(self, rules: dict[str, LivenessRule], started_ns: int) -> None:
        self.rules = rules
        self._last: dict[str, int] = dict.fromkeys(rules, started_ns)

    def heard(self, event: Event) -> bool:
        """Note a datum; True when it came from a watched device."""
        if event.device_id not in self.rules or not is_data(event):
            return False
        self._last[event.device_id] = max(self._last[event.device_id], event.gateway_time_ns)
        return True

    def silent(self, now_ns: int) -> dict[str, bool]:
        """For every watched device: whether it has been silent for longer than its interval."""
        return {device: now_ns - self._last[device] > rule.silent_after_ns for device, rule in self.rules.items()}
