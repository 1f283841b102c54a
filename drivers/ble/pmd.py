"""Polar Measurement Data (PMD), a vendor service: ECG frames streamed after a start on its control point.

Pure: bytes in, frozen dataclasses out, no I/O.  Decoders accept bytes, bytearray or memoryview and raise only
`InvalidFrame`; encoders (for simulators and tests) raise `ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from drivers.ble.fields import (
    Buffer,
    check_uint,
    require_min_length,
)
from gateway.core.errors import InvalidFrame

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_PMD_HEADER: Final = struct.Struct("<BQB")  # measurement type, timestamp ns, frame type

PMD_SERVICE: Final = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL_POINT: Final = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA: Final = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"


PMD_ECG_SAMPLE_RATE_HZ: Final = 130
PMD_MEASUREMENT_TYPE_ECG: Final = 0x00
PMD_ECG_FRAME_TYPE_0: Final = 0x00
_PMD_SAMPLE_BYTES: Final = 3
_INT24_MIN: Final = -(1 << 23)
_INT24_MAX: Final = (1 << 23) - 1


@dataclass(frozen=True, slots=True, eq=False)
class PmdEcgFrame:
    """One Polar PMD ECG frame; timestamp_ns is the last sample's time (Polar epoch), samples read-only."""

    timestamp_ns: int
    samples_uv: npt.NDArray[np.int32]


def decode_pmd_ecg_frame(buf: Buffer) -> PmdEcgFrame:
    """Decode a PMD data notification holding an uncompressed ECG frame (type 0: int24 LE microvolts)."""
    import numpy as np  # noqa: PLC0415 - numpy only where a waveform passes (a lean daemon)

    name = "pmd_ecg"
    data = bytes(buf)
    require_min_length(data, _PMD_HEADER.size + _PMD_SAMPLE_BYTES, name)
    measurement_type, timestamp_ns, frame_type = _PMD_HEADER.unpack_from(data, 0)
    if measurement_type != PMD_MEASUREMENT_TYPE_ECG:
        raise InvalidFrame("pmd frame is not ECG", characteristic=name, measurement_type=measurement_type)
    if frame_type != PMD_ECG_FRAME_TYPE_0:
        # Compressed (delta) frames set bit 7; the gateway only asks the sensor for type 0.
        raise InvalidFrame("pmd ECG frame type not supported", characteristic=name, frame_type=frame_type)
    sample_bytes = len(data) - _PMD_HEADER.size
    if sample_bytes % _PMD_SAMPLE_BYTES:
        raise InvalidFrame(
            "pmd ECG samples are not a whole number of int24",
            characteristic=name,
            length=len(data),
            expected=f"{_PMD_HEADER.size}+3n",
        )
    raw = np.frombuffer(data, dtype=np.uint8, offset=_PMD_HEADER.size).reshape(-1, 3).astype(np.int32)
    unsigned = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
    # Sign-extend 24 -> 32 bits: flipping the sign bit then subtracting it maps [0, 2**24) onto int24.
    samples = ((unsigned ^ 0x800000) - 0x800000).astype(np.int32, copy=False)
    samples.flags.writeable = False
    return PmdEcgFrame(timestamp_ns, samples)


def encode_pmd_ecg_frame(timestamp_ns: int, samples_uv: Sequence[int] | npt.NDArray[np.integer[Any]]) -> bytes:
    """Encode an uncompressed PMD ECG frame from integer microvolt samples in the int24 range."""
    import numpy as np  # noqa: PLC0415 - numpy only where a waveform passes (a lean daemon)

    check_uint(timestamp_ns, 64, "timestamp_ns")
    arr = np.asarray(samples_uv)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("samples_uv must be a non-empty 1-D sequence")
    if arr.dtype.kind not in "iu":
        raise ValueError("samples_uv must be integers")
    # Compare as Python ints so uint64 input cannot wrap into range.
    if int(arr.min()) < _INT24_MIN or int(arr.max()) > _INT24_MAX:
        raise ValueError("samples_uv must fit in a signed 24-bit integer")
    # Little-endian int32 keeps the two's-complement low 24 bits in its first three bytes.
    triplets = arr.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :_PMD_SAMPLE_BYTES]
    return _PMD_HEADER.pack(PMD_MEASUREMENT_TYPE_ECG, timestamp_ns, PMD_ECG_FRAME_TYPE_0) + triplets.tobytes()
