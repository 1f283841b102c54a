"""An encrypted spool for DICOM objects in transit: what arrives is written to disk sealed, never in plaintext,
and read back in pieces, so memory stays flat whatever the object's size.

Each spooled object has its own random AES-256-GCM key, held only in memory: the file is unreadable without
the process that wrote it, so a crash leaves ciphertext that nobody (the gateway included) can open; the spool
folder is wiped at start.  The plaintext is cut into 64 KiB segments, each sealed with its index and whether it
is the last as associated data, so a segment cannot be moved, and the object cannot be cut short, unnoticed.
A writer counts the bytes and keeps a SHA-256 of the whole as it goes; past `max_bytes` it keeps counting but
stores nothing more (the object is refused as too large, for the cost of its size in network reads only).

`SpooledObject` reads back by offset (`obj[start:stop]`, `len(obj)`), decrypting one segment at a time, and
`ByteFile` does the same for a file already on disk (a drop folder's), so validation and chunking take either.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from drivers.dicom.validate import ByteSource

SEGMENT = 64 * 1024
TAG = 16
STALE_S = 600.0  # a writer untouched this long belongs to an association that died: its file is removed


def _nonce(index: int) -> bytes:
    return struct.pack(">4xQ", index)


def _aad(file_id: bytes, index: int, last: bool) -> bytes:
    return b"iomt-spool-v1|" + file_id + struct.pack(">Q?", index, last)


class SpoolError(Exception):
    """A spooled object could not be read back (tampered, truncated, or its writer is gone)."""


class SpoolWriter:
    """A file-like sink for one object (the shape pynetdicom's chunked receive writes to: write, file.flush, name)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.name = str(path)
        self.path = path
        self.max_bytes = max_bytes
        self.file = self  # pynetdicom calls `.file.flush()` after each fragment
        self.size = 0  # bytes received, including any beyond max_bytes
        self.too_large = False
        self.touched = time.monotonic()
        self._key = AESGCM(AESGCM.generate_key(bit_length=256))
        self._id = secrets.token_bytes(16)
        self._digest = hashlib.sha256()
        self._pending = bytearray()
        self._segments = 0
        self._done: SpooledObject | None = None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh = os.fdopen(fd, "wb")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        length = len(data)
        self.touched = time.monotonic()
        self.size += length
        if self.too_large or self._done is not None:
            return length
        if self.size > self.max_bytes:
            self.too_large = True  # keep counting, store nothing more; the object will be refused
            self._pending.clear()
            return length
        self._digest.update(data)
        self._pending += data
        while len(self._pending) > SEGMENT:  # keep a full segment back: it may turn out to be the last one
            self._seal(bytes(self._pending[:SEGMENT]), last=False)
            del self._pending[:SEGMENT]
        return length

    def flush(self) -> None:
        """Nothing to do: only whole segments are written, sealed; the tail waits in memory (< 64 KiB)."""

    def finish(self) -> SpooledObject:
        """Seal the last segment and return the object for reading; idempotent."""
        if self._done is None:
            if not self.too_large:
                self._seal(bytes(self._pending), last=True)
            self._pending.clear()
            self._fh.close()
            self._done = SpooledObject(
                self.path, self._key, self._id, self.size, self._segments, self._digest.hexdigest(), self.too_large
            )
        return self._done

    def close(self) -> None:
        self.finish()

    def _seal(self, plain: bytes, *, last: bool) -> None:
        index = self._segments
        self._fh.write(self._key.encrypt(_nonce(index), plain, _aad(self._id, index, last)))
        self._segments += 1


class SpooledObject:
    """A finished spooled object, read back by offset; one decrypted segment is cached."""

    def __init__(
        self, path: Path, key: AESGCM, file_id: bytes, size: int, segments: int, sha256: str, too_large: bool
    ) -> None:
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.too_large = too_large
        self._key = key
        self._id = file_id
        self._segments = segments
        self._cache: tuple[int, bytes] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return 0 if self.too_large else self.size

    def __getitem__(self, index: slice) -> bytes:
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("contiguous slices only")
        parts = []
        while start < stop:
            segment, offset = divmod(start, SEGMENT)
            plain = self._segment(segment)
            take = plain[offset : offset + stop - start]
            if not take:
                break
            parts.append(take)
            start += len(take)
        return b"".join(parts)

    def _segment(self, index: int) -> bytes:
        with self._lock:
            if self._cache is not None and self._cache[0] == index:
                return self._cache[1]
            if not 0 <= index < self._segments:
                raise SpoolError("read past the end of a spooled object")
            try:
                with self.path.open("rb") as fh:
                    fh.seek(index * (SEGMENT + TAG))
                    sealed = fh.read(SEGMENT + TAG)
                plain = self._key.decrypt(_nonce(index), sealed, _aad(self._id, index, index == self._segments - 1))
            except (OSError, InvalidTag):
                raise SpoolError("spooled segment unreadable") from None
            self._cache = (index, plain)
            return plain


class ByteFile:
    """A file already on disk (a drop folder's), read by offset like a spooled object."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = path.stat().st_size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: slice) -> bytes:
        start, stop, _ = index.indices(self._size)
        if stop <= start:
            return b""
        with self.path.open("rb") as fh:
            fh.seek(start)
            return fh.read(stop - start)


def sha256_of(source: ByteSource, block: int = 1 << 20) -> str:
    """The SHA-256 of a source's bytes, read a block at a time."""
    digest = hashlib.sha256()
    for start in range(0, len(source), block):
        digest.update(source[start : start + block])
    return digest.hexdigest()


def pieces(source: ByteSource, size: int) -> Iterator[bytes]:
    """A source's bytes, `size` at a time."""
    for start in range(0, max(1, len(source)), size):
        yield source[start : start + size]


class Spool:
    """The spool folder: writers by path (so a handler finds its object), stale ones swept, all wiped at start."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._writers: dict[str, SpoolWriter] = {}
        self._lock = threading.Lock()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for leftover in folder.iterdir():  # ciphertext whose keys died with the process that wrote it
            with contextlib.suppress(OSError):
                leftover.unlink()

    def writer(self) -> SpoolWriter:
        """A new writer for one incoming object."""
        self.sweep()
        path = self.folder / f"{secrets.token_hex(12)}.spool"
        writer = SpoolWriter(path, self.max_bytes)
        with self._lock:
            self._writers[writer.name] = writer
        return writer

    def named_temporary_file(self, *_args: object, **_kwargs: object) -> SpoolWriter:
        """Stands in for tempfile.NamedTemporaryFile where pynetdicom's chunked receive creates its file."""
        return self.writer()

    def finish(self, path: str | Path) -> SpooledObject:
        """The finished object behind a writer's path (KeyError if this spool never wrote it)."""
        with self._lock:
            writer = self._writers[str(path)]
        return writer.finish()

    def discard(self, path: str | Path) -> None:
        with self._lock:
            writer = self._writers.pop(str(path), None)
        if writer is not None:
            writer.finish()
            with contextlib.suppress(OSError):
                writer.path.unlink()

    def sweep(self, now: float | None = None) -> None:
        """Remove writers untouched for STALE_S (their association died mid-object) and their files."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [name for name, w in self._writers.items() if now - w.touched > STALE_S]
        for name in stale:
            self.discard(name)

    @property
    def open_writers(self) -> int:
        return len(self._writers)


# -- pynetdicom's chunked receive -------------------------------------------------------------------------------
# pynetdicom 2+ can receive a C-STORE data set into a file instead of memory (_config.STORE_RECV_CHUNKED_DATASET,
# a documented option; the handler gets `event.dataset_path`), but writes that file in plaintext through
# tempfile.NamedTemporaryFile.  The spool stands in for that one name in pynetdicom.dimse_messages: the file
# pynetdicom writes is then a sealed spool file, and the handler reads it back through the spool.  This is the
# one place the gateway replaces a library's name; the version is pinned (<4) and
# tests/integration/test_dicom_large.py checks the seam.  Upstream, a factory option for the chunked-receive file
# would remove it.
_RECEIVING: list[Spool] = []


def receive_into(spool: Spool) -> None:
    """Make pynetdicom's chunked receive write into `spool` (the latest spool installed takes new objects)."""
    from pynetdicom import _config, dimse_messages  # noqa: PLC0415 - only when an SCP runs

    if not hasattr(dimse_messages, "NamedTemporaryFile"):
        raise RuntimeError("pynetdicom's chunked receive changed: the encrypted spool cannot take its place")
    if spool not in _RECEIVING:
        _RECEIVING.append(spool)
    _config.STORE_RECV_CHUNKED_DATASET = True
    _seam(dimse_messages, _RECEIVING[-1].named_temporary_file)


def _seam(module: object, factory: object) -> None:
    setattr(module, "NamedTemporaryFile", factory)  # noqa: B010 - the one replaced name; see the note above


def stop_receiving(spool: Spool) -> None:
    """Undo `receive_into` for this spool (back to the previous one, or pynetdicom's in-memory default)."""
    from pynetdicom import _config, dimse_messages  # noqa: PLC0415

    if spool in _RECEIVING:
        _RECEIVING.remove(spool)
    if _RECEIVING:
        _seam(dimse_messages, _RECEIVING[-1].named_temporary_file)
    else:
        import tempfile  # noqa: PLC0415

        _seam(dimse_messages, tempfile.NamedTemporaryFile)
        _config.STORE_RECV_CHUNKED_DATASET = False


def received(path: str | Path) -> tuple[Spool, SpooledObject]:
    """The spool that received the object at `path`, and the object (KeyError if none did)."""
    for spool in reversed(_RECEIVING):
        with contextlib.suppress(KeyError):
            return spool, spool.finish(path)
    raise KeyError(str(path))
