"""Rhythm alarms from the ECG stream: asystole within its delay, vetoed by a pulse, never raised for lead-off."""

from __future__ import annotations

import numpy as np

from edge_ml.ecg import EcgAnalyzer, hrv
from gateway.alarms import AlarmEngine
from gateway.config import AlarmsSection
from gateway.model import Alarm, AlarmState, Observation, new_id
from gateway.nomenclature import quantity
from hil.physiology import SyntheticEcg

FS = 250.0
START_NS = 1_800_000_000 * 10**9


def _run(
    signal_mv: np.ndarray, *, pulse_every_s: float | None = None, asystole_s: float = 5.0
) -> list[tuple[float, Alarm]]:
    """Stream an ECG (and optionally a pulse oximeter's pulse rate) through the analyser and the alarm engine;
    (signal time in s, alarm) for every alarm raised or cleared."""
    engine = AlarmEngine(
        AlarmsSection(asystole_s=asystole_s, rhythm_delay_s=3.0), patients={"ecg-1": "pt-1", "ox-1": "pt-1"}
    )
    analyser = EcgAnalyzer(FS)
    out: list[tuple[float, Alarm]] = []
    chunk = round(0.25 * FS)
    next_pulse = 0.0
    for i in range(0, len(signal_mv), chunk):
        t_s = (i + chunk) / FS
        t_ns = START_NS + round(t_s * 1e9)
        if pulse_every_s is not None and t_s >= next_pulse:
            pulse = Observation(new_id(), "ox-1", quantity("MDC_PULS_OXIM_PULS_RATE"), 72.0, None, t_ns)
            out += [(t_s, a) for a in engine.evaluate(pulse)]
            next_pulse = t_s + pulse_every_s
        for assessment in analyser.process(signal_mv[i : i + chunk]):
            out += [(t_s, a) for a in engine.evaluate_ecg("ecg-1", assessment, t_ns)]
    return out


def _ecg(seconds: float, rate: float = 70.0) -> np.ndarray:
    return SyntheticEcg(FS, heart_rate_bpm=rate, seed=7).next(round(seconds * FS)) / 1000.0


def _quiet(seconds: float) -> np.ndarray:
    return 0.006 * np.random.default_rng(3).standard_normal(round(seconds * FS))  # amplifier noise, no beats


def _raised(events: list[tuple[float, Alarm]], condition: str) -> list[float]:
    return [t for t, a in events if a.condition == condition and a.state is AlarmState.ACTIVE]


def test_asystole_is_raised_within_its_delay() -> None:
    events = _run(np.concatenate([_ecg(20), _quiet(15)]), asystole_s=5.0)
    raised = _raised(events, "ecg_asystole")
    assert len(raised) == 1
    # The heart stopped at 20 s (last beat a little before): raised 5 s later, within the analysis step.
    assert 24.0 <= raised[0] <= 27.0, raised
    alarm = next(a for _, a in events if a.condition == "ecg_asystole")
    assert alarm.priority == "high" and alarm.kind == "physiological"
    assert not _raised(events, "ecg_lead_off")


def test_the_same_flat_ecg_with_a_pulsatile_pleth_is_vetoed() -> None:
    events = _run(np.concatenate([_ecg(20), _quiet(15)]), pulse_every_s=1.0)
    assert not _raised(events, "ecg_asystole"), "a pulse is present: no asystole"
    assert _raised(events, "ecg_no_beats_pulse_present"), "the ECG problem is still reported, as technical"


def test_lead_off_is_a_technical_alarm_not_asystole() -> None:
    flat = np.full(round(15 * FS), 0.25)  # the amplifier at rest: not a single sample moves
    events = _run(np.concatenate([_ecg(20), flat]))
    assert _raised(events, "ecg_lead_off")
    assert not _raised(events, "ecg_asystole")
    lead_off = next(a for _, a in events if a.condition == "ecg_lead_off")
    assert lead_off.kind == "technical"


def test_extreme_tachycardia_after_its_delay_and_clears() -> None:
    events = _run(np.concatenate([_ecg(15, 70.0), _ecg(20, 200.0), _ecg(20, 70.0)]))
    raised = _raised(events, "ecg_extreme_tachy")
    assert len(raised) == 1 and 15 + 3 <= raised[0] <= 15 + 12
    assert any(a.condition == "ecg_extreme_tachy" and a.state is AlarmState.CLEARED for _, a in events)
    assert not _raised(events, "ecg_asystole")


def test_hrv_of_a_known_series() -> None:
    sdnn, rmssd = hrv([800, 810, 790, 800])
    assert round(sdnn, 3) == 8.165 and round(rmssd, 3) == 14.142


def _pleth(seconds: float, rate_bpm: float = 72.0) -> np.ndarray:
    t = np.arange(round(seconds * FS)) / FS
    phase = (t * rate_bpm / 60.0) % 1.0
    return 2.0 + 0.05 * np.exp(-((phase - 0.2) ** 2) / 0.005)  # a pulse shape on a DC level


