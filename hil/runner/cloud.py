"""The test cloud: the issuers' keys, signed command envelopes, and the receiver that fills the timeline.

Keys are made for the run (in-process gateway) or read from PEM files (`--issuer-key NAME=FILE`, a gateway
already running elsewhere that trusts them); nothing secret is shipped.
"""

from __future__ import annotations

import base64
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_sync.mqtt import MqttClient
from cloud_sync.receiver import ReferenceReceiver
from gateway.commands.envelope import sign
from hil.runner.scenario import CommandStep, ScenarioError
from hil.runner.timeline import Timeline

TRUSTED = ("ops-1", "ops-2")  # the in-process gateway trusts these; "old" is revoked; "rogue" is unknown to it


def newest_audit_head(head: tuple[int, str] | None, result: dict[str, Any]) -> tuple[int, str] | None:
    """The audit head a command result reports, if newer than `head` (what the cloud acknowledges next)."""
    detail = result.get("detail") or {}
    if "audit_seq" in detail:
        seq = int(detail["audit_seq"])
        if head is None or seq > head[0]:
            return (seq, str(detail["audit_hash"]))
    return head


class Issuers:
    """The keys commands are signed with, and the audit head the gateway last reported (what the cloud acks)."""

    def __init__(self, keys: dict[str, Ed25519PrivateKey]) -> None:
        self.keys = keys
        self.head: tuple[int, str] | None = None

    @classmethod
    def generated(cls) -> Issuers:
        return cls({name: Ed25519PrivateKey.generate() for name in (*TRUSTED, "old", "rogue")})

    @classmethod
    def from_files(cls, named: dict[str, Path]) -> Issuers:
        keys = {}
        for name, path in named.items():
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (OSError, ValueError) as err:
                raise ScenarioError(f"issuer key {name}: cannot load {path}: {err}") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise ScenarioError(f"issuer key {name}: {path} is not an Ed25519 private key")
            keys[name] = key
        return cls(keys)

    def gateway_config(self) -> list[dict[str, Any]]:
        """The `commands.issuers` of an in-process gateway: ops-1 and ops-2 trusted, old revoked."""

        def public(name: str) -> str:
            raw = self.keys[name].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return base64.b64encode(raw).decode()

        return [
            *({"key_id": name, "public_key": public(name)} for name in TRUSTED),
            {"key_id": "old", "public_key": public("old"), "revoked": True},
        ]

    def saw(self, result: dict[str, Any]) -> None:
        self.head = newest_audit_head(self.head, result)

    def envelope(self, step: CommandStep, gateway_id: str) -> dict[str, Any]:
        now = time.time_ns() + round(step.issued_offset_s * 1e9)
        body: dict[str, Any] = {
            "v": 1,
            "gateway": gateway_id,
            "command_id": f"hil-{step.name}-{uuid.uuid4().hex[:12]}",
            "device": step.device,
            "type": step.type,
            "parameters": step.parameters,
            "issued_at": now,
            "expires_at": now + round(step.valid_s * 1e9),
        }
        if self.head is not None:
            body["audit_head"] = {"seq": self.head[0], "hash": self.head[1]}
        missing = [name for name in step.signers if name not in self.keys]
        if missing:
            raise ScenarioError(f"command {step.name}: no key for signer {missing[0]!r} (--issuer-key NAME=FILE)")
        forger = next((k for n, k in self.keys.items() if n not in step.signers), None) if step.forge else None
        keys = [(name, forger or self.keys[name]) for name in step.signers]
        return sign(body, keys)


class Cloud:
    """The cloud side of a run: the receiver on the sync API and the publisher of commands."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        gateway_id: str,
        timeline: Timeline,
        issuers: Issuers,
        topic_prefix: str = "iomt/v1",
        tls: ssl.SSLContext | None = None,
        protocol: str = "5",
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.gateway_id = gateway_id
        self.prefix = topic_prefix
        self.timeline = timeline
        self.issuers = issuers
        self.protocol = protocol
        self.receiver = ReferenceReceiver(
            host,
            port,
            topic_prefix=topic_prefix,
            client_id=f"hil-cloud-{uuid.uuid4().hex[:8]}",
            tls_context=tls,
            protocol="5" if protocol == "5" else "3.1.1",
        )
        self.receiver.listeners.append(self._arrived)

    async def listening(self, timeout_s: float = 15.0) -> None:
        """Until the receiver's subscription is in place; a broker that never takes it is the run's error."""
        import asyncio  # noqa: PLC0415

        try:
            async with asyncio.timeout(timeout_s):
                await self.receiver.subscribed.wait()
        except TimeoutError:
            raise ScenarioError(
                f"the broker at {self.host}:{self.port} did not take the test cloud's subscription within "
                f"{timeout_s:g} s (is it running, and may this rig connect?)"
            ) from None

    def _arrived(self, device: str, lane: str, item: dict[str, Any]) -> None:
        add = self.timeline.add
        if lane == "alarms":
            add(
                "cloud",
                "alarm",
                f"alarm {item.get('condition')} {item.get('state')} on {device} ({item.get('priority')})",
                device=device,
                **item,
            )
        elif lane == "numerics":
            value = item.get("value")
            shown = f"{value:g}" if isinstance(value, int | float) else str(item.get("special"))
            add(
                "cloud",
                "value",
                f"value {device} {item.get('ref')} = {shown} {item.get('unit') or ''}",
                device=device,
                **item,
            )
        elif lane == "command-results":
            self.issuers.saw(item)
            reason = f" ({item.get('reason')})" if item.get("reason") else ""
            add("cloud", "command-result", f"command {item.get('command_id')} {item.get('outcome')}{reason}", **item)
        elif lane == "device-status":
            add("cloud", "device-status", f"device {device} {item.get('connection')}", device=device, **item)
        elif lane == "waveforms":
            add("cloud", "waveform", f"waveform {device} {item.get('ref')}", device=device, ref=item.get("ref"))
        elif lane == "images":
            add("cloud", "image", f"image chunk {device}", device=device)

    async def send(self, step: CommandStep) -> None:
        envelope = self.issuers.envelope(step, self.gateway_id)
        import json  # noqa: PLC0415

        async with MqttClient(
            self.host,
            self.port,
            client_id=f"hil-issuer-{uuid.uuid4().hex[:8]}",
            tls_context=self.tls,
            protocol="5" if self.protocol == "5" else "3.1.1",
        ) as client:
            await client.publish(f"{self.prefix}/{self.gateway_id}/down/commands", json.dumps(envelope).encode(), qos=1)
        signers = "+".join(step.signers) + (" (forged)" if step.forge else "")
        self.timeline.add(
            "scenario",
            "command-sent",
            f"command {step.name}: {step.type} to {step.device}, signed by {signers} as {envelope['command_id']}",
            name=step.name,
            command_id=envelope["command_id"],
        )
