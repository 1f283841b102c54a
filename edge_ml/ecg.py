"""Streaming analysis of one ECG lead: beats with their shape features, signal quality and lead-off, and the
spectral measures the fibrillation rule needs, one assessment per second.

Assessments fall on fixed one-second boundaries of the signal (not of the chunks), so, like the QRS detector
underneath, the results do not depend on how the signal was chunked.

Each beat is described against the lead's own dominant beat (a running template of the beats judged not
ventricular): its correlation with it, its amplitude relative to it, its QRS width, and how premature it
came.  These, with the beat's shape, are what the beat classifier (`edge_ml.beats`) judges.

Lead-off and asystole both look flat, and are told apart the way the signal allows: a lead that is off gives a
signal that does not move at all (an amplifier at rest or at a rail: the same value sample after sample),
while a heart at standstill still shows the amplifier's noise.  Devices that report electrode contact
themselves (the Heart Rate Service's sensor-contact bit) are believed first, by the caller.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_ml.beats import BeatInput
from edge_ml.filters import FilterBank, Seconds, ecg_conditioning
from edge_ml.qrs import QrsDetector, qrs_band

if TYPE_CHECKING:
    from edge_ml.beats import BeatClassifier

BEAT_BEFORE_S, BEAT_AFTER_S, BEAT_POINTS = 0.25, 0.45, 64  # the beat window (resampled to BEAT_POINTS)
QRS_HALF_S = 0.15  # the QRS width is measured within R +/- this
# Shapes are compared on the QRS only (R - 0.11 s to R + 0.15 s of the window): at high rates the window's ends
# hold the neighbouring beats, and the T wave changes with the rate.
QRS_POINTS = slice(13, 37)
SPECTRUM_S = 4.0  # the fibrillation measures look at the last four seconds
HISTORY_S = 8.0  # conditioned signal kept (beat windows, spectra, quality)

FLAT_MV = 1e-6  # below this peak-to-peak (one nanovolt), the signal is not moving at all
LOW_MV = 0.15  # quieter than this, there is no QRS to judge quality by (a heart at standstill, a weak lead)
HIGH_MV = 8.0  # more than this peak-to-peak in a second is movement or a rail, not cardiac
HRV_BEATS = 300  # about five minutes
HRV_MIN_BEATS = 30  # fewer RR intervals than this give no meaningful SDNN or RMSSD
HRV_EVERY_S = 5  # HRV is recomputed this often
TEMPLATE_BEATS = 8  # a morphology is dominant once it has about half this many recent beats
TEMPLATE_ALPHA = 0.05  # weight of each new beat in its template
TEMPLATE_DECAY = 0.99  # per beat: a template's count halves over about 70 beats without a match
MATCH_CORRELATION = 0.9  # a beat this similar to a template belongs to it
MAX_TEMPLATES = 4
QRS_BAND = 1  # the lead's filter bank: 0 the conditioning, 1 the QRS detector's band

# Reductions as the ufuncs themselves: ndarray.sum/max/min go through a Python wrapper each (about a microsecond,
# and a lead makes dozens of them a second); the results are the same.
_sum, _max, _min = np.add.reduce, np.maximum.reduce, np.minimum.reduce


@dataclass(frozen=True, slots=True)
class Beat:
    """A detected beat and its shape, measured once its whole window was known."""

    index: int  # R peak, samples from the lead's first sample
    confidence: float  # detector height over its running beat level
    width_ms: float  # QRS width: the span holding 80 % of the slope energy around R
    correlation: float  # with the lead's dominant template (1.0 while there is none)
    amplitude_ratio: float  # peak-to-peak of the QRS over the template's
    rr_ratio: float  # RR before this beat over the recent median RR (below 1: premature)
    ventricular: float  # probability that the beat is ventricular (edge_ml.beats)
    dominant_mv: float = 0.0  # peak-to-peak of the lead's dominant beat's QRS, which amplitude_ratio is relative to


@dataclass(frozen=True, slots=True)
class Spectrum:
    """Band measures of the last four seconds of conditioned signal (the fibrillation rule's evidence)."""

    dominant_hz: float  # strongest frequency between 1.5 and 10 Hz
    concentration: float  # power within 1 Hz of it over the power from 1 to 30 Hz
    sharp: float  # power 15-40 Hz over 1-40 Hz: QRS complexes put energy there, a fibrillating heart does not
    high_band: float  # power above 40 Hz over the total: muscle noise and interference
    kurtosis: float  # about 3 for noise or a sine-like wave, far higher for a QRS train


@dataclass(frozen=True)
class LeadAssessment:
    """One second of one ECG lead: where it ends, and what can be said about it."""

    end_index: int
    sample_rate_hz: float
    lead_off: bool
    saturated: bool  # part of this second sat on a rail (clipped)
    quality: float  # 0 (unusable) .. 1 (clean), from this lead alone
    last_beat_index: int | None  # the latest beat the detector decided, measured or not yet
    beats: tuple[Beat, ...]  # beats whose whole window arrived during this second
    recent: npt.NDArray[np.float64] | None  # the last four seconds of conditioned signal (None before four)
    restart_index: int  # the first sample of the current run (after the last lead-off)
    peaks: tuple[int, ...] = ()  # the lead's latest R peaks, oldest first (the rate's source)
    rr_ms: tuple[float, ...] | None = None  # the last five minutes of RR intervals (HRV's source), once enough

    @property
    def heart_rate_bpm(self) -> float | None:
        """Median of the last ten seconds' RR."""
        since = self.end_index - 10 * self.sample_rate_hz
        recent = list(itertools.takewhile(lambda b: b > since, reversed(self.peaks)))  # newest first
        if len(recent) < 3:
            return None
        return 60.0 * self.sample_rate_hz / _median(a - b for a, b in itertools.pairwise(recent))

    @property
    def sdnn_ms(self) -> float | None:
        """Heart-rate variability over the last five minutes of beats (recomputed every HRV_EVERY_S)."""
        return self._hrv[0]

    @property
    def rmssd_ms(self) -> float | None:
        return self._hrv[1]

    @property
    def _hrv(self) -> tuple[float | None, float | None]:
        if self.rr_ms is None:
            return None, None
        cached: tuple[float, float] | None = self.__dict__.get("_hrv_cache")
        if cached is None:
            cached = hrv(self.rr_ms)
            object.__setattr__(self, "_hrv_cache", cached)
        return cached

    @property
    def spectrum(self) -> Spectrum | None:
        """Band measures of the last four seconds, computed when first asked (the fibrillation rule asks only
        when the lead's beats leave room for doubt)."""
        if self.recent is None:
            return None
        cached: Spectrum | None = self.__dict__.get("_spectrum")
        if cached is None:
            cached = spectrum(self.recent, self.sample_rate_hz)
            object.__setattr__(self, "_spectrum", cached)
        return cached

    @property
    def seconds_since_beat(self) -> float:
        """Time without a beat, counted from the last beat or, when none since (re)starting, from the restart:
        a lead that comes back is not an asystole that began when it went off."""
        since = max(self.last_beat_index if self.last_beat_index is not None else 0, self.restart_index)
        return (self.end_index - since) / self.sample_rate_hz


class LeadAnalyzer:
    """Beats, rate, quality, spectrum and beat shape of one lead, assessed once per second of signal."""

    def __init__(self, fs: float, classifier: BeatClassifier | None = None, mains_hz: float = 50.0) -> None:
        self.fs = fs
        self._classifier = classifier
        # The conditioning (0.5-40 Hz and the mains notch) and the QRS detector's band in one pass over each second.
        self._filters = FilterBank([ecg_conditioning(fs, mains_hz), qrs_band(fs)])
        self._seconds = Seconds(fs)
        self._second = self._seconds.length
        self._index = 0  # samples assessed so far (a multiple of one second)
        self._history = np.zeros(0)  # conditioned signal, ending at self._index
        self._keep = round(HISTORY_S * fs)
        self._before, self._after = round(BEAT_BEFORE_S * fs), round(BEAT_AFTER_S * fs)
        self._qrs_half = round(QRS_HALF_S * fs)
        self._spectrum_n = round(SPECTRUM_S * fs)
        self._restart()

    def _restart(self) -> None:
        self._detector = QrsDetector(self.fs, band_by_caller=True)
        self._settle_band = True  # the detector's band starts settled to its first sample
        self._detector_start = self._index
        self._waiting: list[tuple[int, float]] = []  # (R peak, confidence) until their windows complete
        self._last_beat: int | None = None
        self._rr: deque[int] = deque(maxlen=9)
        self._rr_ms: deque[float] = deque(maxlen=HRV_BEATS)
        self._recent: deque[int] = deque(maxlen=40)
        self._hrv_source: tuple[float, ...] | None = None  # HRV is computed from it when asked
        self._dominant: _Template | None = None  # the lead's dominant beat, once it has one
        self._templates: list[_Template] = []
        self._units = np.zeros((0, QRS_POINTS.stop - QRS_POINTS.start))  # each template's unit QRS, a row each

    def process(self, samples: npt.ArrayLike) -> list[LeadAssessment]:
        # The detector sees whole seconds, so a restart after lead-off falls on the same sample however the
        # signal was chunked.
        return [self._step(window) for window in self._seconds.feed(samples)]

    def _step(self, window: npt.NDArray[np.float64]) -> LeadAssessment:
        if self._settle_band:
            self._filters.settle(QRS_BAND, float(window[0]))
            self._settle_band = False
        conditioned, band = self._filters.process(window)
        top, bottom = float(_max(window)), float(_min(window))
        for detection in self._detector.process(window, band, max(top, -bottom)):
            self._waiting.append((self._detector_start + detection.index, detection.confidence))
            self._last_beat = self._detector_start + detection.index
        self._index += self._second
        self._history = np.concatenate([self._history, conditioned])[-self._keep :]
        span = top - bottom
        lead_off = span < FLAT_MV
        saturated = not lead_off and _clipped(window, top, bottom)
        quality = 0.0 if lead_off else _quality(conditioned, span)
        beats = self._measure_ready()
        recent = self._history[-self._spectrum_n :] if len(self._history) >= self._spectrum_n and not lead_off else None
        assessment = LeadAssessment(
            self._index,
            self.fs,
            lead_off,
            saturated,
            quality,
            self._last_beat,
            tuple(beats),
            recent,
            self._detector_start,
            tuple(self._recent),
            self._hrv_source,
        )
        if lead_off:
            # The signal that comes back after a lead-off (and the jump to it) says nothing about the
            # thresholds learnt before: learn anew.
            self._restart()
        return assessment

    # -- beats -----------------------------------------------------------------------------------------------
    def _measure_ready(self) -> list[Beat]:
        """Measure the beats whose window [R - 0.25 s, R + 0.45 s] is now complete."""
        ready = [(r, c) for r, c in self._waiting if r + self._after <= self._index]
        if not ready:
            return []
        self._waiting = [(r, c) for r, c in self._waiting if r + self._after > self._index]
        history_start = self._index - len(self._history)
        beats = []
        for r_peak, confidence in ready:
            lo, hi = r_peak - self._before, r_peak + self._after
            rr = r_peak - self._recent[-1] if self._recent else None
            self._recent.append(r_peak)
            if rr is not None:
                self._rr.append(rr)
                self._rr_ms.append(rr * 1000.0 / self.fs)
            if lo < history_start:
                continue  # the window began before the history (the first beat of a run)
            raw = self._history[lo - history_start : hi - history_start]
            beats.append(self._describe(r_peak, confidence, raw, rr))
        if len(self._rr_ms) >= HRV_MIN_BEATS and self._index % (HRV_EVERY_S * self._second) == 0:
            self._hrv_source = tuple(self._rr_ms)  # five minutes of beats change little in a few seconds
        return beats

    def _describe(self, r_peak: int, confidence: float, raw: npt.NDArray[np.float64], rr: int | None) -> Beat:
        shape = normalise_beat(raw)
        qrs = raw[self._before - self._qrs_half : self._before + self._qrs_half + 1]
        width_ms = _qrs_width(qrs) * 1000.0 / self.fs
        qrs_ptp = float(_max(qrs) - _min(qrs))
        rr_median = _median(self._rr) if len(self._rr) >= 3 else None
        rr_ratio = rr / rr_median if rr is not None and rr_median else 1.0
        unit = _unit(shape[QRS_POINTS])
        # The correlation with every template in one product (their unit QRSs are kept as the rows of a matrix).
        likeness: list[float] = (self._units @ unit).tolist() if self._templates else []
        dominant = self._dominant
        correlation, amplitude = 1.0, 1.0
        dominant_mv = dominant.ptp if dominant is not None else 0.0
        if dominant is not None:
            # (the dominant beat can have left the templates, replaced as the least used of them)
            at = next((i for i, t in enumerate(self._templates) if t is dominant), None)
            correlation = likeness[at] if at is not None else float(np.dot(unit, dominant.unit))
            amplitude = qrs_ptp / dominant.ptp if dominant.ptp > 0 else 1.0
        ventricular = 0.0
        if self._classifier is not None:
            template = dominant.shape if dominant is not None else None
            ventricular = self._classifier.probability(
                BeatInput(shape, template, width_ms, correlation, amplitude, rr_ratio)
            )
        beat = Beat(r_peak, confidence, width_ms, correlation, amplitude, rr_ratio, ventricular, dominant_mv)
        self._learn_template(shape, unit, qrs_ptp, likeness)
        return beat

    def _learn_template(
        self, shape: npt.NDArray[np.float32], unit: npt.NDArray[np.float64], qrs_ptp: float, likeness: list[float]
    ) -> None:
        """Keep the lead's beat morphologies as a few running templates; the dominant one is the most frequent.

        A beat joins the template it correlates best with (at least MATCH_CORRELATION), else starts a new one
        (replacing the least used when there are MAX_TEMPLATES).  Counts decay, so the dominant morphology
        follows the patient: a run of ectopic beats, or a lead moved, changes it only if it lasts.  `likeness` is
        the beat's correlation with each template."""
        best, best_at, best_r = None, 0, MATCH_CORRELATION
        for at, (template, r) in enumerate(zip(self._templates, likeness, strict=True)):
            if r >= best_r:
                best, best_at, best_r = template, at, r
            template.count *= TEMPLATE_DECAY
        if best is None:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.remove(min(self._templates, key=lambda t: t.count))
            self._templates.append(_Template(shape.astype(np.float64), unit, qrs_ptp, 1.0))
            self._units = np.array([t.unit for t in self._templates])
        else:
            best.shape += TEMPLATE_ALPHA * (shape - best.shape)
            best.unit = self._units[best_at] = _unit(best.shape[QRS_POINTS])
            best.ptp += TEMPLATE_ALPHA * (qrs_ptp - best.ptp)
            best.count += 1.0
        dominant = max(self._templates, key=lambda t: t.count)
        if dominant.count >= TEMPLATE_BEATS / 2:
            self._dominant = dominant


@dataclass(slots=True, eq=False)
class _Template:
    shape: npt.NDArray[np.float64]
    unit: npt.NDArray[np.float64]  # its QRS, centred and of unit norm: a correlation is one dot product
    ptp: float
    count: float


def spectrum(x: npt.NDArray[np.float64], fs: float) -> Spectrum:
    """Band measures of a stretch of conditioned ECG (the fibrillation rule's evidence)."""
    x = x - float(x.sum()) / len(x)
    power = np.abs(np.fft.rfft(x * _hann(len(x)))) ** 2
    df = fs / len(x)

    def band(lo: float, hi: float) -> float:
        return float(power[math.ceil(lo / df) : int(hi / df) + 1].sum())

    search = slice(math.ceil(1.5 / df), int(10.0 / df) + 1)
    peak = search.start + int(np.argmax(power[search]))
    dominant = peak * df
    wide = band(1.0, 30.0) or 1e-12
    concentration = band(dominant - 1.0, dominant + 1.0) / wide
    total = float(power.sum()) or 1e-12
    high = band(40.0, fs / 2) / total if fs > 80 else 0.0
    sharp = band(15.0, 40.0) / (band(1.0, 40.0) or 1e-12)
    squared = x * x
    variance = float(squared.sum()) / len(x) or 1e-12
    kurtosis = float(np.dot(squared, squared)) / len(x) / (variance * variance)
    return Spectrum(dominant, concentration, sharp, high, kurtosis)


@lru_cache(maxsize=16)
def _hann(n: int) -> npt.NDArray[np.float64]:
    return np.hanning(n)


@lru_cache(maxsize=8)
def _grid(length: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    return np.linspace(0.0, length - 1.0, BEAT_POINTS), np.arange(length, dtype=np.float64)


def normalise_beat(window: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """A beat's shape: the window linearly resampled to 64 points, minus its median, over its largest swing
    (the classifier's training uses this very function)."""
    positions, samples = _grid(len(window))
    resampled = np.interp(positions, samples, window)
    # One partial sort gives the median and the extremes (the largest swing from the median is at one of them).
    ordered = resampled.copy()
    ordered.partition(_ORDER_POINTS)
    median = 0.5 * (float(ordered[BEAT_POINTS // 2 - 1]) + float(ordered[BEAT_POINTS // 2]))
    scale = max(float(ordered[BEAT_POINTS - 1]) - median, median - float(ordered[0])) or 1.0
    shape: npt.NDArray[np.float32] = ((resampled - median) / scale).astype(np.float32)
    return shape


_ORDER_POINTS = np.array([0, BEAT_POINTS // 2 - 1, BEAT_POINTS // 2, BEAT_POINTS - 1])
_CENTRING = np.eye(QRS_POINTS.stop - QRS_POINTS.start) - 1.0 / (QRS_POINTS.stop - QRS_POINTS.start)


def _unit(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """A beat's QRS (`QRS_POINTS` of a shape) centred and scaled to unit norm (zeros for a constant), so Pearson's
    r of two is their dot product.  Centring is one product with the centring matrix."""
    centred: npt.NDArray[np.float64] = _CENTRING @ x
    norm = math.sqrt(float(centred @ centred))
    return centred / norm if norm > 0 else np.zeros(len(x))


def _median(values: Iterable[float]) -> float:
    """Median of a short sequence (a sort beats numpy's overhead below a few dozen values)."""
    ordered = sorted(values)
    n = len(ordered)
    return float(ordered[n // 2]) if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def _qrs_width(qrs: npt.NDArray[np.float64]) -> int:
    """Samples in the shortest span around the centre holding 80 % of the QRS window's slope energy (from 10 %
    to 90 % of it)."""
    energy = np.abs(qrs[1:] - qrs[:-1]).cumsum()
    total = float(energy[-1]) if len(energy) else 0.0
    if total <= 0:
        return 0
    start, end = energy.searchsorted((0.1 * total, 0.9 * total))
    return int(end - start + 1)


def _clipped(window: npt.NDArray[np.float64], top: float, bottom: float) -> bool:
    """Part of the second sits exactly at its extreme value (`top` or `bottom`): an amplifier at a rail."""
    at_rail = max(int(np.count_nonzero(window == top)), int(np.count_nonzero(window == bottom)))
    return at_rail >= 0.05 * len(window)


def _quality(window: npt.NDArray[np.float64], span: float) -> float:
    """0..1 from the conditioned signal: a clean ECG is sharply peaked (its QRS complexes), noise is not.

    The measure is the window's kurtosis: about 3 for Gaussian noise, well above 5 for an ECG with a QRS in
    it.  Saturation scores 0; a very quiet signal (no QRS to judge by) scores 0.5."""
    if span > HIGH_MV:
        return 0.0
    if span < LOW_MV:
        return 0.5
    centred = window - float(_sum(window)) / len(window)
    squared = centred * centred
    n = len(window)
    variance = float(_sum(squared)) / n or 1e-12
    kurtosis = float(np.dot(squared, squared)) / n / (variance * variance)
    return float(max(0.0, min(1.0, (kurtosis - 3.0) / 3.0)))


def hrv(rr_ms: npt.ArrayLike) -> tuple[float, float]:
    """(SDNN, RMSSD) in ms of an RR series."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if len(rr) < 2:
        return float("nan"), float("nan")
    return float(np.std(rr, ddof=1)), float(np.sqrt(np.mean(np.diff(rr) ** 2)))
