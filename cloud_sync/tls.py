"""TLS contexts for the broker connection: TLS 1.2+, mutual authentication, verification never disabled."""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.core.errors import ConfigError


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails.

    paho-mqtt leaves the socket of a failed handshake open (it is only freed by the garbage collector); a
    gateway retrying an untrusted broker for days would leak one descriptor per attempt.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def client_context(ca_file: Path, cert_file: Path, key_file: Path, *, section: str = "mqtt.tls") -> ssl.SSLContext:
    """A context that verifies the broker against `ca_file` only and presents the gateway's certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.sslsocket_class = _ClosingSSLSocket
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"{section}: cannot load the CA, certificate or key (PEM files; the key must match the certificate)",
            error=type(err).__name__,
        ) from None
    return context


def spki_sha256(der_certificate: bytes) -> str:
    """Hex SHA-256 of a certificate's SubjectPublicKeyInfo (what `mqtt.tls.pin_sha256` lists)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415

    certificate = x509.load_der_x509_certificate(der_certificate)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex()


def peer_certificate(sock: object) -> bytes | None:
    """The DER certificate the peer presented on a TLS socket, or None on a plain socket."""
    if isinstance(sock, ssl.SSLSocket):
        return sock.getpeercert(binary_form=True)
    return None
