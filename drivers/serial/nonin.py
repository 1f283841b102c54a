"""Nonin pulse oximeter serial data formats #2 and #7 (OEM III module, Xpod, Onyx II 9560, WristOx2 3150).  Pure.

Both formats send a 5-byte frame 75 times a second; 25 frames make a packet (1/3 s) whose first frame has the SYNC
status bit set.  A frame carries a status byte, a plethysmogram sample, one byte of a 25-byte "extra" field that
spreads the numerics over the packet, and a checksum, the sum of the first four bytes modulo 256:

    DF2:  0x01    STATUS     PLETH (8 bit)  EXTRA  CHK
    DF7:  STATUS  PLETH MSB  PLETH LSB      EXTRA  CHK      (16-bit pleth, no start byte)

STATUS: bit 7 always 1; bit 6 SNSD sensor disconnected (interpreted for DF2 only: the DF7 sources do not define it);
bit 5 ARTF artifact; bit 4 OOT out of track; bit 3 SNSA sensor alarm (unusable data); bits 2/1 RPRF/GPRF perfusion
(both set: yellow); bit 0 SYNC (first frame of a packet).

EXTRA by frame index: 0/1 pulse rate MSB/LSB (HR8..HR7 in bits 1..0 of the MSB, HR6..HR0 in bits 6..0 of the LSB;
511 = missing); 2 SpO2 4-beat average, recording format (127 = missing); 3 firmware revision; 5/6 timer MSB/LSB
(7 bits each); 7 STAT2 (bit 5 SmartPoint, bit 0 low battery); 8 SpO2 display; 9 SpO2 fast; 10 SpO2 beat-to-beat;
13/14 pulse rate 8-beat; 15 SpO2 8-beat; 16 SpO2 8-beat display; 19/20 pulse rate display; 21/22 pulse rate 8-beat
display; 4, 11, 12, 17, 18, 23 and 24 reserved.  The "recording" values change to the missing marker as soon as
the finger is removed; the "display" values hold the last reading for about 10 s.

Verified against open implementations that agree with each other (the Nonin OEM specifications themselves were not
retrievable here): DF2 -- pez-globo/pufferfish-software (Apache-2.0) Driver/Serial/Nonin FrameReceiver.cpp,
PacketReceiver.cpp, Types.h and its TestPacketReceiver.cpp packet; com.iiitd.sensor.pulseox.NoninFrame (start byte,
SNSD/SNSA/SYNC bits, checksum); com.btranz NoninPulseOxiPacket ("Serial Data Format 2, page 15 of the Onyx II 9560
OEM specification": the packet indices).  DF7 -- uk.ac.ox.ibme.nonin / org.apache.cordova.nonin NoninFrame and
NoninPacket (npm cordova-plugin-nonin-bluetooth, "implements Serial Data Format #7": frame layout, checksum, SYNC,
packet indices, HR masks, 127/511 markers, timer, STAT2) and mdpnp/mdpnp org.mdpnp.devices.nonin.pulseox Packet and
Status (status bits, checksum, STAT2 SmartPoint/low-battery bits).

`NoninDecoder.feed` turns bytes into packets and never raises: bytes outside a valid frame, a frame with a bad
checksum or wrong fixed bits, and the frames of a packet cut short are discarded runs reported as `FramingError`
(see `drivers.serial.framing` for the contract).  `encode_packet` builds packets for simulators, and `NoninMapper`
turns packets into events.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from drivers.serial.framing import DiscardLog, FramerStats, FramingError, FramingFault
from gateway.core.model import (
    CONDITIONS_KEY,
    ConnectionState,
    DeviceStatus,
    Event,
    Observation,
    WaveformChunk,
    new_id,
    now_ns,
)
from gateway.core.nomenclature import quantity

__all__ = [
    "DataFormat",
    "Status",
    "Perfusion",
    "perfusion",
    "Extra",
    "FRAME_LENGTH",
    "FRAMES_PER_PACKET",
    "FRAME_RATE_HZ",
    "SPO2_MISSING",
    "PULSE_RATE_MISSING",
    "STAT2_LOW_BATTERY",
    "STAT2_SMARTPOINT",
    "NoninPacket",
    "NoninStats",
    "NoninDecoder",
    "encode_frame",
    "encode_packet",
    "CONDITION_PRIORITY",
    "packet_errors",
    "NoninMapper",
]

FRAME_LENGTH: Final = 5
FRAMES_PER_PACKET: Final = 25
FRAME_RATE_HZ: Final = 75.0
SPO2_MISSING: Final = 127
PULSE_RATE_MISSING: Final = 511
STAT2_LOW_BATTERY: Final = 0x01
STAT2_SMARTPOINT: Final = 0x20
_DF2_START: Final = 0x01


class DataFormat(enum.IntEnum):
    DF2 = 2  # 0x01, STATUS, PLETH (8 bit), EXTRA, CHK
    DF7 = 7  # STATUS, PLETH MSB, PLETH LSB, EXTRA, CHK


class Status(enum.IntFlag):
    SYNC = 0x01
    GPRF = 0x02
    RPRF = 0x04
    SNSA = 0x08
    OOT = 0x10
    ARTF = 0x20
    SNSD = 0x40
    ALWAYS_SET = 0x80


class Perfusion(enum.Enum):
    """Pulse signal quality, present only during a pulse."""

    NONE = "none"
    GREEN = "green"  # high
    YELLOW = "yellow"  # medium
    RED = "red"  # low


def perfusion(status: int) -> Perfusion:
    bits = status & (Status.GPRF | Status.RPRF)
    if bits == Status.GPRF | Status.RPRF:
        return Perfusion.YELLOW
    if bits == Status.RPRF:
        return Perfusion.RED
    return Perfusion.GREEN if bits else Perfusion.NONE


class Extra(enum.IntEnum):
    """Frame index (0-based) within a packet of each EXTRA byte."""

    HR_MSB = 0
    HR_LSB = 1
    SPO2 = 2
    FIRMWARE_REVISION = 3
    TIMER_MSB = 5
    TIMER_LSB = 6
    STAT2 = 7
    SPO2_DISPLAY = 8
    SPO2_FAST = 9
    SPO2_BEAT_TO_BEAT = 10
    HR_8BEAT_MSB = 13
    HR_8BEAT_LSB = 14
    SPO2_8BEAT = 15
    SPO2_8BEAT_DISPLAY = 16
    HR_DISPLAY_MSB = 19
    HR_DISPLAY_LSB = 20
    HR_8BEAT_DISPLAY_MSB = 21
    HR_8BEAT_DISPLAY_LSB = 22


_PULSE_RATE_PAIRS: Final = (
    (Extra.HR_MSB, Extra.HR_LSB),
    (Extra.HR_8BEAT_MSB, Extra.HR_8BEAT_LSB),
    (Extra.HR_DISPLAY_MSB, Extra.HR_DISPLAY_LSB),
    (Extra.HR_8BEAT_DISPLAY_MSB, Extra.HR_8BEAT_DISPLAY_LSB),
)
_SPO2_BYTES: Final = (
    Extra.SPO2,
    Extra.SPO2_DISPLAY,
    Extra.SPO2_FAST,
    Extra.SPO2_BEAT_TO_BEAT,
    Extra.SPO2_8BEAT,
    Extra.SPO2_8BEAT_DISPLAY,
)


@dataclass(frozen=True, slots=True)
class NoninPacket:
    """One 25-frame packet: raw status, pleth and extra bytes by frame, and the values they encode."""

    data_format: DataFormat
    status: tuple[int, ...]
    pleth: tuple[int, ...]
    extra: tuple[int, ...]

    def _pulse_rate(self, msb: Extra, lsb: Extra) -> int | None:
        value = (self.extra[msb] & 0x03) << 7 | self.extra[lsb] & 0x7F
        return None if value == PULSE_RATE_MISSING else value

    def _spo2(self, index: Extra) -> int | None:
        value = self.extra[index] & 0x7F
        return None if value == SPO2_MISSING or value > 100 else value

    @property
    def pulse_rate(self) -> int | None:
        """4-beat average pulse rate (/min), recording format; None when the device marks it missing."""
        return self._pulse_rate(Extra.HR_MSB, Extra.HR_LSB)

    @property
    def spo2(self) -> int | None:
        """4-beat average SpO2 (%), recording format; None when missing (127) or not a percentage."""
        return self._spo2(Extra.SPO2)

    @property
    def pulse_rate_8beat(self) -> int | None:
        return self._pulse_rate(Extra.HR_8BEAT_MSB, Extra.HR_8BEAT_LSB)

    @property
    def pulse_rate_display(self) -> int | None:
        return self._pulse_rate(Extra.HR_DISPLAY_MSB, Extra.HR_DISPLAY_LSB)

    @property
    def pulse_rate_8beat_display(self) -> int | None:
        return self._pulse_rate(Extra.HR_8BEAT_DISPLAY_MSB, Extra.HR_8BEAT_DISPLAY_LSB)

    @property
    def spo2_display(self) -> int | None:
        return self._spo2(Extra.SPO2_DISPLAY)

    @property
    def spo2_fast(self) -> int | None:
        return self._spo2(Extra.SPO2_FAST)

    @property
    def spo2_beat_to_beat(self) -> int | None:
        return self._spo2(Extra.SPO2_BEAT_TO_BEAT)

    @property
    def spo2_8beat(self) -> int | None:
        return self._spo2(Extra.SPO2_8BEAT)

    @property
    def spo2_8beat_display(self) -> int | None:
        return self._spo2(Extra.SPO2_8BEAT_DISPLAY)

    @property
    def firmware_revision(self) -> int:
        return self.extra[Extra.FIRMWARE_REVISION]

    @property
    def timer(self) -> int:
        """The device's 14-bit packet timer (3 Hz)."""
        return (self.extra[Extra.TIMER_MSB] & 0x7F) << 7 | self.extra[Extra.TIMER_LSB] & 0x7F

    @property
    def low_battery(self) -> bool:
        return bool(self.extra[Extra.STAT2] & STAT2_LOW_BATTERY)

    @property
    def smartpoint(self) -> bool:
        return bool(self.extra[Extra.STAT2] & STAT2_SMARTPOINT)

    def any_status(self, flag: Status) -> bool:
        """Whether any frame of the packet has the status flag set."""
        if flag is Status.SNSD and self.data_format is not DataFormat.DF2:
            return False
        return any(s & flag for s in self.status)

    @property
    def sensor_disconnected(self) -> bool:
        return self.any_status(Status.SNSD)

    @property
    def sensor_alarm(self) -> bool:
        return self.any_status(Status.SNSA)

    @property
    def out_of_track(self) -> bool:
        return self.any_status(Status.OOT)

    @property
    def artifact(self) -> bool:
        return self.any_status(Status.ARTF)


