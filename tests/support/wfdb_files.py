"""WFDB files written the way PhysioNet writes them, for the reader's tests and the replay's."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_format_212(path: Path, a: np.ndarray, b: np.ndarray) -> None:
    """Two signals interleaved in format 212 (12-bit samples, two to three bytes)."""
    ua, ub = (a & 0xFFF).astype(np.uint16), (b & 0xFFF).astype(np.uint16)
    out = np.empty((len(a), 3), dtype=np.uint8)
    out[:, 0] = ua & 0xFF
    out[:, 1] = ((ua >> 8) & 0x0F) | (((ub >> 8) & 0x0F) << 4)
    out[:, 2] = ub & 0xFF
    path.write_bytes(out.tobytes())
