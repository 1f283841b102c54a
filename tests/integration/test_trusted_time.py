"""The gateway's clock as the threat: unsynchronised after a boot without a battery-backed clock, set 6 h back,
or 11 minutes ahead.  No expired or too-closely-spaced bolus reaches the pump, and the pump's clock is never
set from a time the gateway cannot trust.  The clock is injected; the machine's clock is never touched."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.ble import ids
from gateway.clock import KernelTimeState, TimePoint, TrustedClock, elapsed_ns, read_kernel_time_state
from gateway.config import Config
from hil.ble_sim import SimBleWorld, SimInsulinPump
from hil.sim_clock import SimulatedClock
from tests.conftest import Mosquitto
from tests.support.commanding import Issuer, pump_config, send
from tests.support.harness import Running, running_gateway

HOUR_S = 3600.0


@dataclass
class _Bench:
    """One pump under signed commands (10-minute bolus spacing) and a gateway started on it as often as a test
    needs, each time with the injected clock."""

    port: int
    config: Config
    pump: SimInsulinPump
    clock: SimulatedClock = field(default_factory=SimulatedClock)
    issuer: Issuer = field(default_factory=Issuer)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Running]:
        """A gateway with the pump connected; it stops (draining to the receiver) on the way out."""
        world = SimBleWorld()
        world.add(self.pump)
        async with running_gateway(self.config, world=world, clock=self.clock) as run:
            await run.wait_connected("pump-1")
            yield run
            await run.finish()

    async def bolus(self, run: Running, amount_mu: int = 1000, **envelope: Any) -> dict[str, Any]:
        """A signed bolus (1 IU unless said); its final result."""
        signed = self.issuer.envelope("pump-1", "bolus", {"amount_mu": amount_mu}, **envelope)
        return await send(run, self.port, self.issuer, signed)


def _bench(tmp_path: Path, port: int, pump: SimInsulinPump) -> _Bench:
    issuer = Issuer()
    policy: dict[str, Any] = {"allowed": ["bolus", "cancel_bolus"], "min_bolus_interval_s": 600, "max_daily_mu": 50_000}
    config = pump_config(tmp_path, port, issuer, max_validity_s=900, **policy)
    return _Bench(port, config, pump, issuer=issuer)


@pytest.fixture
def bench(tmp_path: Path, mosquitto: Mosquitto) -> _Bench:
    return _bench(tmp_path, mosquitto.port, SimInsulinPump("pump-1"))


def _clock_alarms(run: Running) -> list[dict[str, Any]]:
    return [a for a in run.receiver.alarms if a["condition"] == "device.clock_not_set"]


async def test_unsynchronised_at_boot_no_bolus_and_the_pump_clock_is_left_alone(bench: _Bench) -> None:
    pump, clock = bench.pump, bench.clock
    clock.synchronised, clock.wall_offset_ns = False, round(-8 * HOUR_S * 1e9)  # the last saved time
    drift_before = pump.clock_offset_s
    async with bench.running() as run:
        await run.wait_until(lambda: any(a["state"] == "active" for a in _clock_alarms(run)))
        assert pump.clock_offset_s == drift_before, "the pump keeps its own clock"
        refused = await bench.bolus(run, issued_offset_s=-8 * HOUR_S)
        assert (refused["outcome"], refused["reason"]) == ("rejected", "clock-unsynchronised")
        assert pump.commands_received == []
        # A harmless command does not need trusted time.
        cancel = bench.issuer.envelope("pump-1", "cancel_bolus", {"bolus_id": 1}, issued_offset_s=-8 * HOUR_S)
        assert (await send(run, bench.port, bench.issuer, cancel))["outcome"] == "confirmed"
    # NTP answers: the next connection sets the pump's clock, and the alarm clears.
    clock.synchronised, clock.wall_offset_ns = True, 0
    async with bench.running() as run:
        await run.wait_until(lambda: any(a["state"] == "cleared" for a in _clock_alarms(run)) or not _clock_alarms(run))
        assert pump.clock_offset_s is not None and abs(pump.clock_offset_s) < 5


async def test_clock_six_hours_back_cannot_bring_an_expired_bolus_back(bench: _Bench) -> None:
    pump, clock = bench.pump, bench.clock
    async with bench.running() as run:
        assert (await bench.bolus(run))["outcome"] == "confirmed"
    # A bolus signed 6 h ago, valid 10 minutes: long expired.  Someone sets the clock 6 h back (a rogue time
    # server, so the kernel even calls it synchronised): to the gateway's clock the bolus looks current.
    clock.jump_wall(-6 * HOUR_S)
    for reboot in (False, True):
        if reboot:  # a power cut: another boot, and the same trick with another stale bolus
            clock.reboot()
        async with bench.running() as run:
            refused = await bench.bolus(run, issued_offset_s=-6 * HOUR_S, valid_s=600)
            assert (refused["outcome"], refused["reason"]) == ("rejected", "clock-behind-signed-time")
            assert len(pump.deliveries) == 1
            assert pump.clock_offset_s is not None and abs(pump.clock_offset_s) < 5, "not set 6 h back"


async def test_clock_eleven_minutes_ahead_does_not_shorten_bolus_spacing(bench: _Bench) -> None:
    clock = bench.clock
    async with bench.running() as run:
        assert (await bench.bolus(run, valid_s=900))["outcome"] == "confirmed"
        clock.jump_wall(11 * 60)  # the spacing is 10 minutes: by the wall clock, it has passed
        second = await bench.bolus(run, valid_s=900)
        assert (second["outcome"], second["reason"]) == ("rejected", "policy:bolus-spacing")
    # The monotonic time of the first bolus is on disk with the boot id: a restart does not reset the spacing.
    async with bench.running() as run:
        third = await bench.bolus(run, valid_s=900)
        assert (third["outcome"], third["reason"]) == ("rejected", "policy:bolus-spacing")
        clock.advance(600)  # ten minutes pass (for the issuer too): the spacing is satisfied
        fourth = await bench.bolus(run, valid_s=900, issued_offset_s=600)
        assert fourth["outcome"] == "confirmed", fourth
    assert len(bench.pump.deliveries) == 2


def test_kernel_time_state_is_read_and_the_floor_follows_the_monotonic_clock() -> None:
    state = read_kernel_time_state()  # this machine's, whatever it is: it reads without error
    assert isinstance(state.synchronised, bool) and state.max_error_us >= 0
    sim = SimulatedClock(max_error_us=2_000_000)
    clock = TrustedClock(sim, max_error_s=1.0)
    assert clock.distrust() == "clock-error-too-large"
    sim.max_error_us = 1000
    assert clock.distrust() is None
    signed_at = clock.now()
    clock.note_signed_time(signed_at.wall_ns, signed_at)
    sim.advance(100)
    floor = clock.signed_floor_ns()
    assert floor is not None and floor >= signed_at.wall_ns + 100 * 10**9
    assert KernelTimeState(False, 0) == KernelTimeState(synchronised=False, max_error_us=0)
    same_boot = TimePoint(0, 5, "a"), TimePoint(10**12, 7, "a")
    assert elapsed_ns(*same_boot) == 2  # within a boot: monotonic, whatever the wall clock did
    assert elapsed_ns(TimePoint(3, 5, "a"), TimePoint(10, 1, "b")) == 7  # across boots: wall clock


async def test_a_pump_without_e2e_receives_plainly_framed_commands(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """IDD Features say no E2E: commands go without E2E-Counter and E2E-CRC, and the pump's answers are read so."""
    bench = _bench(tmp_path, mosquitto.port, SimInsulinPump("pump-1", e2e=False))
    async with bench.running() as run:
        result = await bench.bolus(run, amount_mu=1500)
        assert (result["outcome"], result["detail"]["bolus_id"]) == ("confirmed", "1"), result
        assert bench.pump.deliveries == [(1, 1.5)]
        written = [data for uuid, data in bench.pump.writes if uuid == ids.IDD_COMMAND_CONTROL_POINT]
        assert ids.decode_command(written[0], e2e=False)[1] is None  # the frame is exactly the plain command
