"""An outcome-unknown bolus settled from the insulin pump's own history (IDD History Data through the IDD RACP).

The rules (drivers/ble/pump_history.py) case by case, then end to end over the real stack: bleak over bumble to
the simulated pump's GATT server, the gateway's command service, its audit chain, Mosquitto and the receiver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.ble import idd_history as h
from drivers.ble.ids import BolusActivationType, BolusType
from drivers.ble.pump_history import HistoryRead, settle_bolus
from gateway.commands.store import CommandStore
from gateway.storage.keys import load_keyring
from hil.ble_radio import VirtualRadio
from hil.ble_sim import SimInsulinPump
from tests.conftest import Mosquitto
from tests.support.commanding import Issuer, pump_config, send
from tests.support.harness import running_gateway

SINCE = 7002
SETTLED = "settled from the device's history"
EVENT = h.HistoryEventType


def _reference(seq: int) -> h.HistoryRecord:
    return h.HistoryRecord(
        EVENT.REFERENCE_TIME, seq, 0, h.ReferenceTime(h.RecordingReason.SET_DATE_TIME, (2026, 1, 2, 3, 4, 5), 0, 0)
    )


def _bolus(
    seq: int,
    bolus_id: int,
    amount_iu: float,
    *,
    activation: int | None = BolusActivationType.COMMANDED,
    bolus_type: int = BolusType.FAST,
    programmed: bool = True,
    delivered: bool = True,
) -> list[h.HistoryRecord]:
    """The records a pump writes for a bolus, from sequence number `seq` on."""
    amounts = h.BolusAmounts(bolus_id, bolus_type, amount_iu, 0.0, 0)
    parts: list[tuple[int, h.HistoryEventData]] = []
    if programmed:
        parts += [
            (EVENT.BOLUS_PROGRAMMED_PART_1_OF_2, amounts),
            (EVENT.BOLUS_PROGRAMMED_PART_2_OF_2, h.BolusProgrammedDetails(activation_type=activation)),
        ]
    if delivered:
        ended = h.BolusDeliveredDetails(0, activation, h.BolusEndReason.PROGRAMMED_DURATION_OVER)
        parts += [(EVENT.BOLUS_DELIVERED_PART_1_OF_2, amounts), (EVENT.BOLUS_DELIVERED_PART_2_OF_2, ended)]
    return [h.HistoryRecord(kind, seq + i, 0, data) for i, (kind, data) in enumerate(parts)]


def _settle(
    records: list[h.HistoryRecord], *, completed: bool = True, problems: int = 0
) -> tuple[str, str, dict[str, str]]:
    settlement = settle_bolus(HistoryRead(tuple(records), completed, problems), SINCE, 1.5)
    return settlement.outcome, settlement.reason, settlement.evidence


def test_our_bolus_in_a_complete_history_is_delivered_with_the_pumps_own_record() -> None:
    outcome, _, evidence = _settle([*_bolus(SINCE, 4, 1.5), _reference(SINCE + 4)])
    assert outcome == "delivered"
    assert evidence == {
        "history_from": "7002",
        "history_to": "7006",
        "bolus_id": "4",
        "programmed_seq": "7002",
        "programmed_iu": "1.5",
        "delivered_seq": "7004",
        "delivered_iu": "1.5",
        "end_reason": "programmed_duration_over",
    }
    # Programmed but still being delivered: the pump acted on it, as a Set Bolus Response would have said.
    outcome, _, evidence = _settle(_bolus(SINCE, 4, 1.5, delivered=False))
    assert (outcome, evidence["bolus_id"], evidence["delivery"]) == ("delivered", "4", "in progress")


@pytest.mark.parametrize(
    "others",
    [
        pytest.param([], id="only-a-reference-time"),
        pytest.param(_bolus(SINCE + 1, 5, 1.5, activation=BolusActivationType.MANUAL), id="same-dose-at-the-pump"),
        pytest.param(_bolus(SINCE + 1, 5, 2.0), id="another-commanded-dose"),
        pytest.param(_bolus(SINCE + 1, 5, 1.5, bolus_type=BolusType.EXTENDED), id="an-extended-bolus"),
    ],
)
def test_a_complete_history_without_our_bolus_is_not_delivered(others: list[h.HistoryRecord]) -> None:
    outcome, reason, evidence = _settle([_reference(SINCE), *others])
    assert outcome == "not-delivered", reason
    assert evidence == {"history_from": "7002", "history_to": str(SINCE + len(others))}


@pytest.mark.parametrize(
    ("records", "completed", "problems", "why"),
    [
        pytest.param(_bolus(SINCE, 4, 1.5), False, 0, "did not complete", id="no-success"),
        pytest.param(_bolus(SINCE, 4, 1.5), True, 1, "unusable", id="a-record-failed-e2e"),
        pytest.param([], True, 0, "no history records", id="nothing-since"),
        pytest.param([_reference(SINCE), _reference(SINCE + 2)], True, 0, "gaps", id="a-gap"),
        pytest.param([_reference(SINCE + 1)], True, 0, "gaps", id="starts-late"),
        pytest.param([_reference(SINCE), _reference(SINCE)], True, 0, "gaps", id="a-repeat"),
        pytest.param([*_bolus(SINCE, 4, 1.5), *_bolus(SINCE + 4, 5, 1.5)], True, 0, "2 boluses", id="two-matches"),
        pytest.param(_bolus(SINCE, 4, 1.5, activation=None), True, 0, "could be", id="activation-unknown"),
        pytest.param(_bolus(SINCE, 4, 1.0, programmed=False), True, 0, "could be", id="delivered-only-cut-short"),
    ],
)
def test_anything_less_than_certain_decides_nothing(
    records: list[h.HistoryRecord], completed: bool, problems: int, why: str
) -> None:
    outcome, reason, evidence = _settle(records, completed=completed, problems=problems)
    assert (outcome, evidence) == ("undecided", {})
    assert why in reason


# ------------------------------------------------------------------------------------------- over the real stack


@dataclass
class _Settled:
    """A 1.5 IU bolus whose answer was lost, settled from the pump's history once it was reachable again."""

    pump: SimInsulinPump
    result: dict[str, Any]  # the command result that settled it
    following: dict[str, Any]  # the result of the next bolus (1 IU), sent once it was settled
    audited: list[dict[str, Any]]  # the audit chain's records about the lost bolus


