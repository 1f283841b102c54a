"""One patient's rhythm from every signal they have: ECG leads, pleth and arterial pressure, fused each second.

Each signal has its own analyser (`edge_ml.ecg.LeadAnalyzer`, `edge_ml.pulse.PulseAnalyzer`) and its own
quality; once every signal has delivered a second, that second is judged with the best evidence available.
The rules follow IEC 60601-2-27 and the PhysioNet/CinC Challenge 2015 definitions (defaults in
`RhythmSettings`, configurable per patient):

- `asystole`: no QRS for 4 s in the leads whose beats can be trusted, and no perfusing pulse in that time.
- `extreme_bradycardia`: heart rate under 40 /min over 5 consecutive credible beats of the most coherent lead,
  unless a perfusing pulse wave beats clearly faster.
- `extreme_tachycardia`: heart rate over 140 /min from the median interval of 17 consecutive credible beats of
  a trusted lead, unless a perfusing pulse wave says the lead is counting twice (its rate is under three
  quarters of the lead's).
- `ventricular_tachycardia`: 5 consecutive beats judged ventricular (the beat classifier, weighed across the
  leads that saw each beat) at over 100 /min, regular enough and wide enough; a beat that is the lead's dominant
  beat again in every lead counts for nothing.  A pulse wave that stays unchanged through the run demands
  stronger evidence.
- `ventricular_fibrillation`: a fibrillatory, flutter or oscillatory ECG (no energy above 15 Hz where QRS
  complexes put theirs, a dominant frequency of 2-9 Hz, low kurtosis) in every usable lead for 4 s, with no
  perfusing pulse.

A lead that is off, saturated or noisy never alone raises a physiological alarm: its beats are trusted only
while it is coherent (most of its recent beats match its own dominant beat), and its state is reported for
the technical alarms instead.  See docs/ALARMS.md for the rules in words, their evidence and their limits.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from edge_ml.alarm_set import (
    ASYSTOLE,
    EXTREME_BRADYCARDIA,
    EXTREME_TACHYCARDIA,
    VENTRICULAR_FIBRILLATION,
    VENTRICULAR_TACHYCARDIA,
    ChannelKind,
    RhythmSettings,
)
from edge_ml.beats import BeatClassifier
from edge_ml.ecg import LOW_MV, MATCH_CORRELATION, Beat, LeadAnalyzer, LeadAssessment, analyse
from edge_ml.pulse import PulseAnalyzer, PulseAssessment

_T = TypeVar("_T")

STALL_S = 4.0  # a signal this far behind the others is left out of the fusion until it catches up
HISTORY_S = 60.0  # beats and pulses kept per signal
COHERENCE_S = 30.0  # a lead's coherence is judged over this much of its recent beats
COHERENT = 0.6  # a lead is coherent when this fraction of its recent beats match its dominant beat
CREDIBLE_CORRELATION = 0.6  # a beat this like the dominant one is a QRS, not a P wave or noise
CREDIBLE_AMPLITUDE = 0.8  # ... and so is one unlike it but nearly its size (a pacing spike or P wave is smaller)
NOISE_AMPLITUDE = 3.0  # a "beat" over three times the dominant one is movement, not a QRS ...
QRS_MV = LOW_MV  # ... when the dominant one is QRS-sized: smaller, it was learnt from noise (a lead at standstill)
# A beat this like its lead's dominant beat in shape (the template-matching correlation) and in size (the rule
# classifier's normal range) is that beat; a fused beat like it in every lead that saw it is no ventricular evidence.
LIKE_DOMINANT_CORRELATION = MATCH_CORRELATION
LIKE_DOMINANT_SIZE = (0.7, 1.4)
CLUSTER_S = 0.1  # beats of different leads within this are one beat
VT_IRREGULARITY = 0.35  # coefficient of variation of the run's intervals
VT_LEAD_COHERENCE = 0.5  # leads less coherent than this weigh a fifth in the VT evidence
BRADY_MARGIN_BPM = 5.0  # a channel this much over the limit vetoes a slow one
VT_MIN_WIDTH_MS = 90.0  # median QRS width of the run's beats
NOISE_WIDTH_MS = 240.0  # a "QRS" this wide is noise (the measure's window is 300 ms)
VF_SHARP = 0.01  # share of 1-40 Hz power above 15 Hz: under it, no QRS complexes
POOR_WINDOW = 10  # seconds of quality a lead's poor-signal state is judged on
POOR_QUALITY = 0.3  # mean quality below this over the window is a poor signal
MIN_MAP_MMHG = 30.0  # an arterial pressure wave below this mean is not perfusing
MIN_PULSE_PRESSURE_MMHG = 8.0


@dataclass(frozen=True)
class RhythmAssessment:
    """One second of the patient's rhythm: which alarm conditions hold, and on what evidence."""

    end_s: float  # seconds since the analysis began
    present: frozenset[str]
    heart_rate_bpm: float | None
    rate_source: str | None  # the channel the rate comes from
    evidence: dict[str, str]  # per present condition, which signals showed it
    vetoed: frozenset[str]  # conditions the ECG alone would raise that a pulse wave contradicts
    leads: frozenset[str]  # the ECG leads being analysed
    lead_off: frozenset[str]
    poor_signal: frozenset[str]  # leads whose quality is too low to judge a rhythm by
    quality: dict[str, float]  # per channel, 0..1
    pulsing: frozenset[str]  # pulse waves with a perfusing pulse in the last two seconds
    # When the signal that completed this second arrived (the caller's clock, as given to `stage`), if it said.
    arrived_ns: int | None = None


