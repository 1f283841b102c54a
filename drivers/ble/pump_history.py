"""What an insulin pump's own history says about a bolus whose outcome was unknown: pure, no I/O.

The gateway reads where the pump's history stands (the sequence number its next record will carry) just before it
writes a Set Bolus, and keeps that number with the command.  When the answer is lost, the records from that number
on are the whole story of what the pump did since.  The rules, each on the safe side:

* The report must be complete: the RACP procedure ended with Success (the only confirmed response code value),
  every notification decoded (E2E-CRC and E2E-Counter included), and the sequence numbers run without a gap from
  the recorded number on.  Anything less decides nothing.
* Our bolus is a Bolus Programmed record (Part 1 of 2, Part 2 of 2 right after it) of a fast bolus with exactly the
  dose sent (the dose is SFLOAT-exact, so the pump's copy is equal) and activation type Commanded.  Exactly one such
  record, and no other bolus that could be ours, means delivered: the pump acted on the command, as a Set Bolus
  Response would have said.  Its Bolus Delivered records, when already there, give the amount actually delivered.
* A bolus that could be ours but is not certainly ours (same dose with no or an unknown activation type, or a Bolus
  Delivered record whose programmed record is not in the report) makes the answer undecided, as do two matches.
* Not delivered needs positive coverage: at least one record from the recorded number on (the history has moved
  on since the command), none of them a bolus that could be ours.  This rests on the pump recording Bolus
  Programmed when it accepts a Set Bolus, as IDS describes; the gateway still counts such a bolus towards its
  limits (see gateway.commands.service).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import Settlement
from drivers.ble.idd_history import (
    BolusAmounts,
    BolusDeliveredDetails,
    BolusEndReason,
    BolusProgrammedDetails,
    HistoryEventType,
    HistoryRecord,
)
from drivers.ble.ids import BolusActivationType, BolusType


@dataclass(frozen=True)
class HistoryRead:
    """What one RACP report returned: the records, whether the pump said Success, and how many notifications
    could not be used (did not decode, failed E2E, or came beyond the driver's bound)."""

    records: tuple[HistoryRecord, ...]
    completed: bool
    problems: int = 0


@dataclass(frozen=True)
class _Part:
    """A Part 1 of 2 record (its amounts) and the data of the Part 2 of 2 record right after it, if there."""

    sequence_number: int
    amounts: BolusAmounts
    details: object


@dataclass(frozen=True)
class _Bolus:
    bolus_id: int
    amounts: BolusAmounts
    activation: int | None
    sequence_number: int
    programmed: bool  # from a Bolus Programmed record (else only a Bolus Delivered one is in the report)


# Activation types that say a person or the pump's own calculator programmed the bolus, not a remote command.
_NOT_COMMANDED = frozenset(
    {
        BolusActivationType.MANUAL,
        BolusActivationType.RECOMMENDED,
        BolusActivationType.MANUALLY_CHANGED_RECOMMENDED,
    }
)
_NOT_SENT_BY_GATEWAY = frozenset({BolusType.EXTENDED, BolusType.MULTIWAVE})


def _parts(by_seq: dict[int, HistoryRecord], part_1: int, part_2: int) -> dict[int, _Part]:
    """The Part 1 records of one kind, by bolus id."""
    out: dict[int, _Part] = {}
    for seq, record in by_seq.items():
        if record.event_type != part_1 or not isinstance(record.data, BolusAmounts):
            continue
        following = by_seq.get(seq + 1)
        details = following.data if following is not None and following.event_type == part_2 else None
        out[record.data.bolus_id] = _Part(seq, record.data, details)
    return out


def _boluses(by_seq: dict[int, HistoryRecord]) -> tuple[list[_Bolus], dict[int, _Part]]:
    """Every bolus the records speak of (once each), and the Bolus Delivered parts by bolus id."""
    programmed = _parts(
        by_seq, HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2, HistoryEventType.BOLUS_PROGRAMMED_PART_2_OF_2
    )
    delivered = _parts(
        by_seq, HistoryEventType.BOLUS_DELIVERED_PART_1_OF_2, HistoryEventType.BOLUS_DELIVERED_PART_2_OF_2
    )

    def bolus(bolus_id: int, part: _Part, from_programmed: bool) -> _Bolus:
        details = part.details  # the matching Part 2 (see _parts), which says how the bolus was activated
        activation = (
            details.activation_type if isinstance(details, BolusProgrammedDetails | BolusDeliveredDetails) else None
        )
        return _Bolus(bolus_id, part.amounts, activation, part.sequence_number, from_programmed)

    boluses = [bolus(bolus_id, part, True) for bolus_id, part in programmed.items()]
    boluses += [bolus(bolus_id, part, False) for bolus_id, part in delivered.items() if bolus_id not in programmed]
    return boluses, delivered


def _is_ours(bolus: _Bolus, amount_iu: float) -> bool:
    a = bolus.amounts
    return (
        bolus.programmed
        and bolus.activation == BolusActivationType.COMMANDED
        and a.bolus_type == BolusType.FAST
        and a.fast_amount_iu == amount_iu
        and a.extended_amount_iu == 0
    )


def _could_be_ours(bolus: _Bolus, amount_iu: float) -> bool:
    """Not certainly ours, not certainly someone else's: it keeps the question open."""
    if bolus.activation in _NOT_COMMANDED or bolus.amounts.bolus_type in _NOT_SENT_BY_GATEWAY:
        return False
    if bolus.programmed:
        return bolus.amounts.fast_amount_iu == amount_iu  # same dose, activation not known to be Commanded
    return bolus.amounts.fast_amount_iu <= amount_iu  # delivered only: ours, cut short, cannot be ruled out


def settle_bolus(read: HistoryRead, since: int, amount_iu: float) -> Settlement:
    """Settle a fast bolus of `amount_iu`, sent after the pump's history stood at `since`, from `read`."""
    if not read.completed:
        return Settlement("undecided", "the pump did not complete the history report")
    if read.problems:
        return Settlement("undecided", f"{read.problems} history notifications unusable")
    by_seq = {r.sequence_number: r for r in read.records}
    if not by_seq:
        return Settlement("undecided", f"no history records from {since} on yet")
    last = since + len(read.records) - 1
    if sorted(by_seq) != list(range(since, last + 1)):
        return Settlement("undecided", f"history records from {since} on have gaps or repeats")
    coverage = {"history_from": str(since), "history_to": str(last)}
    boluses, delivered = _boluses(by_seq)
    ours = [b for b in boluses if _is_ours(b, amount_iu)]
    open_questions = [b for b in boluses if not _is_ours(b, amount_iu) and _could_be_ours(b, amount_iu)]
    if len(ours) == 1 and not open_questions:
        bolus = ours[0]
        evidence = {
            **coverage,
            "bolus_id": str(bolus.bolus_id),
            "programmed_seq": str(bolus.sequence_number),
            "programmed_iu": repr(bolus.amounts.fast_amount_iu),
        }
        done = delivered.get(bolus.bolus_id)
        if done is not None:
            evidence["delivered_seq"] = str(done.sequence_number)
            evidence["delivered_iu"] = repr(done.amounts.fast_amount_iu + done.amounts.extended_amount_iu)
            details = done.details
            if isinstance(details, BolusDeliveredDetails) and details.end_reason is not None:
                reason = details.end_reason
                evidence["end_reason"] = reason.name.lower() if isinstance(reason, BolusEndReason) else hex(reason)
        else:
            evidence["delivery"] = "in progress"
        return Settlement("delivered", f"bolus programmed at history record {bolus.sequence_number}", evidence)
    if not ours and not open_questions:
        return Settlement("not-delivered", f"no such bolus in history records {since} to {last}", coverage)
    return Settlement(
        "undecided", f"{len(ours) + len(open_questions)} boluses in records {since} to {last} could be this one"
    )
