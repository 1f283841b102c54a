"""Start-up checks that need more than the config's shape: secrets exist, keys parse, TLS material loads.

Run by `config validate` and before `run` starts anything, so a bad key or certificate is an exit-code-2
configuration error (which systemd does not restart), never a crash loop.
"""

from __future__ import annotations

import ssl

from cloud_sync.tls import client_context
from gateway.config import Config
from gateway.core.errors import BufferKeyError, ConfigError
from gateway.storage.keys import Keyring, load_keyring


def check_keyring(config: Config) -> Keyring:
    try:
        return load_keyring(config.secret_path(config.buffer.key_file))
    except BufferKeyError as err:
        raise ConfigError(f"buffer.key_file: {err.message}") from None


def check_tls(config: Config) -> ssl.SSLContext | None:
    tls = config.mqtt.tls
    if tls is None:
        return None
    return client_context(
        config.secret_path(tls.ca_file), config.secret_path(tls.cert_file), config.secret_path(tls.key_file)
    )


def local_alarm_tls(config: Config) -> ssl.SSLContext | None:
    """The local alarm channel's TLS context (mutual, like the uplink's), or None for a loopback broker."""
    local = config.alarms.local
    if local is None or local.tls is None:
        return None
    tls = local.tls
    return client_context(
        config.secret_path(tls.ca_file),
        config.secret_path(tls.cert_file),
        config.secret_path(tls.key_file),
        section="alarms.local.tls",
    )


def preflight(config: Config) -> tuple[Keyring, ssl.SSLContext | None]:
    """Everything `run` needs from secrets, loaded once; ConfigError names the key at fault."""
    local_alarm_tls(config)  # fail at start, not at the first alarm
    return check_keyring(config), check_tls(config)
