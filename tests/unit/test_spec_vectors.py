"""Independent test vectors: bytes from the Bluetooth SIG specifications, other projects' published test vectors and
public captures of real devices (tests/support/spec_vectors.py), decoded by this project's decoders and compared
field by field.  Nothing here goes through this project's encoders or simulators, so a codec and its encoder that
share a misreading of a specification cannot agree their way past these tests.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import pkgutil
from collections.abc import Mapping, Sequence

import pytest

import drivers.ble
from drivers.ble import (
    bas,
    bps,
    cgms,
    device_info,
    fields,
    gls,
    hrs,
    hts,
    idd_history,
    idd_status,
    ids,
    plxs,
    pmd,
    racp,
)
from gateway.core.errors import InvalidFrame
from tests.support.ids_vectors import crc16_bitwise
from tests.support.spec_vectors import VECTORS, Refused, SpecVector


def assert_same(actual: object, expected: object, path: str = "value") -> None:
    """Compare a decoded value with the expected one field by field; NaN equals NaN, floats compare exactly."""
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        assert type(actual) is type(expected), f"{path}: {type(actual).__name__} is not {type(expected).__name__}"
        for f in dataclasses.fields(expected):
            assert_same(getattr(actual, f.name), getattr(expected, f.name), f"{path}.{f.name}")
        return
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)), f"{path}: {actual!r} is not a sequence"
        assert len(actual) == len(expected), f"{path}: {len(actual)} items, expected {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{path}[{i}]")
        return
    if isinstance(expected, float):
        assert isinstance(actual, float), f"{path}: {actual!r} is not a float"
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r}, expected NaN"
        else:
            assert actual == expected, f"{path}: {actual!r}, expected {expected!r}"
        return
    if isinstance(expected, enum.Enum):
        # A known value must come back as the enum member, not as the bare number.
        assert actual is expected or (isinstance(actual, type(expected)) and actual == expected), (
            f"{path}: {actual!r}, expected {expected!r}"
        )
        return
    assert actual == expected, f"{path}: {actual!r}, expected {expected!r}"
    # A bare int where the spec defines no member must stay a bare int (bools are ints: keep them bool).
    assert type(actual) is type(expected) or not isinstance(expected, bool), f"{path}: {actual!r} not a bool"


def decode(vector: SpecVector) -> object:
    return vector.decode(vector.data, **vector.kwargs)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_vector_decodes_as_its_source_says(vector: SpecVector) -> None:
    if isinstance(vector.expected, Refused):
        with pytest.raises(InvalidFrame, match=vector.expected.match):
            decode(vector)
        return
    assert_same(decode(vector), vector.expected)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_vector_is_documented(vector: SpecVector) -> None:
    assert vector.source.strip(), "every vector names where its bytes come from"
    assert vector.characteristic.strip()
    assert vector.data, "a vector has bytes"
    assert vector.decode.__module__ in {vector.codec.__name__, "tests.support.spec_vectors"}


def test_vector_names_are_unique() -> None:
    names = [v.name for v in VECTORS]
    assert len(names) == len(set(names))


# drivers/ble modules that decode no bytes of a specification: the link, the session and its features, the
# profiles (which call the codecs), the pump-history settlement, the transport's plugin entry.
NOT_CODECS = frozenset({"bleak_link", "link", "session", "features", "profiles", "pump_history", "transport"})


def test_every_decoder_module_is_covered() -> None:
    """Every codec module of drivers/ble, a new one included, has at least one independent vector."""
    covered = {v.codec.__name__.rsplit(".", 1)[-1] for v in VECTORS}
    codecs = {m.name for m in pkgutil.iter_modules(drivers.ble.__path__)} - NOT_CODECS
    assert codecs <= covered, sorted(codecs - covered)


def test_there_are_enough_vectors_per_service() -> None:
    per_module: Mapping[str, int] = {
        m.__name__: sum(1 for v in VECTORS if v.codec is m)
        for m in (hrs, plxs, bps, hts, gls, cgms, racp, ids, idd_status, idd_history, bas, device_info, pmd)
    }
    assert len(VECTORS) >= 30
    assert all(count >= 1 for count in per_module.values()), per_module


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if v.decode is fields.crc16_mcrf4xx], ids=lambda v: getattr(v, "name", "")
)
def test_crc_vectors_agree_with_the_bitwise_definition(vector: SpecVector) -> None:
    # The table-driven CRC under test, the bit-by-bit definition and the published value must all agree.
    assert crc16_bitwise(vector.data) == vector.expected


E2E_FRAMES: Sequence[SpecVector] = [
    v
    for v in VECTORS
    if not isinstance(v.expected, Refused) and (v.kwargs.get("e2e") is True or v.kwargs.get("e2e_crc") is True)
]


@pytest.mark.parametrize("vector", E2E_FRAMES, ids=[v.name for v in E2E_FRAMES])
def test_e2e_frames_end_with_the_crc_of_what_precedes(vector: SpecVector) -> None:
    data = vector.data
    assert int.from_bytes(data[-2:], "little") == fields.crc16_mcrf4xx(data[:-2])


@pytest.mark.parametrize("vector", E2E_FRAMES, ids=[v.name for v in E2E_FRAMES])
def test_e2e_frames_with_one_flipped_bit_are_refused(vector: SpecVector) -> None:
    data = bytearray(vector.data)
    data[len(data) // 2] ^= 0x01
    with pytest.raises(InvalidFrame):
        vector.decode(bytes(data), **vector.kwargs)
