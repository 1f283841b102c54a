"""Physically impossible values are technical alarms, not data.

A sensor that fails often still sends a number: 0x7FFF from a Modbus temperature register (3276.7 Cel), an
SpO2 of 127 %, a negative respiration rate.  Stored, such a value looks like a measurement and drives limit
alarms; dropped silently, nobody learns the sensor is broken.  Here each numeric quantity has the range a
physical measurement of it can take (wide: the limits of what exists, not of what is normal), and a value
outside it (or not finite) is kept out of the data and raises the technical alarm `implausible.<quantity>`
(medium), cleared by the next plausible value of that quantity from that device.
"""

from __future__ import annotations

import math
from typing import Protocol

from gateway.core.logs import get_logger
from gateway.core.model import Alarm, AlarmPriority, Observation
from gateway.core.nomenclature import all_quantities

log = get_logger(__name__)

_PERCENT = (0.0, 100.0)
_RATE = (0.0, 400.0)  # beats or breaths per minute
_PRESSURE = (-50.0, 400.0)  # mm[Hg]: a zeroed invasive line may read a little below zero
_BODY_TEMPERATURE = (10.0, 50.0)  # Cel, any body site, hypothermic to hyperthermic and then some

# Reference id -> (lowest, highest) physically possible value, in the quantity's UCUM unit.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "MDC_ECG_HEART_RATE": _RATE,
    "MDC_ECG_TIME_PD_RR_GL": (0.0, 60_000.0),
    "MDC_ECG_V_P_C_RATE": _RATE,
    "MDC_PULS_OXIM_SAT_O2": _PERCENT,
    "MDC_PULS_OXIM_PULS_RATE": _RATE,
    "MDC_PULS_OXIM_PERF_REL": _PERCENT,
    "MDC_PRESS_BLD_NONINV_SYS": _PRESSURE,
    "MDC_PRESS_BLD_NONINV_DIA": _PRESSURE,
    "MDC_PRESS_BLD_NONINV_MEAN": _PRESSURE,
    "MDC_PULS_RATE_NON_INV": _RATE,
    "MDC_PRESS_BLD_ART_SYS": _PRESSURE,
    "MDC_PRESS_BLD_ART_DIA": _PRESSURE,
    "MDC_PRESS_BLD_ART_MEAN": _PRESSURE,
    "MDC_PRESS_BLD_ART_PULM_SYS": _PRESSURE,
    "MDC_PRESS_BLD_ART_PULM_DIA": _PRESSURE,
    "MDC_PRESS_BLD_ART_PULM_MEAN": _PRESSURE,
    "MDC_BLD_PULS_RATE_INV": _RATE,
    "MDC_TEMP_BODY": _BODY_TEMPERATURE,
    "MDC_TEMP": (-50.0, 60.0),  # a monitor's probe, site unknown: could be a room or a blood warmer
    "MDC_TEMP_CORE": _BODY_TEMPERATURE,
    "MDC_TEMP_SKIN": _BODY_TEMPERATURE,
    "MDC_TEMP_TYMP": _BODY_TEMPERATURE,
    "MDC_TEMP_RECT": _BODY_TEMPERATURE,
    "MDC_TEMP_ORAL": _BODY_TEMPERATURE,
    "MDC_TEMP_EAR": _BODY_TEMPERATURE,
    "MDC_TEMP_ROOM": (-60.0, 70.0),  # rooms, fridges and freezers (a -80 Cel freezer is not in this quantity)
    "MDC_RESP_RATE": _RATE,
    "MDC_AWAY_RESP_RATE": _RATE,
    "MDC_TTHOR_RESP_RATE": _RATE,
    "MDC_CO2_RESP_RATE": _RATE,
    "MDC_CONC_AWAY_CO2_ET": (0.0, 200.0),
    "MDC_CONC_AWAY_O2_INSP": _PERCENT,
    "MDC_OUTPUT_CARD": (0.0, 40.0),
    "MDC_CONC_GLU_ISF": (0.0, 2000.0),
    "MDC_CONC_GLU_GEN": (0.0, 2000.0),
    "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD": (0.0, 2000.0),
    "MDC_CONC_GLU_CAPILLARY_PLASMA": (0.0, 2000.0),
    "MDC_CONC_GLU_VENOUS_WHOLEBLOOD": (0.0, 2000.0),
    "MDC_CONC_GLU_VENOUS_PLASMA": (0.0, 2000.0),
    "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD": (0.0, 2000.0),
    "MDC_CONC_GLU_ARTERIAL_PLASMA": (0.0, 2000.0),
    "MDC_INS_RESERVOIR": (0.0, 5000.0),
    "MDC_INS_BASAL_RATE_SETTING": (0.0, 100.0),
    "MDC_INS_BOLUS": (0.0, 250.0),
    "MDC_ATTR_VAL_BATT_CHARGE": _PERCENT,
}
# ST deviation per lead (the quantities in mV): far beyond any real elevation or depression.
PLAUSIBLE.update({q.reference_id: (-20.0, 20.0) for q in all_quantities() if q.ucum == "mV"})


def plausible(obs: Observation) -> bool:
    """Whether a value can be a measurement of its quantity at all (quantities without a range: finite).

    +/-infinity is a device's own code for "beyond my range" (IEEE 11073 SFLOAT/FLOAT special values, a CGM's
    LO and HI): kept, coded on the wire, and alarmed as the device's condition, never taken for a fault."""
    if math.isinf(obs.value):
        return True
    if math.isnan(obs.value):
        return False
    low, high = PLAUSIBLE.get(obs.quantity.reference_id, (-math.inf, math.inf))
    return low <= obs.value <= high


class Technical(Protocol):
    """Where plausibility alarms go: the alarm engine's technical conditions (`AlarmEngine.technical`)."""

    def technical(
        self, device_id: str, condition: str, present: bool, priority: AlarmPriority, t_gw: int
    ) -> list[Alarm]: ...


def check(obs: Observation, engine: Technical) -> tuple[bool, list[Alarm]]:
    """(keep the value?, alarms): an implausible value raises its technical alarm, a plausible one clears it."""
    condition = f"implausible.{obs.quantity.reference_id}"
    ok = plausible(obs)
    alarms = engine.technical(obs.device_id, condition, not ok, AlarmPriority.MEDIUM, obs.gateway_time_ns)
    if not ok and alarms:
        log.warning("implausible value kept out of the data", device_id=obs.device_id, quantity=condition[12:])
    return ok, alarms