def test_pleth_analysis_finds_pulses_rate_and_perfusion() -> None:
    from edge_ml.pleth import PlethAnalyzer  # noqa: PLC0415

    analyser = PlethAnalyzer(FS)
    out = []
    x = _pleth(10)
    for i in range(0, len(x), 37):
        out += analyser.process(x[i : i + 37])
    last = out[-1]
    assert last.pulsatile and last.pulse_rate_bpm is not None and abs(last.pulse_rate_bpm - 72) < 3
    assert last.perfusion_index_pct is not None and 1.0 < last.perfusion_index_pct < 4.0
    flat = PlethAnalyzer(FS).process(np.full(round(5 * FS), 2.0))
    assert not any(a.pulsatile for a in flat)


async def test_pleth_waveform_vetoes_asystole_through_the_pipeline(tmp_path: object) -> None:
    from pathlib import Path  # noqa: PLC0415

    from gateway.buffer import Buffer, generate_key_file, load_keyring  # noqa: PLC0415
    from gateway.metrics import Metrics  # noqa: PLC0415
    from gateway.model import WaveformChunk  # noqa: PLC0415
    from gateway.pipeline import Pipeline  # noqa: PLC0415

    folder = Path(str(tmp_path))
    generate_key_file(folder / "k")
    buffer = await Buffer.open(folder / "b.db", load_keyring(folder / "k"))
    engine = AlarmEngine(AlarmsSection(asystole_s=5.0), patients={"ecg-1": "pt-1", "ox-1": "pt-1"})
    pipeline = Pipeline(buffer, engine, Metrics(), gateway_id="gw", patients={})
    raised: list[Alarm] = []
    pipeline.alarm_listeners.append(raised.append)
    import asyncio  # noqa: PLC0415

    task = asyncio.create_task(pipeline.run())
    ecg = np.concatenate([_ecg(20), _quiet(15)])
    pleth = _pleth(35)
    q_ecg, q_pleth = quantity("MDC_ECG_ELEC_POTL_II"), quantity("MDC_PULS_OXIM_PLETH")
    step = round(FS / 2)
    for i in range(0, len(ecg), step):
        t = START_NS + round(i / FS * 1e9)
        await pipeline.emit(
            WaveformChunk(
                new_id(), "ox-1", q_pleth, np.round(pleth[i : i + step] * 1000).astype(np.int32), FS, 0.001, 0.0, t, t
            )
        )
        await pipeline.emit(
            WaveformChunk(
                new_id(), "ecg-1", q_ecg, np.round(ecg[i : i + step] * 1000).astype(np.int32), FS, 1.0, 0.0, t, t
            )
        )
    pipeline.close()
    await task
    await buffer.close()
    conditions = {a.condition for a in raised if a.state is AlarmState.ACTIVE}
    assert "ecg_asystole" not in conditions
    assert "ecg_no_beats_pulse_present" in conditions


def test_ecg_conditioning_removes_mains_and_is_chunk_invariant() -> None:
    from edge_ml.filters import ecg_filter  # noqa: PLC0415

    t = np.arange(round(10 * FS)) / FS
    mains = np.sin(2 * np.pi * 50.0 * t)
    ecg = _ecg(10)
    whole = ecg_filter(FS).process(ecg + mains)
    tail = slice(round(5 * FS), None)  # after the filters settle
    clean = ecg_filter(FS).process(ecg)
    assert np.std(whole[tail] - clean[tail]) < 0.03 * np.std(mains)  # > 30 dB of mains rejection
    pieces = ecg_filter(FS)
    chunked = np.concatenate([pieces.process((ecg + mains)[i : i + 7]) for i in range(0, len(t), 7)])
    assert np.allclose(chunked, whole)


def test_heart_rate_variability_is_reported_once_enough_beats() -> None:
    analyser = EcgAnalyzer(FS)
    out = analyser.process(_ecg(60, 70.0))
    assert out[5].sdnn_ms is None  # too few beats yet
    last = out[-1]
    assert last.sdnn_ms is not None and last.rmssd_ms is not None
    assert 5 < last.sdnn_ms < 80 and 5 < last.rmssd_ms < 120  # the synthetic rhythm varies by about 4 %


def test_poor_signal_is_a_technical_alarm_and_holds_rate_alarms() -> None:
    rng = np.random.default_rng(9)
    noisy = _ecg(40, 200.0) + 0.8 * rng.standard_normal(round(40 * FS))  # fast rhythm drowned in noise
    events = _run(np.concatenate([_ecg(10), noisy]))
    assert _raised(events, "ecg_poor_signal")
    poor = next(a for _, a in events if a.condition == "ecg_poor_signal")
    assert poor.kind == "technical" and poor.priority == "low"
    assert not _raised(events, "ecg_extreme_tachy"), "a rate from a poor signal is not alarmed"
