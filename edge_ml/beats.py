"""Is this beat ventricular?  The on-device beat classifier, and the rules that stand in when no model loads.

Both judge a beat against the lead's own dominant beat (`edge_ml.ecg` keeps it): how its shape differs from
the template's (64 points each, normalised the same way), the QRS width, the correlation and amplitude ratio to
the template, and how premature the beat came.  Judging against the patient's own normal beat is what lets a classifier
trained on other patients (the inter-patient split of the MIT-BIH Arrhythmia Database, DS1) work on a new one.

`ModelBeatClassifier` runs the LiteRT model `ecg_beat_classifier` (trained by `edge_ml.training`, checked against
its manifest before it loads).  `RuleBeatClassifier` is the fallback: a wide beat that does not look like the
dominant one, or one that looks nothing like it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge_ml.runtime import ROWS, Model

FEATURES = 68  # shape minus template (64) + width, correlation, log amplitude ratio, RR ratio
MODEL_NAME = "ecg_beat_classifier"


@dataclass(frozen=True, slots=True)
class BeatInput:
    """What a classifier judges a beat by: its shape, its lead's dominant beat (None before there is one), and
    four measures against that beat."""

    shape: npt.NDArray[np.float32]
    template: npt.NDArray[np.float64] | None
    width_ms: float
    correlation: float
    amplitude_ratio: float
    rr_ratio: float


class BeatClassifier(Protocol):
    """The probability that a beat is ventricular."""

    def probability(self, beat: BeatInput) -> float: ...


def probabilities(classifier: BeatClassifier, beats: Sequence[BeatInput]) -> list[float]:
    """The probabilities of many beats: in one call when the classifier can (`ModelBeatClassifier`)."""
    many = getattr(classifier, "probabilities", None)
    if many is not None:
        result: list[float] = many(beats)
        return result
    return [classifier.probability(beat) for beat in beats]


def beat_features(beat: BeatInput) -> npt.NDArray[np.float32]:
    """The model's input vector (training builds it with this very function); before the lead has a dominant
    beat, the shape is its own template."""
    out = np.empty(FEATURES, dtype=np.float32)
    _fill_features(beat, out)
    return out


def _fill_features(beat: BeatInput, out: npt.NDArray[np.float32]) -> None:
    if beat.template is None:
        out[:64] = 0.0  # the shape less itself
    else:
        out[:64] = beat.shape - beat.template  # only how the beat differs from the patient's own: shapes vary by lead
    out[64:] = (
        min(beat.width_ms, 300.0) / 100.0,
        beat.correlation,
        math.log(max(beat.amplitude_ratio, 1e-3)),
        min(beat.rr_ratio, 3.0),
    )


class ModelBeatClassifier:
    """The LiteRT beat classifier.  Beats are judged `ROWS` at a time, by one call of the model on a batch of
    rows (a single beat too: each beat's probability is then the same however many were judged with it)."""

    def __init__(self, model: Model) -> None:
        model.prepare_rows()  # ModelError now, not at the first beat, if the model cannot take a batch
        self.model = model
        self._rows = np.zeros((ROWS, FEATURES), dtype=np.float32)  # reused: the batch's input

    def probability(self, beat: BeatInput) -> float:
        return self.probabilities([beat])[0]

    def probabilities(self, beats: Sequence[BeatInput]) -> list[float]:
        out: list[float] = []
        for lo in range(0, len(beats), ROWS):
            part = beats[lo : lo + ROWS]
            for row, beat in zip(self._rows, part, strict=False):
                _fill_features(beat, row)
            out += self.model.run_rows(self._rows)[: len(part), 0].tolist()
        return out


class RuleBeatClassifier:
    """The fallback without a model: wide and unlike the dominant beat, or nothing like it at all."""

    def probability(self, beat: BeatInput) -> float:
        if beat.template is None:
            return 0.0
        unlike = beat.correlation < 0.8 and (beat.width_ms >= 110.0 or not 0.7 <= beat.amplitude_ratio <= 1.4)
        return 1.0 if unlike or beat.correlation < 0.5 else 0.0
