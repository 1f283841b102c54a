"""Limit alarms: condition delay, hysteresis, priorities; technical alarms from device status; one id per alarm."""

from __future__ import annotations

from gateway.alarms import AlarmEngine
from gateway.config import AlarmsSection, LimitRule
from gateway.core.errors import StorageError
from gateway.core.model import AlarmState, ConnectionState, DeviceStatus, Observation, new_id
from gateway.core.nomenclature import quantity
from gateway.storage_health import StorageHealth

T0 = 1_800_000_000 * 10**9


def _spo2(engine: AlarmEngine, value: float, t_s: float) -> list[tuple[str, str]]:
    obs = Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), value, None, T0 + round(t_s * 1e9))
    return [(a.condition, a.state.value) for a in engine.evaluate(obs)]


def test_limit_crossing_waits_for_its_delay_and_clears_only_past_the_hysteresis() -> None:
    rule = LimitRule(quantity="MDC_PULS_OXIM_SAT_O2", low=90, priority="high", delay_s=10, hysteresis=2)
    engine = AlarmEngine(AlarmsSection(limits=(rule,)))
    assert _spo2(engine, 89, 0) == []  # below the limit, but not for long enough yet
    assert _spo2(engine, 91, 5) == []  # back above: the delay starts over
    assert _spo2(engine, 88, 6) == []
    assert _spo2(engine, 87, 15) == []  # 9 s below
    assert _spo2(engine, 87, 16) == [("MDC_PULS_OXIM_SAT_O2.low", "active")]  # 10 s: raised, once
    assert _spo2(engine, 86, 17) == []
    assert _spo2(engine, 91, 18) == []  # above the limit but inside the hysteresis band: still active
    assert _spo2(engine, 92, 19) == [("MDC_PULS_OXIM_SAT_O2.low", "cleared")]
    alarm = engine.active.get(("ox-1", "MDC_PULS_OXIM_SAT_O2.low"))
    assert alarm is None


def test_high_and_low_limits_and_priority() -> None:
    rule = LimitRule(quantity="MDC_PULS_OXIM_SAT_O2", low=90, high=99.5, priority="medium")
    engine = AlarmEngine(AlarmsSection(limits=(rule,)))
    obs = Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 100.0, None, T0)
    (alarm,) = engine.evaluate(obs)
    assert alarm.condition.endswith(".high") and alarm.priority == "medium" and alarm.kind == "physiological"


def test_disconnection_and_low_battery_are_technical_alarms() -> None:
    engine = AlarmEngine(AlarmsSection(low_battery_pct=15))
    lost = DeviceStatus(new_id(), "pump-1", ConnectionState.DISCONNECTED, T0, detail={"reason": "link_lost"})
    (alarm,) = engine.evaluate(lost)
    assert (alarm.condition, alarm.kind, alarm.state) == ("device_disconnected", "technical", AlarmState.ACTIVE)
    stopped = DeviceStatus(new_id(), "ox-1", ConnectionState.DISCONNECTED, T0, detail={"reason": "stopped"})
    assert engine.evaluate(stopped) == []  # a deliberate stop is not an alarm condition
    weak = DeviceStatus(new_id(), "pump-1", ConnectionState.CONNECTED, T0, battery_pct=12.0)
    conditions = {(a.condition, a.state.value) for a in engine.evaluate(weak)}
    assert conditions == {("device_disconnected", "cleared"), ("low_battery", "active")}


def test_unacknowledged_alarms_escalate_one_priority_at_a_time() -> None:
    rule = LimitRule(quantity="MDC_PULS_OXIM_SAT_O2", low=90, priority="low")
    engine = AlarmEngine(AlarmsSection(limits=(rule,), escalate_after_s=60))
    _spo2(engine, 85, 0)
    assert engine.escalate(T0 + 59 * 10**9) == []
    (medium,) = engine.escalate(T0 + 60 * 10**9)
    assert medium.priority == "medium" and medium.detail["escalated_from"] == "low"
    assert engine.escalate(T0 + 100 * 10**9) == []
    (high,) = engine.escalate(T0 + 121 * 10**9)
    assert high.priority == "high"
    assert engine.escalate(T0 + 500 * 10**9) == []  # high is the top
    # An acknowledged alarm does not escalate.
    engine2 = AlarmEngine(AlarmsSection(limits=(rule,), escalate_after_s=60))
    _spo2(engine2, 85, 0)
    active = engine2.active[("ox-1", "MDC_PULS_OXIM_SAT_O2.low")]
    engine2.set_state(active.id, AlarmState.ACKNOWLEDGED)
    assert engine2.escalate(T0 + 600 * 10**9) == []


def _glucose(engine: AlarmEngine, value: float, minute: float) -> set[tuple[str, str]]:
    t = T0 + round(minute * 60e9)
    obs = Observation(new_id(), "cgm-1", quantity("MDC_CONC_GLU_ISF"), value, t, t)
    return {(a.condition, a.state.value) for a in engine.evaluate(obs)}


