"""The signed command envelope: strict parsing, the canonical encoding that is signed, and signing itself.

Envelope (JSON, on the downlink):

    {"v": 1, "gateway": "...", "command_id": "...", "device": "...", "type": "bolus",
     "parameters": {"amount_mu": 2500},
     "issued_at": <ns>, "expires_at": <ns>, "audit_head": {"seq": 41, "hash": "<hex>"},
     "signatures": [{"key_id": "...", "ed25519": "<base64>"}]}

`audit_head` (optional, signed like the rest) is the newest audit head the issuer saw in this gateway's command
results: a gateway whose store does not hold it was rolled back, and refuses doses until a signed resync.

The signature covers `canonical_bytes`: a domain-separation prefix, then the envelope without `signatures`
as JSON with sorted keys, no whitespace, ASCII (other characters escaped).  Envelopes are parsed strictly:
ASCII only, no duplicate keys, bounded nesting and integers, so every parser reads the same values.
Parameters are integers (doses in milli-units, rates in milli-units per hour) or short strings, never
floats: a float has more than one spelling, so signer and verifier could disagree, and a dose must never
be rounded on the way.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DOMAIN = b"iomt-gateway command v1\n"
CONFIG_DOMAIN = b"iomt-gateway configuration v1\n"
MAX_ENVELOPE_BYTES = 64 * 1024
_ID = COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_PARAM = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class MalformedEnvelope(ValueError):
    """The envelope is not a well-formed version-1 command; the message says which part (never values)."""


class WrongGateway(MalformedEnvelope):
    """A well-formed envelope addressed to another gateway."""


@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes


@dataclass(frozen=True)
class Envelope:
    command_id: str
    device: str
    type: str
    parameters: dict[str, int | str]
    issued_at_ns: int
    expires_at_ns: int
    signatures: tuple[Signature, ...]
    body: dict[str, Any]
    audit_head: tuple[int, str] | None = None

    def canonical(self, domain: bytes = DOMAIN) -> bytes:
        return canonical_bytes(self.body, domain)


def canonical_bytes(body: dict[str, Any], domain: bytes = DOMAIN) -> bytes:
    """What is signed: the domain prefix and the envelope minus signatures, in canonical JSON."""
    unsigned = {k: v for k, v in body.items() if k != "signatures"}
    return domain + json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise MalformedEnvelope(f"{name} must be a non-negative integer")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise MalformedEnvelope("duplicate keys")  # two parsers could read different values
    return dict(pairs)


def strict_json(raw: bytes) -> Any:
    """JSON as the signer must have meant it: ASCII only, no duplicate keys, shallow, bounded integers."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise MalformedEnvelope("envelope too large")
    if not raw.isascii():
        raise MalformedEnvelope("envelope must be ASCII (escape other characters)")
    depth = 0
    for byte in raw:  # nesting bound before parsing: no recursion blow-up on "[[[[..."
        depth += (byte in b"[{") - (byte in b"]}")
        if depth > 8:
            raise MalformedEnvelope("nested too deeply")
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_int=_bounded_int, parse_constant=_no_constant)
    except MalformedEnvelope:
        raise
    except (ValueError, RecursionError):  # JSONDecodeError and Unicode errors are ValueErrors
        raise MalformedEnvelope("not JSON") from None


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise MalformedEnvelope("integer too long")
    return int(text)


def _no_constant(name: str) -> Any:
    raise MalformedEnvelope("NaN and Infinity are not JSON")


def _identifier(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def parse_envelope(raw: bytes, *, gateway_id: str | None = None) -> Envelope:
    """Strictly parse a command envelope; MalformedEnvelope on anything unexpected.

    The envelope names the gateway it is for (signed, like everything but the signatures), so a command
    signed for one gateway cannot be replayed on another.
    """
    body = strict_json(raw)
    if not isinstance(body, dict):
        raise MalformedEnvelope("not a JSON object")
    expected = {"v", "gateway", "command_id", "device", "type", "parameters", "issued_at", "expires_at", "signatures"}
    if set(body) - {"audit_head"} != expected:
        raise MalformedEnvelope("fields must be exactly: " + ", ".join(sorted(expected)) + " (and audit_head)")
    audit_head = _audit_head(body.get("audit_head"))
    if type(body["v"]) is not int or body["v"] != 1:
        raise MalformedEnvelope("unsupported version")
    for name in ("gateway", "command_id", "device"):
        if not _identifier(body[name]):
            raise MalformedEnvelope(f"{name} must be an identifier")
    if gateway_id is not None and body["gateway"] != gateway_id:
        raise WrongGateway("the envelope is for another gateway")
    if not isinstance(body["type"], str) or not _TYPE.fullmatch(body["type"]):
        raise MalformedEnvelope("type must be a lower-case identifier")
    parameters = body["parameters"]
    if not isinstance(parameters, dict) or len(parameters) > 16:
        raise MalformedEnvelope("parameters must be an object of at most 16 entries")
    for key, value in parameters.items():
        if not _PARAM.fullmatch(key):
            raise MalformedEnvelope("parameter names must be lower-case identifiers")
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise MalformedEnvelope("parameters must be integers or strings (no floats, no nesting)")
        if isinstance(value, int) and not -(2**53) < value < 2**53:
            raise MalformedEnvelope("parameter integer out of range")
        if isinstance(value, str) and len(value) > 128:
            raise MalformedEnvelope("parameter string too long")
    issued, expires = _int(body["issued_at"], "issued_at"), _int(body["expires_at"], "expires_at")
    if expires <= issued:
        raise MalformedEnvelope("expires_at must be after issued_at")
    signatures = body["signatures"]
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= 4:
        raise MalformedEnvelope("signatures must be a list of 1 to 4 entries")
    parsed = []
    for entry in signatures:
        if not isinstance(entry, dict) or set(entry) != {"key_id", "ed25519"}:
            raise MalformedEnvelope("a signature has exactly key_id and ed25519")
        if not _identifier(entry["key_id"]):
            raise MalformedEnvelope("signature key_id must be an identifier")
        try:
            signature = base64.b64decode(entry["ed25519"], validate=True) if isinstance(entry["ed25519"], str) else b""
        except binascii.Error:
            signature = b""
        if len(signature) != 64:
            raise MalformedEnvelope("an Ed25519 signature is 64 bytes, base64-encoded")
        parsed.append(Signature(entry["key_id"], signature))
    return Envelope(
        body["command_id"],
        body["device"],
        body["type"],
        dict(parameters),
        issued,
        expires,
        tuple(parsed),
        body,
        audit_head,
    )


def _audit_head(value: Any) -> tuple[int, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"seq", "hash"}:
        raise MalformedEnvelope("audit_head has exactly seq and hash")
    digest = value["hash"]
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise MalformedEnvelope("audit_head hash must be 64 lower-case hex digits")
    return _int(value["seq"], "audit_head seq"), digest


def sign(body: dict[str, Any], keys: list[tuple[str, Ed25519PrivateKey]], domain: bytes = DOMAIN) -> dict[str, Any]:
    """The body with `signatures` from each (key id, private key): what an issuer (or a test) sends."""
    message = canonical_bytes(body, domain)
    signed = {k: v for k, v in body.items() if k != "signatures"}
    signed["signatures"] = [
        {"key_id": key_id, "ed25519": base64.b64encode(key.sign(message)).decode()} for key_id, key in keys
    ]
    return signed