# --------------------------------------------------------------------------------------------------- encode


def encode_frame(status: int, pleth: int, extra: int, data_format: DataFormat = DataFormat.DF2) -> bytes:
    """One frame; bit 7 of the status is set as the format requires.  ValueError for out-of-range fields."""
    pleth_max = 0xFF if data_format is DataFormat.DF2 else 0xFFFF
    if not (0 <= status <= 0xFF and 0 <= extra <= 0xFF and 0 <= pleth <= pleth_max):
        raise ValueError("status and extra are bytes; pleth is 8-bit (DF2) or 16-bit (DF7)")
    status |= Status.ALWAYS_SET
    head = (
        bytes([_DF2_START, status, pleth, extra])
        if data_format is DataFormat.DF2
        else bytes([status, pleth >> 8, pleth & 0xFF, extra])
    )
    return head + bytes([sum(head) & 0xFF])


def encode_packet(
    pleth: Sequence[int],
    *,
    spo2: int | None,
    pulse_rate: int | None,
    data_format: DataFormat = DataFormat.DF2,
    status: int | Sequence[int] = 0,
    firmware_revision: int = 0,
    timer: int = 0,
    stat2: int = 0,
) -> bytes:
    """A 25-frame packet for simulators: every SpO2 and pulse-rate variant carries the given value (None: missing).

    ``status`` holds flags for every frame, or one status byte per frame; SYNC is set on the first frame only.
    """
    if len(pleth) != FRAMES_PER_PACKET:
        raise ValueError("a packet holds 25 pleth samples")
    statuses = [status] * FRAMES_PER_PACKET if isinstance(status, int) else list(status)
    if len(statuses) != FRAMES_PER_PACKET:
        raise ValueError("a packet holds 25 status bytes")
    if pulse_rate is not None and not 0 <= pulse_rate < PULSE_RATE_MISSING:
        raise ValueError("pulse rate must be in [0, 510]")
    if spo2 is not None and not 0 <= spo2 <= 100:
        raise ValueError("SpO2 must be in [0, 100]")
    rate = PULSE_RATE_MISSING if pulse_rate is None else pulse_rate
    saturation = SPO2_MISSING if spo2 is None else spo2
    if not (0 <= timer < 1 << 14 and 0 <= firmware_revision <= 0xFF and 0 <= stat2 <= 0x7F):
        raise ValueError("timer is 14-bit, firmware revision a byte, STAT2 7-bit")
    extra = [0] * FRAMES_PER_PACKET
    for msb, lsb in _PULSE_RATE_PAIRS:
        extra[msb], extra[lsb] = rate >> 7, rate & 0x7F
    for index in _SPO2_BYTES:
        extra[index] = saturation
    extra[Extra.FIRMWARE_REVISION] = firmware_revision
    extra[Extra.TIMER_MSB], extra[Extra.TIMER_LSB] = timer >> 7, timer & 0x7F
    extra[Extra.STAT2] = stat2
    frames = bytearray()
    for k in range(FRAMES_PER_PACKET):
        flags = statuses[k] & ~Status.SYNC | (Status.SYNC if k == 0 else 0)
        frames += encode_frame(flags, pleth[k], extra[k], data_format)
    return bytes(frames)


