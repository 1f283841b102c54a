"""The base every configuration section is built on, wherever it lives (gateway, a transport, the uplink).

A section is frozen, strict and rejects unknown keys, so a typo never silently falls back to a default.
Secrets are never inlined: a section references a file, by path or as `credential:NAME` (resolved in the
systemd credentials directory, $CREDENTIALS_DIRECTORY, see systemd.exec LoadCredential=).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


SecretRef = Annotated[str, Field(min_length=1, description="a file path, or credential:NAME")]


def resolve_secret(ref: str, base_dir: Path | None = None) -> Path:
    """The file a secret reference points at; `credential:NAME` resolves in $CREDENTIALS_DIRECTORY."""
    if ref.startswith("credential:"):
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ConfigError(
                f"secret {ref!r} needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=), which is unset"
            )
        return Path(directory) / ref.removeprefix("credential:")
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def is_loopback(host: str) -> bool:
    """A loopback address (127.0.0.0/8, ::1) or localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
