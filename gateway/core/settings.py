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

# Where the gateway's own files are looked up: the machine's, then those shipped in the package.  The source tree's
# `config/` folder is the one copy; `gateway/defaults` links to it, so the wheel carries it as package data and a
# clone reads it in place.  $IOMT_GATEWAY_CONFIG_DIR replaces the machine's folder (rigs, tests, containers).
SYSTEM_CONFIG_DIR = Path("/etc/iomt-gateway")
# Where systemd puts the running service's LoadCredential= files (root only), for commands run beside it.
SERVICE_CREDENTIALS_DIR = Path("/run/credentials/iomt-gateway.service")
PACKAGE_DEFAULTS_DIR = Path(__file__).resolve().parent.parent / "defaults"


def config_dirs() -> tuple[Path, ...]:
    """The folders searched for configuration files and Modbus profiles, first match wins."""
    machine = Path(os.environ.get("IOMT_GATEWAY_CONFIG_DIR") or SYSTEM_CONFIG_DIR)
    return (machine, PACKAGE_DEFAULTS_DIR)


def config_file(relative: str) -> Path:
    """The first existing `relative` file in `config_dirs()`; the packaged path when none exists (so an error
    names a real location to look at)."""
    for directory in config_dirs():
        candidate = directory / relative
        if candidate.is_file():
            return candidate
    return PACKAGE_DEFAULTS_DIR / relative


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


SecretRef = Annotated[str, Field(min_length=1, description="a file path, or credential:NAME")]


def resolve_secret(ref: str, base_dir: Path | None = None) -> Path:
    """The file a secret reference points at; `credential:NAME` resolves in $CREDENTIALS_DIRECTORY."""
    if ref.startswith("credential:"):
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory and SERVICE_CREDENTIALS_DIR.is_dir():
            # A technician's command beside the running service (as root): the service's own credentials.
            directory = str(SERVICE_CREDENTIALS_DIR)
        if not directory:
            raise ConfigError(
                f"secret {ref!r} needs $CREDENTIALS_DIRECTORY (set by systemd LoadCredential=), which is unset, "
                f"and the service's credentials ({SERVICE_CREDENTIALS_DIR}) are not readable here"
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
