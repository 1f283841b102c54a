"""Simulated wired bedside devices: a Nonin oximeter and an HL7 (IHE PCD-01) monitor, on ptys or TCP.

`PtyPort` is a real pseudo-terminal: the gateway opens its slave path as it would /dev/ttyUSB0, the simulator
writes to the master.  `NoninOximeter` streams data format #2 or #7 packets (75 frames/s) with pleth taken
from the PhysioNet `mixedsignals` record when ../shared/data has it (synthetic otherwise).  `Hl7Monitor`
sends one ORU^R01 a second with arterial pressure (systolic, diastolic, mean, from record 03700181's ABP
signal) and heart rate (from its QRS labels), synthetic when the record is absent, framed in MLLP on a pty
or a TCP connection, and reads the ACKs.

Fault injection on both: `garbage_every` (random bytes between frames), `truncate_every` (a frame cut short),
`corrupt_every` (a flipped checksum/trailer byte), and `silent` (nothing sent).  Everything sent is recorded,
so tests compare what arrived with what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tty
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from drivers.serial import hl7
from drivers.serial.framing import mllp_wrap
from drivers.serial.nonin import FRAMES_PER_PACKET, DataFormat, encode_packet
from edge_ml.wfdb import WfdbError, physionet_dir, read_annotations, read_record

PACKET_S = FRAMES_PER_PACKET / 75.0  # a Nonin packet: 25 frames at 75 frames/s


class ByteWriter(Protocol):
    """Where a simulator writes: a `PtyPort`, or a serial port or connection opened by hil.rig."""

    async def write(self, data: bytes) -> None: ...


class PtyPort:
    """A pseudo-terminal pair in raw mode: `path` for the gateway, the master end for the simulator."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                await asyncio.sleep(0.005)  # the reader is behind: wait, as a UART's flow control would
                continue
            view = view[written:]

    def read_available(self) -> bytes:
        try:
            return os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class Faults:
    garbage_every: int = 0
    truncate_every: int = 0
    corrupt_every: int = 0
    silent: bool = False

    def shape(self, index: int, frame: bytes, rng: np.random.Generator) -> tuple[bytes, bool]:
        """The bytes to send for frame `index`, and whether they still carry the frame intact."""
        out, intact = frame, True
        if self.truncate_every and index % self.truncate_every == 0:
            out, intact = frame[: len(frame) // 2], False
        elif self.corrupt_every and index % self.corrupt_every == 0:
            out, intact = frame[:-1] + bytes([frame[-1] ^ 0x5A]), False
        if self.garbage_every and index % self.garbage_every == 0:
            out = bytes(rng.integers(0, 256, 7, dtype=np.uint8)) + out
        return out, intact


def _pleth_source() -> npt.NDArray[np.float64]:
    """A normalised (0..1) pleth wave at 75 Hz: PhysioNet `mixedsignals` Pleth when present, else synthetic."""
    try:
        record = read_record(physionet_dir() / "mixedsignals")
        index = next(i for i, s in enumerate(record.signals) if s.description.lower().startswith("pleth"))
        wave = record.physical(index)
        rate = record.rate_hz(index)
        t = np.arange(0, len(wave) / rate, 1 / 75.0)
        wave = np.interp(t, np.arange(len(wave)) / rate, wave)
    except (WfdbError, StopIteration):
        t = np.arange(0, 600, 1 / 75.0)
        wave = np.sin(2 * np.pi * 1.2 * t) ** 2
    low, high = np.percentile(wave, 1), np.percentile(wave, 99)
    return np.clip((wave - low) / max(high - low, 1e-9), 0.0, 1.0)


@dataclass
class NoninOximeter:
    """A Nonin OEM oximeter on a serial line, data format #2 (8-bit pleth) or #7 (16-bit pleth)."""

    port: ByteWriter
    data_format: DataFormat = DataFormat.DF2
    faults: Faults = field(default_factory=Faults)
    spo2: int = 97
    pulse_rate: int = 72
    sent: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)  # intact packets: spo2, pr, pleth
    packets: int = 0
    intact_packets: int = 0
    record_sent: bool = True  # False: count only (a standalone rig runs for days)

    async def run(self) -> None:
        wave = _pleth_source()
        top = 0xFF if self.data_format is DataFormat.DF2 else 0xFFFF
        rng = np.random.default_rng(7)
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += PACKET_S
            await asyncio.sleep(max(0.0, due - loop.time()))
            if self.faults.silent:
                continue
            start = (self.packets * FRAMES_PER_PACKET) % (len(wave) - FRAMES_PER_PACKET)
            pleth = tuple(int(v * top) for v in wave[start : start + FRAMES_PER_PACKET])
            spo2 = self.spo2 + (1 if self.packets % 7 == 0 else 0)
            packet = encode_packet(pleth, spo2=spo2, pulse_rate=self.pulse_rate, data_format=self.data_format)
            self.packets += 1
            data, intact = self.faults.shape(self.packets, packet, rng)
            if intact:
                self.intact_packets += 1
                if self.record_sent:
                    self.sent.append((spo2, self.pulse_rate, pleth))
            await self.port.write(data)


