"""Causal, streaming beat detectors whose output does not depend on chunking: QRS complexes in an ECG lead,
pulses in an arterial pressure or plethysmogram wave.

Both share one decision stage (`_PeakTrain`) over a feature signal:
- QRS: band-pass 5-15 Hz (Butterworth, second-order sections), five-point derivative, its magnitude, and a
  150 ms moving-window integral (Pan-Tompkins, with the magnitude instead of the square so the feature is
  linear in amplitude: a beat half as tall scores half, not a quarter).
- Pulse: low-pass 16 Hz, then the slope sum function of Zong et al. (the rises over the last 128 ms), whose
  peak marks the systolic upstroke of each pulse.

Candidates are local maxima of the feature that dominate +/- a refractory period; a candidate is decided only
once the samples a refractory period after it are known, so each is decided once, on the same data, whatever
the chunk sizes.  A candidate is a beat when it exceeds `THRESHOLD` times the median height of the last eight
beats.  The threshold has no noise term on purpose: in Pan-Tompkins' form (noise + 0.25 (signal - noise)) a
missed beat raises the noise level, which raises the threshold, which misses more beats; here missed beats
change nothing.  Noise is handled by three rules instead: T-wave discrimination (a candidate within 360 ms of
a beat whose steepest slope is under half the beat's is a T wave), search-back (no beat for 1.5 median RR:
the largest candidate since the last beat above half the threshold is one), and re-learning (no beat for
`LOST_S`: the levels are stale, the largest candidate clearly above the noise is taken).  The first
`LEARN_S` seconds set the initial level and are then decided with it, so the first beats are not lost.

Thresholds were tuned on the training half (DS1) of the MIT-BIH Arrhythmia Database only.
Detections are sample indices counted from the first sample the detector saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_ml.filters import Coefficients, StreamingFilter, bandpass, group_delay_samples, lowpass

LEARN_S = 2.0
THRESHOLD = 0.4  # of the median beat height
SEARCH_BACK_RR = 1.5  # median RR intervals without a beat before searching back
LOST_S = 2.5  # no beat for this long: search back over everything since the last beat
RELEARN_S = 8.0  # no beat for this long: the levels are stale, learn them anew
HISTORY = 8  # beats (and noise peaks, and RR intervals) the levels are medians of
# A candidate's feature must exceed this share of the signal's magnitude: below it is the filters' rounding (a flat
# or Nyquist-only signal), which no threshold relative to earlier "beats" would otherwise tell from a pulse.
NUMERICAL_FLOOR = 1e-9


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected beat: where it is, and how sure the detector was."""

    index: int  # the fiducial point: the R peak, or the pulse's steepest upstroke
    height: float  # feature height at the candidate
    confidence: float  # height over the running beat level (about 1 for a typical beat)
    searched_back: bool  # found by search-back or re-learning, below the normal threshold
    slope: float  # steepest slope in the window before the candidate (QRS: |derivative| over the 150 ms window)


@dataclass(slots=True)
class _Candidate:
    index: int  # sample index of the feature peak
    height: float
    slope: float
    fiducial: int


@dataclass(slots=True)
class _Window:
    """The feature a detector can now decide: [start, end), with `reach` samples of context each side from `lo`."""

    feature: npt.NDArray[np.float64]  # from lo to end + reach
    start: int
    end: int
    lo: int
    reach: int
    floor: float

    @property
    def peak_args(self) -> tuple[npt.NDArray[np.float64], int, int, int, float]:
        return self.feature, self.start - self.lo, self.end - self.lo, self.reach, self.floor