@dataclass
class _Lead:
    name: str
    analyzer: LeadAnalyzer
    offset_s: float
    queue: deque[LeadAssessment] = field(default_factory=deque)
    arrived: deque[int | None] = field(default_factory=deque)  # when each queued second arrived
    staged: deque[tuple[npt.NDArray[np.float64], int | None]] = field(default_factory=deque)  # not yet analysed
    beats: deque[tuple[float, Beat]] = field(default_factory=deque)  # (time s, beat)
    credible: deque[float] = field(default_factory=deque)  # times of the beats that are QRS complexes
    # The beats of the last COHERENCE_S, as (time, like the dominant beat), and how many are alike: kept as they
    # come and go, not recounted each second.
    recent: deque[tuple[float, bool]] = field(default_factory=deque)
    recent_alike: int = 0
    last_credible_s: float = 0.0
    latest: LeadAssessment | None = None
    qualities: deque[float] = field(default_factory=lambda: deque(maxlen=POOR_WINDOW))
    tachy_key: tuple[float | None, int, int] | None = None  # the credible beats tachy_rate is of
    tachy_rate: float | None = None


@dataclass
class _Pulse:
    name: str
    analyzer: PulseAnalyzer
    offset_s: float
    pressure: bool
    queue: deque[PulseAssessment] = field(default_factory=deque)
    arrived: deque[int | None] = field(default_factory=deque)
    pulses: deque[tuple[float, float]] = field(default_factory=deque)  # (time s, amplitude)
    last_pulse_s: float | None = None
    latest: PulseAssessment | None = None


@dataclass
class _Cluster:
    time_s: float
    beats: dict[str, Beat]


