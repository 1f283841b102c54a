"""The WFDB reader: header checksums on every shared PhysioNet record, synthetic files, annotations."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edge_ml.wfdb import WfdbError, physionet_dir, read_annotations, read_header, read_record
from tests.support.wfdb_files import write_format_212

DATA = physionet_dir()
needs_data = pytest.mark.skipif(not (DATA / "100.hea").exists(), reason=f"PhysioNet records not found in {DATA}")


def _checksum(values: np.ndarray) -> int:
    return int(np.sum(values.astype(np.int64))) & 0xFFFF


def _header_checksums(path: Path) -> list[int]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [int(ln.split()[6]) & 0xFFFF for ln in lines[1:]]


@needs_data
@pytest.mark.parametrize("name", ["100", "03700181", "s0010_re", "mixedsignals"])
def test_signals_match_header_checksums(name: str) -> None:
    if name == "mixedsignals":
        pytest.importorskip("soundfile", reason="FLAC-compressed WFDB needs soundfile")
    record = read_record(DATA / name)
    for spec, values, expected in zip(
        record.signals, record.data, _header_checksums(DATA / f"{name}.hea"), strict=True
    ):
        assert len(values) > 0
        if spec.skew:
            continue  # the header's checksum covers the stored (un-skewed) column; checked below
        assert _checksum(values) == expected, spec.description
        if spec.fmt < 500:  # FLAC-format headers carry 0 here whatever the first sample is
            assert spec.initial_value is None or values[0] == spec.initial_value


@needs_data
def test_multi_frequency_and_skew() -> None:
    record = read_record(DATA / "03700181")
    assert record.rate_hz(0) == 500.0 and record.rate_hz(1) == 125.0
    assert len(record.data[0]) == 4 * record.n_frames
    resp = record.signals[2]
    assert resp.skew == 4
    # Reading ahead by the skew drops its first frames; the rest is the stored column.
    assert len(record.data[2]) == record.n_frames - 4


@needs_data
def test_mit_bih_100_annotations() -> None:
    annotations = read_annotations(DATA / "100.atr")
    beats = [a for a in annotations if a.is_beat]
    assert len(beats) == 2273
    assert beats[0].sample == 77
    assert annotations[0].aux.startswith(b"(N")
    assert all(b.sample < c.sample for b, c in itertools.pairwise(beats))


def test_synthetic_212_record_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(-2048, 2048, 1001).astype(np.int32)
    b = rng.integers(-2048, 2048, 1001).astype(np.int32)
    write_format_212(tmp_path / "syn.dat", a, b)
    (tmp_path / "syn.hea").write_text(
        "# a comment\nsyn 2 250 1001\n\nsyn.dat 212 100(5)/mV 12 0 0 0 0 lead A\nsyn.dat 212 200 12 0 0 0 0 B\n"
    )
    record = read_record(tmp_path / "syn")
    assert np.array_equal(record.data[0], a)
    assert np.array_equal(record.data[1], b)
    assert record.signals[0].description == "lead A"
    assert record.signals[0].baseline == 5 and record.signals[0].gain == 100.0
    assert record.physical(0)[0] == pytest.approx((a[0] - 5) / 100.0)


def test_bad_headers_raise_typed_errors(tmp_path: Path) -> None:
    (tmp_path / "x.hea").write_text("x 1 250 10\nx.dat 999 200 12 0 0 0 0 I\n")
    with pytest.raises(WfdbError):
        read_header(tmp_path / "x.hea")
    (tmp_path / "y.hea").write_text("")
    with pytest.raises(WfdbError):
        read_header(tmp_path / "y.hea")
    with pytest.raises(WfdbError):
        read_record(tmp_path / "absent")
