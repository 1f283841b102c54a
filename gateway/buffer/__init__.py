"""Encrypted store-and-forward buffer: SQLite (WAL) rows sealed with AES-256-GCM, drained by priority lane."""

from gateway.buffer.store import Buffer

__all__ = ["Buffer"]
