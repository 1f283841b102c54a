"""Real storage faults for tests: a small file system that another process fills, and another process holding
the buffer's database lock.

The small file system is a tmpfs of a few MB mounted for the test (root, or any user allowed to mount).  When
mounting is not possible the tests that need it are skipped with the reason; nothing imitates a full disk.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, size_mb: int) -> Iterator[Path]:
    """A fresh tmpfs of `size_mb` at `mountpoint`, unmounted afterwards (skips the test if it cannot mount)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or mount rights): {result.stderr.strip()[:120]}")
    try:
        yield mountpoint
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.1)  # a closing SQLite handle may still hold a file for a moment


_FILLER = textwrap.dedent(
    """
    import sys
    block = b"\\0" * 4096
    with open(sys.argv[1], "ab", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError:
                break
    """
)


def fill(folder: Path, name: str = "filler.bin") -> Path:
    """Another process writes to `folder` until its file system is 100 % full; returns the filler file."""
    path = folder / name
    subprocess.run([sys.executable, "-c", _FILLER, str(path)], check=True, timeout=60)
    stat = os.statvfs(folder)
    assert stat.f_bavail == 0, "the file system still has room"
    return path


_LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("ROLLBACK")
    db.close()
    """
)


@contextlib.contextmanager
def database_locked(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds an exclusive lock on the SQLite database for `seconds` (entered once it holds it)."""
    with subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        yield process
