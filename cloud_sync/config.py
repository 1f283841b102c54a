"""The uplink's configuration section (`[mqtt]`, with `[mqtt.tls]`), owned by the uplink that reads it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gateway.core.settings import SecretRef, Section, is_loopback


class TlsSection(Section):
    ca_file: SecretRef
    cert_file: SecretRef
    key_file: SecretRef
    # Optional pinning: SHA-256 (hex) of the broker certificate's SubjectPublicKeyInfo; any one must match.
    pin_sha256: Annotated[tuple[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")], ...], Field(strict=False)] = ()


class MqttSection(Section):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")] = "iomt/v1"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    inflight_window: Annotated[int, Field(ge=1, le=1000)] = 32
    # AWS IoT Core's limits by default: 128 KiB per message (with topic and headers), 100 publishes/s.
    max_message_bytes: Annotated[int, Field(ge=4096, le=256 * 1024 * 1024)] = 120_000
    max_publishes_per_s: Annotated[float, Field(gt=0, le=100_000)] = 100.0
    health_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    tls: TlsSection | None = None
    allow_plaintext_loopback: bool = False
    reconnect_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _tls_or_explicit_loopback(self) -> MqttSection:
        if self.tls is None:
            if not self.allow_plaintext_loopback:
                raise ValueError("[mqtt.tls] is required unless allow_plaintext_loopback = true (loopback broker only)")
            if not is_loopback(self.host):
                raise ValueError(
                    "allow_plaintext_loopback only permits a loopback host (127.0.0.0/8, ::1 or localhost); "
                    "configure [mqtt.tls] for any other broker"
                )
        return self
