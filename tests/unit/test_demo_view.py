"""The demo's live view as a person sees it: units as written, no markup read from data, and at 80x24 the
alarms always on screen."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from gateway.core.model import Alarm, AlarmKind, AlarmPriority, AlarmState, Observation, new_id
from gateway.core.nomenclature import quantity
from hil.demo import DeviceLine, ViewState, render

T0 = 1_800_000_000 * 10**9


def _obs(device: str, ref: str, value: float) -> Observation:
    return Observation(new_id(), device, quantity(ref), value, None, T0)


def _state(alarms: int) -> ViewState:
    devices = [
        DeviceLine("ecg-patch-1", "ecg_patch", "up", 40, 40, [_obs("ecg-patch-1", "MDC_ECG_HEART_RATE", 72)]),
        DeviceLine("pulse-ox-1", "pulse_oximeter", "up", 33, 33, [_obs("pulse-ox-1", "MDC_PULS_OXIM_SAT_O2", 97)]),
        DeviceLine("cgm-1", "cgm", "up", 41, 41, [_obs("cgm-1", "MDC_CONC_GLU_ISF", 116)]),
        DeviceLine("pump-[bold]1[/]", "insulin_pump", "up", 17, 17, [_obs("p", "MDC_INS_RESERVOIR", 180)]),
        DeviceLine("med-fridge-1", "medication_fridge", "up", 27, 27, [_obs("f", "MDC_TEMP_ROOM", 5.2)]),
        DeviceLine("bedside-monitor-1", "hl7_pcd01", "down", 42, 42, [_obs("m", "MDC_PRESS_BLD_ART_SYS", 120)]),
    ]
    raised = [
        Alarm(new_id(), f"dev-{n}", f"condition_{n}", AlarmKind.TECHNICAL, AlarmPriority.LOW, AlarmState.ACTIVE, T0 + n)
        for n in range(alarms)
    ]
    return ViewState("online", 12, 0, 300, 42.0, Path("/tmp/iomt-demo-x/admin.sock"), devices, raised)


def _screen(state: ViewState, width: int, height: int) -> list[str]:
    screen = io.StringIO()
    console = Console(file=screen, width=width, height=height, force_terminal=True, color_system=None)
    console.print(render(state, width=width, height=height))
    return screen.getvalue().splitlines()


def test_at_80x24_the_view_fits_and_the_newest_alarms_are_on_screen() -> None:
    lines = _screen(_state(alarms=12), 80, 24)
    assert len(lines) <= 23, "a view as tall as the terminal scrolls and leaves stale lines behind"
    text = "\n".join(lines)
    for n in range(4, 12):  # the eight newest
        assert f"dev-{n}" in text and f"condition {n}" in text, text
    assert "IOMT_GATEWAY_SOCKET=/tmp/iomt-demo-x/admin.sock" in text
    assert all(len(line) <= 80 for line in lines)


def test_a_short_terminal_gives_the_devices_up_before_the_alarms() -> None:
    text = "\n".join(_screen(_state(alarms=5), 80, 14))
    for n in range(5):
        assert f"dev-{n}" in text, text
    assert "more" in text or "devices: 6" in text


def test_units_as_written_and_no_markup_from_data() -> None:
    text = "\n".join(_screen(_state(alarms=1), 200, 40))
    assert "180 IU" in text and "5.2 °C" in text and "120 mmHg" in text, text
    assert "[iU]" not in text and "Cel" not in text and "mm[Hg]" not in text
    assert "pump-[bold]1[/]" in text, "a device id is shown as it is, never read as markup"