def test_glucose_rate_of_change_alarms_from_device_time() -> None:
    engine = AlarmEngine(AlarmsSection())
    assert _glucose(engine, 150, 0) == set()
    assert _glucose(engine, 145, 5) == set()  # -1 mg/dL/min: fine
    assert _glucose(engine, 130, 10) == {("glucose_falling_fast", "active")}  # -3 mg/dL/min
    assert _glucose(engine, 124, 15) == set()  # -1.2: still falling fast enough to stay (hysteresis at -1.0)
    assert _glucose(engine, 124, 20) == {("glucose_falling_fast", "cleared")}
    assert _glucose(engine, 148, 25) == {("glucose_rising_fast", "active")}  # +4.8 mg/dL/min


def test_cgm_sensor_expiry_warning() -> None:
    engine = AlarmEngine(AlarmsSection(cgm_sensor_life_h=240, cgm_expiry_warning_h=24))
    start = T0 - round(215 * 3.6e12)  # the session began 215 h before T0: 25 h of life left
    status = DeviceStatus(
        new_id(), "cgm-1", ConnectionState.CONNECTED, T0, detail={"sensor_session_start_ns": str(start)}
    )
    engine.evaluate(status)
    assert _glucose(engine, 120, 0) == set()
    assert ("sensor_expiring", "active") in _glucose(engine, 121, 61)  # an hour later: 24 h left


def test_a_limit_can_apply_to_one_device_only() -> None:
    rules = (
        LimitRule(quantity="MDC_PULS_OXIM_SAT_O2", low=90, priority="high"),
        LimitRule(quantity="MDC_PULS_OXIM_SAT_O2", low=85, priority="high", device="ox-copd"),
    )
    engine = AlarmEngine(AlarmsSection(limits=rules))
    copd = Observation(new_id(), "ox-copd", quantity("MDC_PULS_OXIM_SAT_O2"), 87.0, None, T0)
    assert engine.evaluate(copd) == []  # its own limit (85) replaces the general one (90)
    lower = Observation(new_id(), "ox-copd", quantity("MDC_PULS_OXIM_SAT_O2"), 84.0, None, T0)
    assert [a.condition for a in engine.evaluate(lower)] == ["MDC_PULS_OXIM_SAT_O2.low"]
    other = Observation(new_id(), "ox-2", quantity("MDC_PULS_OXIM_SAT_O2"), 87.0, None, T0)
    assert len(engine.evaluate(other)) == 1  # everyone else keeps the general limit


def test_an_alarm_keeps_one_id_from_raise_to_clear_while_each_event_has_its_own() -> None:
    rule = LimitRule(quantity="MDC_PULS_OXIM_SAT_O2", low=90, priority="low")
    engine = AlarmEngine(AlarmsSection(limits=(rule,), escalate_after_s=60))
    obs = Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 85.0, None, T0)
    (raised,) = engine.evaluate(obs)
    assert raised.alarm_id == raised.id  # the alarm is named after its first event
    (escalated,) = engine.escalate(T0 + 60 * 10**9)
    acked = engine.set_state(raised.alarm_id, AlarmState.ACKNOWLEDGED)
    assert acked is not None
    silenced = engine.set_state(raised.alarm_id, AlarmState.SILENCED)  # the same id again: no race with acks
    assert silenced is not None
    obs = Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 97.0, None, T0 + 61 * 10**9)
    (cleared,) = engine.evaluate(obs)
    events = [raised, escalated, acked, silenced, cleared]
    assert [e.state.value for e in events] == ["active", "active", "acknowledged", "silenced", "cleared"]
    assert {e.alarm_id for e in events} == {raised.id}
    assert len({e.id for e in events}) == len(events)  # the sync API still de-duplicates by event id
    assert engine.set_state(raised.alarm_id, AlarmState.ACKNOWLEDGED) is None  # cleared: nothing to acknowledge
    # The next episode of the same condition is another alarm.
    obs = Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_SAT_O2"), 85.0, None, T0 + 62 * 10**9)
    (again,) = engine.evaluate(obs)
    assert again.alarm_id != raised.alarm_id


def test_technical_alarms_keep_their_id_until_cleared() -> None:
    engine = AlarmEngine(AlarmsSection(low_battery_pct=15))
    lost = DeviceStatus(new_id(), "pump-1", ConnectionState.DISCONNECTED, T0, detail={"reason": "link_lost"})
    (raised,) = engine.evaluate(lost)
    acked = engine.set_state(raised.id, AlarmState.ACKNOWLEDGED)
    assert acked is not None and acked.alarm_id == raised.alarm_id
    back = DeviceStatus(new_id(), "pump-1", ConnectionState.CONNECTED, T0 + 10**9)
    (cleared,) = engine.evaluate(back)
    assert cleared.state is AlarmState.CLEARED and cleared.alarm_id == raised.alarm_id


def test_a_buffer_outage_raises_and_clears_one_alarm() -> None:
    health = StorageHealth("gw", clock=lambda: 0.0)
    raised = health.failed(StorageError("disk full"), 3)
    assert raised is not None and health.failed(StorageError("disk full"), 4) is None
    cleared = health.succeeded()
    assert cleared is not None and cleared.state is AlarmState.CLEARED
    assert cleared.alarm_id == raised.alarm_id and cleared.id != raised.id
    again = health.failed(StorageError("disk full"), 1)
    assert again is not None and again.alarm_id != raised.alarm_id
