"""Streaming IIR filters with carried state: the result does not depend on how the signal is chunked."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import signal


class StreamingFilter:
    """A cascade of second-order sections applied chunk by chunk (lfilter per section, state carried)."""

    def __init__(self, sos: npt.NDArray[np.float64]) -> None:
        self._sections = [(s[:3], s[3:]) for s in np.atleast_2d(sos)]
        self._zi = np.zeros((len(self._sections), 2))

    def process(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        y = np.asarray(x, dtype=np.float64)
        for k, (b, a) in enumerate(self._sections):
            y, self._zi[k] = signal.lfilter(b, a, y, zi=self._zi[k])
        return y


def ecg_filter(fs: float, mains_hz: float = 50.0) -> StreamingFilter:
    """Diagnostic-style ECG conditioning: band-pass 0.5-40 Hz and a notch at the mains frequency (when the
    sampling rate can represent it)."""
    sos = signal.butter(2, [0.5, min(40.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    if mains_hz < fs / 2:
        b, a = signal.iirnotch(mains_hz, Q=30.0, fs=fs)
        sos = np.vstack([sos, signal.tf2sos(b, a)])
    return StreamingFilter(sos)
