"""Encrypted store-and-forward buffer: SQLite (WAL) rows sealed with AES-256-GCM, drained by priority lane."""

from gateway.buffer.keys import Keyring, generate_key_file, load_keyring, prune_key_file, rotate_key_file
from gateway.buffer.store import Buffer

__all__ = [
    "Buffer",
    "Keyring",
    "generate_key_file",
    "load_keyring",
    "prune_key_file",
    "rotate_key_file",
]
