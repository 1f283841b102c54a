"""Alarm rules evaluated on the event stream: physiological limits and technical conditions.

Limits have a condition delay (the violation must persist) and hysteresis (the value must come back past the
limit by a margin before the alarm clears), so a noisy value near a limit does not chatter.  Technical alarms
come from device status: link lost and low battery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_ml.alarm_set import ASYSTOLE, RhythmSettings
from edge_ml.alarm_set import CONDITIONS as RHYTHM_CONDITIONS
from gateway.config import AlarmsSection, LimitRule
from gateway.core.model import (
    CONDITIONS_KEY,
    Alarm,
    AlarmKind,
    AlarmPriority,
    AlarmState,
    ConnectionState,
    DeviceStatus,
    Event,
    Observation,
    new_id,
    now_ns,
)
from gateway.core.nomenclature import Quantity, quantity
from gateway.liveness import LivenessMonitor

if TYPE_CHECKING:
    from edge_ml.rhythm import RhythmAssessment

MIN_PULSE_BPM = 30.0  # a pulse oximeter reading at least this is evidence of a beating heart


@dataclass
class _LimitState:
    violating_since_ns: int | None = None
    active_side: str | None = None


class AlarmEngine:
    """Turns observations, statuses and ECG assessments into Alarm events (raise and clear)."""

    def __init__(self, config: AlarmsSection, patients: dict[str, str | None] | None = None) -> None:
        self._config = config
        self._patients = patients or {}
        # Per patient and device: when a pulse was last seen (evidence against another device's asystole).
        self._last_pulse_ns: dict[str, dict[str, int]] = {}
        self._rhythm_since: dict[tuple[str, str], int] = {}
        self._rhythm_absent: dict[tuple[str, str], int] = {}
        self._poor: dict[tuple[str, str], tuple[int, bool]] = {}  # per lead: (poor or good since, alarm on)
        self._poor_now: dict[tuple[str, str], bool] = {}
        self._leads_seen: dict[str, set[str]] = {}
        self.vetoed = 0
        self._raised_at: dict[tuple[str, str], int] = {}
        self._last_glucose: dict[str, tuple[int, float]] = {}
        self._sessions: dict[str, int] = {}
        self._low_battery = config.low_battery_pct
        self._rules: dict[int, list[LimitRule]] = {}
        for rule in config.limits:
            self._rules.setdefault(quantity(rule.quantity).code, []).append(rule)
        self._limits: dict[tuple[str, int, int], _LimitState] = {}
        self._technical: set[tuple[str, str]] = set()
        # Device-reported conditions, per device and source (each source reports its own complete list).
        self._conditions: dict[tuple[str, str], dict[str, tuple[AlarmPriority, AlarmKind]]] = {}
        self.active: dict[tuple[str, str], Alarm] = {}
        self.liveness: LivenessMonitor | None = None  # set by the daemon: a device_silent rule per device

    def technical(
        self, device_id: str, condition: str, present: bool, priority: AlarmPriority, t_gw: int
    ) -> list[Alarm]:
        """A technical condition found outside these rules (storage, plausibility): raised or cleared on change."""
        return self._tech(device_id, condition, present, priority, t_gw)

    def check_liveness(self, t_gw: int) -> list[Alarm]:
        """device_silent for every watched device silent longer than its interval (once, until it sends)."""
        if self.liveness is None:
            return []
        out: list[Alarm] = []
        for device, silent in self.liveness.silent(t_gw).items():
            if silent:
                out += self._tech(device, "device_silent", True, self.liveness.rules[device].priority, t_gw)
        return out

    def evaluate(self, event: Event) -> list[Alarm]:
        out: list[Alarm] = []
        if self.liveness is not None and self.liveness.heard(event):
            rule = self.liveness.rules[event.device_id]
            out += self._tech(event.device_id, "device_silent", False, rule.priority, event.gateway_time_ns)
        return out + self._evaluate(event)

    def _evaluate(self, event: Event) -> list[Alarm]:
        if isinstance(event, Observation):
            return self._on_observation(event)
        if isinstance(event, DeviceStatus):
            return self._on_status(event)
        return []

    def _on_observation(self, obs: Observation) -> list[Alarm]:
        if obs.quantity.reference_id == "MDC_PULS_OXIM_PULS_RATE" and obs.value >= MIN_PULSE_BPM:
            patient = self._patients.get(obs.device_id)
            if patient is not None:
                self._last_pulse_ns.setdefault(patient, {})[obs.device_id] = obs.gateway_time_ns
        out: list[Alarm] = []
        if not math.isfinite(obs.value):
            return out  # a coded special value (a CGM's LO/HI): its device condition raises the alarm
        if obs.quantity.reference_id == "MDC_CONC_GLU_ISF":
            out += self._glucose_trend(obs)
        rules = self._rules.get(obs.quantity.code)
        if not rules:
            return out
        t = obs.device_time_ns if obs.device_time_ns is not None else obs.gateway_time_ns
        # A device's own rules for a quantity replace the general ones (a COPD patient's lower SpO2 limit).
        own = any(rule.device == obs.device_id for rule in rules)
        for index, rule in enumerate(rules):
            if rule.device != (obs.device_id if own else None):
                continue
            state = self._limits.setdefault((obs.device_id, obs.quantity.code, index), _LimitState())
            side = None
            if rule.low is not None and obs.value < rule.low:
                side = "low"
            elif rule.high is not None and obs.value > rule.high:
                side = "high"
            if state.active_side is not None:
                low_ok = rule.low is None or obs.value >= rule.low + rule.hysteresis
                high_ok = rule.high is None or obs.value <= rule.high - rule.hysteresis
                if low_ok and high_ok:
                    out.append(
                        self._make(
                            obs.device_id,
                            f"{obs.quantity.reference_id}.{state.active_side}",
                            AlarmKind.PHYSIOLOGICAL,
                            AlarmPriority(rule.priority),
                            AlarmState.CLEARED,
                            obs.gateway_time_ns,
                            obs.quantity,
                            obs.device_time_ns,
                        )
                    )
                    state.active_side = None
                    state.violating_since_ns = None
                continue
            if side is None:
                state.violating_since_ns = None
                continue
            if state.violating_since_ns is None:
                state.violating_since_ns = t
            if t - state.violating_since_ns >= rule.delay_s * 1e9:
                state.active_side = side
                out.append(
                    self._make(
                        obs.device_id,
                        f"{obs.quantity.reference_id}.{side}",
                        AlarmKind.PHYSIOLOGICAL,
                        AlarmPriority(rule.priority),
                        AlarmState.ACTIVE,
                        obs.gateway_time_ns,
                        obs.quantity,
                        obs.device_time_ns,
                    )
                )
        return out

    def _on_status(self, status: DeviceStatus) -> list[Alarm]:
        out: list[Alarm] = []
        session = status.detail.get("sensor_session_start_ns")
        if session is not None and session.isdigit():
            self.note_sensor_session(status.device_id, int(session))
        lost = status.connection is ConnectionState.DISCONNECTED
        if lost and status.detail.get("reason") == "stopped":
            return out  # a deliberate stop (gateway shutdown, technician) is not an alarm condition
        device, t_gw = status.device_id, status.gateway_time_ns
        if status.connection is not ConnectionState.CONNECTING:
            out += self._tech(device, "device_disconnected", lost, AlarmPriority.MEDIUM, t_gw)
        if status.battery_pct is not None:
            out += self._tech(device, "low_battery", status.battery_pct < self._low_battery, AlarmPriority.LOW, t_gw)
        if status.detail.get(CONDITIONS_KEY) == "complete":
            out += self._device_conditions(status)
        return out

    def _device_conditions(self, status: DeviceStatus) -> list[Alarm]:
        """Conditions the device itself reports (a pump's occlusion, a fridge's open door) as technical alarms.

        A status marked `conditions = complete` lists every condition present now (of its `conditions_source`,
        when a device has several, e.g. a CGM's measurement status and its clock): new ones go active, ones
        no longer listed clear.  The priority comes from the driver (`priority.NAME`), medium when unsaid; a
        condition about the patient (`kind.NAME = physiological`, e.g. glucose below the sensor's range) is a
        physiological alarm named as it is, any other a technical alarm `device.NAME`.
        """
        device, t_gw = status.device_id, status.gateway_time_ns
        now: dict[str, tuple[AlarmPriority, AlarmKind]] = {}
        for condition in status.errors:
            try:
                priority = AlarmPriority(status.detail.get(f"priority.{condition}", "medium"))
            except ValueError:
                priority = AlarmPriority.MEDIUM
            physiological = status.detail.get(f"kind.{condition}") == AlarmKind.PHYSIOLOGICAL
            now[condition] = (priority, AlarmKind.PHYSIOLOGICAL if physiological else AlarmKind.TECHNICAL)
        key = (device, status.detail.get("conditions_source", ""))
        before = self._conditions.get(key, {})
        self._conditions[key] = now
        out: list[Alarm] = []
        for condition, present, (priority, kind) in [(c, True, now[c]) for c in sorted(now.keys() - before.keys())] + [
            (c, False, before[c]) for c in sorted(before.keys() - now.keys())
        ]:
            name = condition if kind is AlarmKind.PHYSIOLOGICAL else f"device.{condition}"
            out += self._tech(device, name, present, priority, t_gw, kind)
        return out

    def _tech(
        self,
        device_id: str,
        condition: str,
        present: bool,
        priority: AlarmPriority,
        t_gw: int,
        kind: AlarmKind = AlarmKind.TECHNICAL,
        lead: str | None = None,
    ) -> list[Alarm]:
        """A technical alarm (or a device-reported condition) goes active when it appears and clears when it goes
        (per lead for the ECG's: the lead is in the alarm's detail and its key)."""
        key = (device_id, condition if lead is None else f"{condition}/{lead}")
        if present == (key in self._technical):
            return []
        if present:
            self._technical.add(key)
        else:
            self._technical.discard(key)
        state = AlarmState.ACTIVE if present else AlarmState.CLEARED
        detail = {"lead": lead} if lead is not None else None
        return [self._make(device_id, condition, kind, priority, state, t_gw, None, None, detail, key[1])]

    def _glucose_trend(self, obs: Observation) -> list[Alarm]:
        """Rate of change between consecutive CGM readings (device time), and the sensor's remaining life."""
        cfg = self._config
        t = obs.device_time_ns if obs.device_time_ns is not None else obs.gateway_time_ns
        previous = self._last_glucose.get(obs.device_id)
        self._last_glucose[obs.device_id] = (t, obs.value)
        out: list[Alarm] = []
        if previous is not None and 0 < t - previous[0] <= 20 * 60 * 10**9:
            rate = (obs.value - previous[1]) / ((t - previous[0]) / 60e9)
            out += self._trend_alarm(
                obs, "glucose_falling_fast", rate <= cfg.glucose_fall_mg_dl_min, rate > cfg.glucose_fall_mg_dl_min / 2
            )
            out += self._trend_alarm(
                obs, "glucose_rising_fast", rate >= cfg.glucose_rise_mg_dl_min, rate < cfg.glucose_rise_mg_dl_min / 2
            )
        session = self._sessions.get(obs.device_id)
        if session is not None:
            left_h = cfg.cgm_sensor_life_h - (t - session) / 3.6e12
            out += self._tech(
                obs.device_id,
                "sensor_expiring",
                left_h <= cfg.cgm_expiry_warning_h,
                AlarmPriority.LOW,
                obs.gateway_time_ns,
            )
        return out

    def _trend_alarm(self, obs: Observation, condition: str, present: bool, cleared: bool) -> list[Alarm]:
        active = (obs.device_id, condition) in self.active
        if present and not active:
            state = AlarmState.ACTIVE
        elif cleared and active:
            state = AlarmState.CLEARED
        else:
            return []
        return [
            self._make(
                obs.device_id,
                condition,
                AlarmKind.PHYSIOLOGICAL,
                AlarmPriority.MEDIUM,
                state,
                obs.gateway_time_ns,
                obs.quantity,
                obs.device_time_ns,
            )
        ]

    def note_sensor_session(self, device_id: str, start_ns: int) -> None:
        """A CGM's current session start (from its Session Start Time), for the sensor-expiry warning."""
        self._sessions[device_id] = start_ns

    def rhythm_settings(self, device_id: str) -> RhythmSettings:
        """The arrhythmia definitions for this device's patient."""
        return self._config.rhythm_settings(device_id)

    def note_pulse(self, device_id: str, t_gw: int) -> None:
        """Evidence of a beating heart from a pleth waveform (or any pulse source) of this device's patient."""
        patient = self._patients.get(device_id)
        if patient is not None:
            self._last_pulse_ns.setdefault(patient, {})[device_id] = t_gw

    def evaluate_rhythm(self, device_id: str, rhythm: RhythmAssessment, t_gw: int) -> list[Alarm]:
        """Arrhythmia and ECG technical alarms from one second of a patient's fused rhythm analysis.

        An arrhythmia alarm goes active when its condition holds (for `rhythm_delay_s`, 0 by default: the
        definitions already require 4 s or a run of beats) and clears once the condition has been gone for
        `rhythm_hold_s`.  Asystole is also vetoed by a pulse from another device of the same patient (a pulse
        oximeter reporting a pulse rate); the ECG problem is then reported as a low-priority technical alarm.
        Lead-off and poor signal are technical alarms per lead; poor signal has hysteresis (it must last
        `poor_signal_s` to go active and be gone `poor_signal_clear_s` to clear), so a noisy lead does not flap.
        """
        cfg = self._config
        out: list[Alarm] = []
        present = set(rhythm.present)
        vetoed = ASYSTOLE in rhythm.vetoed
        if ASYSTOLE in present and self._pulse_elsewhere(device_id, t_gw, cfg.asystole_s):
            present.discard(ASYSTOLE)
            vetoed = True
        if vetoed and (device_id, ASYSTOLE) not in self.active:
            self.vetoed += 1
        out += self._tech(device_id, "ecg_no_beats_pulse_present", vetoed, AlarmPriority.LOW, t_gw)
        hr = quantity("MDC_ECG_HEART_RATE")
        for condition in RHYTHM_CONDITIONS:
            key = (device_id, condition)
            if condition in present:
                self._rhythm_absent.pop(key, None)
                since = self._rhythm_since.setdefault(key, t_gw)
                if key in self.active or t_gw - since < cfg.rhythm_delay_s * 1e9:
                    continue
                detail = {"evidence": rhythm.evidence.get(condition, "")}
                out.append(
                    self._make(
                        device_id,
                        condition,
                        AlarmKind.PHYSIOLOGICAL,
                        AlarmPriority.HIGH,
                        AlarmState.ACTIVE,
                        t_gw,
                        hr,
                        None,
                        detail,
                    )
                )
                continue
            self._rhythm_since.pop(key, None)
            if key not in self.active:
                continue
            gone = self._rhythm_absent.setdefault(key, t_gw)
            if t_gw - gone >= cfg.rhythm_hold_s * 1e9:
                self._rhythm_absent.pop(key, None)
                out.append(
                    self._make(
                        device_id,
                        condition,
                        AlarmKind.PHYSIOLOGICAL,
                        AlarmPriority.HIGH,
                        AlarmState.CLEARED,
                        t_gw,
                        hr,
                        None,
                    )
                )
        leads = self._leads_seen.setdefault(device_id, set())
        leads.update(rhythm.leads)
        for lead in sorted(leads):
            off = lead in rhythm.lead_off
            out += self._tech(device_id, "ecg_lead_off", off, AlarmPriority.MEDIUM, t_gw, lead=lead)
            out += self._poor_signal(device_id, lead, lead in rhythm.poor_signal and not off, t_gw)
        return out

    def _poor_signal(self, device_id: str, lead: str, poor: bool, t_gw: int) -> list[Alarm]:
        """Poor signal with hysteresis: on after `poor_signal_s` of poor signal, off after `poor_signal_clear_s`
        of good signal; in between, the alarm keeps its state."""
        cfg = self._config
        key = (device_id, lead)
        since, on = self._poor.get(key, (t_gw, False))
        if poor != self._poor_now.get(key, False):
            since = t_gw
        self._poor_now[key] = poor
        if poor and not on and t_gw - since >= cfg.poor_signal_s * 1e9:
            on = True
        elif not poor and on and t_gw - since >= cfg.poor_signal_clear_s * 1e9:
            on = False
        self._poor[key] = (since, on)
        return self._tech(device_id, "ecg_poor_signal", on, AlarmPriority.LOW, t_gw, lead=lead)

    def _pulse_elsewhere(self, device_id: str, t_gw: int, within_s: float) -> bool:
        """A pulse seen within `within_s` by another device of this device's patient."""
        patient = self._patients.get(device_id)
        pulses = self._last_pulse_ns.get(patient, {}) if patient is not None else {}
        return any(t_gw - t <= within_s * 1e9 for device, t in pulses.items() if device != device_id)

    def escalate(self, t_gw: int) -> list[Alarm]:
        """Alarms active and unacknowledged for `escalate_after_s` go up one priority (a new event each)."""
        out = []
        limit = self._config.escalate_after_s * 1e9
        for key, alarm in list(self.active.items()):
            if alarm.state is not AlarmState.ACTIVE or alarm.priority is AlarmPriority.HIGH:
                continue
            if t_gw - self._raised_at.get(key, alarm.gateway_time_ns) < limit:
                continue
            higher = AlarmPriority.MEDIUM if alarm.priority is AlarmPriority.LOW else AlarmPriority.HIGH
            escalated = Alarm(
                new_id(),
                alarm.device_id,
                alarm.condition,
                alarm.kind,
                higher,
                AlarmState.ACTIVE,
                t_gw,
                alarm.quantity,
                alarm.device_time_ns,
                {**alarm.detail, "escalated_from": alarm.priority.value},
                alarm.alarm_id,
            )
            self.active[key] = escalated
            self._raised_at[key] = t_gw  # the next step, if still unanswered, after another interval
            out.append(escalated)
        return out

    def set_state(self, alarm_id: str, state: AlarmState) -> Alarm | None:
        """Acknowledge or silence an active alarm, named by its alarm id (or by its latest event's id, as
        before alarms had one); the new event, or None."""
        for key, alarm in self.active.items():
            if alarm_id in (alarm.alarm_id, alarm.id):
                updated = Alarm(
                    new_id(),
                    alarm.device_id,
                    alarm.condition,
                    alarm.kind,
                    alarm.priority,
                    state,
                    now_ns(),
                    alarm.quantity,
                    alarm.device_time_ns,
                    alarm.detail,
                    alarm.alarm_id,
                )
                self.active[key] = updated
                return updated
        return None

    def _make(
        self,
        device_id: str,
        condition: str,
        kind: AlarmKind,
        priority: AlarmPriority,
        state: AlarmState,
        t_gw: int,
        q: Quantity | None,
        t_dev: int | None,
        detail: dict[str, str] | None = None,
        key: str | None = None,
    ) -> Alarm:
        """A new alarm event; `key` tells apart alarms of one condition on one device (an ECG lead's).  An event
        about an alarm already active (its clearing) carries that alarm's id."""
        slot = (device_id, key or condition)
        before = self.active.get(slot)
        alarm_id = before.alarm_id if before is not None else ""
        alarm = Alarm(new_id(), device_id, condition, kind, priority, state, t_gw, q, t_dev, detail or {}, alarm_id)
        if state is AlarmState.ACTIVE:
            self.active[slot] = alarm
            self._raised_at[slot] = t_gw
        else:
            self.active.pop(slot, None)
            self._raised_at.pop(slot, None)
        return alarm
