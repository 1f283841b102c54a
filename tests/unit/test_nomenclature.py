"""The MDC/UCUM table: unique codes, known anchors, and coverage of everything the drivers emit."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway.core.nomenclature import ALIASES, BY_CODE, BY_REFERENCE, Kind, all_quantities, display_unit, quantity

REPO = Path(__file__).resolve().parents[2]
REF = re.compile(r"^MDC_[A-Z0-9_]+$")  # a reference id, not a string that merely starts with one


def test_codes_and_reference_ids_are_unique() -> None:
    assert len(BY_CODE) == len(all_quantities())
    assert len(BY_REFERENCE) == len(all_quantities()) + len(ALIASES)
    assert all(BY_REFERENCE[alias] is quantity(ref) for alias, ref in ALIASES.items())


def test_anchor_codes_match_ieee_11073_10101() -> None:
    # Context-free codes as published in the 11073-10101 nomenclature and used by the PHD IG examples.
    anchors = {
        "MDC_ECG_HEART_RATE": (147842, "/min"),
        "MDC_PULS_OXIM_SAT_O2": (150456, "%"),
        "MDC_PULS_OXIM_PULS_RATE": (149530, "/min"),
        "MDC_PRESS_BLD_NONINV_SYS": (150021, "mm[Hg]"),
        "MDC_TEMP_BODY": (150364, "Cel"),
        "MDC_CONC_GLU_ISF": (160212, "mg/dL"),  # 2 * 65536 + 29140
        "MDC_ATTR_VAL_BATT_CHARGE": (67996, "%"),
        "MDC_ECG_ELEC_POTL_II": (131330, "uV"),
        "MDC_INS_RESERVOIR": ((128 << 16) | 29780, "[iU]"),
    }
    for ref, (code, unit) in anchors.items():
        q = quantity(ref)
        assert (q.code, q.ucum) == (code, unit), ref


def test_every_quantity_referenced_in_code_is_in_the_table() -> None:
    """Any string literal "MDC_..." passed to quantity() or used as a reference in drivers/ exists here."""
    used: set[str] = set()
    for folder in ("drivers", "gateway", "edge_ml", "cloud_sync", "hil", "config"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "nomenclature.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and REF.match(node.value):
                    used.add(node.value)
    used -= {"MDC_PART_OBJ", "MDC_PART_SCADA", "MDC_PART_PHD_DM"}
    assert used, "drivers reference quantities"
    assert used <= set(BY_REFERENCE), used - set(BY_REFERENCE)


def test_bedside_monitor_terms_match_public_tables() -> None:
    """The PCD-01 terms added for bedside monitors, each against the public table cited in nomenclature.py."""
    published = {
        # HL7 Denmark DK Core, value set IEEEBasicObservation
        "MDC_AWAY_RESP_RATE": 151570,
        "MDC_TTHOR_RESP_RATE": 151578,
        "MDC_CO2_RESP_RATE": 151594,
        "MDC_TEMP_CORE": 150368,
        "MDC_TEMP_SKIN": 150388,
        "MDC_TEMP_TYMP": 150392,
        "MDC_TEMP_RECT": 188420,
        "MDC_TEMP_ORAL": 188424,
        "MDC_TEMP_EAR": 188428,
        # MII ICU module (ISO 11073 value set, cardiac output profile)
        "MDC_OUTPUT_CARD": 150276,
        "MDC_PRESS_BLD_ART_PULM_SYS": 150045,
        "MDC_PRESS_BLD_ART_PULM_DIA": 150046,
        "MDC_PRESS_BLD_ART_PULM_MEAN": 150047,
        # MII terminology server, urn:iso:std:iso:11073:10101 v2024-12-05
        "MDC_CONC_AWAY_CO2_ET": 151708,
        "MDC_AWAY_CO2_ET": 151708,
        "MDC_CONC_AWAY_O2_INSP": 152196,
        # DICOM PS3.16 CID 3688: 2:768 ST amplitude per lead + lead code (I 1, II 2, V1 3, III 61, aVF 64)
        "MDC_ECG_AMPL_ST_I": 131841,
        "MDC_ECG_AMPL_ST_II": 131842,
        "MDC_ECG_AMPL_ST_V1": 131843,
        "MDC_ECG_AMPL_ST_III": 131901,
        "MDC_ECG_AMPL_ST_AVF": 131904,
    }
    for ref, code in published.items():
        assert quantity(ref).code == code, ref
    assert quantity("MDC_OUTPUT_CARD").ucum == "L/min" and quantity("MDC_ECG_AMPL_ST_II").ucum == "mV"
    assert len(all_quantities()) >= 70  # was 48 (46 numerics and waveforms the drivers knew)


def test_waveforms_and_numerics_are_distinguished() -> None:
    assert quantity("MDC_ECG_ELEC_POTL").kind is Kind.WAVEFORM
    assert quantity("MDC_PULS_OXIM_SAT_O2").kind is Kind.NUMERIC


def test_every_unit_has_a_readable_form() -> None:
    """Screens show units as people write them: no UCUM brackets (which Rich would also take for markup)."""
    assert display_unit("Cel") == "°C" and display_unit("mm[Hg]") == "mmHg" and display_unit("[iU]") == "IU"
    for q in all_quantities():
        shown = q.display_unit
        assert "[" not in shown and "]" not in shown and shown != "Cel", (q.reference_id, shown)
