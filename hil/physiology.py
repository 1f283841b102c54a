"""Synthetic physiology for simulators: ECG, SpO2/pulse, glucose, with scripted clinical episodes.

Everything is generated here from simple models (no recorded patient data), reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# (amplitude uV, centre s relative to R, width s) of each wave: a textbook lead-II-like sinus beat (P, Q, R, S,
# T) and a ventricular one (no P, a wide bizarre QRS, a discordant T).
_BEAT_WAVES = np.array(
    [
        (150.0, -0.20, 0.025),
        (-120.0, -0.030, 0.010),
        (1200.0, 0.0, 0.011),
        (-250.0, 0.030, 0.010),
        (320.0, 0.26, 0.045),
    ]
)
_VENTRICULAR_WAVES = np.array(
    [
        (900.0, 0.0, 0.030),
        (-800.0, 0.075, 0.035),
        (-350.0, 0.30, 0.060),
    ]
)
_SPAN_S = (-0.35, 0.65)  # a beat's waves lie within this of its R peak

RHYTHMS = ("sinus", "vt", "vf", "asystole")


def _beat_template(waves: npt.NDArray[np.float64], rate: float) -> npt.NDArray[np.float64]:
    t = np.arange(round(_SPAN_S[0] * rate), round(_SPAN_S[1] * rate)) / rate
    shape: npt.NDArray[np.float64] = np.sum(
        waves[:, 0] * np.exp(-0.5 * ((t[:, None] - waves[:, 1]) / waves[:, 2]) ** 2), axis=1
    )
    return shape


class SyntheticEcg:
    """A continuous ECG in microvolts at a fixed rate; `next(n)` continues exactly where the last call ended.

    `rhythm` may change between calls: "sinus" (beats at `heart_rate_bpm`, 4 % variability), "vt" (wide
    ventricular beats at `heart_rate_bpm`, regular), "vf" (a fibrillatory wave of 4-6 Hz, no beats) or
    "asystole" (no beats, the amplifier's noise only).  `flat` gives an amplifier at rest (lead-off).
    Beats are added from precomputed templates, so generation costs little per sample.
    """

    def __init__(
        self, sample_rate_hz: float, heart_rate_bpm: float = 72.0, seed: int = 1, *, keep_beats: bool = False
    ) -> None:
        self.rate = sample_rate_hz
        # Every beat time generated, when asked (tests use them as the reference annotation).
        self.all_beats: list[float] | None = [] if keep_beats else None
        self.beats: list[tuple[float, str]] = []  # (time s, "sinus" | "vt") of recent beats, for pulse waves
        self.heart_rate_bpm = heart_rate_bpm
        self.rhythm = "sinus"
        self.flat = False
        self._rng = np.random.default_rng(seed)
        self._n = 0  # samples generated so far
        self._next_beat = 0.3
        self._pending = np.zeros(0)  # beat waves already placed beyond the samples handed out
        self._templates = {
            "sinus": _beat_template(_BEAT_WAVES, sample_rate_hz),
            "vt": _beat_template(_VENTRICULAR_WAVES, sample_rate_hz),
        }
        self._lead = round(-_SPAN_S[0] * sample_rate_hz)  # template samples before the R peak
        self._vf_phase = 0.0

    def next(self, n: int) -> npt.NDArray[np.int32]:
        start, end = self._n, self._n + n
        self._n = end
        t = (start + np.arange(n)) / self.rate
        if self.flat:
            self._pending = np.zeros(0)
            self._next_beat = end / self.rate + 0.3
            return np.zeros(n, dtype=np.int32)
        out = np.zeros(n + len(self._templates["sinus"]))
        out[: len(self._pending)] += self._pending[: len(out)]
        if self.rhythm in ("sinus", "vt"):
            template = self._templates[self.rhythm]
            while self._next_beat + _SPAN_S[0] < end / self.rate:  # its waves begin before this call ends
                r = round(self._next_beat * self.rate) - start  # R peak, in this call's samples
                lo = r - self._lead
                a, b = max(lo, 0), min(lo + len(template), len(out))
                if b > a:
                    out[a:b] += template[a - lo : b - lo]
                self.beats.append((self._next_beat, self.rhythm))
                if self.all_beats is not None:
                    self.all_beats.append(self._next_beat)
                jitter = 0.04 if self.rhythm == "sinus" else 0.01
                rr = 60.0 / self.heart_rate_bpm * (1.0 + jitter * self._rng.standard_normal())
                self._next_beat += max(rr, 0.2)
            del self.beats[:-64]
        else:
            self._next_beat = max(self._next_beat, end / self.rate)
        if self.rhythm == "vf":
            wander = 5.0 + 0.8 * np.sin(2 * np.pi * 0.2 * t)  # 4-6 Hz
            phase = self._vf_phase + 2 * np.pi * np.cumsum(wander) / self.rate
            self._vf_phase = float(phase[-1])
            out[:n] += 400.0 * (1.0 + 0.3 * np.sin(2 * np.pi * 0.3 * t)) * np.sin(phase)
        self._pending = out[n:]
        baseline = 60.0 * np.sin(2 * np.pi * 0.25 * t)
        noise = 8.0 * self._rng.standard_normal(n)
        return np.round(out[:n] + baseline + noise).astype(np.int32)


class SyntheticPulse:
    """A pleth or arterial pressure wave that follows an ECG's beats (a pulse 0.2 s after each, weaker after a
    ventricular beat, none without a beat): `next(n)` continues where the last call ended."""

    def __init__(self, ecg: SyntheticEcg, *, pressure: bool = False, seed: int = 3) -> None:
        self._ecg = ecg
        self.rate = ecg.rate
        self.pressure = pressure
        self._rng = np.random.default_rng(seed)
        self._n = 0
        self._pending = np.zeros(0)
        self._done = 0.0  # beats up to this time already have their pulse
        t = np.arange(round(0.9 * self.rate)) / self.rate
        rise = 1.0 - np.exp(-t / 0.05)
        self._template = rise * np.exp(-t / 0.35)  # a fast upstroke, a slow run-off
        self._template /= self._template.max()

    def next(self, n: int) -> npt.NDArray[np.float64]:
        start, end = self._n, self._n + n
        self._n = end
        out = np.zeros(n + len(self._template))
        out[: len(self._pending)] += self._pending[: len(out)]
        for beat, kind in self._ecg.beats:
            if beat <= self._done or beat + 0.2 >= end / self.rate:
                continue
            self._done = beat
            at = round((beat + 0.2) * self.rate) - start
            a, b = max(at, 0), min(at + len(self._template), len(out))
            if b > a:
                out[a:b] += (0.25 if kind == "vt" else 1.0) * self._template[a - at : b - at]
        self._pending = out[n:]
        wave = out[:n]
        if self.pressure:
            return 70.0 + 50.0 * wave + 0.3 * self._rng.standard_normal(n)  # mmHg: 70/120, a 50 mmHg pulse
        return 2.0 + 0.05 * wave + 0.0005 * self._rng.standard_normal(n)  # arbitrary units on a DC level


@dataclass(frozen=True)
class Episode:
    """A scripted excursion: from `start_s` for `duration_s`, the value moves to `level` (ramped)."""

    start_s: float
    duration_s: float
    level: float
    ramp_s: float = 2.0


class Trajectory:
    """A vital sign around a baseline with slow noise and scripted episodes, sampled at arbitrary times."""

    def __init__(
        self,
        baseline: float,
        noise: float,
        episodes: tuple[Episode, ...] = (),
        seed: int = 2,
        lo: float = -1e9,
        hi: float = 1e9,
    ) -> None:
        self.baseline = baseline
        self.noise = noise
        self.episodes = episodes
        self.lo, self.hi = lo, hi
        self._rng = np.random.default_rng(seed)
        self._drift = 0.0

    def at(self, t_s: float) -> float:
        self._drift = 0.9 * self._drift + self.noise * float(self._rng.standard_normal())
        value = self.baseline + self._drift
        for ep in self.episodes:
            if ep.start_s <= t_s <= ep.start_s + ep.duration_s:
                into = min(t_s - ep.start_s, ep.start_s + ep.duration_s - t_s)
                weight = min(1.0, into / ep.ramp_s) if ep.ramp_s > 0 else 1.0
                value = value + weight * (ep.level - self.baseline)
        return min(self.hi, max(self.lo, value))
