"""Device profiles: which characteristics a kind of BLE device exposes, and how its frames become events.

A profile is pure: it maps decoded frames (from the codec modules, one per service: `hrs`, `plxs`, `cgms`,
`idd_status`, `ids`, `bas`, `pmd`, `bps`, `hts`, `gls`) to domain events and holds no I/O.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from drivers.ble import bas, bps, cgms, fields, gls, hrs, hts, idd_status, ids, plxs, pmd
from gateway.core.model import (
    CONDITIONS_KEY,
    ConnectionState,
    DeviceStatus,
    Event,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
    stable_id,
)
from gateway.core.nomenclature import quantity

CGM_SEEN_MAX = 8192  # four weeks of 5-minute CGM records
POLAR_EPOCH_OFFSET_NS = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z in Unix ns

# Polar PMD control point: start ECG, sample rate 130 Hz (setting 0x00, 1 value, 0x0082), resolution 14 bit.
PMD_START_ECG = bytes([0x02, 0x00, 0x00, 0x01, 0x82, 0x00, 0x01, 0x01, 0x0E, 0x00])


@dataclass
class ProfileState:
    """Per-connection state a profile may keep (e.g. a CGM session's start time)."""

    device_id: str
    cgm_session_start_ns: int | None = None
    cgm_last_offset_min: int | None = None  # newest CGM record seen in this session (where RACP resumes)
    cgm_e2e_crc: bool = False  # the sensor's CGM Feature says its records carry an E2E-CRC
    idd_e2e: bool = False  # the pump's IDD Features say its IDS characteristics carry E2E-Counter and E2E-CRC
    # CGM records already handed on, by time offset (bounded): a record that arrives both live and through RACP
    # (the first fetch of a session asks for all of them) is passed on once.
    cgm_seen: collections.OrderedDict[int, None] = field(default_factory=collections.OrderedDict)

    def new_cgm_session(self, start_ns: int | None) -> None:
        if start_ns != self.cgm_session_start_ns:
            self.cgm_last_offset_min = None  # offsets restart at 0 in a new sensor session
            self.cgm_seen.clear()
        self.cgm_session_start_ns = start_ns

    def first_sight_of_cgm_record(self, offset_min: int) -> bool:
        if offset_min in self.cgm_seen:
            return False
        self.cgm_seen[offset_min] = None
        if len(self.cgm_seen) > CGM_SEEN_MAX:
            self.cgm_seen.popitem(last=False)
        if self.cgm_last_offset_min is None or offset_min > self.cgm_last_offset_min:
            self.cgm_last_offset_min = offset_min
        return True


Handler = Callable[[ProfileState, bytes], Sequence[Event]]


class Feature(StrEnum):
    """Behaviour beyond notifications that a profile declares and the BLE session composes
    (drivers/ble/features.py implements each)."""

    RECORD_BACKFILL = "record_backfill"  # stored records fetched through RACP after every (re)connection
    PUMP_STATUS = "pump_status"  # IDS Status Reader CP: insulin delivered and on board, Status Changed acknowledged
    # IDS Command CP: the device is a command target; an outcome-unknown command is settled from the pump's own
    # history (IDD History Data through the IDD RACP) where it offers one.
    PUMP_COMMANDS = "pump_commands"


@dataclass(frozen=True)
class Profile:
    name: str
    notify: dict[str, Handler]
    start_writes: tuple[tuple[str, bytes], ...] = ()  # e.g. Polar PMD: start the ECG stream
    bonding: bool = False  # the service needs an encrypted, bonded link (IDS: security mode 1 level 2+)
    features: frozenset[Feature] = frozenset()
    records: frozenset[str] = frozenset()  # characteristics carrying stored records (re-fetched when corrupt)


def _obs(state: ProfileState, ref: str, value: float, device_time_ns: int | None, *key: object) -> Observation:
    q = quantity(ref)
    ident = stable_id(state.device_id, q.code, *key) if key else new_id()
    return Observation(ident, state.device_id, q, value, device_time_ns, now_ns())


def _finite(events: list[Event]) -> list[Event]:
    """NaN/NRes means "no valid measurement": not a value to store or alarm on."""
    return [e for e in events if not (isinstance(e, Observation) and math.isnan(e.value))]


def on_battery(state: ProfileState, data: bytes) -> Sequence[Event]:
    level = bas.decode_battery_level(data)
    return [DeviceStatus(new_id(), state.device_id, ConnectionState.CONNECTED, now_ns(), battery_pct=float(level))]


def on_heart_rate(state: ProfileState, data: bytes) -> Sequence[Event]:
    m = hrs.decode_heart_rate_measurement(data)
    events: list[Event] = [_obs(state, "MDC_ECG_HEART_RATE", float(m.heart_rate_bpm), None)]
    events.extend(_obs(state, "MDC_ECG_TIME_PD_RR_GL", rr, None) for rr in m.rr_intervals_ms)
    return events


def on_pmd_ecg(state: ProfileState, data: bytes) -> Sequence[Event]:
    frame = pmd.decode_pmd_ecg_frame(data)
    q = quantity("MDC_ECG_ELEC_POTL")
    rate = float(pmd.PMD_ECG_SAMPLE_RATE_HZ)
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


# Status bits that are alarm conditions, by meaning: (bit, condition, priority, kind).  A condition about the
# patient is physiological; one about the device or the measurement is technical.
Condition = tuple[int, str, str, str]
TECH, PHYS = "technical", "physiological"

# PLX Measurement Status (16 bits) and Device and Sensor Status (24 bits), Pulse Oximeter Service 1.0.
PLX_MEASUREMENT_CONDITIONS: tuple[Condition, ...] = (
    (13, "plx_measurement_unavailable", "medium", TECH),
    (14, "plx_questionable_measurement", "low", TECH),
    (15, "plx_invalid_measurement", "medium", TECH),
)
PLX_SENSOR_CONDITIONS: tuple[Condition, ...] = (
    (1, "plx_equipment_malfunction", "medium", TECH),
    (2, "plx_signal_processing_irregularity", "low", TECH),
    (3, "plx_inadequate_signal", "low", TECH),
    (4, "plx_poor_signal", "low", TECH),
    (5, "plx_low_perfusion", "low", TECH),
    (6, "plx_erratic_signal", "low", TECH),
    (7, "plx_nonpulsatile_signal", "medium", TECH),
    (8, "plx_questionable_pulse", "low", TECH),
    (10, "plx_sensor_interference", "low", TECH),
    (11, "plx_sensor_unconnected_to_user", "medium", TECH),
    (12, "plx_unknown_sensor", "medium", TECH),
    (13, "plx_sensor_displaced", "medium", TECH),
    (14, "plx_sensor_malfunction", "medium", TECH),
    (15, "plx_sensor_disconnected", "medium", TECH),
)
# CGM Sensor Status Annunciation (CGM Service 1.0.1): status octet, cal/temp octet, warning octet.
CGM_CONDITIONS: tuple[Condition, ...] = (
    (0, "cgm_session_stopped", "medium", TECH),
    (1, "cgm_battery_low", "low", TECH),
    (2, "cgm_sensor_type_incorrect", "medium", TECH),
    (3, "cgm_sensor_malfunction", "medium", TECH),
    (4, "cgm_device_specific_alert", "low", TECH),
    (5, "cgm_general_device_fault", "medium", TECH),
    (8, "cgm_time_synchronization_required", "low", TECH),
    (9, "cgm_calibration_not_allowed", "low", TECH),
    (10, "cgm_calibration_recommended", "low", TECH),
    (11, "cgm_calibration_required", "medium", TECH),
    (12, "cgm_sensor_temperature_too_high", "low", TECH),
    (13, "cgm_sensor_temperature_too_low", "low", TECH),
    (14, "cgm_calibration_pending", "low", TECH),
    (16, "glucose_below_patient_low", "medium", PHYS),
    (17, "glucose_above_patient_high", "low", PHYS),
    (18, "glucose_below_hypo_level", "high", PHYS),
    (19, "glucose_above_hyper_level", "medium", PHYS),
    (20, "glucose_rate_of_decrease_exceeded", "medium", PHYS),
    (21, "glucose_rate_of_increase_exceeded", "medium", PHYS),
    (22, "glucose_below_device_range", "high", PHYS),
    (23, "glucose_above_device_range", "medium", PHYS),
)


def _conditions_status(state: ProfileState, source: str, present: list[tuple[str, str, str]]) -> DeviceStatus:
    """Every condition one status source reports now (each an alarm while listed, cleared when gone)."""
    detail = {CONDITIONS_KEY: "complete", "conditions_source": source}
    for name, priority, kind in present:
        detail[f"priority.{name}"] = priority
        detail[f"kind.{name}"] = kind
    names = tuple(dict.fromkeys(name for name, _, _ in present))
    return DeviceStatus(new_id(), state.device_id, ConnectionState.CONNECTED, now_ns(), errors=names, detail=detail)


def _flagged(bits: int | None, table: tuple[Condition, ...]) -> list[tuple[str, str, str]]:
    if bits is None:
        return []
    return [(name, priority, kind) for bit, name, priority, kind in table if bits >> bit & 1]


def on_plx_continuous(state: ProfileState, data: bytes) -> Sequence[Event]:
    m = plxs.decode_plx_continuous(data)
    events: list[Event] = [
        _obs(state, "MDC_PULS_OXIM_SAT_O2", m.spo2_pct, None),
        _obs(state, "MDC_PULS_OXIM_PULS_RATE", m.pulse_rate_bpm, None),
    ]
    if m.pulse_amplitude_index_pct is not None:
        events.append(_obs(state, "MDC_PULS_OXIM_PERF_REL", m.pulse_amplitude_index_pct, None))
    invalid = m.measurement_status is not None and m.measurement_status >> 13 & 0b101  # unavailable or invalid
    events = [] if invalid else _finite(events)  # a value the oximeter calls invalid is not a value
    if m.measurement_status is not None or m.device_sensor_status is not None:
        present = _flagged(m.measurement_status, PLX_MEASUREMENT_CONDITIONS)
        present += _flagged(m.device_sensor_status, PLX_SENSOR_CONDITIONS)
        events.append(_conditions_status(state, "plx_status", present))
    return events


def on_cgm(state: ProfileState, data: bytes) -> Sequence[Event]:
    """CGM records as glucose (LO and HI kept as -inf and +inf: coded, never dropped) and, for the newest
    record, its sensor status and LO/HI as alarm conditions."""
    events: list[Event] = []
    for m in cgms.decode_cgm_measurements(data, e2e_crc=state.cgm_e2e_crc):
        if not state.first_sight_of_cgm_record(m.time_offset_min):
            continue
        if m.time_offset_min == state.cgm_last_offset_min:  # records fetched late do not speak for now
            present = _flagged(m.sensor_status, CGM_CONDITIONS)
            if m.glucose_mg_dl == -math.inf:
                present.append(("glucose_below_device_range", "high", PHYS))
            elif m.glucose_mg_dl == math.inf:
                present.append(("glucose_above_device_range", "medium", PHYS))
            events.append(_conditions_status(state, "cgm_status", present))
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
    return events  # special values stay: the wire codes them ("special": "-inf" is the sensor's LO)


def on_idd_status(state: ProfileState, data: bytes) -> Sequence[Event]:
    s = idd_status.decode_idd_status(data, e2e=state.idd_e2e)
    detail = {
        "therapy_control_state": _enum_name(idd_status.TherapyControlState, s.therapy_control_state),
        "operational_state": _enum_name(idd_status.OperationalState, s.operational_state),
        "reservoir_attached": str(s.reservoir_attached).lower(),
    }
    return _finite(
        [
            _obs(state, "MDC_INS_RESERVOIR", s.reservoir_remaining_iu, None),
            DeviceStatus(new_id(), state.device_id, ConnectionState.CONNECTED, now_ns(), detail=detail),
        ]
    )


def on_idd_annunciation(state: ProfileState, data: bytes) -> Sequence[Event]:
    """IDD Annunciation Status: the pump's own alarm (occlusion, reservoir low, ...) as a device condition.

    An annunciation that is pending, snoozed or undetermined is a condition (a technical alarm, priority from
    `ids.annunciation_severity`); a confirmed one, or none, clears it.  Confirming stays with the person at
    the pump: the gateway reports, it does not acknowledge on the patient's behalf.
    """
    annunciation, _counter = ids.decode_annunciation_status(data, e2e=state.idd_e2e)
    conditions: tuple[str, ...] = ()
    detail = {CONDITIONS_KEY: "complete"}
    if annunciation is not None and annunciation.status != ids.AnnunciationStatusValue.CONFIRMED:
        name = f"pump_{_enum_name(ids.AnnunciationType, annunciation.type)}"
        conditions = (name,)
        detail[f"priority.{name}"] = ids.annunciation_severity(annunciation.type)
        detail["annunciation_instance"] = str(annunciation.instance_id)
    return [
        DeviceStatus(new_id(), state.device_id, ConnectionState.CONNECTED, now_ns(), errors=conditions, detail=detail)
    ]


def _enum_name(
    enum_type: type[idd_status.TherapyControlState] | type[idd_status.OperationalState] | type[ids.AnnunciationType],
    value: int,
) -> str:
    try:
        return enum_type(value).name.lower()
    except ValueError:
        return f"0x{value:02x}"


# -------------------------------------------------------------- blood pressure, thermometer, glucose meter
#
# These devices stamp a measurement with their local clock and no time zone, so the time cannot be placed on the
# UTC axis (device_time_ns stays None, as for a CGM without a session start).  It still identifies the record:
# a monitor re-sends stored measurements after a reconnect, and the same time stamp gives the same event id.

_PA_PER_MMHG = 133.322387415  # the conventional millimetre of mercury
_CONVERTED_DECIMALS = 3  # a unit conversion rounds off binary noise, far below any device's resolution
_GLUCOSE_MG_DL_PER_KG_L = 100_000  # 1 kg/L = 10**6 mg per 10 dL
_GLUCOSE_MOLAR_MASS_G_PER_MOL = 180.156  # C6H12O6
_GLUCOSE_MG_DL_PER_MOL_L = _GLUCOSE_MOLAR_MASS_G_PER_MOL * 100  # 1 mol/L = 180.156 g/L = 18 015.6 mg/dL
_GLUCOSE_QUANTITY_BY_SAMPLE: dict[int, str] = {
    gls.GlucoseSampleType.CAPILLARY_WHOLE_BLOOD: "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
    gls.GlucoseSampleType.CAPILLARY_PLASMA: "MDC_CONC_GLU_CAPILLARY_PLASMA",
    gls.GlucoseSampleType.VENOUS_WHOLE_BLOOD: "MDC_CONC_GLU_VENOUS_WHOLEBLOOD",
    gls.GlucoseSampleType.VENOUS_PLASMA: "MDC_CONC_GLU_VENOUS_PLASMA",
    gls.GlucoseSampleType.ARTERIAL_WHOLE_BLOOD: "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD",
    gls.GlucoseSampleType.ARTERIAL_PLASMA: "MDC_CONC_GLU_ARTERIAL_PLASMA",
    gls.GlucoseSampleType.INTERSTITIAL_FLUID: "MDC_CONC_GLU_ISF",
}


def _converted(value: float) -> float:
    return round(value, _CONVERTED_DECIMALS)


def _record_key(stamp: fields.DateTimeTuple | None, *more: object) -> tuple[object, ...]:
    """A device record's own identity: its complete time stamp; empty (a fresh id) when absent or partial."""
    if stamp is None or 0 in stamp[:3]:
        return ()
    return (*stamp, *more)


def on_blood_pressure(state: ProfileState, data: bytes) -> Sequence[Event]:
    """Blood Pressure Measurement -> systolic, diastolic, mean (mm[Hg], converted from kPa) and pulse rate."""
    m = bps.decode_blood_pressure_measurement(data)

    def mmhg(value: float) -> float:
        return value if m.unit is bps.PressureUnit.MMHG else _converted(value * 1000 / _PA_PER_MMHG)

    key = _record_key(m.timestamp, m.user_id)
    events: list[Event] = [
        _obs(state, "MDC_PRESS_BLD_NONINV_SYS", mmhg(m.systolic), None, *key),
        _obs(state, "MDC_PRESS_BLD_NONINV_DIA", mmhg(m.diastolic), None, *key),
        _obs(state, "MDC_PRESS_BLD_NONINV_MEAN", mmhg(m.mean_arterial_pressure), None, *key),
    ]
    if m.pulse_rate_bpm is not None:
        events.append(_obs(state, "MDC_PULS_RATE_NON_INV", m.pulse_rate_bpm, None, *key))
    return _finite(events)


def on_temperature(state: ProfileState, data: bytes) -> Sequence[Event]:
    """Temperature Measurement -> body temperature in Cel (converted from Fahrenheit)."""
    m = hts.decode_temperature_measurement(data)
    celsius = m.temperature
    if m.unit is hts.TemperatureUnit.FAHRENHEIT:
        celsius = _converted((m.temperature - 32) * 5 / 9)
    return _finite([_obs(state, "MDC_TEMP_BODY", celsius, None, *_record_key(m.timestamp, m.temperature_type))])


def on_glucose(state: ProfileState, data: bytes) -> Sequence[Event]:
    """Glucose Measurement -> glucose in mg/dL, coded by the sample type the meter names, id'd by sequence number.

    Units: kg/L x 100 000 is mg/dL exactly; mol/L is converted to mg/dL too (x 18 015.6, glucose 180.156 g/mol)
    rather than sent as mmol/L, so that one quantity carries one unit (a quantity's MDC code is unique in the
    nomenclature table, and alarm limits are written against that unit).  A record without a concentration
    (status only) and a control-solution test (a meter check, not the patient) give no observation.
    """
    m = gls.decode_glucose_measurement(data)
    control = (
        m.sample_type == gls.GlucoseSampleType.CONTROL_SOLUTION
        or m.sample_location == gls.GlucoseSampleLocation.CONTROL_SOLUTION
    )
    if m.concentration is None or m.sample_type is None or control:
        return []
    if m.concentration_unit is gls.GlucoseConcentrationUnit.KG_PER_L:
        mg_dl = _converted(m.concentration * _GLUCOSE_MG_DL_PER_KG_L)
    else:
        mg_dl = _converted(m.concentration * _GLUCOSE_MG_DL_PER_MOL_L)
    # Undetermined whole blood / plasma, and types a newer spec adds, fall back to the general glucose term.
    ref = _GLUCOSE_QUANTITY_BY_SAMPLE.get(m.sample_type, "MDC_CONC_GLU_GEN")
    # The sequence number identifies the record on the meter: a record re-sent through RACP keeps its id.
    return _finite([_obs(state, ref, mg_dl, None, m.sequence_number)])


PROFILES: dict[str, Profile] = {
    "ecg_patch": Profile(
        "ecg_patch",
        {hrs.HEART_RATE_MEASUREMENT: on_heart_rate, pmd.PMD_DATA: on_pmd_ecg, bas.BATTERY_LEVEL: on_battery},
        start_writes=((pmd.PMD_CONTROL_POINT, PMD_START_ECG),),
    ),
    "pulse_oximeter": Profile(
        "pulse_oximeter", {plxs.PLX_CONTINUOUS_MEASUREMENT: on_plx_continuous, bas.BATTERY_LEVEL: on_battery}
    ),
    "cgm": Profile(
        "cgm",
        {cgms.CGM_MEASUREMENT: on_cgm, bas.BATTERY_LEVEL: on_battery},
        features=frozenset({Feature.RECORD_BACKFILL}),
        records=frozenset({cgms.CGM_MEASUREMENT}),
    ),
    "insulin_pump": Profile(
        "insulin_pump",
        {
            idd_status.IDD_STATUS: on_idd_status,
            ids.IDD_ANNUNCIATION_STATUS: on_idd_annunciation,
            bas.BATTERY_LEVEL: on_battery,
        },
        bonding=True,
        features=frozenset({Feature.PUMP_STATUS, Feature.PUMP_COMMANDS}),
    ),
    "blood_pressure": Profile(
        "blood_pressure",
        {bps.BLOOD_PRESSURE_MEASUREMENT: on_blood_pressure, bas.BATTERY_LEVEL: on_battery},
    ),
    "thermometer": Profile("thermometer", {hts.TEMPERATURE_MEASUREMENT: on_temperature, bas.BATTERY_LEVEL: on_battery}),
    "glucose_meter": Profile(
        "glucose_meter",
        {gls.GLUCOSE_MEASUREMENT: on_glucose, bas.BATTERY_LEVEL: on_battery},
        features=frozenset({Feature.RECORD_BACKFILL}),
    ),
}
