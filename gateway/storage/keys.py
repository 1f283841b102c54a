"""Buffer keys: a key file holds one or more AES-256 keys; the last one seals new rows.

File format (text, one key per line): `<key_id> <base64 of 32 bytes>`; blank lines and `#` comments allowed.
Older keys stay in the file after a rotation so rows sealed with them remain readable until synced.
The file must not be readable by group or others, like an ssh private key.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from gateway.core.errors import BufferKeyError
from gateway.storage.atomic import write_atomically

KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True)
class Keyring:
    """Keys by id, and the id of the key that seals new rows."""

    keys: dict[str, bytes]
    active_id: str

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_id]


def load_keyring(path: Path, *, check_permissions: bool = True) -> Keyring:
    """Read a key file; BufferKeyError names what is wrong (never the key)."""
    try:
        info = path.stat()
        text = path.read_text("ascii")
    except FileNotFoundError:
        raise BufferKeyError("buffer key file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BufferKeyError("buffer key file unreadable", path=str(path), error=type(err).__name__) from None
    if check_permissions and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BufferKeyError("buffer key file is accessible to group or others; chmod 600 it", path=str(path))
    keys: dict[str, bytes] = {}
    active = None
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _KEY_ID.match(parts[0]):
            raise BufferKeyError("malformed line in buffer key file", path=str(path), length=number)
        try:
            key = base64.b64decode(parts[1], validate=True)
        except binascii.Error:
            raise BufferKeyError("key is not base64", path=str(path), length=number) from None
        if len(key) != KEY_BYTES:
            raise BufferKeyError("key is not 32 bytes", path=str(path), length=number)
        keys[parts[0]] = key
        active = parts[0]
    if active is None:
        raise BufferKeyError("buffer key file holds no key", path=str(path))
    return Keyring(keys, active)


def _key_line(key_id: str) -> str:
    return f"{key_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}\n"


def _entries(path: Path) -> list[tuple[str, str]]:
    """(key id, line) for each key line of a key file, in order."""
    out = []
    for raw_line in path.read_text("ascii").splitlines():
        line = raw_line.strip()
        if line and not line.startswith("#"):
            out.append((line.split()[0], line))
    return out


def rotate_key_file(path: Path) -> str:
    """Append a fresh key that becomes the active one at the next start; older keys stay to read old rows."""
    load_keyring(path)  # refuse to extend a file that is already broken or too open
    ids = [key_id for key_id, _ in _entries(path)]
    number = 1 + max((int(k[1:]) for k in ids if k[:1] == "k" and k[1:].isdigit()), default=0)
    new_id = f"k{number}"
    with path.open("a", encoding="ascii") as handle:
        handle.write(_key_line(new_id))
        handle.flush()
        os.fsync(handle.fileno())
    return new_id


def prune_key_file(path: Path, in_use: set[str]) -> list[str]:
    """Remove keys no stored row needs (never the active one); returns the removed ids."""
    keyring = load_keyring(path)
    entries = _entries(path)
    keep = [(k, line) for k, line in entries if k in in_use or k == keyring.active_id]
    removed = [k for k, _ in entries if k not in {kk for kk, _ in keep}]
    if removed:
        write_atomically(path, "".join(line + "\n" for _, line in keep).encode("ascii"), mode=0o600)
    return removed


def generate_key_file(path: Path, key_id: str = "k1") -> None:
    """Create a new key file with one fresh key, mode 0600; refuses to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(_key_line(key_id))
