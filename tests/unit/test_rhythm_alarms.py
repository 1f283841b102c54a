"""Arrhythmia alarms from every signal a patient has: each alarm type, each veto, technical alarm hygiene.

Synthetic rhythms (hil.physiology: sinus, ventricular tachycardia, fibrillation, standstill, with a pulse wave
that follows the beats) go through the same rhythm analysis and alarm engine the pipeline runs; recorded
examples from the PhysioNet/CinC Challenge 2015 go through `replay`, i.e. the production pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from edge_ml.alarm_set import ChannelKind, RhythmSettings
from edge_ml.beats import MODEL_NAME, ModelBeatClassifier, RuleBeatClassifier
from edge_ml.ecg import LeadAnalyzer, hrv
from edge_ml.rhythm import RhythmAnalyzer
from edge_ml.runtime import bundled, load_model
from gateway.alarms import AlarmEngine
from gateway.config import AlarmsSection, RhythmLimits
from gateway.core.model import Alarm, AlarmState, Observation, new_id
from gateway.core.nomenclature import quantity
from hil.physiology import SyntheticEcg, SyntheticPulse

FS = 250.0
START_NS = 1_800_000_000 * 10**9
PHYSIOLOGICAL = {
    "asystole",
    "extreme_bradycardia",
    "extreme_tachycardia",
    "ventricular_tachycardia",
    "ventricular_fibrillation",
}
CLASSIFIER = ModelBeatClassifier(load_model(bundled(MODEL_NAME)))


@dataclass
class Patient:
    """A synthetic patient on a monitor: ECG leads, and optionally a pulse wave; `script` changes the rhythm."""

    leads: int = 2
    pulse: str | None = None  # "pleth" or "abp"
    alarms: AlarmsSection = field(default_factory=AlarmsSection)
    seed: int = 4

    def run(
        self,
        seconds: int,
        script: Callable[[int, SyntheticEcg], None] = lambda second, ecg: None,
        *,
        lead_override: Callable[[int, int, np.ndarray], np.ndarray] | None = None,
        chunk: int = 125,
        classifier: object = CLASSIFIER,
        other_device_pulse: bool = False,
    ) -> list[tuple[float, Alarm]]:
        """(seconds since start, alarm) for every alarm raised or cleared."""
        ecg = SyntheticEcg(FS, 75.0, seed=self.seed)
        pulse = SyntheticPulse(ecg, pressure=self.pulse == "abp") if self.pulse else None
        engine = AlarmEngine(self.alarms, patients={"monitor": "pt", "oximeter": "pt"})
        analyser = RhythmAnalyzer(self.alarms.rhythm_settings("monitor"), classifier)  # type: ignore[arg-type]
        lead_names = ["MDC_ECG_ELEC_POTL_II", "MDC_ECG_ELEC_POTL_V5", "MDC_ECG_ELEC_POTL_III"][: self.leads]
        gains = [1.0, -0.6, 0.7]
        out: list[tuple[float, Alarm]] = []
        per_second = round(FS)
        for second in range(seconds):
            script(second, ecg)
            base = ecg.next(per_second) / 1000.0
            wave = pulse.next(per_second) if pulse is not None else None
            if other_device_pulse:
                t_ns = START_NS + (second + 1) * 10**9
                reading = Observation(new_id(), "oximeter", quantity("MDC_PULS_OXIM_PULS_RATE"), 72.0, None, t_ns)
                out += [(second + 1.0, a) for a in engine.evaluate(reading)]
            for start in range(0, per_second, chunk):
                t_s = second + (start + chunk) / FS
                t_ns = START_NS + round(t_s * 1e9)
                for k, name in enumerate(lead_names):
                    x = gains[k] * base[start : start + chunk]
                    if lead_override is not None:
                        x = lead_override(k, second, x)
                    for rhythm in analyser.feed(name, ChannelKind.ECG, FS, x, t_s - chunk / FS):
                        out += [(t_s, a) for a in engine.evaluate_rhythm("monitor", rhythm, t_ns)]
                if wave is not None:
                    kind = ChannelKind.ABP if self.pulse == "abp" else ChannelKind.PLETH
                    for rhythm in analyser.feed("PULSE", kind, FS, wave[start : start + chunk], t_s - chunk / FS):
                        out += [(t_s, a) for a in engine.evaluate_rhythm("monitor", rhythm, t_ns)]
        return out


def raised(events: list[tuple[float, Alarm]], condition: str) -> list[float]:
    return [t for t, a in events if a.condition == condition and a.state is AlarmState.ACTIVE]


def physiological(events: list[tuple[float, Alarm]]) -> set[str]:
    return {a.condition for _, a in events if a.state is AlarmState.ACTIVE and a.condition in PHYSIOLOGICAL}


def becomes(rhythm: str, at: int, rate: float | None = None) -> Callable[[int, SyntheticEcg], None]:
    def script(second: int, ecg: SyntheticEcg) -> None:
        if second == at:
            ecg.rhythm = rhythm
            if rate is not None:
                ecg.heart_rate_bpm = rate

    return script


def test_sinus_rhythm_raises_nothing() -> None:
    events = Patient(pulse="pleth").run(120)
    assert physiological(events) == set()
    assert not raised(events, "ecg_poor_signal") and not raised(events, "ecg_lead_off")


@pytest.mark.parametrize(
    ("rhythm", "rate", "condition", "within_s"),
    [
        ("asystole", None, "asystole", 10.0),  # IEC 60601-2-27: annunciated within 10 s of onset
        ("vf", None, "ventricular_fibrillation", 10.0),
        ("vt", 180.0, "ventricular_tachycardia", 10.0),
        ("sinus", 30.0, "extreme_bradycardia", 15.0),  # five beats at 30 /min take 8 s
        ("sinus", 170.0, "extreme_tachycardia", 12.0),  # seventeen beats at 170 /min take 6 s
    ],
)
@pytest.mark.parametrize("leads", [1, 2])
def test_each_alarm_is_raised_named_and_in_time(
    rhythm: str, rate: float | None, condition: str, within_s: float, leads: int
) -> None:
    onset = 40
    events = Patient(leads=leads).run(onset + 25, becomes(rhythm, onset, rate))
    times = raised(events, condition)
    assert times, f"{condition} never raised"
    assert onset < times[0] <= onset + within_s, times
    alarm = next(a for _, a in events if a.condition == condition)
    assert alarm.priority == "high" and alarm.kind == "physiological"
    assert not [t for c in PHYSIOLOGICAL for t in raised(events, c) if t < onset], "nothing before the onset"


def test_an_alarm_clears_once_its_cause_is_gone_for_the_hold_time() -> None:
    def script(second: int, ecg: SyntheticEcg) -> None:
        ecg.rhythm = "vf" if 30 <= second < 45 else "sinus"

    events = Patient().run(80, script)
    active = raised(events, "ventricular_fibrillation")
    cleared = [t for t, a in events if a.condition == "ventricular_fibrillation" and a.state is AlarmState.CLEARED]
    assert len(active) == 1 and len(cleared) == 1
    assert 45 < cleared[0] <= 45 + 15  # the analysis needs a few beats back, then the 2 s hold


def test_a_pulsatile_wave_vetoes_asystole_and_reports_the_ecg_problem() -> None:
    # The ECG goes quiet but the heart keeps beating (a lead problem the flat-line check cannot see): the pulse
    # wave of the same monitor shows it.
    def quiet_ecg(lead: int, second: int, x: np.ndarray) -> np.ndarray:
        del lead
        return 0.004 * np.random.default_rng(second).standard_normal(len(x)) if second >= 40 else x

    events = Patient(pulse="abp").run(70, lead_override=quiet_ecg)
    assert "asystole" not in physiological(events)
    assert raised(events, "ecg_no_beats_pulse_present")


def test_a_pulse_from_another_device_of_the_patient_vetoes_asystole() -> None:
    def quiet_ecg(lead: int, second: int, x: np.ndarray) -> np.ndarray:
        del lead
        return 0.004 * np.random.default_rng(second).standard_normal(len(x)) if second >= 40 else x

    events = Patient().run(70, lead_override=quiet_ecg, other_device_pulse=True)
    assert "asystole" not in physiological(events)
    assert raised(events, "ecg_no_beats_pulse_present")
    alone = Patient().run(70, lead_override=quiet_ecg)
    assert "asystole" in physiological(alone), "without the oximeter the same ECG is an asystole"


def test_a_perfusing_pulse_vetoes_fibrillation_and_bradycardia_from_a_lead_that_misses_beats() -> None:
    def fibrillation_like_noise(lead: int, second: int, x: np.ndarray) -> np.ndarray:
        del lead
        if second < 40:
            return x
        t = (second + np.arange(len(x)) / FS) * 2 * np.pi * 5.0
        return 0.4 * np.sin(t)  # an oscillating artefact on every lead while the heart beats on

    events = Patient(pulse="abp").run(70, lead_override=fibrillation_like_noise)
    assert "ventricular_fibrillation" not in physiological(events)
    without_pulse = Patient().run(70, lead_override=fibrillation_like_noise)
    assert "ventricular_fibrillation" in physiological(without_pulse)


def test_a_flat_lead_alone_raises_lead_off_never_a_rhythm_alarm() -> None:
    def flat(second: int, ecg: SyntheticEcg) -> None:
        ecg.flat = second >= 30

    events = Patient(leads=1).run(60, flat)
    assert raised(events, "ecg_lead_off")
    assert physiological(events) == set()
    lead_off = next(a for _, a in events if a.condition == "ecg_lead_off")
    assert lead_off.kind == "technical" and lead_off.detail["lead"] == "MDC_ECG_ELEC_POTL_II"


def test_one_lead_off_of_two_is_reported_for_that_lead_and_the_other_carries_on() -> None:
    def second_lead_off(lead: int, second: int, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), 0.3) if lead == 1 and second >= 30 else x

    events = Patient(leads=2).run(90, becomes("vt", 60, 180.0), lead_override=second_lead_off)
    off = [a for _, a in events if a.condition == "ecg_lead_off" and a.state is AlarmState.ACTIVE]
    assert [a.detail["lead"] for a in off] == ["MDC_ECG_ELEC_POTL_V5"]
    assert raised(events, "ventricular_tachycardia"), "the remaining lead still sees the VT"


def test_a_noisy_lead_raises_poor_signal_not_a_rhythm_alarm() -> None:
    def noisy(lead: int, second: int, x: np.ndarray) -> np.ndarray:
        del lead
        return x + 0.8 * np.random.default_rng(second).standard_normal(len(x)) if second >= 30 else x

    events = Patient(leads=1).run(120, lead_override=noisy)
    assert raised(events, "ecg_poor_signal")
    poor = next(a for _, a in events if a.condition == "ecg_poor_signal")
    assert poor.kind == "technical" and poor.priority == "low"
    assert physiological(events) == set(), "a rhythm from a noisy lead is not alarmed"


def test_poor_signal_does_not_flap_on_intermittent_noise() -> None:
    # Bursts of noise of 5 to 25 s with clean gaps of 3 to 20 s, for ten minutes: at most two activations of
    # ecg_poor_signal in any five minutes (the hysteresis: 15 s poor to go active, 30 s good to clear).
    rng = np.random.default_rng(11)
    noisy_seconds: set[int] = set()
    t = 20
    while t < 600:
        burst = int(rng.integers(5, 26))
        noisy_seconds.update(range(t, t + burst))
        t += burst + int(rng.integers(3, 21))

    def intermittent(lead: int, second: int, x: np.ndarray) -> np.ndarray:
        del lead
        return x + 0.8 * np.random.default_rng(second).standard_normal(len(x)) if second in noisy_seconds else x

    events = Patient(leads=1).run(600, lead_override=intermittent)
    activations = raised(events, "ecg_poor_signal")
    assert activations, "the noise is reported"
    worst = max(sum(1 for a in activations if start <= a < start + 300) for start in range(0, 600, 10))
    assert worst <= 2, activations


def test_per_patient_limits_replace_the_general_ones() -> None:
    alarms = AlarmsSection(rhythm=(RhythmLimits(device="monitor", extreme_brady_bpm=55.0),))
    assert alarms.rhythm_settings("monitor").brady_bpm == 55.0
    assert alarms.rhythm_settings("another").brady_bpm == 40.0
    events = Patient(alarms=alarms).run(60, becomes("sinus", 20, 48.0))
    assert raised(events, "extreme_bradycardia"), "48 /min is under this patient's 55"
    assert not raised(Patient().run(60, becomes("sinus", 20, 48.0)), "extreme_bradycardia")


def test_without_a_model_the_rules_still_find_ventricular_tachycardia() -> None:
    events = Patient().run(65, becomes("vt", 40, 180.0), classifier=RuleBeatClassifier())
    assert raised(events, "ventricular_tachycardia")


class _EveryBeatVentricular:
    """A classifier that is wrong about the patient's usual beats: it calls every beat ventricular."""

    def probability(self, beat: object) -> float:
        del beat
        return 1.0


