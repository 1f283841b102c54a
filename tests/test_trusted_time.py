"""The gateway's clock as the threat: unsynchronised after a boot without a battery-backed clock, set 6 h back,
or 11 minutes ahead.  No expired or too-closely-spaced bolus reaches the pump, and the pump's clock is never
set from a time the gateway cannot trust.  The clock is injected; the machine's clock is never touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.clock import KernelTimeState, TimePoint, TrustedClock, elapsed_ns, read_kernel_time_state
from gateway.config import Config
from hil.ble_sim import SimBleWorld, SimInsulinPump
from hil.sim_clock import SimulatedClock
from tests.commanding import Issuer, pump_config
from tests.commanding import send as _send
from tests.conftest import Mosquitto
from tests.harness import Running, running_gateway

HOUR_S = 3600.0


def _config(tmp_path: Path, port: int, issuer: Issuer) -> Config:
    policy = {"allowed": ["bolus", "cancel_bolus"], "min_bolus_interval_s": 600, "max_daily_mu": 50_000}
    return pump_config(tmp_path, port, issuer, max_validity_s=900, **policy)


def _world() -> tuple[SimBleWorld, SimInsulinPump]:
    world = SimBleWorld()
    pump = SimInsulinPump("pump-1")
    world.add(pump)
    return world, pump


async def _connected(run: Running) -> None:
    await run.wait_connected("pump-1")


def _clock_alarms(run: Running) -> list[dict[str, Any]]:
    return [a for a in run.receiver.alarms if a["condition"] == "device.clock_not_set"]


async def test_unsynchronised_at_boot_no_bolus_and_the_pump_clock_is_left_alone(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world, pump = _world()
    clock = SimulatedClock(synchronised=False, wall_offset_ns=round(-8 * HOUR_S * 1e9))  # the last saved time
    drift_before = pump.clock_offset_s
    async with running_gateway(config, world=world, clock=clock) as run:
        await _connected(run)
        await run.wait_until(lambda: any(a["state"] == "active" for a in _clock_alarms(run)))
        assert pump.clock_offset_s == drift_before, "the pump keeps its own clock"
        bolus = issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, issued_offset_s=-8 * HOUR_S)
        refused = await _send(run, mosquitto.port, issuer, bolus)
        assert (refused["outcome"], refused["reason"]) == ("rejected", "clock-unsynchronised")
        assert pump.commands_received == []
        # A harmless command does not need trusted time.
        cancel = issuer.envelope("pump-1", "cancel_bolus", {"bolus_id": 1}, issued_offset_s=-8 * HOUR_S)
        assert (await _send(run, mosquitto.port, issuer, cancel))["outcome"] == "confirmed"
        await run.finish()
    # NTP answers: the next connection sets the pump's clock, and the alarm clears.
    clock.synchronised, clock.wall_offset_ns = True, 0
    async with running_gateway(config, world=world, clock=clock) as run:
        await _connected(run)
        await run.wait_until(lambda: any(a["state"] == "cleared" for a in _clock_alarms(run)) or not _clock_alarms(run))
        assert pump.clock_offset_s is not None and abs(pump.clock_offset_s) < 5
        await run.finish()


async def test_clock_six_hours_back_cannot_bring_an_expired_bolus_back(tmp_path: Path, mosquitto: Mosquitto) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world, pump = _world()
    clock = SimulatedClock()
    async with running_gateway(config, world=world, clock=clock) as run:
        await _connected(run)
        assert (await _send(run, mosquitto.port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000})))[
            "outcome"
        ] == "confirmed"
        await run.finish()
    # A bolus signed 6 h ago, valid 10 minutes: long expired.  Someone sets the clock 6 h back (a rogue time
    # server, so the kernel even calls it synchronised): to the gateway's clock the bolus looks current.
    stale = issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, issued_offset_s=-6 * HOUR_S, valid_s=600)
    clock.jump_wall(-6 * HOUR_S)
    for reboot in (False, True):
        if reboot:  # a power cut: another boot, and the same trick with another stale bolus
            clock.reboot()
            stale = issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, issued_offset_s=-6 * HOUR_S, valid_s=600)
        async with running_gateway(config, world=world, clock=clock) as run:
            await _connected(run)
            refused = await _send(run, mosquitto.port, issuer, stale)
            assert (refused["outcome"], refused["reason"]) == ("rejected", "clock-behind-signed-time")
            assert len(pump.deliveries) == 1
            assert pump.clock_offset_s is not None and abs(pump.clock_offset_s) < 5, "not set 6 h back"
            await run.finish()


async def test_clock_eleven_minutes_ahead_does_not_shorten_bolus_spacing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world, pump = _world()
    clock = SimulatedClock()
    async with running_gateway(config, world=world, clock=clock) as run:
        await _connected(run)
        first = await _send(
            run, mosquitto.port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, valid_s=900)
        )
        assert first["outcome"] == "confirmed"
        clock.jump_wall(11 * 60)  # the spacing is 10 minutes: by the wall clock, it has passed
        second = await _send(
            run, mosquitto.port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, valid_s=900)
        )
        assert (second["outcome"], second["reason"]) == ("rejected", "policy:bolus-spacing")
        await run.finish()
    # The monotonic time of the first bolus is on disk with the boot id: a restart does not reset the spacing.
    async with running_gateway(config, world=world, clock=clock) as run:
        await _connected(run)
        third = await _send(
            run, mosquitto.port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, valid_s=900)
        )
        assert (third["outcome"], third["reason"]) == ("rejected", "policy:bolus-spacing")
        clock.advance(600)  # ten minutes pass (for the issuer too): the spacing is satisfied
        later = issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}, valid_s=900, issued_offset_s=600)
        fourth = await _send(run, mosquitto.port, issuer, later)
        assert fourth["outcome"] == "confirmed", fourth
        await run.finish()
    assert len(pump.deliveries) == 2


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
    from drivers.ble import ids  # noqa: PLC0415

    issuer = Issuer()
    config = _config(tmp_path, mosquitto.port, issuer)
    world = SimBleWorld()
    pump = SimInsulinPump("pump-1", e2e=False)
    world.add(pump)
    async with running_gateway(config, world=world) as run:
        await _connected(run)
        result = await _send(run, mosquitto.port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1500}))
        assert (result["outcome"], result["detail"]["bolus_id"]) == ("confirmed", "1"), result
        assert pump.deliveries == [(1, 1.5)]
        written = [data for uuid, data in pump.writes if uuid == ids.IDD_COMMAND_CONTROL_POINT]
        assert ids.decode_command(written[0], e2e=False)[1] is None  # the frame is exactly the plain command
        await run.finish()