# --------------------------------------------------------------------------------------------------- decode


@dataclass
class NoninStats(FramerStats):
    """FramerStats (frames counts valid frames) plus complete packets."""

    packets: int = 0


class NoninDecoder:
    """Incremental decoder: bytes in, complete packets out; discarded runs are reported, never raised.

    Frame sync is found by sliding one byte at a time until a frame's fixed bits and checksum are right; a frame
    that then fails its checks loses sync (LOST_SYNC or CHECKSUM) and the packet in progress (INCOMPLETE_PACKET).
    Frames before the first SYNC frame are NO_PACKET_START.  At most 4 bytes and one partial packet are held.
    """

    def __init__(self, data_format: DataFormat = DataFormat.DF2, *, run_cap: int = 4096) -> None:
        self.data_format = data_format
        self.stats = NoninStats()
        self._log = DiscardLog(f"nonin_df{int(data_format)}", self.stats, run_cap)
        self._window = bytearray()  # fewer than FRAME_LENGTH bytes not yet examined
        self._synced = False
        self._hunt_fault = FramingFault.GARBAGE
        self._frames: list[bytes] = []
        self._packet_offset = 0
        self._pos = 0

    @property
    def buffered(self) -> int:
        return len(self._window) + FRAME_LENGTH * len(self._frames)

    def take_problems(self) -> list[FramingError]:
        return self._log.take()

    def feed(self, data: bytes) -> list[NoninPacket]:
        buf = bytes(self._window) + bytes(data)
        base = self._pos - len(self._window)
        self._pos += len(data)
        packets: list[NoninPacket] = []
        i = 0
        while len(buf) - i >= FRAME_LENGTH:
            frame = buf[i : i + FRAME_LENGTH]
            fault = self._fault(frame)
            if fault is None:
                self._synced = True
                self._hunt_fault = FramingFault.GARBAGE
                self._accept(frame, base + i, packets)
                i += FRAME_LENGTH
                continue
            if self._synced:
                self._drop_packet()
                self._synced = False
                self._hunt_fault = fault  # the bytes skipped while hunting belong to this loss of sync
            self._log.discard(self._hunt_fault, base + i, 1)
            i += 1
        self._window = bytearray(buf[i:])
        return packets

    def flush(self) -> list[FramingError]:
        """End of stream: the partial packet and any unexamined bytes are discarded and reported."""
        self._drop_packet()
        fault = FramingFault.TRUNCATED if self._synced else self._hunt_fault
        self._log.discard(fault, self._pos - len(self._window), len(self._window))
        self._window.clear()
        self._synced = False
        self._log.end_run()
        return self.take_problems()

    def _fault(self, frame: bytes) -> FramingFault | None:
        if self.data_format is DataFormat.DF2:
            fixed = frame[0] == _DF2_START and bool(frame[1] & Status.ALWAYS_SET)
        else:
            fixed = bool(frame[0] & Status.ALWAYS_SET)
        if not fixed:
            return FramingFault.LOST_SYNC
        if sum(frame[:4]) & 0xFF != frame[4]:
            return FramingFault.CHECKSUM
        return None

    def _accept(self, frame: bytes, offset: int, packets: list[NoninPacket]) -> None:
        self.stats.frames += 1
        status = frame[1] if self.data_format is DataFormat.DF2 else frame[0]
        if status & Status.SYNC:
            self._drop_packet()
            self._packet_offset = offset
        elif not self._frames:
            self._log.discard(FramingFault.NO_PACKET_START, offset, FRAME_LENGTH)
            return
        self._frames.append(frame)
        if len(self._frames) == FRAMES_PER_PACKET:
            packets.append(self._packet())
            self._frames = []
            self.stats.packets += 1
            self._log.end_run()

    def _packet(self) -> NoninPacket:
        if self.data_format is DataFormat.DF2:
            status = tuple(f[1] for f in self._frames)
            pleth = tuple(f[2] for f in self._frames)
        else:
            status = tuple(f[0] for f in self._frames)
            pleth = tuple(f[1] << 8 | f[2] for f in self._frames)
        return NoninPacket(self.data_format, status, pleth, tuple(f[3] for f in self._frames))

    def _drop_packet(self) -> None:
        if self._frames:
            self._log.discard(FramingFault.INCOMPLETE_PACKET, self._packet_offset, FRAME_LENGTH * len(self._frames))
            self._frames = []


