"""Streaming analysis of a pulsatile wave (plethysmogram or arterial pressure): pulses, their amplitude, rate
and quality, one assessment per second.

Like the ECG analysis it works on whole seconds of signal, so chunking does not change its results.  Pulses
come from the slope-sum detector in `edge_ml.qrs`; each pulse's amplitude is its rise from the foot before it
to the peak after it.  A pulse wave that keeps pulsing, with plausible and consistent pulses, is evidence of a
perfusing heart beat: the rhythm rules use it to veto asystole and extreme bradycardia and to weigh
ventricular tachycardia and fibrillation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_ml.filters import Seconds
from edge_ml.qrs import PulseDetector

FOOT_S = 0.3  # the foot is the minimum this long before the upstroke, the peak the maximum this long after
HISTORY_S = 4.0
MIN_RATE_BPM, MAX_RATE_BPM = 20.0, 250.0
MIN_ABP_PULSE_MMHG = 4.0  # a narrower pressure pulse is a damped line or a flush, not a beat
AMPLITUDES = 8  # pulses the amplitude consistency is judged over


@dataclass(frozen=True, slots=True)
class Pulse:
    index: int  # the steepest upstroke, samples from the wave's first sample
    amplitude: float  # foot to peak, in the wave's units
    confidence: float  # detector height over its running level


@dataclass(frozen=True)
class PulseAssessment:
    """One second of a pulse wave."""

    end_index: int
    sample_rate_hz: float
    flat: bool  # the wave does not move (sensor off, line closed, no pulse at all)
    quality: float  # 0 (unusable) .. 1 (clean pulses of consistent size)
    last_pulse_index: int | None
    pulses: tuple[Pulse, ...]  # pulses measured during this second
    pulse_rate_bpm: float | None  # median of the last ten seconds' intervals
    mean_level: float  # mean of the last four seconds (mean arterial pressure for ABP)
    perfusion_index_pct: float | None = None  # pleth only: pulsatile over steady component

    @property
    def pulsatile(self) -> bool:
        """Usable pulses are arriving (at a plausible rate, from a wave of adequate quality)."""
        return self.quality >= 0.5 and self.pulse_rate_bpm is not None

    def seconds_since_pulse(self) -> float:
        last = self.last_pulse_index if self.last_pulse_index is not None else 0
        return (self.end_index - last) / self.sample_rate_hz


class PulseAnalyzer:
    """Pulses, rate and quality of a pleth (`pressure=False`) or arterial pressure (`pressure=True`) wave."""

    def __init__(self, fs: float, *, pressure: bool = False) -> None:
        self.fs = fs
        self.pressure = pressure
        self._detector = PulseDetector(fs)
        self._seconds = Seconds(fs)
        self._second = self._seconds.length
        self._history = np.zeros(0)
        self._keep = round(HISTORY_S * fs)
        self._foot = round(FOOT_S * fs)
        self._index = 0
        self._waiting: list[tuple[int, float]] = []
        self._last_pulse: int | None = None
        self._recent: deque[int] = deque(maxlen=30)
        self._amplitudes: deque[float] = deque(maxlen=AMPLITUDES)

    def process(self, samples: npt.ArrayLike) -> list[PulseAssessment]:
        return [self._step(window) for window in self._seconds.feed(samples)]

    def _step(self, window: npt.NDArray[np.float64]) -> PulseAssessment:
        for detection in self._detector.process(window):
            self._waiting.append((detection.index, detection.confidence))
            self._last_pulse = detection.index
        self._index += self._second
        self._history = np.concatenate([self._history, window])[-self._keep :]
        flat = float(np.ptp(self._history)) <= 1e-9 * max(1.0, float(np.abs(self._history).max()))
        pulses = self._measure_ready()
        recent = [p for p in self._recent if p > self._index - 10 * self.fs]
        interval = float(np.median(np.diff(recent))) if len(recent) >= 3 else 0.0
        rate = 60.0 * self.fs / interval if interval > 0 else None  # pulses on one sample give no rate
        if rate is not None and not MIN_RATE_BPM <= rate <= MAX_RATE_BPM:
            rate = None
        mean_level = float(self._history.mean())
        quality = 0.0 if flat else self._quality(rate, mean_level)
        perfusion = None
        if not self.pressure and self._amplitudes and mean_level > 0 and quality >= 0.5:
            perfusion = 100.0 * float(np.median(self._amplitudes)) / mean_level
        return PulseAssessment(
            self._index, self.fs, flat, quality, self._last_pulse, tuple(pulses), rate, mean_level, perfusion
        )

    def _measure_ready(self) -> list[Pulse]:
        ready = [(i, c) for i, c in self._waiting if i + self._foot <= self._index]
        if not ready:
            return []
        self._waiting = [(i, c) for i, c in self._waiting if i + self._foot > self._index]
        start = self._index - len(self._history)
        pulses = []
        for index, confidence in ready:
            self._recent.append(index)
            lo, hi = max(index - self._foot, start), index + self._foot
            if hi - start > len(self._history) or index - start < 1:
                continue
            amplitude = float(
                self._history[index - start : hi - start].max() - self._history[lo - start : index - start].min()
            )
            self._amplitudes.append(amplitude)
            pulses.append(Pulse(index, amplitude, confidence))
        return pulses

    def _quality(self, rate: float | None, mean_level: float) -> float:
        """1 for pulses at a plausible rate with amplitudes that agree; less as they scatter; 0 with none."""
        if rate is None or len(self._amplitudes) < 3:
            return 0.0
        amplitudes = np.array(self._amplitudes)
        median = float(np.median(amplitudes))
        if median <= 0:
            return 0.0
        if self.pressure and (median < MIN_ABP_PULSE_MMHG or not 10.0 <= mean_level <= 250.0):
            return 0.0
        spread = float(np.median(np.abs(amplitudes - median))) / median  # robust relative spread
        return float(max(0.0, min(1.0, 1.0 - 2.0 * spread)))
