"""Streaming ECG analysis: beats, heart rate, signal quality and lead-off, one assessment per second.

Assessments fall on fixed one-second boundaries of the signal (not of the chunks), so, like the QRS
detector underneath, the results do not depend on how the signal was chunked.

Lead-off and asystole both look flat, and are told apart the way the signal allows: a lead that is off
gives a signal that does not move at all (an amplifier at rest or at a rail: the same value sample after
sample), while a heart at standstill still shows the amplifier's noise.  Devices that report electrode
contact themselves (the Heart Rate Service's sensor-contact bit) are believed first, by the caller.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from edge_ml.filters import ecg_filter
from edge_ml.qrs import QrsDetector
from edge_ml.runtime import Model

BEAT_BEFORE_S, BEAT_AFTER_S, BEAT_POINTS = 0.25, 0.45, 64  # the beat model's window (see training)

FLAT_UV = 1e-6  # below this peak-to-peak (in mV: one nanovolt), the signal is not moving at all
LOW_MV = 0.02  # quieter than this, there is no usable QRS even if the lead is on
HIGH_MV = 8.0  # more than this peak-to-peak is saturation or movement
HRV_BEATS = 300  # about five minutes
HRV_MIN_BEATS = 30  # fewer RR intervals than this give no meaningful SDNN or RMSSD


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
    beat_scores: tuple[float, ...] = ()  # anomaly scores of beats whose window completed this second
    sdnn_ms: float | None = None  # heart-rate variability over the last five minutes of beats
    rmssd_ms: float | None = None


class EcgAnalyzer:
    """Beats, rate, quality and (with a beat model) a shape-anomaly score per beat."""

    def __init__(self, fs: float, beat_model: Model | None = None, mains_hz: float = 50.0) -> None:
        self.fs = fs
        self._conditioning = ecg_filter(fs, mains_hz)  # band-pass + mains notch: what quality is judged on
        self._rr_ms: deque[float] = deque(maxlen=HRV_BEATS)
        self._hrv: tuple[float | None, float | None] = (None, None)
        self._model = beat_model
        self._before, self._after = round(BEAT_BEFORE_S * fs), round(BEAT_AFTER_S * fs)
        self._raw = np.zeros(0)
        self._raw_start = 0
        self._to_score: list[int] = []
        self._detector = QrsDetector(fs)
        self._detector_start = 0
        self._second = round(fs)
        self._pending = np.zeros(0)
        self._index = 0  # samples assessed so far (a multiple of one second)
        self._beats: deque[int] = deque(maxlen=9)
        self._new_beats: list[int] = []

    def process(self, samples: npt.ArrayLike) -> list[EcgAssessment]:
        x = np.asarray(samples, dtype=np.float64)
        self._pending = np.concatenate([self._pending, x])
        if self._model is not None:
            self._raw = np.concatenate([self._raw, x])
        out = []
        while len(self._pending) >= self._second:
            # The detector sees whole seconds, so a restart after lead-off falls on the same sample however
            # the signal was chunked.
            window, self._pending = self._pending[: self._second], self._pending[self._second :]
            beats = [self._detector_start + b for b in self._detector.process(window)]
            self._new_beats += beats
            if self._model is not None:
                self._to_score += beats
            self._index += self._second
            assessment = self._assess(window)
            if assessment.lead_off:
                # The signal that comes back after a lead-off (and the jump to it) says nothing about the
                # thresholds learnt before: learn anew.
                self._detector = QrsDetector(self.fs)
                self._detector_start = self._index
                self._beats.clear()
                self._rr_ms.clear()
                self._hrv = (None, None)
            out.append(assessment)
        return out

    def _assess(self, window: npt.NDArray[np.float64]) -> EcgAssessment:
        decided = [b for b in self._new_beats if b < self._index]
        self._new_beats = [b for b in self._new_beats if b >= self._index]
        for beat in decided:
            if self._beats:
                self._rr_ms.append((beat - self._beats[-1]) * 1000.0 / self.fs)
            self._beats.append(beat)
        span = float(np.ptp(window))
        lead_off = span < FLAT_UV
        conditioned = self._conditioning.process(window)
        quality = 0.0 if lead_off else _quality(conditioned, float(np.ptp(conditioned)))
        beats = list(self._beats)
        rate = None
        recent = [b for b in beats if b > self._index - 10 * self.fs]
        if len(recent) >= 3:
            intervals = sorted(b - a for a, b in itertools.pairwise(recent))
            middle = len(intervals) // 2
            median = intervals[middle] if len(intervals) % 2 else (intervals[middle - 1] + intervals[middle]) / 2
            rate = 60.0 * self.fs / median
        # Time without a beat, counted from the last beat or, when none since (re)starting, from the start:
        # a lead that comes back is not an asystole that began when it went off.
        since = (self._index - max(beats[-1] if beats else 0, self._detector_start)) / self.fs
        if decided:  # HRV changes only when beats do
            self._hrv = hrv(self._rr_ms) if len(self._rr_ms) >= HRV_MIN_BEATS else (None, None)
        sdnn, rmssd = self._hrv
        return EcgAssessment(
            self._index, self.fs, rate, since, quality, lead_off, tuple(decided), self._score(), sdnn, rmssd
        )

    def _score(self) -> tuple[float, ...]:
        """Score the beats whose whole window is in this second's signal (the model runs once per beat)."""
        if self._model is None:
            return ()
        scores, waiting = [], []
        for r in self._to_score:
            lo, hi = r - self._before, r + self._after
            if hi > self._index:
                waiting.append(r)
            elif lo >= self._raw_start:
                window = normalise_beat(self._raw[lo - self._raw_start : hi - self._raw_start])
                reconstruction = self._model.run(window)
                scores.append(float(np.mean((reconstruction.ravel() - window) ** 2)))
        self._to_score = waiting
        keep_from = min([self._index - self._before - self._after, *(r - self._before for r in waiting)])
        if keep_from > self._raw_start:
            self._raw = self._raw[keep_from - self._raw_start :]
            self._raw_start = keep_from
        return tuple(scores)


