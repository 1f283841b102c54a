"""Reference arithmetic and value strategies for the IDS codec tests, written from the specification."""

from __future__ import annotations

from hypothesis import strategies as st


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/MCRF4XX by its definition (reflected 0x1021, init 0xFFFF, no xorout), bit by bit."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


doses = st.builds(lambda m, e: m / 10**-e, st.integers(0, 2045), st.sampled_from([-2, -1, 0])).filter(
    lambda v: v <= 200
)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
