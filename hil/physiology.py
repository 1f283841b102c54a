"""Synthetic physiology for simulators: ECG, SpO2/pulse, glucose, with scripted clinical episodes.

Everything is generated here from simple models (no recorded patient data), reproducible from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# (amplitude uV, centre s relative to R, width s) for P, Q, R, S, T: a textbook lead-II-like beat.
_BEAT_WAVES = np.array(
    [
        (150.0, -0.20, 0.025),
        (-120.0, -0.030, 0.010),
        (1200.0, 0.0, 0.011),
        (-250.0, 0.030, 0.010),
        (320.0, 0.26, 0.045),
    ]
)


class SyntheticEcg:
    """A continuous ECG in microvolts at a fixed rate; `next(n)` continues exactly where the last call ended."""

    def __init__(
        self, sample_rate_hz: float, heart_rate_bpm: float = 72.0, seed: int = 1, *, keep_beats: bool = False
    ) -> None:
        self.rate = sample_rate_hz
        # Every beat time generated, when asked (tests use them as the reference annotation).
        self.all_beats: list[float] | None = [0.3] if keep_beats else None
        self.heart_rate_bpm = heart_rate_bpm
        self._rng = np.random.default_rng(seed)
        self._t = 0.0
        self._beats: list[float] = [0.3]
        self.flat = False

    def _extend_beats(self, since: float, until: float) -> None:
        while self._beats[-1] < until + 1.0:
            rr = 60.0 / self.heart_rate_bpm * (1.0 + 0.04 * self._rng.standard_normal())
            self._beats.append(self._beats[-1] + max(rr, 0.25))
            if self.all_beats is not None:
                self.all_beats.append(self._beats[-1])
        # Forget beats that can no longer touch these or later samples (a beat's waves span under 0.6 s).
        while len(self._beats) > 2 and self._beats[1] < since - 1.0:
            self._beats.pop(0)

    def next(self, n: int) -> npt.NDArray[np.int32]:
        t = self._t + np.arange(n) / self.rate
        self._t += n / self.rate
        if self.flat:
            return np.zeros(n, dtype=np.int32)
        self._extend_beats(float(t[0]), float(t[-1]))
        signal = np.zeros(n)
        for beat in self._beats:
            if beat < t[0] - 0.6 or beat > t[-1] + 0.6:
                continue
            dt = t[:, None] - beat
            signal += np.sum(
                _BEAT_WAVES[:, 0] * np.exp(-0.5 * ((dt - _BEAT_WAVES[:, 1]) / _BEAT_WAVES[:, 2]) ** 2), axis=1
            )
        baseline = 60.0 * np.sin(2 * np.pi * 0.25 * t)
        noise = 8.0 * self._rng.standard_normal(n)
        return np.round(signal + baseline + noise).astype(np.int32)


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
