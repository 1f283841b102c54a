"""Shared hypothesis helpers for codec fuzzing: a decoder may only succeed or raise InvalidFrame."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.errors import InvalidFrame

# The battery's tests are methods of a base class that every codec's test class inherits: hypothesis sees one
# test function run from several classes (executors), which is intended here.
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.differing_executors])

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


class CodecBattery:
    """The checks every codec module's decoders get, written once: subclass it as `TestDecoders` with the
    module's `decoders` (name -> decode) and `valid_frames` (name -> a valid frame of each)."""

    decoders: ClassVar[Mapping[str, Callable[[Any], object]]]
    valid_frames: ClassVar[Mapping[str, bytes]]

    def test_valid_frames_decode_and_every_decoder_is_fuzzed(self) -> None:
        assert set(self.valid_frames) == set(self.decoders)
        for name, frame in self.valid_frames.items():
            self.decoders[name](frame)

    @FAST
    @given(st.binary(max_size=64))
    def test_decoders_raise_only_invalid_frame(self, data: bytes) -> None:
        # Every decoder sees every example: one hypothesis run instead of one per decoder keeps the suite fast.
        for decode in self.decoders.values():
            decodes_or_invalid(decode, data)

    @FAST
    @given(mutations)
    def test_decoders_survive_mutations_of_valid_frames(self, mutation: Mutation) -> None:
        check_mutations(self.decoders, self.valid_frames, mutation)

    @pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
    def test_decoders_accept_bytes_like(self, wrap: Callable[[bytes], Any]) -> None:
        for name, frame in self.valid_frames.items():
            assert self.decoders[name](wrap(frame)) == self.decoders[name](frame), name
