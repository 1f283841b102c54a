"""The base of every SQLite store (the buffer, the command store): one way to open, migrate, transact and seal.

- **Versioned schema files** (after zigpy's appdb): `NNNN_name.sql` in the store's `schema/` folder; the number is
  `PRAGMA user_version` once the file is applied; each file is applied in one transaction; a database newer than
  the code is refused.  tests/fixtures/ holds a database written at each schema version, and the tests open them.
- **Transactions**: `BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` on any exception (the commit's own included).
- **Sealing**: AES-256-GCM under the keyring's active key, with associated data that binds a sealed value to its
  place (row identity, record number), so a value moved or relabelled fails to open.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import ClassVar, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.core.errors import BufferKeyError, IntegrityError, StorageError
from gateway.storage.keys import Keyring

NONCE_BYTES = 12


def schema_scripts(package: str) -> list[tuple[int, str]]:
    """Schema files `NNNN_name.sql` of `package`'s schema/ folder in order, with the version each leads to."""
    folder = resources.files(package) / "schema"
    scripts = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            scripts.append((int(name[:4]), entry.read_text("utf-8")))
    return sorted(scripts)


def split_sql(script: str) -> list[str]:
    """The statements of a schema file (comments dropped), to run one by one inside a transaction."""
    statements = []
    current: list[str] = []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped:
            continue
        current.append(stripped)
        if stripped.endswith(";"):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


class SqliteStore:
    """A sealed SQLite store.  Subclasses name their schema package and what they are (for messages)."""

    SCHEMA_PACKAGE: ClassVar[str]  # the package whose schema/ folder holds the NNNN_name.sql files
    WHAT: ClassVar[str]  # "buffer database", "command store"

    db: sqlite3.Connection

    def __init__(self, path: Path, keyring: Keyring) -> None:
        self.path = path
        self.keyring = keyring
        self._aead = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}

    @classmethod
    def schema_version(cls) -> int:
        """The schema version this code writes (the newest schema file's number)."""
        return max(version for version, _ in schema_scripts(cls.SCHEMA_PACKAGE))

    def connect(self, synchronous: Literal["full", "normal"], *, check_same_thread: bool = True) -> None:
        """Open the database in WAL mode (raises sqlite3.Error: each store translates it at its boundary)."""
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=check_same_thread)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        except BaseException:
            self.db.close()
            raise

    def migrate(self) -> int:
        """Apply the schema files newer than the database, each in one transaction; the version found."""
        latest = self.schema_version()
        current = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if current > latest:
            raise StorageError(f"{self.WHAT} is newer than this gateway", schema_version=current, expected=latest)
        for version, script in schema_scripts(self.SCHEMA_PACKAGE):
            if version <= current:
                continue
            # executescript would COMMIT first; run the statements inside one explicit transaction instead.
            with self.transaction():
                for statement in split_sql(script):
                    self.db.execute(statement)
                self.schema_applied(version)
                self.db.execute(f"PRAGMA user_version={version}")
        return current

    def schema_applied(self, version: int) -> None:
        """Called inside the migration's transaction after schema file `version`: data migrations go here."""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK on any exception (commit included)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def seal(self, data: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        """(key id, nonce, ciphertext) of `data` under the active key, bound to `aad`."""
        key_id = self.keyring.active_id
        nonce = os.urandom(NONCE_BYTES)
        return key_id, nonce, self._aead[key_id].encrypt(nonce, data, aad)

    def unseal(self, key_id: str, nonce: bytes, sealed: bytes, aad: bytes, **fields: str) -> bytes:
        """The data sealed with `seal`; BufferKeyError for a key the keyring lacks, IntegrityError for a value
        edited, moved or sealed elsewhere (`fields` are added to the error, e.g. the lane)."""
        aead = self._aead.get(key_id)
        if aead is None:
            raise BufferKeyError(f"{self.WHAT}: sealed with a key the key file does not hold", key_id=key_id)
        try:
            return aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise IntegrityError(
                f"{self.WHAT}: a sealed value failed authentication (edited, moved or foreign)", key_id=key_id, **fields
            ) from None

    def close(self) -> None:
        self.db.close()
