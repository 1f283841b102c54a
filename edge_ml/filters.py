"""Streaming IIR filters with carried state: the result does not depend on how the signal is chunked."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import signal

Coefficients = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # (b, a) of a transfer function


class StreamingFilter:
    """A low-order IIR filter applied chunk by chunk with its state carried.

    The second-order sections are merged into one transfer function and run as a single lfilter call: for
    the orders used here (up to 6) float64 keeps it well conditioned, and one call costs a third of three.
    Designs are cached per sampling rate (`bandpass`, `lowpass`, `ecg_conditioning`): a ward of monitors at
    one rate designs each filter once, not once per lead.
    """

    def __init__(self, coefficients: Coefficients) -> None:
        self._b, self._a = coefficients
        self._zi = np.zeros(max(len(self._a), len(self._b)) - 1)

    def settle(self, level: float) -> None:
        """Start as if the input had been `level` for ever (no step response to a first sample's offset)."""
        self._zi = signal.lfilter_zi(self._b, self._a) * level

    def process(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        y, self._zi = signal.lfilter(self._b, self._a, np.asarray(x, dtype=np.float64), zi=self._zi)
        return np.asarray(y, dtype=np.float64)


@lru_cache(maxsize=32)
def bandpass(low_hz: float, high_hz: float, fs: float) -> Coefficients:
    """Second-order Butterworth band-pass."""
    return _tf(signal.butter(2, [low_hz, high_hz], btype="bandpass", fs=fs, output="sos"))


@lru_cache(maxsize=32)
def lowpass(cutoff_hz: float, fs: float) -> Coefficients:
    """Second-order Butterworth low-pass."""
    return _tf(signal.butter(2, cutoff_hz, fs=fs, output="sos"))


def group_delay_samples(coefficients: Coefficients, at_hz: float, fs: float) -> int:
    """The filter's group delay at one frequency, in whole samples."""
    _, delay = signal.group_delay(coefficients, w=[at_hz], fs=fs)
    return round(float(delay[0]))


@lru_cache(maxsize=32)
def ecg_conditioning(fs: float, mains_hz: float) -> Coefficients:
    """Band-pass 0.5-40 Hz and a notch at the mains frequency (when the sampling rate can represent it)."""
    sos = signal.butter(2, [0.5, min(40.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    if mains_hz < fs / 2:
        b, a = signal.iirnotch(mains_hz, Q=30.0, fs=fs)
        sos = np.vstack([sos, signal.tf2sos(b, a)])
    return _tf(sos)


def _tf(sos: npt.NDArray[np.float64]) -> Coefficients:
    b, a = signal.sos2tf(np.atleast_2d(sos))
    b.flags.writeable = False  # shared by every filter of this design
    a.flags.writeable = False
    return b, a


def ecg_filter(fs: float, mains_hz: float = 50.0) -> StreamingFilter:
    """Diagnostic-style ECG conditioning: band-pass 0.5-40 Hz and a notch at the mains frequency (when the
    sampling rate can represent it)."""
    return StreamingFilter(ecg_conditioning(fs, mains_hz))


class Seconds:
    """Cuts a stream into whole seconds of signal, whatever the chunks it arrives in: analyses that step a
    second at a time give the same results however the signal was chunked."""

    def __init__(self, fs: float) -> None:
        self.length = round(fs)
        self._pending = np.zeros(0)

    def feed(self, samples: npt.ArrayLike) -> list[npt.NDArray[np.float64]]:
        """The whole seconds completed by these samples (the remainder waits for the next call)."""
        self._pending = np.concatenate([self._pending, np.asarray(samples, dtype=np.float64)])
        count = len(self._pending) // self.length
        if not count:
            return []
        cut = count * self.length
        windows = [self._pending[i : i + self.length] for i in range(0, cut, self.length)]
        self._pending = self._pending[cut:]
        return windows
