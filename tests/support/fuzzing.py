"""Shared hypothesis helpers for codec fuzzing: a decoder may only succeed or raise InvalidFrame."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from hypothesis import settings
from hypothesis import strategies as st

from gateway.core.errors import InvalidFrame

FAST = settings(max_examples=200, deadline=None, database=None)

# (byte edits as (index, value), bytes cut from the end, bytes appended)
Mutation = tuple[list[tuple[int, int]], int, bytes]
mutations = st.tuples(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=3),
    st.sampled_from([0, 0, 0, 1, 2, 3]),
    st.sampled_from([b"", b"", b"\x00", b"\xff\xff"]),
)


def decodes_or_invalid(decode: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(InvalidFrame):
        decode(data)


def mutate(valid: bytes, mutation: Mutation) -> bytes:
    edits, cut, tail = mutation
    frame = bytearray(valid)
    for index, value in edits:
        frame[index % len(frame)] = value
    return bytes(frame[: len(frame) - cut]) + tail


def check_mutations(
    decoders: Mapping[str, Callable[[bytes], object]], valid_frames: Mapping[str, bytes], mutation: Mutation
) -> None:
    """Each valid frame, mutated, still only decodes or raises InvalidFrame."""
    for name, valid in valid_frames.items():
        decodes_or_invalid(decoders[name], mutate(valid, mutation))
