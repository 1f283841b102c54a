"""The bridges' errors: a subtree of SyncError.  `Poison` is what a message can never get past; the rest retry."""

from __future__ import annotations

from gateway.core.errors import SyncError


class BridgeError(SyncError):
    """A bridge could not deliver a message to its target (yet); `reason` is a short machine-readable cause."""

    def __init__(self, message: str, *, reason: str, **fields: object) -> None:
        super().__init__(message, reason=reason, **fields)
        self.reason = reason


class Poison(BridgeError):
    """The message, or one item of it, can never be delivered as it is: park it with `reason`, never retry."""


class MappingError(Poison):
    """A sync-API item the bridge cannot map (missing or mistyped fields, an id unfit for an identifier)."""


class TargetRejected(Poison):
    """The target refused the content for good: FHIR 4xx, HL7 AE/AR."""


class TargetUnavailable(BridgeError):
    """The target did not take the message this time (timeouts, connection errors, FHIR 5xx/429, lost ACKs)."""
