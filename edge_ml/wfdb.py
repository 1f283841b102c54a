"""A small, dependency-free reader for PhysioNet WFDB records and MIT-format annotations.

Supports what the gateway's tests, benchmarks and replay need: headers with comments, multi-frequency
records (samples per frame), skew and byte offsets, storage formats 16, 212, 80 and 61, and the FLAC-based
formats 508/516/524 when the optional `soundfile` package is installed.  Signals are returned in ADC
units with their gain and baseline, so physical = (adc - baseline) / gain in the signal's units.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.core.errors import GatewayError

DEFAULT_GAIN = 200.0

# ANSI/AAMI EC57 beat annotation codes (WFDB ecgcodes.h): N L R a V F J A S E j / Q B ? e n f r
BEAT_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 25, 30, 34, 35, 38, 41})
_SKIP, _NUM, _SUB, _CHN, _AUX = 59, 60, 61, 62, 63
SUPPORTED_FORMATS = frozenset({16, 61, 80, 212, 508, 516, 524})


class WfdbError(GatewayError):
    """A WFDB record or annotation file that this reader cannot read."""


def physionet_dir() -> Path:
    """Where the shared PhysioNet recordings live ($IOMT_PHYSIONET_DIR, else ../shared/data/physionet)."""
    env = os.environ.get("IOMT_PHYSIONET_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "physionet"


@dataclass
class SignalSpec:
    file_name: str
    fmt: int
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    adc_resolution: int
    adc_zero: int
    initial_value: int | None
    description: str


@dataclass
class Record:
    name: str
    frame_rate_hz: float
    n_frames: int
    signals: list[SignalSpec]
    data: list[npt.NDArray[np.int32]] = field(default_factory=list)

    def rate_hz(self, index: int) -> float:
        return self.frame_rate_hz * self.signals[index].samples_per_frame

    def invalid_value(self, index: int) -> int:
        """The ADC value WFDB uses for "no sample here" in this signal's format."""
        fmt = self.signals[index].fmt
        return {212: -2048, 80: -128, 508: -128, 524: -8388608}.get(fmt, -32768)

    def physical(self, index: int) -> npt.NDArray[np.float64]:
        spec = self.signals[index]
        return (self.data[index].astype(np.float64) - spec.baseline) / spec.gain

    def index_of(self, *names: str) -> int | None:
        wanted = {n.lower() for n in names}
        for i, spec in enumerate(self.signals):
            if spec.description.lower() in wanted:
                return i
        return None


_FORMAT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+\d.eE]+)(?:\((-?\d+)\))?(?:/(\S+))?$")


def read_header(path: Path) -> Record:
    """Parse `NAME.hea`."""
    try:
        lines = [ln.strip() for ln in path.read_text("ascii", errors="replace").splitlines()]
    except OSError as err:
        raise WfdbError("cannot read header", path=str(path), error=type(err).__name__) from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise WfdbError("empty header", path=str(path))
    head = lines[0].split()
    if len(head) < 2 or "/" in head[0]:
        raise WfdbError("multi-segment or malformed record line", path=str(path))
    nsig = int(head[1])
    frame_rate = float(head[2].split("/")[0].split("(")[0]) if len(head) > 2 else 250.0
    n_frames = int(head[3]) if len(head) > 3 else 0
    signals: list[SignalSpec] = []
    for line in lines[1 : 1 + nsig]:
        parts = line.split(maxsplit=8)
        if len(parts) < 2:
            raise WfdbError("malformed signal line", path=str(path))
        match = _FORMAT.match(parts[1])
        if not match:
            raise WfdbError("unsupported format field", path=str(path), detail=parts[1])
        fmt, spf, skew, offset = (int(g) if g else None for g in match.groups())
        if fmt not in SUPPORTED_FORMATS:
            raise WfdbError("unsupported storage format", path=str(path), detail=parts[1])
        gain, baseline, units = DEFAULT_GAIN, None, "mV"
        if len(parts) > 2:
            g = _GAIN.match(parts[2])
            if not g:
                raise WfdbError("malformed gain field", path=str(path))
            gain = float(g.group(1)) or DEFAULT_GAIN
            baseline = int(g.group(2)) if g.group(2) else None
            units = g.group(3) or "mV"
        adc_zero = int(parts[4]) if len(parts) > 4 else 0
        signals.append(
            SignalSpec(
                file_name=parts[0],
                fmt=fmt or 0,
                samples_per_frame=spf or 1,
                skew=skew or 0,
                byte_offset=offset or 0,
                gain=gain,
                baseline=adc_zero if baseline is None else baseline,
                units=units,
                adc_resolution=int(parts[3]) if len(parts) > 3 else 12,
                adc_zero=adc_zero,
                initial_value=int(parts[5]) if len(parts) > 5 else None,
                description=parts[8].strip() if len(parts) > 8 else f"sig{len(signals)}",
            )
        )
    if len(signals) != nsig:
        raise WfdbError("header lists fewer signals than declared", path=str(path))
    return Record(head[0], frame_rate, n_frames, signals)


