"""Give freed memory back to the system, so the gateway's resident size is what it uses, not its high-water mark.

glibc keeps memory a process freed in its heap for reuse; after a burst (a large DICOM object's chunks passing
through the pipeline, the buffer and the uplink, several copies each) a small box would carry that burst's
peak for the rest of the process's life.  `malloc_trim(0)` returns every free page of every arena to the
kernel.  It costs a few milliseconds, so the gateway calls it after a large object and once a minute; on a
C library without it (musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

from gateway.core.logs import get_logger

log = get_logger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> bool:
    """Ask the C library to return free heap pages to the system; False where it cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