@lru_cache(maxsize=8)
def _grid(length: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return np.linspace(0.0, length - 1.0, BEAT_POINTS), np.arange(length, dtype=np.float64)


def normalise_beat(window: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """The beat model's input: the window linearly resampled to 64 points, minus its median, over its largest
    swing (the training script uses this very function)."""
    positions, samples = _grid(len(window))
    resampled = np.interp(positions, samples, window)
    centred = resampled - np.median(resampled)
    scale = float(np.max(np.abs(centred))) or 1.0
    return (centred / scale).astype(np.float32)


def _quality(window: npt.NDArray[np.float64], span: float) -> float:
    """0..1 from the conditioned signal: a clean ECG is sharply peaked (its QRS complexes), noise is not.

    The measure is the window's kurtosis: about 3 for Gaussian noise, well above 5 for an ECG with a QRS in
    it.  Saturation scores 0; a very quiet signal (no QRS to judge by) scores 0.5."""
    if span > HIGH_MV:
        return 0.0
    if span < LOW_MV:
        return 0.5
    centred = window - window.mean()
    squared = centred * centred
    n = len(window)
    variance = float(squared.sum()) / n or 1e-12
    kurtosis = float(np.dot(squared, squared)) / n / (variance * variance)
    return float(max(0.0, min(1.0, (kurtosis - 3.0) / 3.0)))


def hrv(rr_ms: npt.ArrayLike) -> tuple[float, float]:
    """(SDNN, RMSSD) in ms of an RR series."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if len(rr) < 2:
        return float("nan"), float("nan")
    return float(np.std(rr, ddof=1)), float(np.sqrt(np.mean(np.diff(rr) ** 2)))
