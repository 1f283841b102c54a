"""Many ECG leads analysed at once: each lead's results are those it gets alone, to the last bit.

The pipeline analyses a second of every lead it has at hand together (filters, the QRS detector's feature and
candidates, quality, the beats' shapes): the cost per lead falls as the load rises.  That is only acceptable if
a lead's analysis cannot tell which leads it was analysed with, so these tests compare bit for bit.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from edge_ml import filters
from edge_ml.beats import MODEL_NAME, BeatInput, ModelBeatClassifier, beat_features
from edge_ml.ecg import LeadAnalyzer, LeadAssessment, analyse
from edge_ml.qrs import _dominant_peaks, _Window, dominant_peaks_many
from edge_ml.runtime import bundled, load_model
from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmsSection
from gateway.core.model import Alarm, AlarmState, WaveformChunk, new_id
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import generate_key_file, load_keyring
from hil.physiology import SyntheticEcg

FS = 250.0
CLASSIFIER = ModelBeatClassifier(load_model(bundled(MODEL_NAME)))


def _signals(seconds: int) -> list[np.ndarray]:
    """Six leads in millivolts: sinus at different rates, a run of VT, fibrillation, noise, one that goes flat."""
    out = []
    for seed, (rhythm, rate) in enumerate([("sinus", 60), ("sinus", 130), ("vt", 170), ("vf", 0), ("sinus", 80)]):
        ecg = SyntheticEcg(FS, heart_rate_bpm=72, seed=seed + 1)
        onset = round(12 * FS)  # sinus first: the lead learns the patient's usual beat
        first = ecg.next(onset)
        ecg.rhythm, ecg.heart_rate_bpm = rhythm, rate or 72
        x = np.concatenate([first, ecg.next(round(seconds * FS) - onset)]) / 1000.0
        if seed == 4:
            x = x + np.random.default_rng(seed).normal(0, 0.3, len(x))  # a noisy lead
        out.append(x)
    flat = SyntheticEcg(FS, seed=9).next(round(seconds * FS)) / 1000.0
    flat[round(seconds * FS) // 2 :] = flat[round(seconds * FS) // 2]  # the lead comes off half-way
    out.append(flat)
    return out


def _key(a: LeadAssessment) -> tuple[object, ...]:
    recent = None if a.recent is None else a.recent.tobytes()
    return (a.end_index, a.lead_off, a.saturated, a.quality, a.last_beat_index, a.beats, recent, a.peaks, a.rr_ms)


def test_a_lead_analysed_with_others_gets_what_it_gets_alone() -> None:
    seconds = 40
    signals = _signals(seconds)
    alone = [LeadAnalyzer(FS, CLASSIFIER) for _ in signals]
    together = [LeadAnalyzer(FS, CLASSIFIER) for _ in signals]
    beats = 0
    for s in range(seconds):
        windows = [x[round(s * FS) : round((s + 1) * FS)] for x in signals]
        expected = [lead.process(w)[0] for lead, w in zip(alone, windows, strict=True)]
        if s % 3 == 0:  # every lead at once
            got = analyse(together, windows)
        elif s % 3 == 1:  # two groups
            got = analyse(together[:2], windows[:2]) + analyse(together[2:], windows[2:])
        else:  # in another order
            got = analyse(together[::-1], windows[::-1])[::-1]
        assert [_key(a) for a in got] == [_key(a) for a in expected], f"second {s}"
        beats += sum(len(a.beats) for a in got)
    assert beats > 200  # the leads did have beats to describe


def test_filter_banks_run_together_give_each_its_own_output() -> None:
    rng = np.random.default_rng(2)
    design = [filters.ecg_conditioning(FS, 50.0), filters.bandpass(5.0, 15.0, FS)]
    apart = [filters.FilterBank(design) for _ in range(5)]
    together = [filters.FilterBank(design) for _ in range(5)]
    for bank, other in zip(apart, together, strict=True):
        level = float(rng.normal())
        bank.settle(0, level)
        other.settle(0, level)
    for length in (250, 250, 37, 5000):
        x = rng.normal(size=(5, length)) + 3.0
        expected = [bank.process(row) for bank, row in zip(apart, x, strict=True)]
        got = filters.FilterBank.process_many(together, x)
        for e, g in zip(expected, got, strict=True):
            assert np.array_equal(e, g)


def test_banks_of_different_designs_do_not_run_together() -> None:
    banks = [filters.FilterBank([filters.bandpass(5.0, 15.0, FS)]), filters.FilterBank([filters.lowpass(16.0, FS)])]
    with pytest.raises(ValueError, match="different designs"):
        filters.FilterBank.process_many(banks, np.zeros((2, 10)))


def test_candidates_found_together_are_each_windows_own() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        reach = int(rng.integers(1, 30))
        width = int(rng.integers(2 * reach + 2, 400))
        windows: list[_Window | None] = []
        for _ in range(int(rng.integers(1, 8))):
            if rng.random() < 0.15:
                windows.append(None)
                continue
            feature = np.convolve(rng.random(width), np.ones(5), "same")  # smooth, with plateaus now and then
            if rng.random() < 0.2:
                feature[:] = 0.0  # nothing above the floor
            windows.append(_Window(feature, 100 + reach, 100 + width - reach, 100, reach, 0.5))
        together = dominant_peaks_many(windows)
        for window, peaks in zip(windows, together, strict=True):
            if window is None:
                assert peaks is None
            else:
                assert peaks is not None
                assert peaks.tolist() == _dominant_peaks(*window.peak_args).tolist()


async def _rhythm_alarms(tmp_path: Path, *, burst: bool) -> list[tuple[str, str, int]]:
    """Six monitors of two leads each through the pipeline (two with a pleth too, which arrives 0.1 s before
    their ECG each second), emitted as a burst (analysed together) or one chunk at a time (each analysed
    alone): the alarms the rhythm analysis raised, with their times."""
    key = tmp_path / f"k{burst}"
    generate_key_file(key)
    buffer = await Buffer.open(tmp_path / f"b{burst}.db", load_keyring(key))
    pipeline = Pipeline(buffer, AlarmEngine(AlarmsSection()), Metrics(), gateway_id="gw", patients={})
    raised: list[tuple[str, str, int]] = []

    def heard(alarm: Alarm) -> None:
        if alarm.state is AlarmState.ACTIVE:
            raised.append((alarm.device_id, alarm.condition, alarm.gateway_time_ns))

    pipeline.alarm_listeners.append(heard)
    task = asyncio.create_task(pipeline.run())
    signals = _signals(30)
    leads = [quantity("MDC_ECG_ELEC_POTL_II"), quantity("MDC_ECG_ELEC_POTL_V5")]
    step = round(FS)
    pleth = quantity("MDC_PULS_OXIM_PLETH")
    wave = np.round(1000 * np.maximum(0.0, np.sin(2 * np.pi * 1.2 * np.arange(30 * step) / FS)) ** 3).astype(np.int32)
    for s in range(30):
        for m in (5, 4, 0, 1, 2, 3):  # (a pleth first: in a burst it comes before the second before is judged)
            if m >= 4:  # a pleth, stamped and sent before the ECG of the same second
                t = (1_800_000_000 + s + 1) * 10**9 - 10**8
                samples = wave[s * step : (s + 1) * step]
                await pipeline.emit(WaveformChunk(new_id(), f"monitor-{m}", pleth, samples, FS, 1.0, 0, None, t))
                if not burst:
                    await asyncio.sleep(0.001)
            for lead, x in zip(leads, (signals[m], -0.6 * signals[m]), strict=True):
                samples = np.round(x[s * step : (s + 1) * step] * 1000).astype(np.int32)
                t = (1_800_000_000 + s + 1) * 10**9
                await pipeline.emit(WaveformChunk(new_id(), f"monitor-{m}", lead, samples, FS, 1.0, 0, None, t))
                if not burst:
                    await asyncio.sleep(0.001)  # the pipeline takes it before the next comes
    pipeline.close()
    await task
    await buffer.close()
    return sorted(raised)


async def test_the_pipeline_raises_the_same_alarms_whether_leads_come_together_or_apart(tmp_path: Path) -> None:
    together = await _rhythm_alarms(tmp_path, burst=True)
    apart = await _rhythm_alarms(tmp_path, burst=False)
    assert together == apart
    conditions = {condition for _, condition, _ in together}
    assert conditions >= {"ventricular_tachycardia", "ventricular_fibrillation", "ecg_lead_off"}


def test_the_classifier_judges_a_beat_alike_alone_or_in_a_batch() -> None:
    """Beats are judged ROWS at a time by one LiteRT call; each beat's probability is what the model gives for
    that beat alone (its manifest's one-row input), to the last bit, whatever the other rows hold."""
    rng = np.random.default_rng(11)

    def beat() -> BeatInput:
        shape = rng.normal(0, 0.3, 64).astype(np.float32)
        template = None if rng.random() < 0.2 else rng.normal(0, 0.3, 64)
        return BeatInput(
            shape, template, rng.uniform(60, 200), rng.uniform(0, 1), rng.uniform(0.3, 3), rng.uniform(0.5, 2)
        )

    beats = [beat() for _ in range(40)]
    alone = [float(CLASSIFIER.model.run(beat_features(b).reshape(1, -1))[0, 0]) for b in beats]
    assert CLASSIFIER.probabilities(beats) == alone  # three calls: 16, 16 and 8 rows
    assert [CLASSIFIER.probability(b) for b in beats] == alone
    assert CLASSIFIER.probabilities(beats[::-1]) == alone[::-1]
