"""A causal, streaming QRS detector (Pan-Tompkins family) whose output does not depend on chunking.

Stages, each with carried state: band-pass 5-15 Hz (Butterworth, second-order sections), five-point
derivative, squaring, 150 ms moving-window integration.  Candidate peaks of the integrated signal are local
maxima that dominate +/-200 ms (the refractory period); a candidate is decided only once the samples 200 ms
after it are known, so every candidate is decided exactly once, on the same data, whatever the chunk sizes.
Decisions use the classic adaptive signal/noise peak levels, T-wave discrimination by slope within 360 ms
of a beat, and search-back at half the threshold when no beat came for 1.66 average RR intervals.  The R peak
is placed at the largest band-passed deflection in the integration window, minus the filter's group delay.

Detections are sample indices counted from the first sample the detector saw.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import signal
from scipy.ndimage import maximum_filter1d

from edge_ml.filters import StreamingFilter

LEARN_S = 2.0
REFRACTORY_S = 0.2
T_WAVE_S = 0.36
WINDOW_S = 0.15


@dataclass
class _Levels:
    spk: float = 0.0
    npk: float = 0.0

    @property
    def threshold1(self) -> float:
        return self.npk + 0.25 * (self.spk - self.npk)

    @property
    def threshold2(self) -> float:
        return 0.5 * self.threshold1


@dataclass
class _Candidate:
    index: int  # sample index of the integrated-signal peak
    height: float  # integrated-signal value
    slope: float  # largest derivative magnitude in the window before it
    r_peak: int  # the R wave: largest band-passed deflection in the window, less the filter delay


@dataclass
class QrsDetector:
    """Feed chunks with `process(samples)`; it returns the R-peak sample indices decided in that call."""

    fs: float
    _sos: npt.NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._sos = signal.butter(2, [5.0, 15.0], btype="bandpass", fs=self.fs, output="sos")
        self._bandpass = StreamingFilter(self._sos)
        b, a = signal.sos2tf(self._sos)
        _, delay = signal.group_delay((b, a), w=[10.0], fs=self.fs)
        self._delay = round(float(delay[0]))
        self._window = max(1, round(WINDOW_S * self.fs))
        self._refractory = round(REFRACTORY_S * self.fs)
        self._t_wave = round(T_WAVE_S * self.fs)
        self._learn = round(LEARN_S * self.fs)
        self._bp = _Ring()  # band-passed signal
        self._deriv = _Ring()  # derivative
        self._mwi = _Ring()  # moving-window integral
        self._diff_tail = np.zeros(4)
        self._sq_tail = np.zeros(self._window - 1)
        self._seen = 0  # samples received
        self._learn_max = 0.0
        self._last_input = 0.0
        self._learn_sum = 0.0
        self._decided = 0  # candidates decided up to this index (exclusive)
        self._levels = _Levels()
        self._learned = False
        self._rr: deque[int] = deque(maxlen=8)
        self._rr_ok: deque[int] = deque(maxlen=8)
        self._last_qrs: int | None = None
        self._last_slope = 0.0
        self._since_last: list[_Candidate] = []  # noise candidates since the last beat (for search-back)
        self.beats: list[int] = []

    # -- feature stages --------------------------------------------------------------------------------------
    def process(self, samples: npt.ArrayLike) -> list[int]:
        x = np.asarray(samples, dtype=np.float64)
        if x.size == 0:
            return []
        self._last_input = float(x[-1])
        bp = self._bandpass.process(x)
        padded = np.concatenate([self._diff_tail, bp])
        deriv = (2 * padded[4:] + padded[3:-1] - padded[1:-3] - 2 * padded[:-4]) / 8.0
        self._diff_tail = padded[-4:]
        squared = deriv * deriv
        padded_sq = np.concatenate([self._sq_tail, squared])
        csum = np.cumsum(np.concatenate([[0.0], padded_sq]))
        mwi = (csum[self._window :] - csum[: -self._window]) / self._window
        self._sq_tail = padded_sq[-(self._window - 1) :] if self._window > 1 else np.zeros(0)
        if not self._learned and self._seen < self._learn:
            learning = mwi[: self._learn - self._seen]
            self._learn_max = max(self._learn_max, float(learning.max()))
            self._learn_sum += float(learning.sum())
        self._bp.extend(bp)
        self._deriv.extend(deriv)
        self._mwi.extend(mwi)
        self._seen += x.size
        found = self._decide()
        # Keep what undecided candidates may still need: their +/- windows.
        keep = self._decided - self._refractory - self._window - 8
        for ring in (self._bp, self._deriv, self._mwi):
            ring.trim(keep)
        return found

    def finish(self) -> list[int]:
        """End of the record: decide the last candidates by holding the last sample for 200 ms more."""
        if self._seen == 0:
            return []
        return self.process(np.full(self._refractory + self._window, self._last_input))

    # -- decisions -------------------------------------------------------------------------------------------
    def _decide(self) -> list[int]:
        if not self._learned:
            if self._seen < self._learn:
                return []
            self._levels = _Levels(spk=0.25 * self._learn_max, npk=0.5 * self._learn_sum / self._learn)
            self._learned = True
        # Candidates i are decidable when [i - R, i + R] is known.
        end = self._seen - self._refractory
        start = max(self._decided, self._refractory)
        if end <= start:
            return []
        lo = start - self._refractory
        mwi = self._mwi.window(lo, end + self._refractory)
        peak = maximum_filter1d(mwi, size=2 * self._refractory + 1, mode="nearest")
        inner = slice(start - lo, end - lo)
        values = mwi[inner]
        left = mwi[start - lo - 1 : end - lo - 1]
        is_peak = (values == peak[inner]) & (values > left) & (values > 0)
        found: list[int] = []
        for offset in np.flatnonzero(is_peak):
            index = start + int(offset)
            deriv = self._deriv.window(index - self._window, index + 1)
            lo = index - self._window
            band = self._bp.window(lo, index + 1)
            r_peak = max(lo, self._bp.start) + int(np.argmax(np.abs(band))) - self._delay
            candidate = _Candidate(index, float(values[offset]), float(np.abs(deriv).max()), r_peak)
            found.extend(self._search_back(index))
            found.extend(self._classify(candidate))
        found.extend(self._search_back(end))
        self._decided = end
        return found

    def _classify(self, candidate: _Candidate) -> list[int]:
        levels = self._levels
        if candidate.height > levels.threshold1:
            if (
                self._last_qrs is not None
                and candidate.index - self._last_qrs < self._t_wave
                and candidate.slope < 0.5 * self._last_slope
            ):
                levels.npk = 0.125 * candidate.height + 0.875 * levels.npk  # a T wave
                self._since_last.append(candidate)
                return []
            levels.spk = 0.125 * candidate.height + 0.875 * levels.spk
            return [self._accept(candidate)]
        levels.npk = 0.125 * candidate.height + 0.875 * levels.npk
        self._since_last.append(candidate)
        return []

    def _search_back(self, now: int) -> list[int]:
        """No beat for 1.66 average RR: the largest candidate since the last beat above threshold 2 is one."""
        if self._last_qrs is None or len(self._rr_ok) < 2:
            return []
        limit = self._last_qrs + round(1.66 * sum(self._rr_ok) / len(self._rr_ok))
        if now <= limit:
            return []
        eligible = [
            c
            for c in self._since_last
            if c.index <= limit and c.index - self._last_qrs > self._refractory and c.height > self._levels.threshold2
        ]
        if not eligible:
            return []
        best = max(eligible, key=lambda c: c.height)
        self._levels.spk = 0.25 * best.height + 0.75 * self._levels.spk
        return [self._accept(best)]

    def _accept(self, candidate: _Candidate) -> int:
        if self._last_qrs is not None:
            rr = candidate.index - self._last_qrs
            self._rr.append(rr)
            average = sum(self._rr_ok) / len(self._rr_ok) if self._rr_ok else float(rr)
            if not self._rr_ok or 0.92 * average <= rr <= 1.16 * average or len(self._rr_ok) < 2:
                self._rr_ok.append(rr)
            elif len(self._rr) == self._rr.maxlen:
                # Rhythm changed for good: follow the recent intervals.
                self._rr_ok = deque(self._rr, maxlen=8)
        self._last_qrs = candidate.index
        self._last_slope = candidate.slope
        self._since_last = [c for c in self._since_last if c.index > candidate.index]
        self.beats.append(candidate.r_peak)
        return candidate.r_peak


class _Ring:
    """A stream's recent samples, addressable by absolute sample index; the owner trims what it no longer needs."""

    def __init__(self) -> None:
        self._data = np.zeros(0)
        self._start = 0

    def extend(self, values: npt.NDArray[np.float64]) -> None:
        self._data = np.concatenate([self._data, values])

    @property
    def start(self) -> int:
        return self._start

    def trim(self, keep_from: int) -> None:
        excess = keep_from - self._start
        if excess > 0:
            self._data = self._data[excess:]
            self._start += excess

    def window(self, lo: int, hi: int) -> npt.NDArray[np.float64]:
        lo = max(lo, self._start)
        return self._data[lo - self._start : max(lo, hi) - self._start]


def score(detections: list[int], reference: list[int], fs: float, window_s: float = 0.15) -> tuple[int, int, int]:
    """(TP, FP, FN) matching each reference beat to at most one detection within `window_s` (ANSI/AAMI EC57)."""
    tolerance = window_s * fs
    detections = sorted(detections)
    used = [False] * len(detections)
    tp = 0
    j = 0
    for beat in sorted(reference):
        while j < len(detections) and detections[j] < beat - tolerance:
            j += 1
        k = j
        best = None
        while k < len(detections) and detections[k] <= beat + tolerance:
            if not used[k] and (best is None or abs(detections[k] - beat) < abs(detections[best] - beat)):
                best = k
            k += 1
        if best is not None:
            used[best] = True
            tp += 1
    return tp, len(detections) - tp, len(reference) - tp
