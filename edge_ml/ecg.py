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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_ml.beats import BeatInput, probabilities
from edge_ml.filters import FilterBank, Seconds, ecg_conditioning
from edge_ml.qrs import Detection, QrsDetector, dominant_peaks_many, fiducials_many, qrs_band

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
        return [analyse([self], [window])[0] for window in self._seconds.feed(samples)]

    def seconds(self, samples: npt.ArrayLike) -> list[npt.NDArray[np.float64]]:
        """The whole seconds these samples complete, for `analyse` (a caller that analyses leads together)."""
        return self._seconds.feed(samples)

    @property
    def batch_key(self) -> tuple[float, int]:
        """Leads with the same key can be analysed together (the same filters and windows)."""
        return self.fs, id(self._filters._design)

    # -- one second, after the signal stages (`analyse` runs those for many leads at once) -----------------------
    def _decide(self, detections: list[Detection], conditioned: npt.NDArray[np.float64]) -> list[_Pending]:
        """This second's detections and history; the beats whose windows are now complete, to describe."""
        for detection in detections:
            self._waiting.append((self._detector_start + detection.index, detection.confidence))
            self._last_beat = self._detector_start + detection.index
        self._index += self._second
        self._history = np.concatenate((self._history, conditioned))[-self._keep :]
        return self._ready()

    def _assess(self, lead_off: bool, saturated: bool, quality: float, beats: list[Beat]) -> LeadAssessment:
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
    def _ready(self) -> list[_Pending]:
        """The beats whose window [R - 0.25 s, R + 0.45 s] is now complete (their RR noted), to describe."""
        ready = [(r, c) for r, c in self._waiting if r + self._after <= self._index]
        if not ready:
            return []
        self._waiting = [(r, c) for r, c in self._waiting if r + self._after > self._index]
        history_start = self._index - len(self._history)
        pending = []
        for r_peak, confidence in ready:
            lo, hi = r_peak - self._before, r_peak + self._after
            rr = r_peak - self._recent[-1] if self._recent else None
            self._recent.append(r_peak)
            if rr is not None:
                self._rr.append(rr)
                self._rr_ms.append(rr * 1000.0 / self.fs)
            if lo < history_start:
                continue  # the window began before the history (the first beat of a run)
            rr_median = _median(self._rr) if len(self._rr) >= 3 else None
            rr_ratio = rr / rr_median if rr is not None and rr_median else 1.0
            raw = self._history[lo - history_start : hi - history_start]
            pending.append(_Pending(self, r_peak, confidence, raw, rr_ratio))
        if len(self._rr_ms) >= HRV_MIN_BEATS and self._index % (HRV_EVERY_S * self._second) == 0:
            self._hrv_source = tuple(self._rr_ms)  # five minutes of beats change little in a few seconds
        return pending

    def _compare(
        self,
        rr_ratio: float,
        shape: npt.NDArray[np.float32],
        width_ms: float,
        qrs_ptp: float,
        unit: npt.NDArray[np.float64],
    ) -> tuple[BeatInput, list[float], float]:
        """A beat against the lead's templates, from its shape measures (`_measure` makes them for many beats at
        once): what the classifier judges it by, its correlation with each template, and the dominant beat's size."""
        # The correlation with every template in one product (their unit QRSs are kept as the rows of a matrix).
        likeness: list[float] = (self._units @ unit).tolist() if self._templates else []
        dominant = self._dominant
        correlation, amplitude = 1.0, 1.0
        dominant_mv = dominant.ptp if dominant is not None else 0.0
        if dominant is not None:
            at = next((i for i, template in enumerate(self._templates) if template is dominant), None)
            # (the dominant beat can have left the templates, replaced as the least used of them)
            correlation = likeness[at] if at is not None else float(np.dot(unit, dominant.unit))
            amplitude = qrs_ptp / dominant.ptp if dominant.ptp > 0 else 1.0
        template = dominant.shape if dominant is not None else None
        return BeatInput(shape, template, width_ms, correlation, amplitude, rr_ratio), likeness, dominant_mv

    def _learn_template(
        self, shape: npt.NDArray[np.float32], unit: npt.NDArray[np.float64], qrs_ptp: float, likeness: list[float]
    ) -> tuple[_Template, int] | None:
        """Keep the lead's beat morphologies as a few running templates; the dominant one is the most frequent.

        A beat joins the template it correlates best with (at least MATCH_CORRELATION), else starts a new one
        (replacing the least used when there are MAX_TEMPLATES).  Counts decay, so the dominant morphology
        follows the patient: a run of ectopic beats, or a lead moved, changes it only if it lasts.  `likeness` is
        the beat's correlation with each template.  Returns the template the beat joined (and its place), whose
        shape the caller moves towards the beat's (`_learn_shapes`, for many leads' beats at once)."""
        best, best_at, best_r = None, 0, MATCH_CORRELATION
        for at, (template, r) in enumerate(zip(self._templates, likeness, strict=True)):
            if r >= best_r:
                best, best_at, best_r = template, at, r
            template.count *= TEMPLATE_DECAY
        joined = None
        if best is None:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.remove(min(self._templates, key=lambda t: t.count))
            self._templates.append(_Template(shape.astype(np.float64), unit.copy(), qrs_ptp, 1.0))
            self._units = np.array([t.unit for t in self._templates])
        else:
            best.ptp += TEMPLATE_ALPHA * (qrs_ptp - best.ptp)
            best.count += 1.0
            joined = best, best_at
        dominant = max(self._templates, key=lambda t: t.count)
        if dominant.count >= TEMPLATE_BEATS / 2:
            self._dominant = dominant
        return joined


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
    return Spectrum(dominant, concentration, sharp, high, _kurtosis(x[np.newaxis])[0])


