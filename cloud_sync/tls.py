"""TLS contexts for the broker connection: TLS 1.2+, mutual authentication, verification never disabled."""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.errors import ConfigError


def client_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A context that verifies the broker against `ca_file` only and presents the gateway's certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            "mqtt.tls: cannot load the CA, certificate or key (PEM files; the key must match the certificate)",
            error=type(err).__name__,
        ) from None
    return context
