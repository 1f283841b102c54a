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
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt

Coefficients = npt.NDArray[np.float64]  # second-order sections, one row (b0, b1, b2, 1, a1, a2) each, as scipy's sos
MAX_CHUNK = 4096  # longer inputs are filtered this many samples at a time (the matrices stay small)
MAX_PLANS = 16  # chunk lengths a design keeps matrices for (the analysis uses one: a second of signal)


class StreamingFilter:
    """A low-order IIR filter (a cascade of second-order sections) applied chunk by chunk with its state
    carried, so any chunking gives the same output."""

    def __init__(self, coefficients: Coefficients) -> None:
        self._bank = FilterBank([coefficients])

    def settle(self, level: float) -> None:
        """Start as if the input had been `level` for ever (no step response to a first sample's offset)."""
        self._bank.settle(0, level)

    def process(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        y: npt.NDArray[np.float64] = self._bank.process(x)[0]
        return y


class FilterBank:
    """Several filters of one input, run as one: the signal's conditioning and its QRS band, say, for a tenth of
    the work of running them apart.  `process` returns one row per filter.

    `process_many` runs the banks of several signals (of one design) together: each signal's output is the same,
    to the last bit, as its own bank's `process` would give (every product is made per signal, by the same call)."""

    def __init__(self, designs: Sequence[Coefficients]) -> None:
        self._design = _design(tuple(np.ascontiguousarray(d, dtype=np.float64).tobytes() for d in designs))
        self._state = np.zeros(self._design.order)

    def settle(self, member: int, level: float) -> None:
        """Start filter `member` as if the input had been `level` for ever (its state alone)."""
        states = self._design.member_states[member]
        self._state[states] = self._design.step_state[states] * level

    def process(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        samples = np.asarray(x, dtype=np.float64)
        y: npt.NDArray[np.float64] = self.process_many([self], samples[np.newaxis])[0]
        return y

    @staticmethod
    def process_many(banks: Sequence[FilterBank], x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(signals, filters, samples): row i of `x` through `banks[i]`; the banks share one design."""
        design = banks[0]._design
        if any(bank._design is not design for bank in banks):
            raise ValueError("banks of different designs cannot run together")
        samples = np.asarray(x, dtype=np.float64)
        if samples.shape[1] <= MAX_CHUNK:
            return _run(banks, samples)
        parts = [_run(banks, samples[:, lo : lo + MAX_CHUNK]) for lo in range(0, samples.shape[1], MAX_CHUNK)]
        return np.concatenate(parts, axis=2)


def _run(banks: Sequence[FilterBank], samples: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Filter each signal's deviation from its first sample, from its state's deviation from that level's steady
    state, then add the level's steady output back: a flat signal at its steady state gives a flat output to the
    last bit (as a sample-by-sample recursion does), not the rounding jitter of the block products, and a large
    offset costs no precision."""
    design = banks[0]._design
    count, length = samples.shape
    if not length:
        return np.zeros((count, design.outputs, 0))
    level = samples[:, :1]  # (signals, 1)
    steady = level * design.step_state
    states = np.array([bank._state for bank in banks]) if count > 1 else banks[0]._state[np.newaxis]
    y, after = design.plan(length).run(samples - level, states - steady)
    after += steady
    for bank, state in zip(banks, after, strict=True):
        bank._state = state.copy()  # (a view would keep the whole batch's states alive)
    y += design.step_output * level[:, :, np.newaxis]
    return y


@dataclass(eq=False)
class _Design:
    """Filters of one input in state-space form, y = C z + D x and z' = A z + B x (a row of C and D per filter):
    two states per second-order section (each section's transposed direct form II), each filter's own states in a
    block of A, which is better conditioned than one high-order transfer function."""

    transition: npt.NDArray[np.float64]  # A
    input_gain: npt.NDArray[np.float64]  # B
    output_gain: npt.NDArray[np.float64]  # C, (outputs, order)
    feedthrough: npt.NDArray[np.float64]  # D, (outputs,)
    member_states: tuple[slice, ...]  # each filter's states
    step_state: npt.NDArray[np.float64] = field(init=False)  # the state after a unit input for ever
    step_output: npt.NDArray[np.float64] = field(
        init=False
    )  # the outputs then (each filter's gain at 0 Hz), (outputs, 1)
    plans: dict[int, _Plan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.step_state = np.asarray(np.linalg.solve(np.eye(self.order) - self.transition, self.input_gain))
        self.step_output = (self.output_gain @ self.step_state + self.feedthrough)[:, np.newaxis]

    @property
    def order(self) -> int:
        return len(self.input_gain)

    @property
    def outputs(self) -> int:
        return len(self.feedthrough)

    def plan(self, length: int) -> _Plan:
        plan = self.plans.get(length)
        if plan is None:
            if len(self.plans) >= MAX_PLANS:  # a caller with ever-changing chunk sizes: forget the oldest
                del self.plans[next(iter(self.plans))]
            plan = self.plans[length] = _Plan.build(self, length)
        return plan


@lru_cache(maxsize=64)
def _design(designs: tuple[bytes, ...]) -> _Design:
    """The state-space form of filters of one input, each given as its second-order sections' bytes."""
    members = [_cascade(np.frombuffer(sos).reshape(-1, 6)) for sos in designs]
    order = sum(len(b) for _, b, _, _ in members)
    transition, input_gain = np.zeros((order, order)), np.zeros(order)
    output_gain, feedthrough = np.zeros((len(members), order)), np.zeros(len(members))
    slices, at = [], 0
    for i, (a, b, c, d) in enumerate(members):
        states = slice(at, at + len(b))
        transition[states, states], input_gain[states], output_gain[i, states], feedthrough[i] = a, b, c, d
        slices.append(states)
        at += len(b)
    return _Design(transition, input_gain, output_gain, feedthrough, tuple(slices))


def _cascade(
    sections: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    """(A, B, C, D) of a cascade of second-order sections."""
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
    return a, b, c, float(d)


@dataclass(eq=False)
class _Plan:
    """The matrices that filter `length` samples at once: blocks of `block` samples, then a shorter rest."""

    blocks: int
    block: int
    rest: int
    outputs: int
    # (block + order, outputs * block): a block's input and its starting state -> its outputs (each output's block
    # of columns: the impulse response as a Toeplitz matrix over the free response of the state)
    response_t: npt.NDArray[np.float64]
    drive_t: npt.NDArray[np.float64]  # (block, order): a block's input -> the state at its end, transposed
    # ((blocks + 1) * order, (blocks + 1) * order): the initial state and each block's drive -> each block's start
    evolution: npt.NDArray[np.float64]
    rest_response_t: npt.NDArray[np.float64]  # (rest + order, outputs * rest): the same for the shorter last block
    rest_transition: npt.NDArray[np.float64]  # A ** rest

    @classmethod
    def build(cls, design: _Design, length: int) -> _Plan:
        block = _block_length(length)
        blocks, rest = divmod(length, block)
        n, a, m = design.order, design.transition, design.outputs
        powers = [np.eye(n)]  # A^k, k = 0 .. block
        for _ in range(block):
            powers.append(a @ powers[-1])
        free = np.array([design.output_gain @ p for p in powers[:block]])  # (block, outputs, order): C A^k
        responses = np.concatenate([design.feedthrough[np.newaxis], free[: block - 1] @ design.input_gain])
        impulse = np.zeros((m, block, block))  # per output: input sample j -> output sample i
        for k in range(block):
            impulse[:, np.arange(k, block), np.arange(block - k)] = responses[k][:, np.newaxis]

        def response(size: int) -> npt.NDArray[np.float64]:
            inputs = impulse[:, :size, :size].transpose(2, 0, 1).reshape(size, m * size)
            states = free[:size].transpose(2, 1, 0).reshape(n, m * size)
            return np.vstack([inputs, states])

        drive = np.array([powers[block - 1 - j] @ design.input_gain for j in range(block)])
        step_powers = [np.eye(n)]  # (A^block)^k, k = 0 .. blocks
        for _ in range(blocks):
            step_powers.append(powers[block] @ step_powers[-1])
        evolution = np.zeros(((blocks + 1) * n, (blocks + 1) * n))
        for k in range(blocks + 1):
            evolution[k * n : (k + 1) * n, :n] = step_powers[k]  # the initial state, k blocks on
            for j in range(k):  # block j's drive, k - 1 - j blocks on
                evolution[k * n : (k + 1) * n, (j + 1) * n : (j + 2) * n] = step_powers[k - 1 - j]
        return cls(blocks, block, rest, m, response(block), drive, evolution, response(rest), powers[rest])

    def run(
        self, x: npt.NDArray[np.float64], state: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(outputs, (signals, filters, samples), and the states after) of each row of `x` from its row of
        `state`.  Every product is a stack of per-signal products (numpy's matmul makes each by its own BLAS
        call), so a signal's output does not depend on the others it is run with."""
        count, n = state.shape
        m = self.outputs
        full = self.blocks * self.block
        blocks = x[:, :full].reshape(count, self.blocks, self.block)
        drives = blocks @ self.drive_t  # (signals, blocks, order): each block's input carried to its end
        initial = np.concatenate((state, drives.reshape(count, self.blocks * n)), axis=1)
        starts = (self.evolution @ initial[:, :, np.newaxis]).reshape(count, self.blocks + 1, n)
        # (signals, blocks, outputs * block)
        out = np.concatenate((blocks, starts[:, : self.blocks]), axis=2) @ self.response_t
        y = out.reshape(count, self.blocks, m, self.block).transpose(0, 2, 1, 3).reshape(count, m, full)
        last = starts[:, self.blocks]
        if not self.rest:
            return y, last
        tail = x[:, full:]
        tail_out = (np.concatenate((tail, last), axis=1)[:, np.newaxis] @ self.rest_response_t).reshape(
            count, m, self.rest
        )
        after = (self.rest_transition @ last[:, :, np.newaxis])[:, :, 0]
        after += (tail[:, np.newaxis] @ self.drive_t[self.block - self.rest :])[:, 0]
        return np.concatenate([y, tail_out], axis=2), after


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