# ---------------------------------------------------------------------------------------------------- events


# Technical-alarm priority of each condition (IEC 60601-1-8 levels): no usable signal is medium, a degraded
# signal or a low battery is low.
CONDITION_PRIORITY: Final = {
    "sensor_disconnected": "medium",
    "sensor_alarm": "medium",
    "out_of_track": "low",
    "low_battery": "low",
}


def packet_errors(packet: NoninPacket) -> tuple[str, ...]:
    """The technical conditions a packet reports, as stable machine names (for DeviceStatus.errors)."""
    conditions = (
        ("sensor_disconnected", packet.sensor_disconnected),
        ("sensor_alarm", packet.sensor_alarm),
        ("out_of_track", packet.out_of_track),
        ("low_battery", packet.low_battery),
    )
    return tuple(name for name, present in conditions if present)


class NoninMapper:
    """Turns one oximeter's packets into events; remembers the last reported status so only changes are sent.

    Per packet: a DeviceStatus when the set of errors changes (and for the first packet), marked as listing every
    condition present (`CONDITIONS_KEY` = complete, so each is a technical alarm while listed); unless the sensor is
    disconnected or in alarm (its data "unusable for analysis"), a 25-sample pleth WaveformChunk and the 4-beat
    SpO2 and pulse rate as Observations, each only when not marked missing.  The device has no clock and its
    timer wraps, so events get fresh ids and no device time.
    """

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._last_errors: tuple[str, ...] | None = None

    def events(self, packet: NoninPacket) -> list[Event]:
        import numpy as np  # noqa: PLC0415 - numpy only where a waveform passes (a lean daemon)

        events: list[Event] = []
        received = now_ns()
        errors = packet_errors(packet)
        if errors != self._last_errors:
            self._last_errors = errors
            detail = {
                CONDITIONS_KEY: "complete",
                "data_format": str(int(packet.data_format)),
                "firmware_revision": str(packet.firmware_revision),
            }
            detail.update({f"priority.{name}": CONDITION_PRIORITY[name] for name in errors})
            events.append(
                DeviceStatus(
                    new_id(), self.device_id, ConnectionState.CONNECTED, received, errors=errors, detail=detail
                )
            )
        if packet.sensor_disconnected or packet.sensor_alarm:
            return events
        pleth = quantity("MDC_PULS_OXIM_PLETH")
        samples = np.asarray(packet.pleth, dtype=np.int32)
        events.append(WaveformChunk(new_id(), self.device_id, pleth, samples, FRAME_RATE_HZ, 1.0, 0.0, None, received))
        for ref, value in (("MDC_PULS_OXIM_SAT_O2", packet.spo2), ("MDC_PULS_OXIM_PULS_RATE", packet.pulse_rate)):
            if value is not None:
                events.append(Observation(new_id(), self.device_id, quantity(ref), float(value), None, received))
        return events
