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
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge_ml.runtime import Model

FEATURES = 68  # shape minus template (64) + width, correlation, log amplitude ratio, RR ratio
MODEL_NAME = "ecg_beat_classifier"


class BeatClassifier(Protocol):
    """The probability that a beat is ventricular, from its shape and its lead's dominant beat."""

    def probability(
        self,
        shape: npt.NDArray[np.float32],
        template: npt.NDArray[np.float64] | None,
        width_ms: float,
        correlation: float,
        amplitude_ratio: float,
        rr_ratio: float,
    ) -> float: ...


def beat_features(
    shape: npt.NDArray[np.float32],
    template: npt.NDArray[np.float64],
    width_ms: float,
    correlation: float,
    amplitude_ratio: float,
    rr_ratio: float,
) -> npt.NDArray[np.float32]:
    """The model's input vector (training builds it with this very function)."""
    scalars = (
        min(width_ms, 300.0) / 100.0,
        correlation,
        math.log(max(amplitude_ratio, 1e-3)),
        min(rr_ratio, 3.0),
    )
    out = np.empty(FEATURES, dtype=np.float32)
    out[:64] = shape - template  # only how the beat differs from the patient's own: absolute shapes vary by lead
    out[64:] = scalars
    return out


class ModelBeatClassifier:
    """The LiteRT beat classifier; before the lead has a dominant beat, the shape is its own template."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def probability(
        self,
        shape: npt.NDArray[np.float32],
        template: npt.NDArray[np.float64] | None,
        width_ms: float,
        correlation: float,
        amplitude_ratio: float,
        rr_ratio: float,
    ) -> float:
        reference = template if template is not None else shape.astype(np.float64)
        x = beat_features(shape, reference, width_ms, correlation, amplitude_ratio, rr_ratio)
        return float(self.model.run(x).ravel()[0])


class RuleBeatClassifier:
    """The fallback without a model: wide and unlike the dominant beat, or nothing like it at all."""

    def probability(
        self,
        shape: npt.NDArray[np.float32],
        template: npt.NDArray[np.float64] | None,
        width_ms: float,
        correlation: float,
        amplitude_ratio: float,
        rr_ratio: float,
    ) -> float:
        if template is None:
            return 0.0
        unlike = correlation < 0.8 and (width_ms >= 110.0 or not 0.7 <= amplitude_ratio <= 1.4)
        return 1.0 if unlike or correlation < 0.5 else 0.0
