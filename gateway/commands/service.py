"""The command service: the safety interlock between the cloud and devices that can hurt people.

Checks, in this order, each with its own rejection reason (reported uplink and audited; the device receives
nothing): well-formed (`malformed`, `wrong-gateway`); signed by trusted keys (`unknown-key`, `revoked-key`,
`bad-signature`, `insufficient-signatures` where a type needs two distinct issuers); inside its validity
window (`expired`, `not-yet-valid`, `validity-too-long`); never seen before, across restarts (`replayed`);
target known and connected (`unknown-device`, `device-not-connected`); type allowed for the device, default
deny (`type-not-allowed`); not blocked by an unresolved earlier command (`blocked-outcome-unknown`);
parameters inside the device's safety policy, clamped to the local ceilings (`policy:...`); accepted by the
driver's own checks (`failed`, nothing sent).

Dose-changing commands (bolus, temporary basal) also need trusted time and trusted state: a synchronised
clock not behind any issuer-signed time (`clock-unsynchronised`, `clock-error-too-large`,
`clock-behind-signed-time`), and a command store that was neither edited nor rolled back
(`state-untrusted:<what>`) unless a signed `resync` has since restored that device (`issued-before-resync`
for commands signed before it).  Spacing, rate and daily limits run on the monotonic clock within a boot.

Until a signature has been verified nothing in a message can be trusted, its command id included: such
rejections are reported under `unverified-<hash of the message>`, with the id it claimed in
`detail.claimed_command_id`, so nobody on the broker can fake a rejection of someone else's command.

State machine: received -> verified -> sent -> confirmed | failed | expired | outcome-unknown (or received ->
rejected).  outcome-unknown (the link dropped after sending, no answer, the gateway stopped or crashed while
a command was out) blocks further commands of that type to that device until it is settled: automatically from
the device's own history when it keeps one (a bolus to an insulin pump: where the pump's history stood is read
just before sending and kept with the command; once the pump is reachable again, its records from there on show
the bolus delivered, or, complete and without it, not delivered), or by a signed `reconcile` command (the manual
path, always available).  Every transition is appended to the hash-chained audit log together with the state
change (one transaction) and uplinked as a command result; every settling step is audited too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.base import CommandRefused, CommandTarget, DeliveryHistory, EventSink, OutcomeUnknown, Settlement
from gateway.clock import TimePoint, TrustedClock, elapsed_ns
from gateway.commands.ceilings import DOSE_CHANGING, SafetyCeilings
from gateway.commands.envelope import (
    CONFIG_DOMAIN,
    Envelope,
    MalformedEnvelope,
    WrongGateway,
    canonical_bytes,
    parse_envelope,
    strict_json,
)
from gateway.commands.store import SETTLE, Baseline, CommandStore, StoredCommand
from gateway.config import CommandsSection, Config, DevicePolicy
from gateway.core.errors import ConfigError
from gateway.core.logs import get_logger
from gateway.core.model import CommandOutcome, CommandResult, new_id

log = get_logger(__name__)

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
# For every limit these count as delivered: an unknown outcome may have been, and an operator's "failed"
# after an unknown outcome does not make the insulin un-delivered.
COUNTS_AS_DELIVERED = {"sent", "confirmed", "outcome-unknown", "reconciled-failed"}
MAX_BOLUS_ID = 0xFFFF
_HEX_HASH = re.compile(r"^[0-9a-f]{64}$")
RESYNC_PARAMETERS = {"audit_seq", "audit_hash", "delivered_mu_24h", "last_bolus_age_s"}
HISTORY_TIMEOUT_S = 30.0  # a pump reports weeks of history in well under this
SETTLED_TYPES = frozenset({"bolus"})  # command types a device's history can settle


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandService:
    """Verifies, audits and executes commands; one instance per gateway."""

    def __init__(
        self,
        config: CommandsSection,
        store: CommandStore,
        targets: Mapping[str, CommandTarget],
        sink: EventSink,
        *,
        gateway_id: str,
        clock: TrustedClock | None = None,
        ceilings: SafetyCeilings | None = None,
        device_classes: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock if clock is not None else TrustedClock(skew_s=config.clock_skew_s)
        self._ceilings = ceilings if ceilings is not None else SafetyCeilings()
        self._targets = targets
        self._sink = sink
        self._gateway_id = gateway_id
        self._keys = {
            k.key_id: (Ed25519PublicKey.from_public_bytes(base64.b64decode(k.public_key)), k.revoked)
            for k in config.issuers
        }
        classes = device_classes or {}
        self._policies = {p.device: self._ceilings.clamp(p, classes.get(p.device)) for p in config.devices}
        self.on_rejection: Callable[[str], None] | None = None  # metrics hook: counts rejections by reason
        # Devices with an outcome-unknown command their history may settle; set wakes the command loop for it.
        self.settle_wanted = asyncio.Event()
        self._settle_due: set[str] = set()
        for target in targets.values():
            if isinstance(target, DeliveryHistory):
                target.watch_connections(self._device_ready)
        if store.state.signed is not None:
            self._clock.note_signed_time(*store.state.signed)
        problems = store.state_problems()
        if problems:
            reason = problems[0].split(" ", maxsplit=1)[0]
            log.error(
                "command store edited outside the gateway; dose-changing commands refused until a signed resync",
                reason=reason,
            )
            store.distrust(reason, self._clock.now())
        self._recover()
        for command in store.in_states("outcome-unknown"):
            self._want_settled(command[1])

    def _recover(self) -> None:
        """Commands a stop or crash left half-way: `sent` may have reached the device (outcome unknown, and it
        blocks); `verified` never left the gateway (failed)."""
        for command_id, device, type_, state in self._store.in_states("sent", "verified"):
            if state == "sent":
                self._transition(
                    command_id,
                    device,
                    type_,
                    CommandOutcome.OUTCOME_UNKNOWN,
                    "gateway stopped while the command was out",
                )
            else:
                self._transition(
                    command_id, device, type_, CommandOutcome.FAILED, "gateway stopped before sending; nothing was sent"
                )

    # -- entry point -----------------------------------------------------------------------------------------
    async def handle(self, raw: bytes) -> CommandOutcome:
        """Process one downlink command; returns its final state (also uplinked and audited).  Never raises:
        whatever a message contains, the gateway keeps running."""
        try:
            return await self._handle(raw)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("command processing failed", exc_info=True)
            return self._reject_unverified(raw, "internal-error")

    async def _handle(self, raw: bytes) -> CommandOutcome:
        try:
            envelope = parse_envelope(raw, gateway_id=self._gateway_id)
        except WrongGateway:
            return self._reject_unverified(raw, "wrong-gateway")
        except MalformedEnvelope:
            return self._reject_unverified(raw, "malformed")
        try:
            self._check_signatures(envelope)
        except Rejected as rejection:
            return self._reject_unverified(raw, rejection.reason)
        self._transition(envelope.command_id, envelope.device, envelope.type, CommandOutcome.RECEIVED)
        try:
            policy = self._verify(envelope)
            target = self._targets[envelope.device]
            if envelope.type not in ("reconcile", "resync"):  # settle the gateway's books, nothing is sent
                target.validate(envelope.type, envelope.parameters)
        except Rejected as rejection:
            return self._reject(envelope, rejection.reason)
        except CommandRefused as refusal:
            return self._reject(envelope, f"device-refuses: {refusal.message}")
        self._transition(
            envelope.command_id, envelope.device, envelope.type, CommandOutcome.VERIFIED, parameters=envelope.parameters
        )
        if envelope.type == "reconcile":
            return self._reconcile(envelope)
        if envelope.type == "resync":
            return self._resync(envelope)
        return await self._execute(envelope, policy, target)

    def _reject_unverified(self, raw: bytes, reason: str, field: str = "command_id") -> CommandOutcome:
        name = "unverified-" + hashlib.sha256(raw).hexdigest()[:24]
        detail = {"claimed_command_id": _claimed_id(raw, field)}
        log.warning("command rejected", command_id=name, reason=reason)
        return self._transition(name, "", "", CommandOutcome.REJECTED, reason, detail=detail)

    def _reject(self, envelope: Envelope, reason: str) -> CommandOutcome:
        log.warning("command rejected", command_id=envelope.command_id, reason=reason.split(":", maxsplit=1)[0])
        return self._transition(envelope.command_id, envelope.device, envelope.type, CommandOutcome.REJECTED, reason)

    # -- checks ----------------------------------------------------------------------------------------------
    def _verify(self, envelope: Envelope) -> DevicePolicy:
        now = self._clock.now()
        dose = envelope.type in DOSE_CHANGING
        if dose:
            distrust = self._clock.distrust(now)
            if distrust is not None:
                raise Rejected(distrust)
        self._check_window(envelope, now)
        acked = self._check_head(envelope, now)
        if not self._store.remember(
            envelope.command_id, envelope.expires_at_ns, now, signed_ns=envelope.issued_at_ns, acked=acked
        ):
            raise Rejected("replayed")
        self._clock.note_signed_time(envelope.issued_at_ns, now)
        policy = self._policies.get(envelope.device)
        target = self._targets.get(envelope.device)
        if policy is None or target is None:
            raise Rejected("unknown-device")
        state = self._store.state
        baseline = state.resynced.get(envelope.device)
        if dose and state.untrusted is not None and baseline is None:
            raise Rejected(f"state-untrusted:{state.untrusted}")
        if dose and baseline is not None and envelope.issued_at_ns < baseline.not_before_ns:
            raise Rejected("issued-before-resync")
        special = envelope.type in ("reconcile", "resync")
        if not target.connected and not special:
            raise Rejected("device-not-connected")
        if envelope.type not in policy.allowed and envelope.type != "resync":
            raise Rejected("type-not-allowed")
        if not special and self._store.unresolved(envelope.device, envelope.type):
            raise Rejected("blocked-outcome-unknown")
        if envelope.type == "resync":
            self._check_resync(envelope)
        else:
            self._check_policy(envelope, policy, now)
        return policy

    def _check_window(self, envelope: Envelope, now: TimePoint) -> None:
        skew = round(self._config.clock_skew_s * 1e9)
        if now.wall_ns > envelope.expires_at_ns:
            raise Rejected("expired")
        if envelope.issued_at_ns > now.wall_ns + skew:
            raise Rejected("not-yet-valid")
        if envelope.expires_at_ns - envelope.issued_at_ns > self._config.max_validity_s * 1e9:
            raise Rejected("validity-too-long")

    def _check_head(self, envelope: Envelope, now: TimePoint) -> tuple[int, str] | None:
        """The audit head the issuer last saw must be in this store; if not, the store was rolled back,
        replaced or deleted, and stops being trusted for doses (the command itself may still be harmless)."""
        head = envelope.audit_head
        state = self._store.state
        if head is None or (state.untrusted is not None and not state.resynced):
            return None  # already found: the first finding stands until a resync
        if any(envelope.issued_at_ns < b.not_before_ns for b in state.resynced.values()):
            return None  # signed before a resync: it names a history the resync replaced
        problem = self._store.head_problem(*head)
        if problem is not None:
            log.error(
                "command store is behind the head the cloud acknowledged; dose-changing commands refused until"
                " a signed resync",
                reason=problem,
                command_id=envelope.command_id,
            )
            self._store.distrust(problem, now)
            return None
        return head

    def _check_resync(self, envelope: Envelope) -> None:
        """A resync names the audit head it acknowledges (this store's, as reported in a result) and says what
        the issuer knows was delivered to the device in the last 24 h."""
        p = envelope.parameters
        if set(p) != RESYNC_PARAMETERS:
            raise Rejected("policy:bad-parameters")
        seq, digest = p["audit_seq"], p["audit_hash"]
        delivered, age = p["delivered_mu_24h"], p["last_bolus_age_s"]
        if not (isinstance(seq, int) and isinstance(digest, str) and _HEX_HASH.fullmatch(digest)):
            raise Rejected("policy:bad-parameters")
        if not (isinstance(delivered, int) and isinstance(age, int) and delivered >= 0 and age >= 0):
            raise Rejected("policy:bad-parameters")
        if seq <= 0 or self._store.head_problem(seq, digest) is not None:
            raise Rejected("resync-head-mismatch")

    def _signers(self, envelope: Envelope, message: bytes) -> set[str]:
        signers = set()
        for signature in envelope.signatures:
            known = self._keys.get(signature.key_id)
            if known is None:
                raise Rejected("unknown-key")
            key, revoked = known
            if revoked:
                raise Rejected("revoked-key")
            try:
                key.verify(signature.signature, message)
            except InvalidSignature:
                raise Rejected("bad-signature") from None
            signers.add(signature.key_id)
        return signers

    def _check_signatures(self, envelope: Envelope) -> None:
        signers = self._signers(envelope, envelope.canonical())
        policy = self._policies.get(envelope.device)
        type_ = envelope.type
        if type_ == "resync":
            # Restoring doses after tampering takes what a remote configuration takes.
            needed = max(self._config.config_signatures, self._ceilings.min_config_signatures)
            if len(signers) < needed:
                raise Rejected("insufficient-signatures")
            return
        if type_ == "reconcile":
            # Settling a command takes what issuing it took.
            original = self._store.get(str(envelope.parameters.get("command_id", "")))
            type_ = original.type if original is not None else type_
        needed = 2 if policy is not None and type_ in policy.dual_signature else 1
        if len(signers) < needed:
            raise Rejected("insufficient-signatures")

    def _history(self, device: str, now: TimePoint, exclude: str) -> list[tuple[int, StoredCommand]]:
        """(age in ns, command) of this device's commands of the last 24 h that count as delivered; ages on
        the monotonic clock within a boot, so a wall-clock jump cannot age a dose out early."""
        out = []
        for command in self._store.commands_of(device):
            if command.state not in COUNTS_AS_DELIVERED or command.command_id == exclude:
                continue
            age = elapsed_ns(command.created, now)
            if age < DAY_NS:
                out.append((age, command))
        return out

    def _check_policy(self, envelope: Envelope, policy: DevicePolicy, now: TimePoint) -> None:
        p = envelope.parameters
        history = self._history(envelope.device, now, envelope.command_id)
        baseline: Baseline | None = self._store.state.resynced.get(envelope.device)
        since_resync = None if baseline is None else elapsed_ns(baseline.at, now)
        last_hour = [c for age, c in history if age < HOUR_NS]
        if envelope.type != "reconcile" and len(last_hour) >= policy.max_commands_per_hour:
            raise Rejected("policy:rate-limit")
        amount = 0
        if envelope.type == "bolus":
            amount = _integer(p, "amount_mu", {"amount_mu"}, low=1)
            if amount % policy.dose_step_mu:
                raise Rejected("policy:dose-resolution")
            if policy.max_bolus_mu is None or amount > policy.max_bolus_mu:
                raise Rejected("policy:max-bolus")
            ages = [age for age, c in history if c.type == "bolus"]
            if baseline is not None and since_resync is not None:
                ages.append(since_resync + baseline.last_bolus_age_ns)
            if ages and min(ages) < policy.min_bolus_interval_s * 1e9:
                raise Rejected("policy:bolus-spacing")
        elif envelope.type == "temp_basal":
            names = {"rate_mu_per_h", "duration_min"}
            rate = _integer(p, "rate_mu_per_h", names, low=0)
            duration = _integer(p, "duration_min", names, low=1)
            if policy.max_basal_mu_per_h is None or rate > policy.max_basal_mu_per_h:
                raise Rejected("policy:max-basal")
            if duration > policy.max_temp_basal_min:
                raise Rejected("policy:max-duration")
            if rate % policy.dose_step_mu:
                raise Rejected("policy:dose-resolution")
            amount = rate * duration // 60
        elif envelope.type == "cancel_bolus":
            _integer(p, "bolus_id", {"bolus_id"}, low=0, high=MAX_BOLUS_ID)
        elif envelope.type == "set_point":
            # A device setting (e.g. a fridge's setpoint): the point's own limits live in the device profile
            # and are checked by the driver (validate) before anything is sent.
            _integer(p, "value_milli", {"point", "value_milli"}, low=-(10**9))
            if not isinstance(p.get("point"), str):
                raise Rejected("policy:bad-parameters")
        elif envelope.type == "reconcile":
            if set(p) != {"command_id", "outcome"} or p["outcome"] not in ("confirmed", "failed"):
                raise Rejected("policy:bad-parameters")
            original = self._store.get(str(p["command_id"]))
            if (
                original is None
                or original.state not in ("outcome-unknown", "sent")
                or original.device != envelope.device
            ):
                raise Rejected("policy:nothing-to-reconcile")
        else:
            raise Rejected("type-not-allowed")  # default deny: a type the policy does not know how to bound
        if amount and policy.max_daily_mu is not None:
            delivered = sum(_insulin_mu(c.type, c.parameters) for _, c in history)
            if baseline is not None and since_resync is not None and since_resync < DAY_NS:
                delivered += baseline.delivered_mu_24h  # counted on top: double counting errs on the safe side
            if delivered + amount > policy.max_daily_mu:
                raise Rejected("policy:daily-total")

    # -- execution -------------------------------------------------------------------------------------------
    async def _execute(self, envelope: Envelope, policy: DevicePolicy, target: CommandTarget) -> CommandOutcome:
        del policy
        command_id, device, type_ = envelope.command_id, envelope.device, envelope.type
        # Where the device's own history stands, read before sending: if the answer is lost, the records from
        # there on settle the command.  Unknown (None) only means a lost answer must be reconciled by hand.
        since = None
        if type_ in SETTLED_TYPES and isinstance(target, DeliveryHistory):
            since = await target.history_position(self._config.response_timeout_s)
        if self._clock.now().wall_ns > envelope.expires_at_ns:
            return self._transition(command_id, device, type_, CommandOutcome.EXPIRED, "expired before sending")
        self._transition(
            command_id, device, type_, CommandOutcome.SENT, audit=None if since is None else {"history_from": since}
        )
        try:
            details = await target.execute(type_, envelope.parameters, self._config.response_timeout_s)
        except CommandRefused as err:
            return self._transition(command_id, device, type_, CommandOutcome.FAILED, err.message)
        except OutcomeUnknown as err:
            log.error(
                "command outcome unknown; further commands of this type are blocked until settled",
                command_id=command_id,
                device_id=device,
            )
            outcome = self._transition(command_id, device, type_, CommandOutcome.OUTCOME_UNKNOWN, err.message)
            self._want_settled(device)
            return outcome
        except asyncio.CancelledError:
            # Stopped while the command was out: it may have reached the device.
            self._transition(
                command_id, device, type_, CommandOutcome.OUTCOME_UNKNOWN, "gateway stopped while the command was out"
            )
            raise
        return self._transition(command_id, device, type_, CommandOutcome.CONFIRMED, details=details)

    # -- settling from the device's own history -----------------------------------------------------------------
    def _device_ready(self, device: str) -> None:
        """A device's link is ready (called by its driver): what it may settle is tried now."""
        if device in self._settle_due:
            self.settle_wanted.set()

    def _want_settled(self, device: str) -> None:
        self._settle_due.add(device)
        self.settle_wanted.set()

    async def settle_unknown_outcomes(self) -> None:
        """Settle, from the devices' own histories, every outcome-unknown command that can be: those to a device
        that keeps a history, is connected now, and whose history position was read before sending.  Run by the
        command loop between commands (never during one).  Never raises."""
        self.settle_wanted.clear()
        for device in sorted(self._settle_due):
            target = self._targets.get(device)
            if not isinstance(target, DeliveryHistory) or not target.connected:
                continue  # tried again when its link is ready (its driver calls _device_ready)
            for command in self._settleable(device):
                try:
                    await self._settle(command, target)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.error("settling from the device's history failed", command_id=command.command_id, exc_info=True)
            if not self._settleable(device):
                self._settle_due.discard(device)  # an undecided one is tried again at the next connection

    def _settleable(self, device: str) -> list[StoredCommand]:
        return [
            c
            for c in self._store.commands_of(device)
            if c.state == "outcome-unknown" and c.type in SETTLED_TYPES and c.history_from is not None
        ]

    async def _settle(self, command: StoredCommand, target: DeliveryHistory) -> None:
        """Read the device's history from where it stood when the command was sent, audit each step, and settle
        the command when the history is certain: delivered (confirmed, with the device's own record) or, complete
        and without it, not delivered (failed, yet still counted for every limit: state reconciled-failed)."""
        since = command.history_from
        if since is None:
            return
        cid, device, type_ = command.command_id, command.device, command.type
        step = {"event": SETTLE, "command_id": cid, "device": device}
        self._store.append_audit({**step, "step": "read-history", "history_from": since}, at=self._clock.now())
        settlement: Settlement = await target.settle_from_history(type_, command.parameters, since, HISTORY_TIMEOUT_S)
        self._store.append_audit(
            {
                **step,
                "step": "finding",
                "outcome": settlement.outcome,
                "reason": settlement.reason,
                "evidence": settlement.evidence,
            },
            at=self._clock.now(),
        )
        log.info("device history read for an unknown outcome", command_id=cid, outcome=settlement.outcome)
        reason = f"settled from the device's history: {settlement.reason}"
        details = {"settled_from": "device-history", **settlement.evidence}
        if settlement.outcome == "delivered":
            self._transition(cid, device, type_, CommandOutcome.CONFIRMED, reason, details=details)
        elif settlement.outcome == "not-delivered":
            # Certain from a complete history, yet it rests on the pump recording every bolus it accepts: the
            # dose stays counted for every limit, as after an operator's "failed".
            self._transition(
                cid, device, type_, CommandOutcome.FAILED, reason, details=details, state_override="reconciled-failed"
            )

    def _reconcile(self, envelope: Envelope) -> CommandOutcome:
        original_id = str(envelope.parameters["command_id"])
        original = self._store.get(original_id)
        if original is not None:
            confirmed = envelope.parameters["outcome"] == "confirmed"
            # "failed" after an unknown outcome stays counted for every limit (state reconciled-failed).
            self._transition(
                original_id,
                original.device,
                original.type,
                CommandOutcome.CONFIRMED if confirmed else CommandOutcome.FAILED,
                f"reconciled by {envelope.command_id}",
                state_override=None if confirmed else "reconciled-failed",
            )
        return self._transition(envelope.command_id, envelope.device, envelope.type, CommandOutcome.CONFIRMED)

    def _resync(self, envelope: Envelope) -> CommandOutcome:
        now = self._clock.now()
        p = envelope.parameters
        baseline = Baseline(now, int(p["delivered_mu_24h"]), int(p["last_bolus_age_s"]) * 10**9, envelope.issued_at_ns)
        self._store.resync(envelope.device, baseline, envelope.command_id)
        log.warning(
            "command state resynchronised by signed command", command_id=envelope.command_id, device_id=envelope.device
        )
        return self._transition(envelope.command_id, envelope.device, envelope.type, CommandOutcome.CONFIRMED)

    # -- remote configuration --------------------------------------------------------------------------------
    def verify_configuration(self, raw: bytes, current: Config) -> tuple[str, Config | None]:
        """Check a signed configuration update fully, before anything is applied.

        Signed by `commands.config_signatures` distinct issuers (default 2), for this gateway, inside its
        validity window, never seen before, and valid as a whole (the same validation as a config file,
        secrets included).  It may not move the gateway (id, state directory) nor switch off the channel it
        came by (commands disabled, or no issuer left).
        """
        try:
            config_id, config = self._check_configuration(raw, current)
        except Rejected as rejection:
            reason = rejection.reason
            if reason.startswith(
                ("malformed", "wrong-gateway", "unknown-key", "revoked-key", "bad-signature", "insufficient-signatures")
            ):
                self._reject_unverified(raw, reason, "config_id")
                return "", None
            config_id = _claimed_id(raw, "config_id")
            self._transition(config_id, "gateway", "config", CommandOutcome.REJECTED, reason)
            return config_id, None
        except Exception:
            log.error("configuration processing failed", exc_info=True)
            self._reject_unverified(raw, "internal-error", "config_id")
            return "", None
        self._transition(config_id, "gateway", "config", CommandOutcome.VERIFIED)
        return config_id, config

    def _check_configuration(self, raw: bytes, current: Config) -> tuple[str, Config]:
        from gateway.config import parse_config  # noqa: PLC0415 - avoid a cycle at import time
        from gateway.preflight import preflight  # noqa: PLC0415

        try:
            body = _config_body(raw)
            envelope = parse_envelope(
                json.dumps(
                    {
                        "v": 1,
                        "gateway": body["gateway"],
                        "command_id": body["config_id"],
                        "device": "gateway",
                        "type": "config",
                        "parameters": {},
                        "issued_at": body["issued_at"],
                        "expires_at": body["expires_at"],
                        "signatures": body["signatures"],
                    }
                ).encode(),
                gateway_id=self._gateway_id,
            )
        except WrongGateway:
            raise Rejected("wrong-gateway") from None
        except MalformedEnvelope:
            raise Rejected("malformed") from None
        needed = max(self._config.config_signatures, self._ceilings.min_config_signatures)
        if len(self._signers(envelope, canonical_bytes(body, CONFIG_DOMAIN))) < needed:
            raise Rejected("insufficient-signatures")
        config_id = envelope.command_id
        self._transition(config_id, "gateway", "config", CommandOutcome.RECEIVED)
        now = self._clock.now()
        self._check_window(envelope, now)
        if not self._store.remember(
            "config:" + config_id, envelope.expires_at_ns, now, signed_ns=envelope.issued_at_ns
        ):
            raise Rejected("replayed")
        self._clock.note_signed_time(envelope.issued_at_ns, now)
        try:
            config = parse_config(body["config"])
            preflight(config)
        except ConfigError as err:
            raise Rejected(f"invalid-config: {err.message}") from None
        if (config.gateway.id, config.gateway.state_dir) != (current.gateway.id, current.gateway.state_dir):
            raise Rejected("invalid-config: gateway.id and gateway.state_dir cannot change remotely")
        if not config.commands.enabled or not any(not k.revoked for k in config.commands.issuers):
            raise Rejected("invalid-config: it would cut off remote management (commands disabled or no issuer)")
        violations = self._ceilings.violations(config)
        if violations:
            raise Rejected("unsafe-config: " + "; ".join(violations))
        return config_id, config

    def report_configuration(self, config_id: str, outcome: CommandOutcome, reason: str | None) -> None:
        """The end of a configuration update: applied, or rolled back (with why)."""
        self._transition(config_id, "gateway", "config", outcome, reason)

    # -- transitions -----------------------------------------------------------------------------------------
    def _transition(
        self,
        command_id: str,
        device: str,
        type_: str,
        outcome: CommandOutcome,
        reason: str | None = None,
        *,
        parameters: dict[str, Any] | None = None,
        details: dict[str, str] | None = None,
        detail: dict[str, str] | None = None,
        state_override: str | None = None,
        audit: dict[str, Any] | None = None,
    ) -> CommandOutcome:
        """Audit, persist (one transaction) and uplink one state change (`audit`: more fields for the record)."""
        at = self._clock.now()
        body = {
            "command_id": command_id,
            "device": device,
            "type": type_,
            "state": outcome.value,
            "reason": reason,
            "parameters": parameters,
            **(audit or {}),
        }
        tracked = outcome not in (CommandOutcome.RECEIVED, CommandOutcome.REJECTED) and device != "gateway"
        state = (command_id, device, type_, state_override or outcome.value) if tracked else None
        record = self._store.append_audit(
            body, state=state, parameters=parameters if outcome is CommandOutcome.VERIFIED else None, at=at
        )
        if outcome is CommandOutcome.REJECTED and self.on_rejection is not None:
            self.on_rejection((reason or "unknown").split(":")[0])
        result_detail = {
            # The audit head travels with every result; the issuer names the last one it saw in its next
            # command, which is how a store rolled back to an older copy is found.
            "audit_seq": str(record.seq),
            "audit_hash": record.hash.hex(),
            **(details or {}),
            **(detail or {}),
        }
        self._sink.emit_nowait(
            CommandResult(new_id(), command_id, device or "gateway", outcome, at.wall_ns, reason, result_detail)
        )
        return outcome


def _config_body(raw: bytes) -> dict[str, Any]:
    body = strict_json(raw)
    fields = {"v", "gateway", "config_id", "config", "issued_at", "expires_at", "signatures"}
    if (
        not isinstance(body, dict)
        or set(body) != fields
        or type(body["v"]) is not int
        or body["v"] != 1
        or not isinstance(body["config"], dict)
    ):
        raise MalformedEnvelope("not a version-1 configuration envelope")
    return body


def _integer(parameters: dict[str, int | str], name: str, allowed: set[str], *, low: int, high: int = 10**9) -> int:
    if set(parameters) != allowed:
        raise Rejected("policy:bad-parameters")
    value = parameters.get(name)
    if not isinstance(value, int) or not low <= value <= high:
        raise Rejected("policy:bad-parameters")
    return value


def _insulin_mu(command_type: str, parameters: dict[str, Any]) -> int:
    if command_type == "bolus":
        return int(parameters.get("amount_mu", 0))
    if command_type == "temp_basal":
        return int(parameters.get("rate_mu_per_h", 0)) * int(parameters.get("duration_min", 0)) // 60
    return 0


def _claimed_id(raw: bytes, field: str = "command_id") -> str:
    """The id an unverified message claims, for the issuer's information only (never trusted)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    candidate = body.get(field) if isinstance(body, dict) else None
    return candidate[:128] if isinstance(candidate, str) and candidate.isascii() and candidate.isprintable() else ""
