"""The MDC/UCUM table: unique codes, known anchors, and coverage of everything the drivers emit."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway.nomenclature import BY_CODE, BY_REFERENCE, Kind, all_quantities, quantity

REPO = Path(__file__).resolve().parent.parent
REF = re.compile(r"^MDC_[A-Z0-9_]+$")  # a reference id, not a string that merely starts with one


def test_codes_and_reference_ids_are_unique() -> None:
    assert len(BY_CODE) == len(all_quantities())
    assert len(BY_REFERENCE) == len(all_quantities())


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


def test_waveforms_and_numerics_are_distinguished() -> None:
    assert quantity("MDC_ECG_ELEC_POTL").kind is Kind.WAVEFORM
    assert quantity("MDC_PULS_OXIM_SAT_O2").kind is Kind.NUMERIC