def test_a_fast_run_of_the_patients_usual_beats_is_no_ventricular_tachycardia() -> None:
    """A patient whose usual complexes are wide (a bundle branch block, say) speeds up to 130 /min: every beat is
    the lead's dominant beat in shape and size in every lead, so a classifier that calls them ventricular does
    not make a ventricular tachycardia of them."""

    def script(second: int, ecg: SyntheticEcg) -> None:
        if second == 0:
            ecg.rhythm = "vt"  # wide complexes from the start: they are this patient's usual beat
        if second == 60:
            ecg.heart_rate_bpm = 130.0

    events = Patient().run(90, script, classifier=_EveryBeatVentricular())
    assert not raised(events, "ventricular_tachycardia")


def test_complexes_many_times_a_dominant_beat_smaller_than_any_qrs_are_beats_not_movement() -> None:
    """A lead that showed only tiny deflections for a minute (as noise does during a standstill) has learnt them as
    its dominant beat; the full-sized complexes of a ventricular tachycardia that follows are tens of times that
    size, which is not movement when the dominant beat is smaller than any QRS: the tachycardia is raised."""

    def tiny(lead: int, second: int, x: np.ndarray) -> np.ndarray:
        del lead
        return x * 0.03 if 20 <= second < 90 else x

    events = Patient().run(110, becomes("vt", 90, 160.0), lead_override=tiny)
    vt = raised(events, "ventricular_tachycardia")
    assert vt and 90 < vt[0] <= 100, vt