@lru_cache(maxsize=16)
def _hann(n: int) -> npt.NDArray[np.float64]:
    return np.hanning(n)


# -- many leads at once ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Pending:
    """A beat whose window is complete, waiting to be described (with the other leads' beats of this second)."""

    lead: LeadAnalyzer
    r_peak: int
    confidence: float
    raw: npt.NDArray[np.float64]  # the conditioned window [R - 0.25 s, R + 0.45 s]
    rr_ratio: float  # RR before this beat over the median RR then


def analyse(leads: Sequence[LeadAnalyzer], windows: Sequence[npt.NDArray[np.float64]]) -> list[LeadAssessment]:
    """One second of each lead (`windows[i]` the next second of `leads[i]`, leads of one `batch_key`), analysed
    together: each signal stage (filters, the detector's feature, quality, and the shape measures of the beats)
    runs once for all the leads, the decisions lead by lead.  A lead's assessment is the same, to the last bit,
    whichever leads it was analysed with: every stage computes each lead's rows alone (per-row reductions, a
    product per lead), so analysing a ward's leads together costs a fraction of analysing them apart and changes
    nothing."""
    for lead, window in zip(leads, windows, strict=True):
        if lead._settle_band:
            lead._filters.settle(QRS_BAND, float(window[0]))
            lead._settle_band = False
    x = np.array(windows) if len(leads) > 1 else windows[0][np.newaxis]  # (leads, samples)
    filtered = FilterBank.process_many([lead._filters for lead in leads], x)  # (leads, filters, samples)
    conditioned, band = filtered[:, 0], filtered[:, QRS_BAND]
    magnitude, feature = QrsDetector.features([lead._detector for lead in leads], band)
    tops, bottoms = _max(x, axis=1), _min(x, axis=1)
    at_rail = np.maximum(
        np.count_nonzero(x == tops[:, np.newaxis], axis=1), np.count_nonzero(x == bottoms[:, np.newaxis], axis=1)
    ).tolist()
    kurtosis = _kurtosis(conditioned)
    tops_, bottoms_ = tops.tolist(), bottoms.tolist()
    detectors = [lead._detector for lead in leads]
    decidable = [
        detector.extend(x[i], band[i], magnitude[i], feature[i], max(tops_[i], -bottoms_[i]))
        for i, detector in enumerate(detectors)
    ]
    peaks = dominant_peaks_many(decidable)
    fiducials = fiducials_many(detectors, decidable, peaks)
    pending: list[_Pending] = []
    for i, lead in enumerate(leads):
        pending += lead._decide(detectors[i].decide(decidable[i], peaks[i], fiducials[i]), conditioned[i])
    beats = _measure(pending)
    out = []
    for i, lead in enumerate(leads):
        span = tops_[i] - bottoms_[i]
        lead_off = span < FLAT_MV
        saturated = not lead_off and at_rail[i] >= 0.05 * x.shape[1]
        quality = 0.0 if lead_off else _quality(kurtosis[i], span)
        out.append(lead._assess(lead_off, saturated, quality, beats.get(lead, [])))
    return out


