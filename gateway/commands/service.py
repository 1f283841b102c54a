"""The command service: the safety interlock between the cloud and devices that can hurt people.

Checks, in this order, each with its own rejection reason (reported uplink and audited; the device receives
nothing): well-formed (`malformed`); signed by trusted keys (`unknown-key`, `revoked-key`, `bad-signature`,
`insufficient-signatures` where a type needs two distinct issuers); inside its validity window (`expired`,
`not-yet-valid`, `validity-too-long`); never seen before, across restarts (`replayed`); target known and
connected (`unknown-device`, `device-not-connected`); type allowed for the device, default deny
(`type-not-allowed`); not blocked by an unresolved earlier command (`blocked-outcome-unknown`); parameters
inside the device's safety policy (`policy:...`).

State machine: received -> verified -> sent -> confirmed | failed | expired | outcome-unknown (or received ->
rejected).  outcome-unknown (the link dropped after sending, or no answer) blocks further commands of that type
to that device until a signed `reconcile` command (from the device's history or an operator) settles it.
Every transition is appended to the hash-chained audit log and uplinked as a command result.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from drivers.base import CommandRefused, CommandTarget, EventSink, OutcomeUnknown
from gateway.commands.envelope import (
    COMMAND_ID,
    CONFIG_DOMAIN,
    Envelope,
    MalformedEnvelope,
    canonical_bytes,
    parse_envelope,
)
from gateway.commands.store import CommandStore
from gateway.config import CommandsSection, Config, DevicePolicy
from gateway.errors import ConfigError
from gateway.logs import get_logger
from gateway.model import CommandOutcome, CommandResult, new_id, now_ns

log = get_logger(__name__)

HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
COUNTS_AS_DELIVERED = {"sent", "confirmed", "outcome-unknown"}  # for limits, an unknown outcome was delivered


class Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandService:
    """Verifies, audits and executes commands; one instance per gateway."""

    def __init__(
        self, config: CommandsSection, store: CommandStore, targets: Mapping[str, CommandTarget], sink: EventSink
    ) -> None:
        self._config = config
        self._store = store
        self._targets = targets
        self._sink = sink
        self._keys = {
            k.key_id: (Ed25519PublicKey.from_public_bytes(base64.b64decode(k.public_key)), k.revoked)
            for k in config.issuers
        }
        self._policies = {p.device: p for p in config.devices}
        self.on_rejection: Callable[[str], None] | None = None  # metrics hook: counts rejections by reason

    # -- entry point -----------------------------------------------------------------------------------------
    async def handle(self, raw: bytes) -> CommandOutcome:
        """Process one downlink command; returns its final state (also uplinked and audited)."""
        try:
            envelope = parse_envelope(raw)
        except MalformedEnvelope as err:
            command_id = _best_effort_id(raw)
            self._transition(command_id, "", "", CommandOutcome.RECEIVED, None, None)
            log.warning("command rejected", command_id=command_id, reason="malformed", detail=str(err))
            return self._transition(command_id, "", "", CommandOutcome.REJECTED, "malformed", None)
        self._transition(envelope.command_id, envelope.device, envelope.type, CommandOutcome.RECEIVED, None, None)
        try:
            policy = self._verify(envelope)
        except Rejected as rejection:
            log.warning("command rejected", command_id=envelope.command_id, reason=rejection.reason)
            return self._transition(
                envelope.command_id, envelope.device, envelope.type, CommandOutcome.REJECTED, rejection.reason, None
            )
        self._transition(
            envelope.command_id, envelope.device, envelope.type, CommandOutcome.VERIFIED, None, envelope.parameters
        )
        if envelope.type == "reconcile":
            return self._reconcile(envelope)
        return await self._execute(envelope, policy)

    # -- remote configuration --------------------------------------------------------------------------------
    def verify_configuration(self, raw: bytes, current: Config) -> tuple[str, Config | None]:
        """Check a signed configuration update fully, before anything is applied.

        Returns (config id, the validated Config), or (config id, None) after reporting the rejection:
        signature, validity window and replay as for commands, then the whole document through the same
        validation as a config file, including its secrets.  Gateway identity and state directory cannot
        change remotely (they would move the buffer and the replay memory).
        """
        config_id = _best_effort_id(raw, field="config_id")
        self._transition(config_id, "gateway", "config", CommandOutcome.RECEIVED, None, None)
        try:
            config = self._check_configuration(raw, config_id, current)
        except (MalformedEnvelope, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            self._transition(config_id, "gateway", "config", CommandOutcome.REJECTED, "malformed", None)
            return config_id, None
        except Rejected as rejection:
            log.warning("configuration rejected", command_id=config_id, reason=rejection.reason.split(":")[0])
            self._transition(config_id, "gateway", "config", CommandOutcome.REJECTED, rejection.reason, None)
            return config_id, None
        self._transition(config_id, "gateway", "config", CommandOutcome.VERIFIED, None, None)
        return config_id, config

    def _check_configuration(self, raw: bytes, config_id: str, current: Config) -> Config:
        from gateway.config import parse_config  # noqa: PLC0415 - avoid a cycle at import time
        from gateway.preflight import preflight  # noqa: PLC0415

        body = json.loads(raw)
        fields = {"v", "config_id", "config", "issued_at", "expires_at", "signatures"}
        if not isinstance(body, dict) or set(body) != fields or body["v"] != 1 or not isinstance(body["config"], dict):
            raise MalformedEnvelope("not a version-1 configuration envelope")
        envelope = parse_envelope(
            json.dumps(
                {
                    "v": 1,
                    "command_id": body["config_id"],
                    "device": "gateway",
                    "type": "config",
                    "parameters": {},
                    "issued_at": body["issued_at"],
                    "expires_at": body["expires_at"],
                    "signatures": body["signatures"],
                }
            ).encode()
        )
        self._check_signatures_over(envelope, canonical_bytes(body, CONFIG_DOMAIN))
        now = time.time_ns()
        if now > envelope.expires_at_ns:
            raise Rejected("expired")
        if envelope.issued_at_ns > now + round(self._config.clock_skew_s * 1e9):
            raise Rejected("not-yet-valid")
        if not self._store.remember("config:" + config_id, envelope.expires_at_ns):
            raise Rejected("replayed")
        try:
            config = parse_config(body["config"])
            preflight(config)
        except ConfigError as err:
            raise Rejected(f"invalid-config: {err.message}") from None
        if (config.gateway.id, config.gateway.state_dir) != (current.gateway.id, current.gateway.state_dir):
            raise Rejected("invalid-config: gateway.id and gateway.state_dir cannot change remotely")
        return config

    def report_configuration(self, config_id: str, outcome: CommandOutcome, reason: str | None) -> None:
        """The end of a configuration update: applied, or rolled back (with why)."""
        self._transition(config_id, "gateway", "config", outcome, reason, None)

    # -- checks ----------------------------------------------------------------------------------------------
    def _verify(self, envelope: Envelope) -> DevicePolicy:
        self._check_signatures(envelope)
        now = time.time_ns()
        skew = round(self._config.clock_skew_s * 1e9)
        if now > envelope.expires_at_ns:
            raise Rejected("expired")
        if envelope.issued_at_ns > now + skew:
            raise Rejected("not-yet-valid")
        if envelope.expires_at_ns - envelope.issued_at_ns > self._config.max_validity_s * 1e9:
            raise Rejected("validity-too-long")
        if not self._store.remember(envelope.command_id, envelope.expires_at_ns):
            raise Rejected("replayed")
        policy = self._policies.get(envelope.device)
        target = self._targets.get(envelope.device)
        if policy is None or target is None:
            raise Rejected("unknown-device")
        if not target.connected and envelope.type != "reconcile":
            raise Rejected("device-not-connected")
        if envelope.type not in policy.allowed:
            raise Rejected("type-not-allowed")
        if envelope.type != "reconcile" and self._store.unresolved(envelope.device, envelope.type):
            raise Rejected("blocked-outcome-unknown")
        self._check_policy(envelope, policy, now)
        return policy

    def _check_signatures(self, envelope: Envelope) -> None:
        self._check_signatures_over(envelope, envelope.canonical())

    def _check_signatures_over(self, envelope: Envelope, message: bytes) -> None:
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
        policy = self._policies.get(envelope.device)
        needed = 2 if policy is not None and envelope.type in policy.dual_signature else 1
        if len(signers) < needed:
            raise Rejected("insufficient-signatures")

    def _check_policy(self, envelope: Envelope, policy: DevicePolicy, now: int) -> None:
        p = envelope.parameters
        history = [
            c
            for c in self._store.commands_since(envelope.device, now - DAY_NS)
            if c.state in COUNTS_AS_DELIVERED and c.command_id != envelope.command_id
        ]
        last_hour = [c for c in history if c.created_ns >= now - HOUR_NS]
        if len(last_hour) >= policy.max_commands_per_hour:
            raise Rejected("policy:rate-limit")
        amount = 0
        if envelope.type == "bolus":
            amount = _positive(p, "amount_mu", {"amount_mu"})
            if amount % policy.dose_step_mu:
                raise Rejected("policy:dose-resolution")
            if policy.max_bolus_mu is None or amount > policy.max_bolus_mu:
                raise Rejected("policy:max-bolus")
            last_bolus = max((c.created_ns for c in history if c.type == "bolus"), default=None)
            if last_bolus is not None and now - last_bolus < policy.min_bolus_interval_s * 1e9:
                raise Rejected("policy:bolus-spacing")
        elif envelope.type == "temp_basal":
            rate = _positive(p, "rate_mu_per_h", {"rate_mu_per_h", "duration_min"}, allow_zero=True)
            duration = _positive(p, "duration_min", {"rate_mu_per_h", "duration_min"})
            if policy.max_basal_mu_per_h is None or rate > policy.max_basal_mu_per_h:
                raise Rejected("policy:max-basal")
            if duration > policy.max_temp_basal_min:
                raise Rejected("policy:max-duration")
            if rate % policy.dose_step_mu:
                raise Rejected("policy:dose-resolution")
            amount = rate * duration // 60
        elif envelope.type == "cancel_bolus":
            _positive(p, "bolus_id", {"bolus_id"}, allow_zero=True)
        elif envelope.type == "reconcile":
            if set(p) != {"command_id", "outcome"} or p["outcome"] not in ("confirmed", "failed"):
                raise Rejected("policy:bad-parameters")
            original = self._store.get(str(p["command_id"]))
            if original is None or original.state != "outcome-unknown" or original.device != envelope.device:
                raise Rejected("policy:nothing-to-reconcile")
        if amount and policy.max_daily_mu is not None:
            delivered = sum(_insulin_mu(c.type, c.parameters) for c in history)
            if delivered + amount > policy.max_daily_mu:
                raise Rejected("policy:daily-total")

    # -- execution -------------------------------------------------------------------------------------------
    async def _execute(self, envelope: Envelope, policy: DevicePolicy) -> CommandOutcome:
        target = self._targets[envelope.device]
        if time.time_ns() > envelope.expires_at_ns:
            return self._transition(
                envelope.command_id,
                envelope.device,
                envelope.type,
                CommandOutcome.EXPIRED,
                "expired-before-sending",
                None,
            )
        self._transition(envelope.command_id, envelope.device, envelope.type, CommandOutcome.SENT, None, None)
        try:
            details = await target.execute(envelope.type, envelope.parameters, self._config.response_timeout_s)
        except CommandRefused as err:
            return self._transition(
                envelope.command_id, envelope.device, envelope.type, CommandOutcome.FAILED, err.message, None
            )
        except OutcomeUnknown as err:
            log.error(
                "command outcome unknown; further commands of this type are blocked until reconciled",
                command_id=envelope.command_id,
                device_id=envelope.device,
            )
            return self._transition(
                envelope.command_id, envelope.device, envelope.type, CommandOutcome.OUTCOME_UNKNOWN, err.message, None
            )
        return self._transition(
            envelope.command_id, envelope.device, envelope.type, CommandOutcome.CONFIRMED, None, None, details
        )

    def _reconcile(self, envelope: Envelope) -> CommandOutcome:
        original_id = str(envelope.parameters["command_id"])
        original = self._store.get(original_id)
        outcome = CommandOutcome.CONFIRMED if envelope.parameters["outcome"] == "confirmed" else CommandOutcome.FAILED
        if original is not None:
            self._transition(
                original_id, original.device, original.type, outcome, f"reconciled by {envelope.command_id}", None
            )
        return self._transition(
            envelope.command_id, envelope.device, envelope.type, CommandOutcome.CONFIRMED, None, None
        )

    # -- transitions -----------------------------------------------------------------------------------------
    def _transition(
        self,
        command_id: str,
        device: str,
        type_: str,
        outcome: CommandOutcome,
        reason: str | None,
        parameters: dict[str, Any] | None,
        details: dict[str, str] | None = None,
    ) -> CommandOutcome:
        """Audit, persist and uplink one state change."""
        record = self._store.append_audit(
            {
                "command_id": command_id,
                "device": device,
                "type": type_,
                "state": outcome.value,
                "reason": reason,
                "parameters": parameters,
                "t_gw": now_ns(),
            }
        )
        if outcome is CommandOutcome.VERIFIED and parameters is not None:
            self._store.save_command(command_id, device, type_, outcome.value, parameters)
        elif outcome is not CommandOutcome.RECEIVED and outcome is not CommandOutcome.REJECTED:
            self._store.set_state(command_id, outcome.value)
        if outcome is CommandOutcome.REJECTED and self.on_rejection is not None:
            self.on_rejection(
                (reason or "unknown").split(":")[0]
                if reason and reason.startswith("invalid-config")
                else reason or "unknown"
            )
        detail = {"audit_seq": str(record.seq), "audit_hash": record.hash.hex(), **(details or {})}
        self._sink.emit_nowait(
            CommandResult(new_id(), command_id, device or "gateway", outcome, now_ns(), reason, detail)
        )
        return outcome


def _positive(parameters: dict[str, int | str], name: str, allowed: set[str], *, allow_zero: bool = False) -> int:
    if set(parameters) != allowed:
        raise Rejected("policy:bad-parameters")
    value = parameters.get(name)
    if not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise Rejected("policy:bad-parameters")
    return value


def _insulin_mu(command_type: str, parameters: dict[str, Any]) -> int:
    if command_type == "bolus":
        return int(parameters.get("amount_mu", 0))
    if command_type == "temp_basal":
        return int(parameters.get("rate_mu_per_h", 0)) * int(parameters.get("duration_min", 0)) // 60
    return 0


def _best_effort_id(raw: bytes, field: str = "command_id") -> str:
    """The command id of a malformed envelope when it has a usable one (so the issuer can match the
    rejection), else a name derived from the payload's hash."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    candidate = body.get(field) if isinstance(body, dict) else None
    if isinstance(candidate, str) and COMMAND_ID.match(candidate):
        return candidate
    return "unparsed-" + hashlib.sha256(raw).hexdigest()[:16]