class RhythmAnalyzer:
    """Feed each signal's samples as they come; get one RhythmAssessment per second all signals have covered."""

    def __init__(
        self,
        settings: RhythmSettings | None = None,
        classifier: BeatClassifier | None = None,
        mains_hz: float = 50.0,
    ) -> None:
        self.settings = settings or RhythmSettings()
        self._classifier = classifier
        self._mains_hz = mains_hz
        self._leads: dict[str, _Lead] = {}
        self._pulses: dict[str, _Pulse] = {}
        self._second = 0  # seconds fused so far
        self._t0: float | None = None  # the first sample's time (the timeline's zero)
        self._clusters: deque[_Cluster] = deque()

    @property
    def channels(self) -> list[str]:
        return [*self._leads, *self._pulses]

    def feed(
        self, channel: str, kind: ChannelKind, fs: float, samples: npt.ArrayLike, start_s: float | None = None
    ) -> list[RhythmAssessment]:
        """Add samples of one signal; returns the seconds that became complete across all signals.

        `start_s` is when the samples began, on a clock shared by the signals (seconds): a signal that starts
        later, or restarts, is placed on the patient's timeline by it.  Without it, a new signal starts now.
        """
        self.stage(channel, kind, fs, samples, start_s)
        analyse_staged([self])
        return self.fuse()

    def stage(
        self,
        channel: str,
        kind: ChannelKind,
        fs: float,
        samples: npt.ArrayLike,
        start_s: float | None = None,
        arrived_ns: int | None = None,
    ) -> None:
        """`feed` in three steps, for a caller with many patients: stage each signal's samples here (an ECG lead's
        seconds wait to be analysed), analyse what every analyser staged together (`analyse_staged`), then
        `fuse` each.  `arrived_ns` is when the samples arrived: each second judged carries the time its last
        signal arrived (`RhythmAssessment.arrived_ns`), however late it is judged."""
        if self._t0 is None:
            self._t0 = start_s if start_s is not None else 0.0
        offset = float(round(start_s - self._t0)) if start_s is not None else float(self._second)
        if kind is ChannelKind.ECG:
            lead = self._leads.get(channel)
            if lead is None or lead.analyzer.fs != fs:
                analyzer = LeadAnalyzer(fs, self._classifier, self._mains_hz)
                lead = self._leads[channel] = _Lead(channel, analyzer, offset)
            # (a copy of a second handed over whole: the caller may reuse its array before it is analysed)
            lead.staged.extend((np.array(w), arrived_ns) for w in lead.analyzer.seconds(samples))
        else:
            pulse = self._pulses.get(channel)
            if pulse is None or pulse.analyzer.fs != fs:
                pressure = kind is ChannelKind.ABP
                pulse = self._pulses[channel] = _Pulse(channel, PulseAnalyzer(fs, pressure=pressure), offset, pressure)
            assessments = pulse.analyzer.process(samples)
            pulse.queue.extend(assessments)
            pulse.arrived.extend([arrived_ns] * len(assessments))

    def staged(self, channel: str) -> bool:
        """This ECG lead has a second staged and not yet analysed."""
        lead = self._leads.get(channel)
        return lead is not None and bool(lead.staged)

    def fuse(self) -> list[RhythmAssessment]:
        """The seconds that every signal has now covered (what is staged is analysed first, if it was not)."""
        if any(lead.staged for lead in self._leads.values()):
            analyse_staged([self])
        return self._fuse_ready()

    def _fuse_ready(self) -> list[RhythmAssessment]:
        """Fuse every second all signals have covered; a signal STALL_S behind the leader is left out."""
        out: list[RhythmAssessment] = []
        while True:
            channels: list[_Lead | _Pulse] = [*self._leads.values(), *self._pulses.values()]
            nxt = self._second + 1
            for c in channels:  # a second already fused (a signal that joined late): too late to count
                while c.queue and _second_of(c) < nxt:
                    c.queue.popleft()
                    c.arrived.popleft()
            ready = [(c, _second_of(c)) for c in channels if c.queue]  # each with the second its next one ends
            if not ready:
                return out
            newest = max(second + len(c.queue) - 1 for c, second in ready)
            waiting = [c for c in channels if not c.queue and c.offset_s < nxt]
            if waiting:
                if newest - nxt < STALL_S:
                    return out
                for c in waiting:  # stalled: leave it out until it sends again (it restarts then)
                    self._leads.pop(c.name, None)
                    self._pulses.pop(c.name, None)
                continue
            first = min(second for _, second in ready)
            if first > nxt:
                self._second = first - 1  # a gap with no signal at all
                continue
            self._second = nxt
            present = [c for c, second in ready if second == nxt]
            arrived = [t for c in present if (t := c.arrived.popleft()) is not None]
            for c in present:
                if isinstance(c, _Lead):
                    self._take_lead(c, c.queue.popleft())
                else:
                    self._take_pulse(c, c.queue.popleft())
            out.append(self._judge(max(arrived, default=None)))

    # -- per-signal bookkeeping ------------------------------------------------------------------------------
    def _take_lead(self, lead: _Lead, a: LeadAssessment) -> None:
        lead.latest = a
        if not a.lead_off:
            lead.qualities.append(a.quality)
        end = float(self._second)
        for beat in a.beats:
            t = lead.offset_s + beat.index / a.sample_rate_hz
            lead.beats.append((t, beat))
            alike = beat.correlation >= 0.8
            lead.recent.append((t, alike))
            lead.recent_alike += alike
            self._cluster(lead.name, t, beat)
            if _credible(beat):
                lead.last_credible_s = max(lead.last_credible_s, t)
                lead.credible.append(t)
        if a.lead_off:
            lead.last_credible_s = end
        while lead.beats and lead.beats[0][0] < end - HISTORY_S:
            lead.beats.popleft()
        while lead.credible and lead.credible[0] < end - HISTORY_S:
            lead.credible.popleft()

    def _take_pulse(self, pulse: _Pulse, a: PulseAssessment) -> None:
        pulse.latest = a
        end = float(self._second)
        for p in a.pulses:
            pulse.pulses.append((pulse.offset_s + p.index / a.sample_rate_hz, p.amplitude))
        if a.last_pulse_index is not None:
            pulse.last_pulse_s = pulse.offset_s + a.last_pulse_index / a.sample_rate_hz
        while pulse.pulses and pulse.pulses[0][0] < end - HISTORY_S:
            pulse.pulses.popleft()

    def _cluster(self, lead: str, t: float, beat: Beat) -> None:
        for cluster in reversed(self._clusters):
            if cluster.time_s < t - 2 * CLUSTER_S:
                break
            if abs(cluster.time_s - t) <= CLUSTER_S and lead not in cluster.beats:
                cluster.beats[lead] = beat
                return
        cluster = _Cluster(t, {lead: beat})
        if self._clusters and self._clusters[-1].time_s > t:  # keep time order (leads report a little apart)
            items = sorted([*self._clusters, cluster], key=lambda c: c.time_s)
            self._clusters = deque(items)
        else:
            self._clusters.append(cluster)
        while self._clusters and self._clusters[0].time_s < self._second - HISTORY_S:
            self._clusters.popleft()

    # -- judgement -------------------------------------------------------------------------------------------
    def _coherence(self, lead: _Lead) -> float:
        since = self._second - COHERENCE_S
        recent = lead.recent
        while recent and recent[0][0] < since:
            lead.recent_alike -= recent.popleft()[1]
        return lead.recent_alike / len(recent) if len(recent) >= 3 else 0.0

    def _pulse_within(self, pulses: list[_Pulse], seconds: float) -> bool:
        """One of these pulse waves had a pulse in the last `seconds`."""
        return any(p.last_pulse_s is not None and self._second - p.last_pulse_s < seconds for p in pulses)

    @staticmethod
    def _noisy(lead: _Lead, seconds: int = POOR_WINDOW) -> bool:
        """The lead's quality over its last `seconds` is too low to judge a rhythm by."""
        if len(lead.qualities) < seconds:
            return False
        recent = _tail(lead.qualities, seconds)
        return sum(recent) / seconds < POOR_QUALITY

    def _tachy_rate(self, lead: _Lead) -> float | None:
        """The rate from the median interval of the lead's last tachy_beats credible beats; computed again only
        when those beats change (a new one came, or one of fewer than tachy_beats aged out)."""
        beats = self.settings.tachy_beats
        key = (lead.credible[-1] if lead.credible else None, min(len(lead.credible), beats), beats)
        if key != lead.tachy_key:
            lead.tachy_key, lead.tachy_rate = key, _median_rate(_tail(lead.credible, beats), beats, None)
        return lead.tachy_rate

    def _beating(self, lead: _Lead) -> bool:
        """The lead shows at least two beats like its dominant one in the last four seconds, at a rate no faster
        than 150 /min: no fibrillation there, whatever the spectrum would say (so it need not be computed)."""
        since = self._second - self.settings.vf_s
        count = like = 0
        for t, b in reversed(lead.beats):
            if t < since:
                break
            count += 1
            like += b.correlation >= 0.8
        return like >= 2 and like >= 0.7 * count and count <= 1 + 2.5 * self.settings.vf_s

    def _perfusing(self, pulse: _Pulse) -> bool:
        a = pulse.latest
        if a is None or a.flat or a.quality < 0.5:
            return False
        if pulse.pressure:
            amplitudes = [amp for _, amp in _tail(pulse.pulses, 8)]
            if a.mean_level < MIN_MAP_MMHG or not amplitudes or float(np.median(amplitudes)) < MIN_PULSE_PRESSURE_MMHG:
                return False
        return True

    def _judge(self, arrived_ns: int | None) -> RhythmAssessment:
        s = self.settings
        end = float(self._second)
        present: set[str] = set()
        vetoed: set[str] = set()
        evidence: dict[str, str] = {}
        usable = [lead for lead in self._leads.values() if lead.latest is not None and not lead.latest.lead_off]
        coherence = {lead.name: self._coherence(lead) for lead in usable}
        trusted = [lead for lead in usable if coherence[lead.name] >= COHERENT]
        perfusing = [p for p in self._pulses.values() if self._perfusing(p)]

        # Asystole: the trusted leads (or the most coherent one) have no credible beat for asystole_s.
        reference = trusted or ([max(usable, key=lambda lead: coherence[lead.name])] if usable else [])
        if reference and all(end - lead.last_credible_s >= s.asystole_s for lead in reference):
            if self._pulse_within(perfusing, s.asystole_s):
                vetoed.add(ASYSTOLE)
            else:
                present.add(ASYSTOLE)
                evidence[ASYSTOLE] = ",".join(lead.name for lead in reference)

        # Rates: the best lead is the most coherent one (ties: the cleaner signal).
        best = max(
            trusted, key=lambda lead: (coherence[lead.name], lead.latest.quality if lead.latest else 0.0), default=None
        )
        rate, source = None, None
        if best is not None:
            rate = _rate([t for t, _ in _tail(best.beats, 9)], 8)
            source = best.name
        if rate is None and perfusing:
            rate = _rate([t for t, _ in _tail(perfusing[0].pulses, 9)], 8)
            source = perfusing[0].name

        vf_leads = [lead for lead in usable if not self._beating(lead) and _fibrillatory(lead.latest)]
        if usable and len(vf_leads) == len(usable):
            if self._pulse_within(perfusing, s.vf_s):
                vetoed.add(VENTRICULAR_FIBRILLATION)
            else:
                present.add(VENTRICULAR_FIBRILLATION)
                evidence[VENTRICULAR_FIBRILLATION] = ",".join(lead.name for lead in vf_leads)

        # Extreme bradycardia: the most coherent lead (trusted or not: a slow heart's escape beats may not look
        # like its usual ones), unless a perfusing pulse beats clearly faster (a lead that misses beats is slow).
        brady_lead = max(
            usable, key=lambda lead: (coherence[lead.name], lead.latest.quality if lead.latest else 0.0), default=None
        )
        if brady_lead is not None and VENTRICULAR_FIBRILLATION not in present:
            brady = _run_rate(_tail(brady_lead.credible, s.brady_beats), s.brady_beats, end)
            if brady is not None and brady < s.brady_bpm:
                faster = [
                    p.name
                    for p in perfusing
                    if (r := _run_rate([t for t, _ in _tail(p.pulses, s.brady_beats)], s.brady_beats, end)) is not None
                    and r >= s.brady_bpm + BRADY_MARGIN_BPM
                ]
                if faster and ASYSTOLE not in present:
                    vetoed.add(EXTREME_BRADYCARDIA)
                else:
                    present.add(EXTREME_BRADYCARDIA)
                    evidence[EXTREME_BRADYCARDIA] = brady_lead.name

        tachy_rates = [(r, lead.name) for lead in trusted if (r := self._tachy_rate(lead)) is not None]
        if tachy_rates and not present & {ASYSTOLE, VENTRICULAR_FIBRILLATION}:
            tachy, name = max(tachy_rates)
            if tachy > s.tachy_bpm:
                slower = [
                    p.name
                    for p in perfusing
                    if (r := _run_rate([t for t, _ in _tail(p.pulses, 8)], 8, None)) is not None and r < 0.75 * tachy
                ]
                if slower:
                    vetoed.add(EXTREME_TACHYCARDIA)
                else:
                    present.add(EXTREME_TACHYCARDIA)
                    evidence[EXTREME_TACHYCARDIA] = name

        vt = self._ventricular_run(coherence, perfusing)
        if vt is not None:
            present.add(VENTRICULAR_TACHYCARDIA)
            evidence[VENTRICULAR_TACHYCARDIA] = vt

        lead_off = frozenset(
            lead.name for lead in self._leads.values() if lead.latest is not None and lead.latest.lead_off
        )
        quality = {lead.name: lead.latest.quality for lead in self._leads.values() if lead.latest is not None}
        quality |= {p.name: p.latest.quality for p in self._pulses.values() if p.latest is not None}
        # Poor signal is noise, judged on quality alone and not while an arrhythmia is present (a fibrillating or
        # stopped heart is not a noisy lead, however little its beats look like the patient's usual ones).
        poor = frozenset(lead.name for lead in usable if not present and self._noisy(lead))
        pulsing = frozenset(p.name for p in perfusing if self._pulse_within([p], 2.0))
        return RhythmAssessment(
            end,
            frozenset(present),
            rate,
            source,
            evidence,
            frozenset(vetoed),
            frozenset(self._leads),
            lead_off,
            poor,
            quality,
            pulsing,
            arrived_ns,
        )

    def _ventricular_run(self, coherence: dict[str, float], perfusing: list[_Pulse]) -> str | None:
        """The last vt_beats fused beats, if they are fast, regular and wide enough and judged ventricular on the
        weighed evidence of the leads that saw them: the leads that saw them, else None."""
        s = self.settings
        clusters = _tail(self._clusters, s.vt_beats)
        if len(clusters) < s.vt_beats:
            return None
        lo, hi = clusters[0].time_s, clusters[-1].time_s
        if hi <= lo or 60.0 * (s.vt_beats - 1) / (hi - lo) <= s.vt_bpm or hi < self._second - 2.0:
            return None
        intervals = np.diff([c.time_s for c in clusters])
        if float(np.std(intervals) / np.mean(intervals)) > VT_IRREGULARITY:
            return None  # beats this irregular at this rate are noise, not a ventricular focus
        # Incoherent leads (their usual beat unclear) say little.
        weights = {name: 1.0 if c >= VT_LEAD_COHERENCE else 0.2 for name, c in coherence.items()}
        scores = []
        for cluster in clusters:
            if all(_like_dominant(beat) for beat in cluster.beats.values()):
                scores.append(0.0)  # the patient's usual beat in every lead, whatever the classifier says
                continue
            num = den = 0.0
            for name, beat in cluster.beats.items():
                w = weights.get(name, 0.0)
                num += w * (beat.ventricular if _qrs_like(beat) else 0.0)
                den += w
            scores.append(num / den if den else 0.0)
        evidence = sum(scores) / len(scores)
        widths = [b.width_ms for c in clusters for b in c.beats.values()]
        if sorted(widths)[len(widths) // 2] < VT_MIN_WIDTH_MS:
            return None  # narrow complexes are supraventricular, however unlike the usual beat they look
        unchanged = any(_pulse_unchanged(p, lo, hi) for p in perfusing)
        if evidence < (s.vt_evidence_with_pulse if unchanged else s.vt_evidence):
            return None
        return ",".join(sorted({name for c in clusters for name in c.beats}))


def analyse_staged(analysers: Iterable[RhythmAnalyzer]) -> None:
    """Analyse the ECG seconds staged in these analysers: one second of every lead at a time, the leads of one
    sampling rate together (`edge_ml.ecg.analyse`: a lead's results do not depend on the leads it is analysed
    with, only the cost does)."""
    leads = [lead for analyser in analysers for lead in analyser._leads.values() if lead.staged]
    while leads:
        groups: dict[tuple[float, int], list[_Lead]] = {}
        for lead in leads:
            groups.setdefault(lead.analyzer.batch_key, []).append(lead)
        for group in groups.values():
            staged = [lead.staged.popleft() for lead in group]
            assessments = analyse([lead.analyzer for lead in group], [window for window, _ in staged])
            for lead, assessment, (_, arrived) in zip(group, assessments, staged, strict=True):
                lead.queue.append(assessment)
                lead.arrived.append(arrived)
        leads = [lead for lead in leads if lead.staged]


def _tail(items: deque[_T], n: int) -> list[_T]:
    """The last `n` items, oldest first, without copying the whole deque."""
    if n >= len(items):
        return list(items)
    out = list(itertools.islice(reversed(items), n))
    out.reverse()
    return out


def _second_of(channel: _Lead | _Pulse) -> int:
    """The patient-timeline second the channel's next queued assessment ends."""
    a = channel.queue[0]
    return round(channel.offset_s + a.end_index / a.sample_rate_hz)


def _not_movement(beat: Beat) -> bool:
    """Not three times the dominant beat, or the dominant beat is no QRS (after a standstill the lead's "dominant
    beat" is noise, and the first real complexes are many times its size)."""
    return beat.amplitude_ratio <= NOISE_AMPLITUDE or beat.dominant_mv < QRS_MV


def _qrs_like(beat: Beat) -> bool:
    """Sized and shaped like a QRS complex at all: not movement by its size, and with its slope energy not spread
    evenly over the whole +/- 150 ms window the way noise spreads it."""
    return _not_movement(beat) and beat.width_ms < NOISE_WIDTH_MS


def _credible(beat: Beat) -> bool:
    """A QRS rather than a P wave or noise: like the dominant beat, or at least 0.8 of its size; not movement."""
    return _not_movement(beat) and (
        beat.correlation >= CREDIBLE_CORRELATION or beat.amplitude_ratio >= CREDIBLE_AMPLITUDE
    )


def _like_dominant(beat: Beat) -> bool:
    """The lead's dominant beat again, in shape and in size."""
    low, high = LIKE_DOMINANT_SIZE
    return beat.correlation >= LIKE_DOMINANT_CORRELATION and low <= beat.amplitude_ratio <= high


def _rate(times: list[float], beats: int) -> float | None:
    """Median rate of the last `beats` intervals (None with fewer than 3 beats)."""
    recent = times[-(beats + 1) :]
    if len(recent) < 3:
        return None
    intervals = sorted(b - a for a, b in itertools.pairwise(recent))
    middle = intervals[len(intervals) // 2]
    return 60.0 / middle if middle > 0 else None


def _run_rate(times: list[float], beats: int, now: float | None) -> float | None:
    """Mean rate over the last `beats` beats; with `now`, the interval still open counts as one more (so a
    heart that stops slows the rate at once)."""
    if len(times) < beats:
        return None
    span = times[-1] - times[-beats]
    if span <= 0:
        return None
    rate = 60.0 * (beats - 1) / span
    if now is not None and now - times[-1] > span / (beats - 1):
        rate = min(rate, 60.0 * (beats - 1) / (now - times[-beats + 1]))
    return rate


def _median_rate(times: list[float], beats: int, now: float | None) -> float | None:
    """Rate from the median interval of the last `beats` beats (a missed or extra beat moves it little)."""
    del now
    if len(times) < beats:
        return None
    intervals = sorted(b - a for a, b in zip(times[-beats:], times[-beats + 1 :], strict=False))
    middle = intervals[len(intervals) // 2]
    return 60.0 / middle if middle > 0 else None


def _fibrillatory(a: LeadAssessment | None) -> bool:
    """No sharp QRS energy (under 1 % of it above 15 Hz), a dominant rhythm of 2-9 Hz and a sine-like
    amplitude distribution."""
    if a is None or a.spectrum is None:
        return False
    sp = a.spectrum
    return sp.sharp < VF_SHARP and 2.0 <= sp.dominant_hz <= 9.0 and sp.kurtosis < 4.0 and sp.concentration >= 0.4


def _pulse_unchanged(pulse: _Pulse, lo: float, hi: float) -> bool:
    """The pulse wave kept its amplitude and rhythm through [lo, hi] compared with the 30 s before."""
    before = [(t, a) for t, a in pulse.pulses if lo - 30.0 <= t < lo - 1.0]
    during = [(t, a) for t, a in pulse.pulses if lo <= t <= hi + 0.5]
    if len(before) < 5 or len(during) < 2:
        return False
    base_amplitude = float(np.median([a for _, a in before]))
    base_interval = float(np.median(np.diff([t for t, _ in before])))
    if base_amplitude <= 0 or base_interval <= 0:
        return False
    amplitude = float(np.median([a for _, a in during])) / base_amplitude
    intervals = np.diff([t for t, _ in during]) / base_interval
    regular = float(np.mean(np.abs(intervals - 1.0) < 0.2)) >= 0.75
    return amplitude >= 0.75 and regular and not math.isnan(amplitude)