def test_the_classifier_tells_ventricular_from_normal_beats() -> None:
    ecg = SyntheticEcg(FS, 75.0, seed=2)
    analyser = LeadAnalyzer(FS, CLASSIFIER)
    normal: list[float] = []
    ventricular: list[float] = []
    for second in range(60):
        ecg.rhythm = "vt" if second % 10 == 9 else "sinus"
        for assessment in analyser.process(ecg.next(round(FS)) / 1000.0):
            for beat in assessment.beats:
                (ventricular if ecg.rhythm == "vt" and beat.width_ms > 100 else normal).append(beat.ventricular)
    assert np.median(normal) < 0.2
    assert ventricular and np.median(ventricular) > 0.5


def test_rhythm_settings_defaults_are_the_standard_definitions() -> None:
    s = RhythmSettings()
    assert (s.asystole_s, s.brady_bpm, s.brady_beats, s.tachy_bpm, s.tachy_beats) == (4.0, 40.0, 5, 140.0, 17)
    assert (s.vt_bpm, s.vt_beats, s.vf_s) == (100.0, 5, 4.0)
    a = AlarmsSection()
    assert (a.asystole_s, a.extreme_brady_bpm, a.extreme_tachy_bpm, a.rhythm_delay_s) == (4.0, 40.0, 140.0, 0.0)


def test_hrv_of_a_known_series() -> None:
    sdnn, rmssd = hrv([800, 810, 790, 800])
    assert round(sdnn, 3) == 8.165 and round(rmssd, 3) == 14.142


def test_results_do_not_depend_on_chunking() -> None:
    halves = Patient().run(70, becomes("vt", 40, 180.0), chunk=125)
    seconds = Patient().run(70, becomes("vt", 40, 180.0), chunk=250)
    assert [(a.condition, a.state) for _, a in halves] == [(a.condition, a.state) for _, a in seconds]
    assert all(abs(t1 - t2) <= 1.0 for (t1, _), (t2, _) in zip(halves, seconds, strict=True))
