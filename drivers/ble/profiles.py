"""Device profiles: which characteristics a kind of BLE device exposes, and how its frames become events.

A profile is pure: it maps decoded frames (from `drivers.ble.gatt`) to domain events and holds no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from drivers.ble import gatt
from gateway.model import (
    ConnectionState,
    DeviceStatus,
    Event,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
    stable_id,
)
from gateway.nomenclature import quantity

POLAR_EPOCH_OFFSET_NS = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z in Unix ns

# Polar PMD control point: start ECG, sample rate 130 Hz (setting 0x00, 1 value, 0x0082), resolution 14 bit.
PMD_START_ECG = bytes([0x02, 0x00, 0x00, 0x01, 0x82, 0x00, 0x01, 0x01, 0x0E, 0x00])


@dataclass
class ProfileState:
    """Per-connection state a profile may keep (e.g. a CGM session's start time)."""

    device_id: str
    cgm_session_start_ns: int | None = None


Handler = Callable[[ProfileState, bytes], Sequence[Event]]


@dataclass(frozen=True)
class Profile:
    name: str
    notify: dict[str, Handler]
    start_writes: tuple[tuple[str, bytes], ...] = ()


def _obs(state: ProfileState, ref: str, value: float, device_time_ns: int | None, *key: object) -> Observation:
    q = quantity(ref)
    ident = stable_id(state.device_id, q.code, *key) if key else new_id()
    return Observation(ident, state.device_id, q, value, device_time_ns, now_ns())


def _finite(events: list[Event]) -> list[Event]:
    """NaN/NRes means "no valid measurement": not a value to store or alarm on."""
    return [e for e in events if not (isinstance(e, Observation) and math.isnan(e.value))]


def on_battery(state: ProfileState, data: bytes) -> Sequence[Event]:
    level = gatt.decode_battery_level(data)
    return [DeviceStatus(new_id(), state.device_id, ConnectionState.CONNECTED, now_ns(), battery_pct=float(level))]


def on_heart_rate(state: ProfileState, data: bytes) -> Sequence[Event]:
    m = gatt.decode_heart_rate_measurement(data)
    events: list[Event] = [_obs(state, "MDC_ECG_HEART_RATE", float(m.heart_rate_bpm), None)]
    events.extend(_obs(state, "MDC_ECG_TIME_PD_RR_GL", rr, None) for rr in m.rr_intervals_ms)
    return events


def on_pmd_ecg(state: ProfileState, data: bytes) -> Sequence[Event]:
    frame = gatt.decode_pmd_ecg_frame(data)
    q = quantity("MDC_ECG_ELEC_POTL")
    rate = float(gatt.PMD_ECG_SAMPLE_RATE_HZ)
    # The PMD timestamp is that of the last sample in the frame.
    last_ns = frame.timestamp_ns + POLAR_EPOCH_OFFSET_NS
    start_ns = last_ns - round((len(frame.samples_uv) - 1) * 1e9 / rate)
    return [
        WaveformChunk(
            stable_id(state.device_id, q.code, frame.timestamp_ns),
            state.device_id,
            q,
            frame.samples_uv.astype(np.int32, copy=False),
            rate,
            1.0,
            0.0,
            start_ns,
            now_ns(),
        )
    ]


def on_plx_continuous(state: ProfileState, data: bytes) -> Sequence[Event]:
    m = gatt.decode_plx_continuous(data)
    events: list[Event] = [
        _obs(state, "MDC_PULS_OXIM_SAT_O2", m.spo2_pct, None),
        _obs(state, "MDC_PULS_OXIM_PULS_RATE", m.pulse_rate_bpm, None),
    ]
    if m.pulse_amplitude_index_pct is not None:
        events.append(_obs(state, "MDC_PULS_OXIM_PERF_REL", m.pulse_amplitude_index_pct, None))
    return _finite(events)


def on_cgm(state: ProfileState, data: bytes) -> Sequence[Event]:
    events: list[Event] = []
    for m in gatt.decode_cgm_measurements(data, e2e_crc=False):
        start = state.cgm_session_start_ns
        device_time = None if start is None else start + m.time_offset_min * 60_000_000_000
        if start is None:
            # Without a session start, the time offset does not identify a record across sessions (offsets
            # restart at 0): fresh ids, and a record re-read through RACP may arrive twice.
            events.append(_obs(state, "MDC_CONC_GLU_ISF", m.glucose_mg_dl, None))
            if m.trend_mg_dl_min is not None:
                events.append(_obs(state, "MDC_CONC_GLU_TREND", m.trend_mg_dl_min, None))
        else:
            # The session start and time offset identify a CGM record: a record re-read through RACP after a
            # reconnect gets the same id, so the receiver keeps one copy.
            key = (start, m.time_offset_min)
            events.append(_obs(state, "MDC_CONC_GLU_ISF", m.glucose_mg_dl, device_time, "glucose", *key))
            if m.trend_mg_dl_min is not None:
                events.append(_obs(state, "MDC_CONC_GLU_TREND", m.trend_mg_dl_min, device_time, "trend", *key))
    return _finite(events)


def on_idd_status(state: ProfileState, data: bytes) -> Sequence[Event]:
    s = gatt.decode_idd_status(data, e2e=False)
    detail = {
        "therapy_control_state": _enum_name(gatt.TherapyControlState, s.therapy_control_state),
        "operational_state": _enum_name(gatt.OperationalState, s.operational_state),
        "reservoir_attached": str(s.reservoir_attached).lower(),
    }
    return _finite(
        [
            _obs(state, "MDC_INS_RESERVOIR", s.reservoir_remaining_iu, None),
            DeviceStatus(new_id(), state.device_id, ConnectionState.CONNECTED, now_ns(), detail=detail),
        ]
    )


def _enum_name(enum_type: type[gatt.TherapyControlState] | type[gatt.OperationalState], value: int) -> str:
    try:
        return enum_type(value).name.lower()
    except ValueError:
        return f"0x{value:02x}"


PROFILES: dict[str, Profile] = {
    "ecg_patch": Profile(
        "ecg_patch",
        {gatt.HEART_RATE_MEASUREMENT: on_heart_rate, gatt.PMD_DATA: on_pmd_ecg, gatt.BATTERY_LEVEL: on_battery},
        start_writes=((gatt.PMD_CONTROL_POINT, PMD_START_ECG),),
    ),
    "pulse_oximeter": Profile(
        "pulse_oximeter", {gatt.PLX_CONTINUOUS_MEASUREMENT: on_plx_continuous, gatt.BATTERY_LEVEL: on_battery}
    ),
    "cgm": Profile("cgm", {gatt.CGM_MEASUREMENT: on_cgm, gatt.BATTERY_LEVEL: on_battery}),
    "insulin_pump": Profile("insulin_pump", {gatt.IDD_STATUS: on_idd_status, gatt.BATTERY_LEVEL: on_battery}),
}