async def _lose_an_answer(tmp_path: Path, port: int, fault: str, *, e2e: bool = True) -> _Settled:
    """Over the radio: `fault` drops the link before the pump's answer (the gateway reports outcome-unknown);
    the fault clears, the driver reconnects, and the command is settled from the pump's history (framed with
    E2E-Counter and E2E-CRC or not, as the pump's IDD Features say)."""
    issuer = Issuer()
    config = pump_config(
        tmp_path, port, issuer, address="virtual:pump-1", allowed=["bolus", "reconcile"], max_daily_mu=50_000
    )
    radio = VirtualRadio()
    pump = SimInsulinPump("pump-1", e2e=e2e)
    radio.add(pump)
    async with running_gateway(config, world=radio) as run:
        await run.wait_connected("pump-1", 30)
        pump.command_fault = fault
        envelope = issuer.envelope("pump-1", "bolus", {"amount_mu": 1500})
        command_id = envelope["command_id"]
        assert (await send(run, port, issuer, envelope))["outcome"] == "outcome-unknown"
        pump.command_fault = None

        def settled() -> list[dict[str, Any]]:
            return [
                i
                for i in run.receiver.items.values()
                if i.get("command_id") == command_id and str(i.get("reason")).startswith(SETTLED)
            ]

        await run.wait_until(lambda: bool(settled()), 60)
        # Settled, it no longer blocks: the next bolus goes to the pump.
        following = await send(run, port, issuer, issuer.envelope("pump-1", "bolus", {"amount_mu": 1000}))
        await run.finish()
    return _Settled(pump, settled()[0], following, _audited(tmp_path, command_id))


def _audited(tmp_path: Path, command_id: str) -> list[dict[str, Any]]:
    """The chain's records about one command, after checking the whole chain is intact."""
    state = tmp_path / "state"
    store = CommandStore(state / "commands.sqlite3", load_keyring(state / "buffer.key"))
    try:
        assert store.verify_audit() == []
        assert store.state_problems() == []
        return [r.body for r in store.audit_records() if r.body.get("command_id") == command_id]
    finally:
        store.close()


def _steps(bodies: list[dict[str, Any]]) -> list[str]:
    """What each record says happened: a state, a settling step, or another chain event (e.g. "seen")."""
    return [str(b.get("step") or b.get("state") or b.get("event")) for b in bodies]


STEPS = ["received", "seen", "verified", "sent", "outcome-unknown", "read-history", "finding"]


@pytest.mark.parametrize("e2e", [True, False], ids=["e2e-pump", "plain-pump"])
async def test_a_bolus_whose_answer_is_lost_is_settled_delivered_from_the_pumps_history(
    tmp_path: Path, mosquitto: Mosquitto, e2e: bool
) -> None:
    case = await _lose_an_answer(tmp_path, mosquitto.port, "drop-after-write", e2e=e2e)
    pump, settled = case.pump, case.result
    assert pump.deliveries == [(1, 1.5), (2, 1.0)], "the pump did deliver before the link dropped"
    assert settled["outcome"] == "confirmed", settled
    detail = settled["detail"]
    assert (detail["settled_from"], detail["bolus_id"], detail["delivered_iu"]) == ("device-history", "1", "1.5")
    # Where the history stood was read just before the write; the report asked for everything from there on.
    since = int(detail["history_from"])
    assert h.report_last_record() in pump.history_requests
    assert h.report_records_since(since) in pump.history_requests
    programmed = [r.sequence_number for r in pump.history if r.event_type == EVENT.BOLUS_PROGRAMMED_PART_1_OF_2]
    assert programmed[0] == int(detail["programmed_seq"])
    assert (case.following["outcome"], case.following["detail"]["bolus_id"]) == ("confirmed", "2")
    assert _steps(case.audited) == [*STEPS, "confirmed"]
    assert case.audited[3]["history_from"] == since
    finding = case.audited[6]
    assert (finding["outcome"], finding["evidence"]["bolus_id"]) == ("delivered", "1")


async def test_a_bolus_the_pump_never_acted_on_is_settled_not_delivered_from_its_history(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    case = await _lose_an_answer(tmp_path, mosquitto.port, "drop-before-acting")
    settled = case.result
    assert case.pump.deliveries == [(1, 1.0)], "only the following bolus: the lost one never reached delivery"
    assert len(case.pump.commands_received) == 1
    assert settled["outcome"] == "failed", settled
    assert "no such bolus in history records" in settled["reason"]
    covered = (int(settled["detail"]["history_from"]), int(settled["detail"]["history_to"]))
    assert covered[0] <= covered[1], "at least one record after the command: the history covers the time"
    assert (case.following["outcome"], case.following["detail"]["bolus_id"]) == ("confirmed", "1")
    assert _steps(case.audited) == [*STEPS, "failed"]
    assert case.audited[6]["outcome"] == "not-delivered"
    # Not delivered by the pump's complete history, yet still counted for every limit (as an operator's "failed").
    assert case.audited[7]["tracked"][3] == "reconciled-failed"
