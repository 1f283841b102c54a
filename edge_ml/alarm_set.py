"""The standard arrhythmia alarm set, its definitions and the kinds of signal that feed it: what the rest of the
gateway (alarm rules, configuration, the pipeline's routing) needs to know of the rhythm analysis without
loading it.  No numpy here, so a gateway with no ECG, pleth or pressure device never imports the signal stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ASYSTOLE",
    "EXTREME_BRADYCARDIA",
    "EXTREME_TACHYCARDIA",
    "VENTRICULAR_TACHYCARDIA",
    "VENTRICULAR_FIBRILLATION",
    "CONDITIONS",
    "ChannelKind",
    "RhythmSettings",
]

ASYSTOLE = "asystole"
EXTREME_BRADYCARDIA = "extreme_bradycardia"
EXTREME_TACHYCARDIA = "extreme_tachycardia"
VENTRICULAR_TACHYCARDIA = "ventricular_tachycardia"
VENTRICULAR_FIBRILLATION = "ventricular_fibrillation"
CONDITIONS = (ASYSTOLE, EXTREME_BRADYCARDIA, EXTREME_TACHYCARDIA, VENTRICULAR_TACHYCARDIA, VENTRICULAR_FIBRILLATION)


class ChannelKind(StrEnum):
    ECG = "ecg"
    PLETH = "pleth"
    ABP = "abp"


@dataclass(frozen=True)
class RhythmSettings:
    """Alarm definitions (IEC 60601-2-27 / Challenge 2015 defaults), per patient when configured."""

    asystole_s: float = 4.0
    brady_bpm: float = 40.0
    brady_beats: int = 5
    tachy_bpm: float = 140.0
    tachy_beats: int = 17
    vt_bpm: float = 100.0
    vt_beats: int = 5
    vf_s: float = 4.0
    vt_evidence: float = 0.5  # mean ventricular probability of the run's beats
    vt_evidence_with_pulse: float = 0.9  # ... when a pulse wave stays unchanged through the run
