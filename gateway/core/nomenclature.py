"""IEEE 11073-10101 (MDC) codes and UCUM units for every quantity the gateway emits.

Codes are context-free: partition << 16 | term code.  Partition 2 is SCADA (vital signs, ECG), partition 128 is
PHD disease management (ISO/IEEE 11073-10419 insulin pump, -10425 CGM), partition 1 is objects/attributes.
Units are UCUM case-sensitive codes as the HL7 Personal Health Device FHIR IG uses them.

A driver never invents a code: it looks a quantity up here by reference id, so an unknown quantity fails at
import time in tests rather than reaching the cloud uncoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MDC_PART_OBJ = 1
MDC_PART_SCADA = 2
MDC_PART_PHD_DM = 128


class Kind(Enum):
    """Whether a quantity is a numeric (one value at an instant) or a waveform (sampled series)."""

    NUMERIC = "numeric"
    WAVEFORM = "waveform"


@dataclass(frozen=True, slots=True)
class Quantity:
    """One coded quantity: its MDC reference id, context-free code, UCUM unit and kind."""

    reference_id: str
    code: int
    ucum: str
    kind: Kind
    display: str

    @property
    def partition(self) -> int:
        return self.code >> 16

    @property
    def display_unit(self) -> str:
        """The unit as a person writes it (for screens; the wire carries the UCUM code)."""
        return display_unit(self.ucum)

    @property
    def term(self) -> int:
        return self.code & 0xFFFF


# UCUM codes are for machines (`Cel`, `mm[Hg]`, `[iU]`); a screen shows the unit as a person writes it.
DISPLAY_UNITS = {"Cel": "°C", "mm[Hg]": "mmHg", "[iU]": "IU", "[iU]/h": "IU/h", "uV": "µV", "Ohm": "Ω", "1": ""}


def display_unit(ucum: str) -> str:
    """How a person writes a UCUM unit: `Cel` is °C, `mm[Hg]` mmHg, `[iU]` IU; others are already readable."""
    return DISPLAY_UNITS.get(ucum, ucum)


def _q(ref: str, partition: int, term: int, ucum: str, display: str, kind: Kind = Kind.NUMERIC) -> Quantity:
    return Quantity(ref, (partition << 16) | term, ucum, kind, display)


_TABLE: tuple[Quantity, ...] = (
    # Cardiac numerics
    _q("MDC_ECG_HEART_RATE", MDC_PART_SCADA, 16770, "/min", "Heart rate (ECG)"),
    _q("MDC_ECG_TIME_PD_RR_GL", MDC_PART_SCADA, 16168, "ms", "RR interval"),
    _q("MDC_ECG_V_P_C_RATE", MDC_PART_SCADA, 16994, "/min", "PVC rate"),
    # Pulse oximetry
    _q("MDC_PULS_OXIM_SAT_O2", MDC_PART_SCADA, 19384, "%", "SpO2"),
    _q("MDC_PULS_OXIM_PULS_RATE", MDC_PART_SCADA, 18458, "/min", "Pulse rate (SpO2)"),
    _q("MDC_PULS_OXIM_PERF_REL", MDC_PART_SCADA, 19376, "%", "Perfusion index"),
    # Blood pressure (non-invasive and arterial line)
    _q("MDC_PRESS_BLD_NONINV_SYS", MDC_PART_SCADA, 18949, "mm[Hg]", "NIBP systolic"),
    _q("MDC_PRESS_BLD_NONINV_DIA", MDC_PART_SCADA, 18950, "mm[Hg]", "NIBP diastolic"),
    _q("MDC_PRESS_BLD_NONINV_MEAN", MDC_PART_SCADA, 18951, "mm[Hg]", "NIBP mean"),
    _q("MDC_PULS_RATE_NON_INV", MDC_PART_SCADA, 18474, "/min", "Pulse rate (NIBP)"),
    # Invasive arterial line numerics and their pulse rate; codes as bedside monitors send them over IHE PCD-01
    # (GE B40/B20 HL7 Reference Manual 2062665-001, PCD-01 sample OBX segments).
    _q("MDC_PRESS_BLD_ART_SYS", MDC_PART_SCADA, 18961, "mm[Hg]", "Arterial pressure systolic"),
    _q("MDC_PRESS_BLD_ART_DIA", MDC_PART_SCADA, 18962, "mm[Hg]", "Arterial pressure diastolic"),
    _q("MDC_PRESS_BLD_ART_MEAN", MDC_PART_SCADA, 18963, "mm[Hg]", "Arterial pressure mean"),
    _q("MDC_BLD_PULS_RATE_INV", MDC_PART_SCADA, 18450, "/min", "Pulse rate (invasive BP)"),
    # Temperature and respiration
    _q("MDC_TEMP_BODY", MDC_PART_SCADA, 19292, "Cel", "Body temperature"),
    _q("MDC_TEMP", MDC_PART_SCADA, 19272, "Cel", "Temperature (site unspecified)"),  # monitors' T1/T2 probes
    # No 11073-10101 term names a cold-chain cabinet; the ambient-temperature term is the nearest (documented).
    _q("MDC_TEMP_ROOM", MDC_PART_SCADA, 57436, "Cel", "Room / ambient temperature"),
    _q("MDC_RESP_RATE", MDC_PART_SCADA, 20490, "/min", "Respiration rate"),
    # -- Bedside-monitor terms IHE PCD-01 senders commonly use (issue 16).  Each code checked against a public
    # table: [DK] HL7 Denmark DK Core IG, value set IEEEBasicObservation (github.com/hl7dk/dk-core,
    # input/fsh/valueSets.fsh); [MII] German Medical Informatics Initiative ICU module, value set
    # VS_MII_ICU_Code_Monitoring_und_Vitaldaten_ISO11073 and profile SD_MII_ICU_Herzzeitvolumen (as back-ported
    # in github.com/gematik/spec-ISiK-Vitalparameter-und-Koerpermasze); [MIIts] the MII terminology server's
    # urn:iso:std:iso:11073:10101 (version 2024-12-05), code lookups published in an MII lung-function survey;
    # [CID3688] DICOM PS3.16 CID 3688: MDC 2:768 "ST amplitude, per lead", per-lead codes = base + the lead's
    # code (the same lead codes as the ECG leads above).
    # Respiration rate by method [DK].
    _q("MDC_AWAY_RESP_RATE", MDC_PART_SCADA, 20498, "/min", "Respiration rate (airway flow)"),  # 151570
    _q("MDC_TTHOR_RESP_RATE", MDC_PART_SCADA, 20506, "/min", "Respiration rate (impedance)"),  # 151578
    _q("MDC_CO2_RESP_RATE", MDC_PART_SCADA, 20522, "/min", "Respiration rate (CO2)"),  # 151594
    # Gases [MIIts]: end-tidal CO2 (also sent as MDC_AWAY_CO2_ET, the same code) and inspired O2 (FiO2).
    _q("MDC_CONC_AWAY_CO2_ET", MDC_PART_SCADA, 20636, "mm[Hg]", "End-tidal CO2"),  # 151708
    _q("MDC_CONC_AWAY_O2_INSP", MDC_PART_SCADA, 21124, "%", "Inspired O2 (FiO2)"),  # 152196
    # Temperature sites [DK]; rectal, oral and core also in [MII].
    _q("MDC_TEMP_CORE", MDC_PART_SCADA, 19296, "Cel", "Core temperature"),  # 150368
    _q("MDC_TEMP_SKIN", MDC_PART_SCADA, 19316, "Cel", "Skin temperature"),  # 150388
    _q("MDC_TEMP_TYMP", MDC_PART_SCADA, 19320, "Cel", "Tympanic temperature"),  # 150392
    _q("MDC_TEMP_RECT", MDC_PART_SCADA, 57348, "Cel", "Rectal temperature"),  # 188420
    _q("MDC_TEMP_ORAL", MDC_PART_SCADA, 57352, "Cel", "Oral temperature"),  # 188424
    _q("MDC_TEMP_EAR", MDC_PART_SCADA, 57356, "Cel", "Ear temperature"),  # 188428
    # Haemodynamics [MII]: cardiac output and the pulmonary artery pressures.
    _q("MDC_OUTPUT_CARD", MDC_PART_SCADA, 19204, "L/min", "Cardiac output"),  # 150276
    _q("MDC_PRESS_BLD_ART_PULM_SYS", MDC_PART_SCADA, 18973, "mm[Hg]", "Pulmonary artery pressure systolic"),
    _q("MDC_PRESS_BLD_ART_PULM_DIA", MDC_PART_SCADA, 18974, "mm[Hg]", "Pulmonary artery pressure diastolic"),
    _q("MDC_PRESS_BLD_ART_PULM_MEAN", MDC_PART_SCADA, 18975, "mm[Hg]", "Pulmonary artery pressure mean"),
    # ST deviation per lead [CID3688]: 768 + lead code.
    _q("MDC_ECG_AMPL_ST_I", MDC_PART_SCADA, 769, "mV", "ST level, lead I"),
    _q("MDC_ECG_AMPL_ST_II", MDC_PART_SCADA, 770, "mV", "ST level, lead II"),
    _q("MDC_ECG_AMPL_ST_V1", MDC_PART_SCADA, 771, "mV", "ST level, lead V1"),
    _q("MDC_ECG_AMPL_ST_V2", MDC_PART_SCADA, 772, "mV", "ST level, lead V2"),
    _q("MDC_ECG_AMPL_ST_V3", MDC_PART_SCADA, 773, "mV", "ST level, lead V3"),
    _q("MDC_ECG_AMPL_ST_V4", MDC_PART_SCADA, 774, "mV", "ST level, lead V4"),
    _q("MDC_ECG_AMPL_ST_V5", MDC_PART_SCADA, 775, "mV", "ST level, lead V5"),
    _q("MDC_ECG_AMPL_ST_V6", MDC_PART_SCADA, 776, "mV", "ST level, lead V6"),
    _q("MDC_ECG_AMPL_ST_III", MDC_PART_SCADA, 829, "mV", "ST level, lead III"),
    _q("MDC_ECG_AMPL_ST_AVR", MDC_PART_SCADA, 830, "mV", "ST level, lead aVR"),
    _q("MDC_ECG_AMPL_ST_AVL", MDC_PART_SCADA, 831, "mV", "ST level, lead aVL"),
    _q("MDC_ECG_AMPL_ST_AVF", MDC_PART_SCADA, 832, "mV", "ST level, lead aVF"),
    # Glucose (CGM interstitial fluid, capillary meter) and trend
    _q("MDC_CONC_GLU_ISF", MDC_PART_SCADA, 29140, "mg/dL", "Glucose (interstitial fluid)"),  # 10425 CGM IG
    # Glucose meter (ISO/IEEE 11073-10417): one term per sample type the Glucose Measurement names.
    _q("MDC_CONC_GLU_GEN", MDC_PART_SCADA, 28948, "mg/dL", "Glucose (sample type undetermined)"),
    _q("MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", MDC_PART_SCADA, 29112, "mg/dL", "Glucose (capillary blood)"),
    _q("MDC_CONC_GLU_CAPILLARY_PLASMA", MDC_PART_SCADA, 29116, "mg/dL", "Glucose (capillary plasma)"),
    _q("MDC_CONC_GLU_VENOUS_WHOLEBLOOD", MDC_PART_SCADA, 29120, "mg/dL", "Glucose (venous blood)"),
    _q("MDC_CONC_GLU_VENOUS_PLASMA", MDC_PART_SCADA, 29124, "mg/dL", "Glucose (venous plasma)"),
    _q("MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD", MDC_PART_SCADA, 29128, "mg/dL", "Glucose (arterial blood)"),
    _q("MDC_CONC_GLU_ARTERIAL_PLASMA", MDC_PART_SCADA, 29132, "mg/dL", "Glucose (arterial plasma)"),
    _q("MDC_CONC_GLU_TREND", MDC_PART_PHD_DM, 29400, "mg/dL/min", "Glucose rate of change"),
    # Insulin pump (ISO/IEEE 11073-10419)
    _q("MDC_INS_RESERVOIR", MDC_PART_PHD_DM, 29780, "[iU]", "Insulin reservoir remaining"),
    _q("MDC_INS_BASAL_RATE_SETTING", MDC_PART_PHD_DM, 29692, "[iU]/h", "Basal rate setting"),
    _q("MDC_INS_BOLUS", MDC_PART_PHD_DM, 29736, "[iU]", "Delivered bolus"),
    # Device attributes
    _q("MDC_ATTR_VAL_BATT_CHARGE", MDC_PART_OBJ, 2460, "%", "Battery charge"),
    # Waveforms
    _q("MDC_ECG_ELEC_POTL", MDC_PART_SCADA, 256, "uV", "ECG, unspecified lead", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_I", MDC_PART_SCADA, 257, "uV", "ECG lead I", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_II", MDC_PART_SCADA, 258, "uV", "ECG lead II", Kind.WAVEFORM),
    # Per-lead ECG: term = 256 (MDC_ECG_ELEC_POTL) + the 11073-10101 lead code (I 1, II 2, V1..V6 3..8, III 61,
    # aVR 62, aVL 63, aVF 64: the MDC_ECG_LEAD_* codes DICOM CID 3001 lists as "2:1".."2:64").
    _q("MDC_ECG_ELEC_POTL_V1", MDC_PART_SCADA, 259, "uV", "ECG lead V1", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_V2", MDC_PART_SCADA, 260, "uV", "ECG lead V2", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_V3", MDC_PART_SCADA, 261, "uV", "ECG lead V3", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_V4", MDC_PART_SCADA, 262, "uV", "ECG lead V4", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_V5", MDC_PART_SCADA, 263, "uV", "ECG lead V5", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_V6", MDC_PART_SCADA, 264, "uV", "ECG lead V6", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_III", MDC_PART_SCADA, 317, "uV", "ECG lead III", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_AVR", MDC_PART_SCADA, 318, "uV", "ECG lead aVR", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_AVL", MDC_PART_SCADA, 319, "uV", "ECG lead aVL", Kind.WAVEFORM),
    _q("MDC_ECG_ELEC_POTL_AVF", MDC_PART_SCADA, 320, "uV", "ECG lead aVF", Kind.WAVEFORM),
    _q("MDC_PULS_OXIM_PLETH", MDC_PART_SCADA, 19380, "1", "Plethysmogram", Kind.WAVEFORM),
    _q("MDC_PRESS_BLD_ART_ABP", MDC_PART_SCADA, 18960, "mm[Hg]", "Arterial pressure", Kind.WAVEFORM),
    # Impedance respiration wave: context-free 151780 as bedside monitors send it in PCD-01 (OBX-3
    # 151780^MDC_IMPED_TTHOR^MDC), IHE PCD Rosetta Terminology Mapping.
    _q("MDC_IMPED_TTHOR", MDC_PART_SCADA, 20708, "Ohm", "Transthoracic impedance (respiration)", Kind.WAVEFORM),
)

# Other reference ids senders use for a code above (the code is authoritative; the id only names it).
ALIASES: dict[str, str] = {"MDC_AWAY_CO2_ET": "MDC_CONC_AWAY_CO2_ET"}

BY_REFERENCE: dict[str, Quantity] = {q.reference_id: q for q in _TABLE}
BY_REFERENCE.update({alias: BY_REFERENCE[ref] for alias, ref in ALIASES.items()})
BY_CODE: dict[int, Quantity] = {q.code: q for q in _TABLE}


def quantity(reference_id: str) -> Quantity:
    """The coded quantity for an MDC reference id; KeyError for a quantity the gateway does not emit."""
    return BY_REFERENCE[reference_id]


def all_quantities() -> tuple[Quantity, ...]:
    return _TABLE
