"""The signal stack's filters (numpy only) against scipy.signal's, which the product no longer imports."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from edge_ml import filters
from edge_ml.qrs import _dominant_peaks

RATES = [125.0, 250.0, 256.0, 257.0, 360.0, 500.0, 1000.0]


def _reference_designs(fs: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ours, scipy's) second-order sections of every design the analysis uses at this rate."""
    conditioning = scipy.signal.butter(2, [0.5, min(40.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    notch_b, notch_a = scipy.signal.iirnotch(50.0, Q=30.0, fs=fs)
    conditioning = np.vstack([conditioning, scipy.signal.tf2sos(notch_b, notch_a)])
    return [
        (filters.bandpass(5.0, 15.0, fs), scipy.signal.butter(2, [5.0, 15.0], btype="bandpass", fs=fs, output="sos")),
        (filters.lowpass(min(16.0, 0.45 * fs), fs), scipy.signal.butter(2, min(16.0, 0.45 * fs), fs=fs, output="sos")),
        (filters.ecg_conditioning(fs, 50.0), conditioning),
    ]


@pytest.mark.parametrize("fs", RATES)
def test_designs_are_scipys(fs: float) -> None:
    for ours, theirs in _reference_designs(fs):
        (b, a), (ref_b, ref_a) = scipy.signal.sos2tf(ours), scipy.signal.sos2tf(theirs)
        assert np.allclose(b, ref_b, rtol=1e-12, atol=1e-15 * np.abs(ref_b).max())
        assert np.allclose(a, ref_a, rtol=1e-12, atol=1e-12)
        delay = scipy.signal.group_delay((ref_b, ref_a), w=[10.0], fs=fs)[1][0]
        assert filters.group_delay_samples(ours, 10.0, fs) == round(float(delay))


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("chunk", [None, 37, 1, 5000])
def test_streaming_filter_is_scipys_sosfilt_in_any_chunks(fs: float, chunk: int | None) -> None:
    x = np.random.default_rng(7).standard_normal(round(20 * fs)) * 2.0 + 3.0  # an offset: settle() matters
    step = chunk or round(fs)
    for ours, theirs in _reference_designs(fs):
        expected, _ = scipy.signal.sosfilt(theirs, x, zi=scipy.signal.sosfilt_zi(theirs) * x[0])
        streaming = filters.StreamingFilter(ours)
        streaming.settle(float(x[0]))
        y = np.concatenate([streaming.process(x[i : i + step]) for i in range(0, len(x), step)])
        assert np.abs(y - expected).max() <= 1e-8 * np.abs(expected).max()


def test_a_filter_of_nothing_is_nothing() -> None:
    design = filters.bandpass(5.0, 15.0, 250.0)
    streaming = filters.StreamingFilter(design)
    assert len(streaming.process(np.zeros(0))) == 0
    assert np.allclose(streaming.process(np.ones(10)), scipy.signal.sosfilt(np.array(design), np.ones(10)))


def test_dominant_peaks_are_those_of_a_running_maximum() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        reach = int(rng.integers(1, 40))
        feature = np.round(rng.random(int(rng.integers(2 * reach + 3, 600))), 2)  # rounded: ties and plateaus
        feature[rng.random(len(feature)) < 0.1] = 0.0
        lo, hi = reach, len(feature) - reach
        peak = scipy.ndimage.maximum_filter1d(feature, size=2 * reach + 1, mode="nearest")
        values = feature[lo:hi]
        expected = np.flatnonzero((values == peak[lo:hi]) & (values > feature[lo - 1 : hi - 1]) & (values > 0))
        assert np.array_equal(_dominant_peaks(feature, lo, hi, reach), expected)


@pytest.mark.parametrize("level", [0.0, 1e-3, 80.0, -312.5, 4096.0])
def test_a_flat_signal_stays_flat_to_the_last_bit(level: float) -> None:
    """A disconnected line or a lead at a rail: a settled filter's output does not move at all (no rounding
    jitter for a detector to take for beats), however long it lasts and however it is chunked."""
    from edge_ml.qrs import PulseDetector, QrsDetector  # noqa: PLC0415

    for design in (filters.lowpass(16.0, 250.0), filters.bandpass(5.0, 15.0, 250.0)):
        streaming = filters.StreamingFilter(design)
        streaming.settle(level)
        y = np.concatenate([streaming.process(np.full(n, level)) for n in (250, 250, 37, 1, 5000)])
        assert np.ptp(y) == 0.0
    flat = np.full(250, level)
    for detector in (QrsDetector(250.0), PulseDetector(250.0)):
        assert [d for _ in range(60) for d in detector.process(flat)] == []


def test_a_bank_gives_each_filter_its_own_output_and_settling() -> None:
    fs = 360.0
    x = np.random.default_rng(5).standard_normal(round(10 * fs)) + 2.0
    designs = [filters.ecg_conditioning(fs, 50.0), filters.bandpass(5.0, 15.0, fs)]
    bank = filters.FilterBank(designs)
    bank.settle(1, float(x[0]))  # the second alone starts settled
    alone = [filters.StreamingFilter(d) for d in designs]
    alone[1].settle(float(x[0]))
    step = round(fs)
    rows = np.concatenate([bank.process(x[i : i + step]) for i in range(0, len(x), step)], axis=1)
    for row, single in zip(rows, alone, strict=True):
        expected = np.concatenate([single.process(x[i : i + step]) for i in range(0, len(x), step)])
        assert np.abs(row - expected).max() <= 1e-9 * np.abs(expected).max()


def test_chunks_of_every_size_keep_a_bounded_number_of_plans() -> None:
    design = filters.bandpass(5.0, 15.0, 250.0)
    streaming = filters.StreamingFilter(design)
    x = np.random.default_rng(2).standard_normal(5000)
    lo, sizes = 0, iter(range(1, 200))
    parts = []
    while lo < len(x):
        n = next(sizes)
        parts.append(streaming.process(x[lo : lo + n]))
        lo += n
    expected = scipy.signal.sosfilt(np.array(design), x)
    assert np.abs(np.concatenate(parts) - expected).max() <= 1e-9 * np.abs(expected).max()
    assert len(filters._design((np.ascontiguousarray(design).tobytes(),)).plans) <= filters.MAX_PLANS
