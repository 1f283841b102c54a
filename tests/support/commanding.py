"""An issuer for tests: Ed25519 keys, signed envelopes, publishing them on the downlink and waiting for the
result, and the configuration of a gateway with one insulin pump under signed commands."""

from __future__ import annotations

import base64
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.mqtt import MqttClient
from gateway.commands.envelope import CONFIG_DOMAIN, sign
from gateway.config import Config, parse_config
from hil.runner.cloud import newest_audit_head
from tests.conftest import config_dict
from tests.support.harness import Running

_ids = itertools.count(1)


def public_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@dataclass
class Issuer:
    keys: dict[str, Ed25519PrivateKey] = field(
        default_factory=lambda: {name: Ed25519PrivateKey.generate() for name in ("ops-1", "ops-2", "old", "rogue")}
    )
    head: tuple[int, str] | None = None  # the newest audit head seen in a command result (what the cloud acks)

    def saw(self, result: dict[str, Any]) -> None:
        """Take note of a command result's audit head, as the cloud does."""
        self.head = newest_audit_head(self.head, result)

    def issuers_config(self) -> list[dict[str, Any]]:
        """ops-1 and ops-2 trusted, old revoked; rogue is not configured at all."""
        return [
            {"key_id": "ops-1", "public_key": public_b64(self.keys["ops-1"])},
            {"key_id": "ops-2", "public_key": public_b64(self.keys["ops-2"])},
            {"key_id": "old", "public_key": public_b64(self.keys["old"]), "revoked": True},
        ]

    def envelope(
        self,
        device: str,
        type_: str,
        parameters: dict[str, Any],
        *,
        signers: tuple[str, ...] = ("ops-1",),
        issued_offset_s: float = 0.0,
        valid_s: float = 300.0,
        command_id: str | None = None,
        forge_with: str | None = None,
        gateway: str = "test-gw",
        audit_head: tuple[int, str] | None = None,
    ) -> dict[str, Any]:
        """A signed envelope; `audit_head` (default: the last one `saw`) names what the issuer acknowledged."""
        now = time.time_ns() + round(issued_offset_s * 1e9)
        body = {
            "v": 1,
            "gateway": gateway,
            "command_id": command_id or f"cmd-{next(_ids)}-{time.time_ns()}",
            "device": device,
            "type": type_,
            "parameters": parameters,
            "issued_at": now,
            "expires_at": now + round(valid_s * 1e9),
        }
        head = audit_head or self.head
        if head is not None:
            body["audit_head"] = {"seq": head[0], "hash": head[1]}
        keys = [(name, self.keys[forge_with or name]) for name in signers]
        return sign(body, keys)


async def publish(port: int, envelope: dict[str, Any] | bytes, gateway: str = "test-gw") -> None:
    payload = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
    async with MqttClient("127.0.0.1", port, client_id=f"issuer-{time.time_ns()}") as client:
        await client.publish(f"iomt/v1/{gateway}/down/commands", payload, qos=1)


async def publish_to(port: int, kind: str, payload: bytes, gateway: str = "test-gw") -> None:
    """Publish raw bytes on a downlink topic: kind "commands" or "config"."""
    topic = "commands" if kind == "commands" else "config"
    async with MqttClient("127.0.0.1", port, client_id=f"issuer-{time.time_ns()}") as client:
        await client.publish(f"iomt/v1/{gateway}/down/{topic}", payload, qos=1)


FINAL = frozenset({"rejected", "confirmed", "failed", "expired", "outcome-unknown"})


async def send(run: Running, port: int, issuer: Issuer, envelope: dict[str, Any]) -> dict[str, Any]:
    """Publish; wait for the final result; the issuer takes note of the audit head, as the cloud does."""
    await publish(port, envelope)

    def done() -> list[dict[str, Any]]:
        return [
            i
            for i in run.receiver.items.values()
            if envelope["command_id"] in (i.get("command_id"), (i.get("detail") or {}).get("claimed_command_id"))
            and i.get("outcome") in FINAL
        ]

    await run.wait_until(lambda: bool(done()), timeout_s=15)
    result = done()[0]
    issuer.saw(result)
    return result


def pump_config(
    tmp_path: Path,
    port: int,
    issuer: Issuer,
    *,
    address: str = "sim:pump-1",
    max_validity_s: float = 600,
    **policy: Any,
) -> Config:
    """A gateway with one insulin pump, `pump-1`, under signed commands; `policy` is the pump's device policy
    (allowed types and limits, on top of 100 commands an hour and a 5,000 mU bolus)."""
    data = config_dict(tmp_path / "state", port)
    data["devices"] = [{"id": "pump-1", "transport": "ble", "profile": "insulin_pump", "address": address}]
    data["commands"] = {
        "enabled": True,
        "max_validity_s": max_validity_s,
        "response_timeout_s": 2,
        "issuers": issuer.issuers_config(),
        "devices": [{"device": "pump-1", "max_commands_per_hour": 100, "max_bolus_mu": 5000, **policy}],
    }
    return parse_config(data)


def signed_config(
    issuer: Issuer, config: dict[str, Any], config_id: str, signers: tuple[str, ...] = ("ops-1", "ops-2")
) -> bytes:
    now = time.time_ns()
    body = {
        "v": 1,
        "gateway": "test-gw",
        "config_id": config_id,
        "config": config,
        "issued_at": now,
        "expires_at": now + 300 * 10**9,
    }
    keys = [(name, issuer.keys[name]) for name in signers]
    return json.dumps(sign(body, keys, CONFIG_DOMAIN)).encode()