def _decode(fmt: int, raw: bytes, n_values: int) -> npt.NDArray[np.int32]:
    if fmt == 16:
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int32)[:n_values]
    if fmt == 61:
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype=">i2").astype(np.int32)[:n_values]
    if fmt == 80:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128)[:n_values]
    if fmt == 212:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        out = np.empty(b.shape[0] * 2, dtype=np.int32)
        out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        out[out > 2047] -= 4096
        return out[:n_values]
    raise WfdbError("unsupported storage format", expected="16, 61, 80, 212, 508, 516, 524", detail=str(fmt))


def read_record(base: Path) -> Record:
    """Read header and signals of the record whose path without extension is `base`."""
    record = read_header(base.with_suffix(".hea"))
    folder = base.parent
    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(record.signals):
        groups.setdefault(spec.file_name, []).append(i)
    record.data = [np.empty(0, dtype=np.int32)] * len(record.signals)
    for file_name, indices in groups.items():
        specs = [record.signals[i] for i in indices]
        fmt = specs[0].fmt
        if fmt in (508, 516, 524):
            # FLAC formats: one channel per signal, each at frame rate x samples per frame.
            channels = _read_flac(folder / file_name, len(specs), bits={508: 8, 516: 16, 524: 24}[fmt])
            columns = [channels[:, k] for k in range(len(specs))]
        else:
            try:
                raw = (folder / file_name).read_bytes()[specs[0].byte_offset :]
            except OSError as err:
                raise WfdbError("cannot read signal file", path=file_name, error=type(err).__name__) from None
            frame = sum(s.samples_per_frame for s in specs)
            values = _decode(fmt, raw, len(raw) * 2)
            n_frames = len(values) // frame
            if record.n_frames:
                n_frames = min(n_frames, record.n_frames)
            frames = values[: n_frames * frame].reshape(n_frames, frame)
            columns = []
            start = 0
            for spec in specs:
                columns.append(frames[:, start : start + spec.samples_per_frame].reshape(-1))
                start += spec.samples_per_frame
        for i, spec, column in zip(indices, specs, columns, strict=True):
            signal = column[: record.n_frames * spec.samples_per_frame] if record.n_frames else column
            if spec.skew:
                # Skew: this signal's samples are stored `skew` frames late; read ahead, as WFDB's getvec does.
                signal = signal[spec.skew * spec.samples_per_frame :]
            record.data[i] = np.ascontiguousarray(signal, dtype=np.int32)
    return record


def _read_flac(path: Path, channels: int, bits: int) -> npt.NDArray[np.int32]:
    try:
        import soundfile  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: PLC0415
    except ImportError:
        raise WfdbError("FLAC-compressed WFDB formats need the optional soundfile package", path=str(path)) from None
    data, _ = soundfile.read(str(path), dtype="int32", always_2d=True)
    # soundfile scales every sample to the full int32 range; shift back to the stored width.
    out: npt.NDArray[np.int32] = (data >> (32 - bits)).astype(np.int32)[:, :channels]
    return out


@dataclass(frozen=True)
class Annotation:
    sample: int
    code: int
    subtype: int = 0
    channel: int = 0
    aux: bytes = b""

    @property
    def is_beat(self) -> bool:
        return self.code in BEAT_CODES


def read_annotations(path: Path) -> list[Annotation]:
    """Read an MIT-format annotation file (e.g. `100.atr`)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise WfdbError("cannot read annotation file", path=str(path), error=type(err).__name__) from None
    words = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<u2")
    out: list[Annotation] = []
    sample = 0
    subtype = channel = number = 0
    i = 0
    pending: Annotation | None = None
    while i < len(words):
        word = int(words[i])
        code, value = word >> 10, word & 0x3FF
        i += 1
        if code == 0 and value == 0:
            break
        if code == _SKIP:
            if i + 2 > len(words):
                raise WfdbError("truncated SKIP in annotation file", path=str(path))
            high, low = int(words[i]), int(words[i + 1])
            skip = (high << 16) | low
            sample += skip - (1 << 32) if skip & 0x80000000 else skip
            i += 2
        elif code == _NUM:
            number = value
        elif code == _SUB:
            subtype = value
        elif code == _CHN:
            channel = value
        elif code == _AUX:
            n_words = (value + 1) // 2
            aux = words[i : i + n_words].tobytes()[:value]
            i += n_words
            if pending is not None:
                out[-1] = Annotation(pending.sample, pending.code, pending.subtype, pending.channel, aux)
        else:
            sample += value
            pending = Annotation(sample, code, subtype, channel)
            out.append(pending)
            subtype = 0
    del number
    return out
