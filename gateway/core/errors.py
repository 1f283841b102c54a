"""One exception root for the gateway, one subtree per layer.

Every error carries structured fields instead of values baked into prose, so that a log line can show the
error's kind and context without ever showing a measured value or a patient identifier.  Foreign exceptions
(bleak, pyserial, sqlite3, paho) are translated into these at the adapter boundary only.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def log_fields(self, **context: Any) -> dict[str, Any]:
        """Fields safe to log: the error's kind, its message and its structured context (never values).

        Pass the caller's own fields as `context` rather than next to `**err.log_fields()`: a key both carry
        (say `rows`) would make the logging call itself raise, inside the very handler that meant to survive
        the error.  Here the error's own fields win.
        """
        return {**context, "error": type(self).__name__, "detail": self.message, **self.fields}


class ConfigError(GatewayError):
    """The configuration is invalid; the message names the key, the bad value's form and what was expected."""


class TransportError(GatewayError):
    """A link to a device or broker failed (connect, read, write, lost)."""


class ProtocolError(GatewayError):
    """Bytes from a device or peer do not follow the protocol."""


class IncompleteFrame(ProtocolError):
    """More bytes are needed before a frame can be decoded."""


class InvalidFrame(ProtocolError):
    """The bytes can never become a valid frame; the codec's caller resynchronises."""


class DeviceError(GatewayError):
    """A device reported an error or behaved outside its profile."""


class StorageError(GatewayError):
    """The local buffer could not store, read or decrypt a record."""


class StorageUnavailable(StorageError):
    """The buffer cannot be used right now (disk full, database locked by another process, I/O error).

    Transient by nature: the pipeline keeps what it holds in memory within its bound and retries, and the
    gateway starts degraded rather than refusing to start.
    """


class BufferKeyError(StorageError):
    """The buffer key is missing, unreadable, or not the key the database was written with."""


class IntegrityError(StorageError):
    """A stored record failed authentication: it was edited, moved or written with another key."""


class SyncError(GatewayError):
    """The uplink or downlink to the cloud failed."""


class CommandError(GatewayError):
    """A control command was refused or failed; `reason` names the check that refused it."""
