"""Streaming ECG analysis: beats, heart rate, signal quality and lead-off, one assessment per second.

Assessments fall on fixed one-second boundaries of the signal (not of the chunks), so, like the QRS
detector underneath, the results do not depend on how the signal was chunked.

Lead-off and asystole both look flat, and are told apart the way the signal allows: a lead that is off
gives a signal that does not move at all (an amplifier at rest or at a rail: the same value sample after
sample), while a heart at standstill still shows the amplifier's noise.  Devices that report electrode
contact themselves (the Heart Rate Service's sensor-contact bit) are believed first, by the caller.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_ml.qrs import QrsDetector

FLAT_UV = 1e-6  # below this peak-to-peak (in mV: one nanovolt), the signal is not moving at all
LOW_MV = 0.02  # quieter than this, there is no usable QRS even if the lead is on
HIGH_MV = 8.0  # more than this peak-to-peak is saturation or movement
NOISE_RATIO = 0.6  # high-frequency share of the signal's energy above which quality is poor


@dataclass(frozen=True)
class EcgAssessment:
    """One second of ECG: where it ends, and what can be said about it."""

    end_index: int
    sample_rate_hz: float
    heart_rate_bpm: float | None
    seconds_since_beat: float | None
    quality: float  # 0 (unusable) .. 1 (clean)
    lead_off: bool
    beats: tuple[int, ...]  # R peaks decided during this second


class EcgAnalyzer:
    def __init__(self, fs: float) -> None:
        self.fs = fs
        self._detector = QrsDetector(fs)
        self._second = round(fs)
        self._pending = np.zeros(0)
        self._index = 0  # samples assessed so far (a multiple of one second)
        self._beats: deque[int] = deque(maxlen=9)
        self._new_beats: list[int] = []

    def process(self, samples: npt.ArrayLike) -> list[EcgAssessment]:
        x = np.asarray(samples, dtype=np.float64)
        self._new_beats += self._detector.process(x)
        self._pending = np.concatenate([self._pending, x])
        out = []
        while len(self._pending) >= self._second:
            window, self._pending = self._pending[: self._second], self._pending[self._second :]
            self._index += self._second
            out.append(self._assess(window))
        return out

    def _assess(self, window: npt.NDArray[np.float64]) -> EcgAssessment:
        decided = [b for b in self._new_beats if b < self._index]
        self._new_beats = [b for b in self._new_beats if b >= self._index]
        self._beats.extend(decided)
        span = float(np.ptp(window))
        lead_off = span < FLAT_UV
        quality = 0.0 if lead_off else _quality(window, span)
        beats = list(self._beats)
        rate = None
        recent = [b for b in beats if b > self._index - 10 * self.fs]
        if len(recent) >= 3:
            rr = np.diff(recent) / self.fs
            rate = float(60.0 / np.median(rr))
        since = (self._index - beats[-1]) / self.fs if beats else None
        return EcgAssessment(self._index, self.fs, rate, since, quality, lead_off, tuple(decided))


def _quality(window: npt.NDArray[np.float64], span: float) -> float:
    if span > HIGH_MV:
        return 0.0
    if span < LOW_MV:
        return 0.5  # very quiet: a heart at standstill, or a weak lead; no QRS to judge by
    centred = window - window.mean()
    energy = float(np.sum(centred * centred)) or 1e-12
    high = float(np.sum(np.diff(window) ** 2)) / 2.0  # the energy of the sample-to-sample changes
    return float(max(0.0, min(1.0, 1.0 - (high / energy - NOISE_RATIO))))


def hrv(rr_ms: npt.ArrayLike) -> tuple[float, float]:
    """(SDNN, RMSSD) in ms of an RR series."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if len(rr) < 2:
        return float("nan"), float("nan")
    return float(np.std(rr, ddof=1)), float(np.sqrt(np.mean(np.diff(rr) ** 2)))