def _monitor_source() -> tuple[list[tuple[float, float, float, float]], str]:
    """(systolic, diastolic, mean, heart rate) per second: record 03700181 when present, else synthetic."""
    try:
        record = read_record(physionet_dir() / "03700181")
        abp_index = next(i for i, s in enumerate(record.signals) if s.description.upper() == "ABP")
        labels = read_annotations(physionet_dir() / "03700181.sqrs")
    except (WfdbError, StopIteration):
        synthetic = [
            (120 + 5 * math.sin(s / 10), 80 + 3 * math.sin(s / 10), 93 + 4 * math.sin(s / 10), 72.0) for s in range(600)
        ]
        return synthetic, "synthetic"
    abp = record.physical(abp_index)
    rate = record.rate_hz(abp_index)
    label_rate = rate
    for label in labels[:1]:  # WFDB "## time resolution: N" note: label sample numbers at N Hz, not the signal's
        if label.aux.startswith(b"## time resolution:"):
            label_rate = float(label.aux.split(b":")[1])
    beats = [a.sample / label_rate for a in labels if a.is_beat]
    out = []
    for s in range(int(beats[0]) + 6 if beats else 5, int(len(abp) / rate)):
        window = abp[int(s * rate) : int((s + 1) * rate)]
        hr = sum(1 for b in beats if s - 5 <= b < s) * 12.0  # beats in the last 5 s, per minute
        out.append((float(window.max()), float(window.min()), float(window.mean()), hr))
    return out, "record 03700181"


def _round(value: float) -> float:
    return round(value, 1)


@dataclass
class Hl7Monitor:
    """A bedside monitor sending PCD-01 ORU^R01 messages in MLLP, one a second (faster with `interval_s`)."""

    interval_s: float = 1.0
    faults: Faults = field(default_factory=Faults)
    sent: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # control id -> (MDC ref, value)
    acks: dict[str, str] = field(default_factory=dict)  # control id -> MSA-1
    messages: int = 0
    source: str = ""
    record_sent: bool = True  # False: keep no per-message record (a standalone rig runs for days)
    _values: list[tuple[float, float, float, float]] = field(default_factory=list, init=False, repr=False)
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(11), init=False, repr=False)

    def message(self, values: tuple[float, float, float, float]) -> tuple[str, bytes]:
        self.messages += 1
        control_id = f"MSG{self.messages:06d}"
        systolic, diastolic, mean, hr = values
        readings = [
            hl7.OruObservation("MDC_PRESS_BLD_ART_SYS", _round(systolic), "1.1.1.1"),
            hl7.OruObservation("MDC_PRESS_BLD_ART_DIA", _round(diastolic), "1.1.1.2"),
            hl7.OruObservation("MDC_PRESS_BLD_ART_MEAN", _round(mean), "1.1.1.3"),
            hl7.OruObservation("MDC_ECG_HEART_RATE", _round(hr), "1.1.2.1"),
        ]
        raw = hl7.build_oru(readings, control_id=control_id, timestamp=datetime.now(UTC))
        if self.record_sent:
            self.sent[control_id] = [(r.reference_id, float(r.value or 0.0)) for r in readings]
        return control_id, raw

    def next_frame(self) -> OutgoingMessage:
        """The next message, framed in MLLP, and the bytes the faults make of it."""
        if not self._values:
            self._values, self.source = _monitor_source()
        control_id, raw = self.message(self._values[self.messages % len(self._values)])
        frame = mllp_wrap(raw)
        data, intact = self.faults.shape(self.messages, frame, self._rng)
        if not intact:
            self.sent.pop(control_id, None)
        return OutgoingMessage(control_id, frame, data, intact)

    async def run_on(self, writer_write: asyncio.StreamWriter | PtyPort, reader: asyncio.StreamReader | None) -> None:
        """Send until cancelled; with a TCP connection, ACKs are read as they come back."""
        ack_task = asyncio.create_task(self._read_acks(reader)) if reader is not None else None
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                if self.faults.silent:
                    continue
                await _send(writer_write, self.next_frame().data)
        finally:
            if ack_task is not None:
                ack_task.cancel()

    async def _read_acks(self, reader: asyncio.StreamReader | None) -> None:
        if reader is None:
            return
        from drivers.serial.framing import MllpFramer  # noqa: PLC0415

        framer = MllpFramer()
        while data := await reader.read(4096):
            for frame in framer.feed(data):
                self.record_ack(frame)

    def record_ack(self, frame: bytes) -> None:
        answer = parse_ack(frame)
        if answer is not None:
            control_id, code = answer
            self.acks[control_id] = code


@dataclass(frozen=True)
class OutgoingMessage:
    """One ORU^R01 as a monitor sends it: `frame` is the intact MLLP frame, `data` what the faults made of it."""

    control_id: str
    frame: bytes
    data: bytes
    intact: bool


def parse_ack(frame: bytes) -> tuple[str, str] | None:
    """(MSA-2 control id acknowledged, MSA-1 code such as AA) of an HL7 ACK, or None when it is not one."""
    segments = {s[:3]: s.split(b"|") for s in frame.split(b"\r") if s}
    msa = segments.get(b"MSA")
    if msa is None or len(msa) <= 2:
        return None
    return msa[2].decode(errors="replace"), msa[1].decode(errors="replace")


async def _send(target: asyncio.StreamWriter | PtyPort, data: bytes) -> None:
    if isinstance(target, PtyPort):
        await target.write(data)
    else:
        target.write(data)
        await target.drain()


class NullModem:
    """Two ptys cross-connected, like a null-modem cable: what is written to one end is read at the other.

    `a.path` and `b.path` are both serial devices (e.g. a Modbus RTU server on one, the gateway on the other).
    """

    def __init__(self) -> None:
        self.a = PtyPort()
        self.b = PtyPort()
        self._tasks: list[asyncio.Task[None]] = []

    async def _relay(self, source: PtyPort, target: PtyPort) -> None:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(source.master, ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                data = source.read_available()
                if data:
                    await target.write(data)
        finally:
            loop.remove_reader(source.master)

    async def __aenter__(self) -> NullModem:
        self._tasks = [
            asyncio.create_task(self._relay(self.a, self.b)),
            asyncio.create_task(self._relay(self.b, self.a)),
        ]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.a.close()
        self.b.close()