def _measure(pending: list[_Pending]) -> dict[LeadAnalyzer, list[Beat]]:
    """Describe the beats (each lead's in order): their shape measures for all at once, then each against its
    lead's templates."""
    if not pending:
        return {}
    lead = pending[0].lead
    raws = np.array([p.raw for p in pending]) if len(pending) > 1 else pending[0].raw[np.newaxis]
    shapes = normalise_beats(raws)
    qrs = raws[:, lead._before - lead._qrs_half : lead._before + lead._qrs_half + 1]
    widths_ms = (_qrs_widths(qrs) * 1000.0 / lead.fs).tolist()
    ptps = (_max(qrs, axis=1) - _min(qrs, axis=1)).tolist()
    units = _units(shapes[:, QRS_POINTS])
    # In waves: the first beat of every lead, then the second of those that have two, ...; a lead's beats in
    # order (each learns from the one before), each wave's judged by the classifier in one call.
    waves: list[list[int]] = []
    seen: dict[LeadAnalyzer, int] = {}
    for k, p in enumerate(pending):
        nth = seen.get(p.lead, 0)
        seen[p.lead] = nth + 1
        if nth == len(waves):
            waves.append([])
        waves[nth].append(k)
    beats: dict[LeadAnalyzer, list[Beat]] = {}
    joined: list[tuple[LeadAnalyzer, _Template, int, npt.NDArray[np.float32]]] = []
    for wave in waves:
        compared = [
            pending[k].lead._compare(pending[k].rr_ratio, shapes[k], widths_ms[k], ptps[k], units[k]) for k in wave
        ]
        ventricular = [0.0] * len(wave)
        judges: dict[int, tuple[BeatClassifier, list[int]]] = {}
        for i, k in enumerate(wave):
            classifier = pending[k].lead._classifier
            if classifier is not None:
                judges.setdefault(id(classifier), (classifier, []))[1].append(i)
        for classifier, members in judges.values():
            for i, probability in zip(
                members, probabilities(classifier, [compared[i][0] for i in members]), strict=True
            ):
                ventricular[i] = probability
        for i, k in enumerate(wave):
            p, (judged, likeness, dominant_mv) = pending[k], compared[i]
            beat = Beat(
                p.r_peak,
                p.confidence,
                judged.width_ms,
                judged.correlation,
                judged.amplitude_ratio,
                judged.rr_ratio,
                ventricular[i],
                dominant_mv,
            )
            template = p.lead._learn_template(shapes[k], units[k], ptps[k], likeness)
            if template is not None:
                joined.append((p.lead, *template, shapes[k]))
            beats.setdefault(p.lead, []).append(beat)
        _learn_shapes(joined)
        joined.clear()
    return beats


def _learn_shapes(joined: list[tuple[LeadAnalyzer, _Template, int, npt.NDArray[np.float32]]]) -> None:
    """Move each template a step towards the beat that joined it (a wave's, every lead's at once), and renew its
    unit QRS."""
    if not joined:
        return
    old = np.array([template.shape for _, template, _, _ in joined])
    shapes = old + TEMPLATE_ALPHA * (np.array([shape for _, _, _, shape in joined]) - old)
    units = _units(shapes[:, QRS_POINTS])
    for k, (lead, template, at, _) in enumerate(joined):
        # (copies: a row kept would keep the whole wave's array alive as long as the template lives)
        template.shape = shapes[k].copy()
        template.unit = lead._units[at] = units[k].copy()


