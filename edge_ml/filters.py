"""Streaming IIR filters with carried state: the result does not depend on how the signal is chunked.

numpy only.  The designs are the textbook ones (Butterworth by the bilinear transform with pre-warping, the
second-order notch), so a gateway that analyses signals does not import scipy.signal: that import alone took
about a second of CPU and tens of megabytes, with the first waveform.  The tests check every design and the
filtering against scipy's.

A filter runs a whole chunk with a few matrix products instead of a sample loop: the chunk is cut into blocks,
each block's output is its own input through the impulse response (a small Toeplitz matrix) plus the state it
starts with through the filter's free response; the states at the blocks' starts follow from one product too.
The matrices depend on the design and the chunk length only, so they are built once per (design, length) and
shared by every filter of that design (a ward of monitors at one rate builds each once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt

Coefficients = npt.NDArray[np.float64]  # second-order sections, one row (b0, b1, b2, 1, a1, a2) each, as scipy's sos
MAX_CHUNK = 4096  # longer inputs are filtered this many samples at a time (the matrices stay small)


class StreamingFilter:
    """A low-order IIR filter (a cascade of second-order sections) applied chunk by chunk with its state
    carried, so any chunking gives the same output."""

    def __init__(self, coefficients: Coefficients) -> None:
        self._design = _design(coefficients)
        self._state = np.zeros(self._design.order)

    def settle(self, level: float) -> None:
        """Start as if the input had been `level` for ever (no step response to a first sample's offset)."""
        self._state = self._design.step_state * level

    def process(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        samples = np.asarray(x, dtype=np.float64)
        if len(samples) <= MAX_CHUNK:
            return self._run(samples)
        return np.concatenate([self._run(samples[lo : lo + MAX_CHUNK]) for lo in range(0, len(samples), MAX_CHUNK)])

    def _run(self, samples: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Filter the chunk's deviation from its first sample, from the state's deviation from that level's steady
        state, then add the level's steady output back: a flat signal at its steady state gives a flat output to
        the last bit (as a sample-by-sample recursion does), not the rounding jitter of the block products, and a
        large offset costs no precision."""
        if not len(samples):
            return samples
        level = float(samples[0])
        steady = self._design.step_state * level
        y, state = self._design.plan(len(samples)).run(samples - level, self._state - steady)
        self._state = state + steady
        y += self._design.step_output * level
        return y


@dataclass(eq=False)
class _Design:
    """The cascade in state-space form, y = C z + D x and z' = A z + B x, two states per section (each section's
    transposed direct form II): better conditioned than one high-order transfer function."""

    transition: npt.NDArray[np.float64]  # A
    input_gain: npt.NDArray[np.float64]  # B
    output_gain: npt.NDArray[np.float64]  # C
    feedthrough: float  # D
    step_state: npt.NDArray[np.float64]  # the state after a unit input for ever
    step_output: float  # the output then (the gain at 0 Hz)
    plans: dict[int, _Plan] = field(default_factory=dict)

    @property
    def order(self) -> int:
        return len(self.input_gain)

    def plan(self, length: int) -> _Plan:
        plan = self.plans.get(length)
        if plan is None:
            plan = self.plans[length] = _Plan.build(self, length)
        return plan


@lru_cache(maxsize=64)
def _design_of(sos: bytes) -> _Design:
    sections = np.frombuffer(sos).reshape(-1, 6)
    a, b, c, d = np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1.0
    for b0, b1, b2, a0, a1, a2 in sections:
        num, den = np.array([b0, b1, b2]) / a0, np.array([a1, a2]) / a0
        sa = np.array([[-den[0], 1.0], [-den[1], 0.0]])  # one section: y = z0 + b0 u, z' = sa z + sb u
        sb = num[1:] - den * num[0]
        sc = np.array([1.0, 0.0])
        # Cascade: this section's input u is the previous output, u = c z + d x.
        n = len(b)
        grown = np.zeros((n + 2, n + 2))
        grown[:n, :n] = a
        grown[n:, :n] = np.outer(sb, c)
        grown[n:, n:] = sa
        a, b = grown, np.concatenate([b, sb * d])
        c, d = np.concatenate([num[0] * c, sc]), num[0] * d
    step_state = np.asarray(np.linalg.solve(np.eye(len(b)) - a, b), dtype=np.float64)
    return _Design(a, b, c, float(d), step_state, float(c @ step_state + d))


def _design(coefficients: Coefficients) -> _Design:
    return _design_of(np.ascontiguousarray(coefficients, dtype=np.float64).tobytes())


@dataclass(eq=False)
class _Plan:
    """The matrices that filter `length` samples at once: blocks of `block` samples, then a shorter rest."""

    blocks: int
    block: int
    rest: int
    impulse_t: npt.NDArray[np.float64]  # (block, block): input -> output within a block, transposed
    free_t: npt.NDArray[np.float64]  # (order, block): state at a block's start -> its output, transposed
    drive_t: npt.NDArray[np.float64]  # (block, order): a block's input -> the state at its end, transposed
    # ((blocks + 1) * order, (blocks + 1) * order): the initial state and each block's drive -> each block's start
    evolution: npt.NDArray[np.float64]
    rest_transition: npt.NDArray[np.float64]  # A ** rest

    @classmethod
    def build(cls, design: _Design, length: int) -> _Plan:
        block = _block_length(length)
        blocks, rest = divmod(length, block)
        n, a = design.order, design.transition
        powers = [np.eye(n)]  # A^k, k = 0 .. block
        for _ in range(block):
            powers.append(a @ powers[-1])
        free = np.array([design.output_gain @ p for p in powers[:block]])  # row k: C A^k
        response = np.concatenate([[design.feedthrough], free[: block - 1] @ design.input_gain])
        impulse = np.zeros((block, block))
        for k in range(block):
            impulse[np.arange(k, block), np.arange(block - k)] = response[k]
        drive = np.array([powers[block - 1 - j] @ design.input_gain for j in range(block)])
        step_powers = [np.eye(n)]  # (A^block)^k, k = 0 .. blocks
        for _ in range(blocks):
            step_powers.append(powers[block] @ step_powers[-1])
        evolution = np.zeros(((blocks + 1) * n, (blocks + 1) * n))
        for k in range(blocks + 1):
            evolution[k * n : (k + 1) * n, :n] = step_powers[k]  # the initial state, k blocks on
            for j in range(k):  # block j's drive, k - 1 - j blocks on
                evolution[k * n : (k + 1) * n, (j + 1) * n : (j + 2) * n] = step_powers[k - 1 - j]
        return cls(blocks, block, rest, impulse.T.copy(), free.T.copy(), drive, evolution, powers[rest])

    def run(
        self, x: npt.NDArray[np.float64], state: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(output, state after) of `x` from `state`."""
        n = len(state)
        full = self.blocks * self.block
        blocks = x[:full].reshape(self.blocks, self.block)
        drives = blocks @ self.drive_t  # (blocks, order): each block's input carried to its end
        starts = (self.evolution @ np.concatenate((state, drives.ravel()))).reshape(self.blocks + 1, n)
        out = blocks @ self.impulse_t
        out += starts[: self.blocks] @ self.free_t
        y = out.ravel()
        last = starts[self.blocks]
        if not self.rest:
            return y, last
        r = self.rest
        tail = x[full:]
        tail_out = tail @ self.impulse_t[:r, :r] + last @ self.free_t[:, :r]
        after = self.rest_transition @ last + tail @ self.drive_t[self.block - r :]
        return np.concatenate([y, tail_out]), after


def _block_length(length: int) -> int:
    """Blocks as long as possible up to 64 samples that divide the chunk (one second at the usual rates);
    else 32 and a shorter last block."""
    if length <= 64:
        return max(1, length)
    return next((d for d in range(64, 15, -1) if length % d == 0), 32)


@lru_cache(maxsize=32)
def bandpass(low_hz: float, high_hz: float, fs: float) -> Coefficients:
    """Second-order Butterworth band-pass."""
    return _frozen(_butterworth_bandpass(low_hz, high_hz, fs))


@lru_cache(maxsize=32)
def lowpass(cutoff_hz: float, fs: float) -> Coefficients:
    """Second-order Butterworth low-pass."""
    warped = _prewarp(cutoff_hz, fs)
    return _frozen(_bilinear(np.zeros(0, dtype=np.complex128), _butterworth_poles() * warped, warped**2, fs))


def group_delay_samples(coefficients: Coefficients, at_hz: float, fs: float) -> int:
    """The filter's group delay at one frequency, in whole samples."""
    z = np.exp(-2j * math.pi * at_hz / fs * np.arange(3))

    def delay(p: npt.NDArray[np.float64]) -> float:
        return float((np.dot(np.arange(3) * p, z) / np.dot(p, z)).real)

    return round(sum(delay(section[:3]) - delay(section[3:]) for section in coefficients))


@lru_cache(maxsize=32)
def ecg_conditioning(fs: float, mains_hz: float) -> Coefficients:
    """Band-pass 0.5-40 Hz and a notch at the mains frequency (when the sampling rate can represent it)."""
    sections = _butterworth_bandpass(0.5, min(40.0, 0.45 * fs), fs)
    if mains_hz < fs / 2:
        sections = np.vstack([sections, _notch(mains_hz, 30.0, fs)])
    return _frozen(sections)


def ecg_filter(fs: float, mains_hz: float = 50.0) -> StreamingFilter:
    """Diagnostic-style ECG conditioning: band-pass 0.5-40 Hz and a notch at the mains frequency (when the
    sampling rate can represent it)."""
    return StreamingFilter(ecg_conditioning(fs, mains_hz))


# -- designs (as scipy.signal.butter and iirnotch make them) ----------------------------------------------------
def _butterworth_poles() -> npt.NDArray[np.complex128]:
    """The second-order analogue Butterworth prototype's poles (cut-off 1 rad/s)."""
    return -np.exp(1j * math.pi * np.array([-1.0, 1.0]) / 4.0)


def _prewarp(hz: float, fs: float) -> float:
    """The analogue frequency (rad/s) the bilinear transform maps onto `hz`."""
    return 2.0 * fs * math.tan(math.pi * hz / fs)


def _butterworth_bandpass(low_hz: float, high_hz: float, fs: float) -> npt.NDArray[np.float64]:
    low, high = _prewarp(low_hz, fs), _prewarp(high_hz, fs)
    bandwidth, centre = high - low, math.sqrt(low * high)
    scaled = _butterworth_poles() * bandwidth / 2.0
    root = np.sqrt(scaled**2 - centre**2)
    poles = np.concatenate([scaled + root, scaled - root])
    return _bilinear(np.zeros(2, dtype=np.complex128), poles, bandwidth**2, fs)


def _bilinear(
    zeros: npt.NDArray[np.complex128], poles: npt.NDArray[np.complex128], gain: float, fs: float
) -> npt.NDArray[np.float64]:
    """Second-order sections of the digital filter of an analogue zeros/poles/gain design (zeros at infinity go
    to Nyquist): each section one pair of conjugate poles and the outermost zeros left, the gain in the first."""
    fs2 = 2.0 * fs
    digital_zeros = np.concatenate([(fs2 + zeros) / (fs2 - zeros), -np.ones(len(poles) - len(zeros))])
    digital_poles = (fs2 + poles) / (fs2 - poles)
    digital_gain = gain * float((np.prod(fs2 - zeros) / np.prod(fs2 - poles)).real)
    upper = sorted((p for p in digital_poles if p.imag > 0), key=abs)  # one of each conjugate pair
    ordered = np.sort_complex(digital_zeros)
    sections = []
    for i, pole in enumerate(upper):
        pair = [ordered[i], ordered[-1 - i]]  # a band-pass's sections each take a zero at DC and one at Nyquist
        b = np.poly(pair).real * (digital_gain if i == 0 else 1.0)
        sections.append([*b, *np.poly([pole, pole.conjugate()]).real])
    return np.array(sections)


def _notch(hz: float, q: float, fs: float) -> npt.NDArray[np.float64]:
    """Second-order IIR notch at `hz` with quality factor `q` (-3 dB bandwidth hz / q), one section."""
    w0 = 2.0 * math.pi * hz / fs
    beta = math.tan(w0 / q / 2.0)
    gain = 1.0 / (1.0 + beta)
    cos = math.cos(w0)
    return np.array([[gain, -2.0 * gain * cos, gain, 1.0, -2.0 * gain * cos, 2.0 * gain - 1.0]])


def _frozen(sections: npt.NDArray[np.float64]) -> Coefficients:
    out = np.array(sections, dtype=np.float64)
    out.flags.writeable = False  # shared by every filter of this design
    return out


class Seconds:
    """Cuts a stream into whole seconds of signal, whatever the chunks it arrives in: analyses that step a
    second at a time give the same results however the signal was chunked."""

    def __init__(self, fs: float) -> None:
        self.length = round(fs)
        self._pending = np.zeros(0)

    def feed(self, samples: npt.ArrayLike) -> list[npt.NDArray[np.float64]]:
        """The whole seconds completed by these samples (the remainder waits for the next call)."""
        x = np.asarray(samples, dtype=np.float64)
        if not len(self._pending) and len(x) == self.length:
            return [x]  # the usual case: a chunk of exactly one second
        self._pending = np.concatenate([self._pending, x])
        count = len(self._pending) // self.length
        if not count:
            return []
        cut = count * self.length
        windows = [self._pending[i : i + self.length] for i in range(0, cut, self.length)]
        self._pending = self._pending[cut:]
        return windows