def _median(values: deque[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


class _PeakTrain:
    """The shared decision stage: feed feature chunks, get beats decided in that call."""

    def __init__(self, fs: float, refractory_s: float, t_wave_s: float) -> None:
        self.fs = fs
        self._refractory = max(1, round(refractory_s * fs))
        self._t_wave = round(t_wave_s * fs)
        self._learn = round(LEARN_S * fs)
        self._lost = round(LOST_S * fs)
        self._relearn = round(RELEARN_S * fs)
        self._feature = _Ring()
        self._seen = 0
        self._decided = 0
        self._learning: list[_Candidate] | None = []
        self._beat_h: deque[float] = deque(maxlen=HISTORY)
        self._noise_h: deque[float] = deque(maxlen=HISTORY)
        self._rr: deque[float] = deque(maxlen=HISTORY)
        self._level = 0.0
        self._rr_median = 0.0
        self._last: _Candidate | None = None
        self._since_last: list[_Candidate] = []
        self._floor = 0.0

    @property
    def beat_level(self) -> float:
        """Median feature height of the recent beats (0 before the first)."""
        return self._level

    @property
    def noise_level(self) -> float:
        """Median feature height of the recent candidates that were not beats."""
        return _median(self._noise_h) if self._noise_h else 0.0

    def _fiducial(self, index: int) -> tuple[int, float]:
        """(fiducial sample, slope) of the candidate whose feature peaks at `index`."""
        raise NotImplementedError

    def _push(self, feature: npt.NDArray[np.float64], scale: float) -> list[Detection]:
        """Decide what `feature` (the chunk's) settles; `scale` is the chunk's largest magnitude: a feature that
        small next to it is the filters' rounding, not a beat."""
        window = self._extend(feature, scale)
        return self._decide(window, _dominant_peaks(*window.peak_args) if window is not None else None)

    def _extend(self, feature: npt.NDArray[np.float64], scale: float) -> _Window | None:
        """Add a chunk's feature; the window of it that can now be decided (None: nothing yet), whose candidates
        `_dominant_peaks` finds (for many detectors at once, `dominant_peaks_many`)."""
        self._floor = NUMERICAL_FLOOR * scale
        self._feature.extend(feature)
        self._seen += len(feature)
        end = self._seen - self._refractory
        start = max(self._decided, 1)
        if end <= start:
            return None
        lo = start - self._refractory
        values = self._feature.window(lo, end + self._refractory)
        offset0 = max(lo, self._feature.start) - lo  # the ring starts at 0: pad the first window's left edge
        if offset0:
            values = np.concatenate([np.zeros(offset0), values])
        return _Window(values, start, end, lo, self._refractory, self._floor)

    def _decide(
        self,
        window: _Window | None,
        peaks: npt.NDArray[np.intp] | None,
        fiducials: list[tuple[int, float]] | None = None,
    ) -> list[Detection]:
        """Decide the window's candidates (`peaks`, offsets from its start; their `fiducials` when known)."""
        if window is None or peaks is None:
            return []
        start, end = window.start, window.end
        found: list[Detection] = []
        values = window.feature[start - window.lo : end - window.lo]
        for n, offset in enumerate(peaks.tolist()):
            index = start + offset
            fiducial, slope = fiducials[n] if fiducials is not None else self._fiducial(index)
            candidate = _Candidate(index, float(values[offset]), slope, fiducial)
            if self._learning is not None:
                self._learning.append(candidate)
                if index >= self._learn:
                    found += self._end_learning()
                continue
            found += self._search_back(index)
            found += self._classify(candidate)
        if self._learning is not None and end >= self._learn:
            found += self._end_learning()
        if self._learning is None:
            found += self._search_back(end)
        self._decided = end
        self._feature.trim(self._decided - self._refractory - 1)
        return found

    def _end_learning(self) -> list[Detection]:
        """Initial levels from the first seconds (the top third of candidates are beats), then decide them."""
        candidates, self._learning = self._learning or [], None
        heights = sorted((c.height for c in candidates), reverse=True)
        beats = max(1, len(heights) // 3)
        self._beat_h.extend(0.5 * h for h in heights[:beats])  # halved: the first beat sets the level anew
        self._noise_h.extend(heights[beats:])
        self._update_levels()
        found: list[Detection] = []
        for candidate in candidates:
            found += self._search_back(candidate.index)
            found += self._classify(candidate)
        return found

    def _update_levels(self) -> None:
        """The beat level and the median RR, from the recent beats (the decisions need no noise level)."""
        self._level = _median(self._beat_h) if self._beat_h else 0.0
        self._rr_median = _median(self._rr) if self._rr else 0.0

    def _classify(self, candidate: _Candidate) -> list[Detection]:
        last = self._last
        t_wave = last is not None and candidate.index - last.index < self._t_wave and candidate.slope < 0.5 * last.slope
        if candidate.height > THRESHOLD * self._level and not t_wave:
            return [self._accept(candidate, searched_back=False)]
        self._noise_h.append(candidate.height)
        self._since_last.append(candidate)
        return []

    def _search_back(self, now: int) -> list[Detection]:
        last = self._last
        if last is None:
            return []
        rr = self._rr_median if len(self._rr) >= 2 else self.fs
        limit = last.index + max(round(SEARCH_BACK_RR * rr), 2 * self._refractory)
        if now <= limit:
            return []
        if now - last.index > self._relearn:
            # Nothing that looks like a beat for a long time: the level is stale (the amplitude dropped, a lead
            # was moved) or the heart stopped.  Learn anew from what comes next.
            self._relearn_levels(now)
            return []
        lost = now - last.index > self._lost
        if lost:
            # Nothing for a while: the level may be stale; the largest candidate above half the threshold.
            threshold = 0.5 * THRESHOLD * self._level
            eligible = [c for c in self._since_last if c.index - last.index > self._refractory]
        else:
            threshold = 0.5 * THRESHOLD * self._level
            eligible = [c for c in self._since_last if self._refractory < c.index - last.index <= limit]
        eligible = [c for c in eligible if c.height > threshold]
        if not eligible:
            if lost:  # forget what is too old to be taken later
                self._since_last = [c for c in self._since_last if c.index > now - self._lost]
            return []
        return [self._accept(max(eligible, key=lambda c: c.height), searched_back=True)]

    def _relearn_levels(self, now: int) -> None:
        self._learning = []
        self._learn = now + round(LEARN_S * self.fs)
        self._beat_h.clear()
        self._noise_h.clear()
        self._rr.clear()
        self._last = None
        self._since_last = []

    def _accept(self, candidate: _Candidate, *, searched_back: bool) -> Detection:
        if self._last is not None:
            self._rr.append(candidate.index - self._last.index)
        confidence = candidate.height / self._level if self._level > 0 else 1.0
        self._beat_h.append(candidate.height)
        self._update_levels()
        self._last = candidate
        self._since_last = [c for c in self._since_last if c.index > candidate.index]
        return Detection(candidate.fiducial, candidate.height, confidence, searched_back, candidate.slope)


def qrs_band(fs: float) -> Coefficients:
    """The QRS detector's band-pass (5-15 Hz), for a caller that filters the lead once for several purposes."""
    return bandpass(5.0, 15.0, fs)


class QrsDetector(_PeakTrain):
    """QRS complexes of one ECG lead.  `process(samples)` returns the beats decided in that call.

    With `band_by_caller`, the caller passes each chunk through `qrs_band` itself (with the lead's other filters,
    `FilterBank`), settled to the first sample the detector sees, and drives the detector with `features`,
    `extend` and `decide` (as `edge_ml.ecg.analyse` does for many leads at once)."""

    def __init__(self, fs: float, *, band_by_caller: bool = False) -> None:
        super().__init__(fs, refractory_s=0.2, t_wave_s=0.36)
        design = qrs_band(fs)
        self._bandpass = None if band_by_caller else StreamingFilter(design)
        self._delay = group_delay_samples(design, 10.0, fs)
        self._window = max(1, round(0.15 * fs))
        self._bp = _Ring()
        self._slope = _Ring()
        self._diff_tail = np.zeros(4)
        self._abs_tail = np.zeros(self._window - 1)
        self._last_input: float | None = None

    def process(self, samples: npt.ArrayLike) -> list[Detection]:
        """The beats decided with these samples (a detector that filters its own input)."""
        x = np.asarray(samples, dtype=np.float64)
        if x.size == 0:
            return []
        if self._bandpass is None:
            raise ValueError("this detector's caller filters its input: use features, extend and decide")
        if self._last_input is None:
            self._bandpass.settle(float(x[0]))  # no step response from the first sample's offset
        bp = self._bandpass.process(x)
        magnitude, feature = QrsDetector.features([self], bp[np.newaxis])
        window = self.extend(x, bp, magnitude[0], feature[0])
        return self.decide(window, _dominant_peaks(*window.peak_args) if window is not None else None)

    @staticmethod
    def features(
        detectors: Sequence[QrsDetector], band: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(slope magnitude, feature) of each row of `band` (each detector's band-passed chunk), computed for all
        the rows at once; a row's result is the same as its detector alone would compute.  Hand each to `extend`."""
        window = detectors[0]._window
        tails = np.array([d._diff_tail for d in detectors]) if len(detectors) > 1 else detectors[0]._diff_tail[None]
        padded = np.concatenate((tails, band), axis=1)
        # The five-point derivative (2 x[n] + x[n-1] - x[n-3] - 2 x[n-4]) / 8, over the window's length too.
        derivative = 2.0 * (padded[:, 4:] - padded[:, :-4]) + (padded[:, 3:-1] - padded[:, 1:-3])
        magnitude = np.abs(derivative / (8 * window))
        tails = np.array([d._abs_tail for d in detectors]) if len(detectors) > 1 else detectors[0]._abs_tail[None]
        padded_abs = np.concatenate((tails, magnitude), axis=1)
        csum = np.empty((len(detectors), padded_abs.shape[1] + 1))
        csum[:, 0] = 0.0
        np.cumsum(padded_abs, axis=1, out=csum[:, 1:])
        feature = csum[:, window:] - csum[:, :-window]  # the moving-window integral (a mean)
        for i, detector in enumerate(detectors):  # (copies: a view would keep the whole batch's arrays alive)
            detector._diff_tail = padded[i, -4:].copy()
            detector._abs_tail = padded_abs[i, padded_abs.shape[1] - (window - 1) :].copy()
        return magnitude, feature

    def extend(
        self,
        samples: npt.NDArray[np.float64],
        band: npt.NDArray[np.float64],
        magnitude: npt.NDArray[np.float64],
        feature: npt.NDArray[np.float64],
        scale: float | None = None,
    ) -> _Window | None:
        """Add a chunk (`samples`, its `band`, and their `features`); `decide` the window this returns with its
        peaks (`_dominant_peaks`, or `dominant_peaks_many` for many detectors at once)."""
        self._last_input = float(samples[-1])
        self._bp.extend(band)
        self._slope.extend(magnitude)
        return self._extend(feature, float(np.maximum.reduce(np.abs(samples))) if scale is None else scale)

    def decide(
        self,
        window: _Window | None,
        peaks: npt.NDArray[np.intp] | None,
        fiducials: list[tuple[int, float]] | None = None,
    ) -> list[Detection]:
        found = self._decide(window, peaks, fiducials)
        keep = self._decided - self._refractory - self._window - 8
        self._bp.trim(keep)
        self._slope.trim(keep)
        return found

    def finish(self) -> list[Detection]:
        """End of the record: decide the last candidates by holding the last sample a little longer."""
        if self._last_input is None:
            return []
        if self._bandpass is None:
            raise ValueError("finish() needs a detector that filters its own input")
        return self.process(np.full(self._refractory + self._window, self._last_input))

    def _fiducial(self, index: int) -> tuple[int, float]:
        lo = index - self._window
        slope = self._slope.window(lo, index + 1)
        band = self._bp.window(lo, index + 1)
        r_peak = max(lo, self._bp.start) + int(np.abs(band).argmax()) - self._delay
        return r_peak, float(np.maximum.reduce(slope)) if len(slope) else 0.0


class PulseDetector(_PeakTrain):
    """Pulses of an arterial pressure or plethysmogram wave: the slope sum function's peaks (Zong et al. 2003)."""

    def __init__(self, fs: float) -> None:
        super().__init__(fs, refractory_s=0.25, t_wave_s=0.3)  # the dicrotic wave plays the T wave's part
        design = lowpass(min(16.0, 0.45 * fs), fs)
        self._lowpass = StreamingFilter(design)
        self._window = max(1, round(0.128 * fs))
        self._rise_tail = np.zeros(self._window)
        self._prev: float | None = None
        self._rise = _Ring()
        self._delay = group_delay_samples(design, 2.0, fs)

    def process(self, samples: npt.ArrayLike) -> list[Detection]:
        x = np.asarray(samples, dtype=np.float64)
        if x.size == 0:
            return []
        if self._prev is None:
            self._lowpass.settle(float(x[0]))
            self._prev = float(x[0])
        low = self._lowpass.process(x)
        rises = np.maximum(np.diff(np.concatenate([[self._prev], low])), 0.0)
        self._prev = float(low[-1])
        padded = np.concatenate([self._rise_tail, rises])
        csum = np.concatenate([[0.0], np.cumsum(padded)])
        feature = csum[self._window + 1 :] - csum[1 : -self._window]
        self._rise_tail = padded[-self._window :]
        self._rise.extend(rises)
        found = self._push(feature, float(np.maximum.reduce(np.abs(x))))
        self._rise.trim(self._decided - self._refractory - self._window - 8)
        return found

    def _fiducial(self, index: int) -> tuple[int, float]:
        rises = self._rise.window(index - self._window, index + 1)
        if not len(rises):
            return index, 0.0
        steepest = max(index - self._window, self._rise.start) + int(np.argmax(rises))
        return steepest - self._delay, float(rises.max())


def _dominant_peaks(
    feature: npt.NDArray[np.float64], lo: int, hi: int, reach: int, floor: float = 0.0
) -> npt.NDArray[np.intp]:
    """Offsets from `lo` of the samples in [lo, hi) that are above `floor`, above the sample before, and the largest
    within +/- `reach` (the caller keeps `reach` samples of context on each side).

    Local maxima first (a handful a second), then each one's window maximum in a single reduceat: the same
    peaks as a running maximum over the whole chunk, for a fraction of its work."""
    values = feature[lo:hi]
    rising = (values > feature[lo - 1 : hi - 1]) & (values >= feature[lo + 1 : hi + 1]) & (values > floor)
    offsets = rising.nonzero()[0]
    if not len(offsets):
        return offsets
    bounds = (offsets[:, np.newaxis] + np.array([lo - reach, lo + reach + 1])).ravel()  # [start, end) of each window
    # reduceat's segment i runs from bounds[i] to bounds[i + 1] (the last to the array's end): the even segments are
    # the windows.  A last window ending at the array's end is given as running to the end.
    if bounds[-1] == len(feature):
        bounds = bounds[:-1]
    widest = np.maximum.reduceat(feature, bounds)[0::2]
    peaks: npt.NDArray[np.intp] = offsets[values[offsets] == widest]
    return peaks


def dominant_peaks_many(windows: list[_Window | None]) -> list[npt.NDArray[np.intp] | None]:
    """`_dominant_peaks` of many detectors' windows: those of one shape and reach in one pass (the same peaks)."""
    out: list[npt.NDArray[np.intp] | None] = [None] * len(windows)
    shapes: dict[tuple[int, int, int, int], list[tuple[int, _Window]]] = {}
    for i, w in enumerate(windows):
        if w is not None:
            shapes.setdefault((len(w.feature), w.start - w.lo, w.end - w.lo, w.reach), []).append((i, w))
    for (width, lo, hi, reach), members in shapes.items():
        if len(members) == 1:
            i, w = members[0]
            out[i] = _dominant_peaks(*w.peak_args)
            continue
        feature = np.array([w.feature for _, w in members])
        floors = np.array([w.floor for _, w in members])
        values = feature[:, lo:hi]
        rising = (values > feature[:, lo - 1 : hi - 1]) & (values >= feature[:, lo + 1 : hi + 1])
        rising &= values > floors[:, np.newaxis]
        rows, offsets = rising.nonzero()
        if not len(offsets):
            for i, _ in members:
                out[i] = offsets
            continue
        flat = rows * width + offsets + lo  # each candidate's place in the flattened windows
        bounds = (flat[:, np.newaxis] + np.array([-reach, reach + 1])).ravel()  # [start, end) of each one's reach
        if bounds[-1] == feature.size:
            bounds = bounds[:-1]
        widest = np.maximum.reduceat(feature.ravel(), bounds)[0::2]
        dominant = feature.ravel()[flat] == widest
        rows, offsets = rows[dominant], offsets[dominant]
        cuts = np.searchsorted(rows, np.arange(len(members) + 1))
        for k, (i, _) in enumerate(members):
            out[i] = offsets[cuts[k] : cuts[k + 1]]
    return out


def fiducials_many(
    detectors: Sequence[QrsDetector], windows: list[_Window | None], peaks: list[npt.NDArray[np.intp] | None]
) -> list[list[tuple[int, float]] | None]:
    """Each candidate's (R peak, steepest slope), as `QrsDetector._fiducial` finds them, for many detectors (of
    one window length) at once."""
    out: list[list[tuple[int, float]] | None] = [None] * len(detectors)
    bands: list[npt.NDArray[np.float64]] = []
    slopes: list[npt.NDArray[np.float64]] = []
    places: list[tuple[list[tuple[int, float]], int, int]] = []  # (the detector's list, where, window start - delay)
    for i, (detector, window, found) in enumerate(zip(detectors, windows, peaks, strict=True)):
        if window is None or found is None:
            continue
        fiducials = out[i] = []
        for offset in found.tolist():
            index = window.start + offset
            lo = index - detector._window
            if lo < detector._bp.start:  # the window reaches before the signal kept: alone
                fiducials.append(detector._fiducial(index))
                continue
            fiducials.append((0, 0.0))
            bands.append(detector._bp.window(lo, index + 1))
            slopes.append(detector._slope.window(lo, index + 1))
            places.append((fiducials, len(fiducials) - 1, lo - detector._delay))
    if places:
        at = np.abs(np.array(bands)).argmax(axis=1).tolist()
        steepest = np.maximum.reduce(np.array(slopes), axis=1).tolist()
        for (fiducials, n, base), a, slope in zip(places, at, steepest, strict=True):
            fiducials[n] = (base + a, slope)
    return out


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

    @property
    def end(self) -> int:
        return self._start + len(self._data)

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
