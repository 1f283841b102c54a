"""Streaming plethysmogram analysis: pulses, pulse rate and perfusion index, one assessment per second.

Like the ECG analysis, it works on whole seconds of signal (so chunking does not change its results):
band-pass 0.5-8 Hz with carried filter state, then pulse peaks in the last three seconds.  A pleth that
keeps pulsing is evidence of a beating heart: the alarm engine uses it to veto an ECG asystole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import signal

WINDOW_S = 3.0
MIN_PULSE_INTERVAL_S = 0.3  # 200 /min


@dataclass(frozen=True)
class PlethAssessment:
    end_index: int
    pulsatile: bool
    pulse_rate_bpm: float | None
    perfusion_index_pct: float | None


class PlethAnalyzer:
    def __init__(self, fs: float) -> None:
        self.fs = fs
        sos = signal.butter(2, [0.5, 8.0], btype="bandpass", fs=fs, output="sos")
        self._sections = [(s[:3], s[3:]) for s in sos]
        self._zi = np.zeros((len(self._sections), 2))
        self._second = round(fs)
        self._pending = np.zeros(0)
        self._filtered = np.zeros(0)
        self._raw = np.zeros(0)
        self._index = 0

    def process(self, samples: npt.ArrayLike) -> list[PlethAssessment]:
        self._pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float64)])
        out = []
        while len(self._pending) >= self._second:
            window, self._pending = self._pending[: self._second], self._pending[self._second :]
            filtered = window
            for k, (b, a) in enumerate(self._sections):
                filtered, self._zi[k] = signal.lfilter(b, a, filtered, zi=self._zi[k])
            keep = round(WINDOW_S * self.fs)
            self._filtered = np.concatenate([self._filtered, filtered])[-keep:]
            self._raw = np.concatenate([self._raw, window])[-keep:]
            self._index += self._second
            out.append(self._assess())
        return out

    def _assess(self) -> PlethAssessment:
        x = self._filtered
        amplitude = float(np.ptp(x)) if len(x) else 0.0
        if len(x) < round(2 * self.fs) or amplitude <= 0:
            return PlethAssessment(self._index, False, None, None)
        peaks, _ = signal.find_peaks(
            x, distance=max(1, round(MIN_PULSE_INTERVAL_S * self.fs)), prominence=0.3 * amplitude
        )
        rate = None
        if len(peaks) >= 2:
            rate = float(60.0 * self.fs / np.median(np.diff(peaks)))
        pulsatile = len(peaks) >= 2 and rate is not None and 25.0 <= rate <= 250.0
        dc = float(np.mean(self._raw))
        perfusion = 100.0 * amplitude / dc if dc > 0 and pulsatile else None
        return PlethAssessment(self._index, pulsatile, rate if pulsatile else None, perfusion)