@lru_cache(maxsize=8)
def _resampling(length: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Linear interpolation of a window of `length` samples at BEAT_POINTS evenly spaced points: the sample at or
    before each point, the one after, and the fraction of the way (np.interp's arithmetic, to the last bit)."""
    positions = np.linspace(0.0, length - 1.0, BEAT_POINTS)
    before = np.minimum(np.floor(positions).astype(np.intp), length - 1)
    return before, np.minimum(before + 1, length - 1), positions - before


def normalise_beats(windows: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Beats' shapes, a row each: each window linearly resampled to 64 points, minus its median, over its largest
    swing (the classifier's training uses this very function)."""
    before, after, fraction = _resampling(windows.shape[1])
    low = windows[:, before]
    resampled = (windows[:, after] - low) * fraction + low
    # One partial sort gives the median and the extremes (the largest swing from the median is at one of them).
    ordered = resampled.copy()
    ordered.partition(_ORDER_POINTS, axis=1)
    median = 0.5 * (ordered[:, BEAT_POINTS // 2 - 1] + ordered[:, BEAT_POINTS // 2])
    scale = np.maximum(ordered[:, BEAT_POINTS - 1] - median, median - ordered[:, 0])
    scale[scale == 0] = 1.0
    centred = (resampled - median[:, np.newaxis]) / scale[:, np.newaxis]
    shapes: npt.NDArray[np.float32] = centred.astype(np.float32, order="C")  # (the indexing above gives columns)
    return shapes


_ORDER_POINTS = np.array([0, BEAT_POINTS // 2 - 1, BEAT_POINTS // 2, BEAT_POINTS - 1])


def _units(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Rows (beats' QRSs, `QRS_POINTS` of their shapes) centred and scaled to unit norm (zeros for a constant),
    so Pearson's r of two is their dot product."""
    # (Reductions along the rows of a C-ordered array: a row's result does not depend on the other rows.  Over a
    # strided or casting view numpy may order the additions otherwise.)
    rows = np.ascontiguousarray(x, dtype=np.float64)
    centred = rows - (_sum(rows, axis=1) / rows.shape[1])[:, np.newaxis]
    norm = np.sqrt(_sum(centred * centred, axis=1))
    norm[norm == 0] = np.inf  # a constant row stays zeros
    units: npt.NDArray[np.float64] = centred / norm[:, np.newaxis]
    return units


def _median(values: Iterable[float]) -> float:
    """Median of a short sequence (a sort beats numpy's overhead below a few dozen values)."""
    ordered = sorted(values)
    n = len(ordered)
    return float(ordered[n // 2]) if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def _qrs_widths(qrs: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Samples in the shortest span around the centre holding 80 % of each QRS window's slope energy (from 10 %
    to 90 % of it), a row each."""
    energy = np.cumsum(np.abs(qrs[:, 1:] - qrs[:, :-1]), axis=1)
    total = energy[:, -1:]
    start = np.count_nonzero(energy < 0.1 * total, axis=1)
    end = np.count_nonzero(energy < 0.9 * total, axis=1)
    widths: npt.NDArray[np.int64] = np.where(total[:, 0] > 0, end - start + 1, 0)
    return widths


def _kurtosis(conditioned: npt.NDArray[np.float64]) -> list[float]:
    """Each row's kurtosis (about 3 for Gaussian noise, well above 5 for an ECG with a QRS in it)."""
    n = conditioned.shape[1]
    centred = conditioned - (_sum(conditioned, axis=1) / n)[:, np.newaxis]
    squared = centred * centred
    variance = _sum(squared, axis=1) / n
    variance[variance == 0] = 1e-12
    kurtosis: list[float] = (_sum(squared * squared, axis=1) / n / (variance * variance)).tolist()
    return kurtosis


def _quality(kurtosis: float, span: float) -> float:
    """0..1 from the conditioned signal's kurtosis: a clean ECG is sharply peaked (its QRS complexes), noise is
    not.  Saturation scores 0; a very quiet signal (no QRS to judge by) scores 0.5."""
    if span > HIGH_MV:
        return 0.0
    if span < LOW_MV:
        return 0.5
    return float(max(0.0, min(1.0, (kurtosis - 3.0) / 3.0)))


def hrv(rr_ms: npt.ArrayLike) -> tuple[float, float]:
    """(SDNN, RMSSD) in ms of an RR series."""
    rr = np.asarray(rr_ms, dtype=np.float64)
    if len(rr) < 2:
        return float("nan"), float("nan")
    return float(np.std(rr, ddof=1)), float(np.sqrt(np.mean(np.diff(rr) ** 2)))
