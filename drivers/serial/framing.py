"""Incremental frame decoders for wired devices: MLLP, STX/ETX with a checksum, and ASCII lines.  Pure: no I/O.

Every framer has the same shape:

* ``feed(data) -> list[bytes]`` buffers a partial frame across calls and returns the payloads of the frames
  that ``data`` completes, in stream order.  It never raises on input, whatever the bytes.
* Bytes that can never belong to a frame are discarded: garbage before a start marker, a frame cut short by the
  next start marker, a frame longer than ``max_frame``, a bad terminator or checksum, a line that is not ASCII.
  Consecutive discarded bytes of one kind form a *run*, reported as one `FramingError` (an `InvalidFrame` whose
  fields are the fault, the stream offset and the length, never the bytes).  A run is reported when it ends: at
  the next complete frame, when a discard of another kind or at another place starts, when it reaches
  ``run_cap`` bytes, or at ``flush()``.  Those points depend on the stream content only, so the frames *and*
  the problems are the same however the stream is split into reads.
* ``take_problems()`` returns the runs reported since the last call: drain it after every ``feed`` and log each
  one.  ``stats`` counts frames, discarded bytes and discarded runs exactly even for a caller that never drains
  (at most `MAX_PENDING_PROBLEMS` runs wait; older ones are dropped and counted in ``stats.problems_dropped``).
* A frame in progress never holds more than ``max_frame`` payload bytes: past that it is discarded as OVERSIZE up
  to the next start marker (or line end), and the next frame decodes normally.  ``buffered`` is what is held.
* ``flush()`` ends the stream: a frame in progress is discarded as TRUNCATED and every pending run is reported.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.core.errors import InvalidFrame

__all__ = [
    "MAX_PENDING_PROBLEMS",
    "FramingFault",
    "FramingError",
    "FramerStats",
    "DiscardLog",
    "Framer",
    # MLLP
    "MLLP_START",
    "MLLP_END",
    "MllpFramer",
    "mllp_wrap",
    # STX/ETX
    "STX",
    "ETX",
    "Checksum",
    "ChecksumSpec",
    "compute_checksum",
    "StxEtxFramer",
    "stx_etx_wrap",
    # lines
    "LineEnding",
    "LineFramer",
    "line_wrap",
]

MAX_PENDING_PROBLEMS: Final = 1024

VT: Final = 0x0B
FS: Final = 0x1C
CR: Final = 0x0D
LF: Final = 0x0A
STX: Final = 0x02
ETX: Final = 0x03
MLLP_START: Final = bytes([VT])
MLLP_END: Final = bytes([FS, CR])


class FramingFault(enum.StrEnum):
    """Why a run of bytes was discarded."""

    GARBAGE = "garbage"  # bytes outside any frame (before a start marker)
    OVERSIZE = "oversize"  # a frame longer than max_frame, up to the next start marker or line end
    TRUNCATED = "truncated"  # a frame cut short by the next start marker, or by the end of the stream
    BAD_TERMINATOR = "bad_terminator"  # an end marker not followed by what the protocol requires
    CHECKSUM = "checksum"  # a complete frame whose checksum does not match
    NON_ASCII = "non_ascii"  # a line holding bytes other than printable ASCII and tab
    LOST_SYNC = "lost_sync"  # fixed-length frames: a frame whose fixed bits are wrong, until sync is found again
    INCOMPLETE_PACKET = "incomplete_packet"  # valid frames of a multi-frame packet that never completed
    NO_PACKET_START = "no_packet_start"  # valid frames before the first packet start was seen


class FramingError(InvalidFrame):
    """A discarded run of bytes: which framer, why, where in the stream and how long (never the bytes)."""

    def __init__(self, framer: str, fault: FramingFault, offset: int, length: int) -> None:
        super().__init__(
            f"{framer} discarded a byte run", framer=framer, fault=str(fault), offset=offset, length=length
        )
        self.framer = framer
        self.fault = fault
        self.offset = offset
        self.length = length


@dataclass
class FramerStats:
    """Exact counts since the framer was created; discarded bytes are counted as they are discarded."""

    frames: int = 0
    discarded_bytes: int = 0
    discarded_runs: int = 0  # runs reported so far (a run still growing is counted when it ends)
    problems_dropped: int = 0  # reported runs dropped because the caller did not drain take_problems()


class DiscardLog:
    """Coalesces discarded bytes into runs and keeps the reported runs until the caller takes them."""

    def __init__(self, source: str, stats: FramerStats, run_cap: int) -> None:
        if run_cap < 1:
            raise ValueError("run_cap must be positive")
        self.source = source
        self.stats = stats
        self.run_cap = run_cap
        self._fault: FramingFault | None = None
        self._offset = 0
        self._length = 0
        self._problems: list[FramingError] = []

    def discard(self, fault: FramingFault, offset: int, length: int) -> None:
        """Discard ``length`` bytes from stream ``offset``; contiguous bytes of one fault extend the open run."""
        if length <= 0:
            return
        self.stats.discarded_bytes += length
        if self._fault is not fault or self._offset + self._length != offset:
            self.end_run()
            self._fault, self._offset = fault, offset
        while length:
            # Split at exact multiples of run_cap so the report points do not depend on how reads were cut.
            take = min(length, self.run_cap - self._length)
            self._length += take
            length -= take
            if self._length == self.run_cap:
                self.end_run()
                self._fault, self._offset = fault, offset + take
                offset += take

    def end_run(self) -> None:
        if self._fault is not None and self._length:
            self.stats.discarded_runs += 1
            if len(self._problems) >= MAX_PENDING_PROBLEMS:
                del self._problems[0]
                self.stats.problems_dropped += 1
            self._problems.append(FramingError(self.source, self._fault, self._offset, self._length))
        self._fault, self._length = None, 0

    def take(self) -> list[FramingError]:
        problems, self._problems = self._problems, []
        return problems


class Framer(Protocol):
    """The shape every framer here has (see the module docstring for the contract)."""

    max_frame: int
    stats: FramerStats

    def feed(self, data: bytes) -> list[bytes]: ...

    def take_problems(self) -> list[FramingError]: ...

    def flush(self) -> list[FramingError]: ...

    @property
    def buffered(self) -> int: ...


class _Framer:
    """Shared state: the frame in progress, the stream position and the discard log."""

    name = "framer"

    def __init__(self, max_frame: int, run_cap: int | None) -> None:
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self.stats = FramerStats()
        self._log = DiscardLog(self.name, self.stats, run_cap or max(4 * max_frame, 4096))
        self._buf = bytearray()
        self._pos = 0  # stream offset of the next byte fed

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_problems(self) -> list[FramingError]:
        return self._log.take()

    _hunt_fault = FramingFault.GARBAGE

    def _begin(self, offset: int) -> None:
        raise NotImplementedError

    def _hunt(self, data: bytes, i: int, base: int, marker: int) -> int:
        """Skip to the next start marker, discarding what lies before it as one run; the index after the marker
        (the frame has begun), or -1 when the data holds none."""
        start = data.find(marker, i)
        stop = len(data) if start < 0 else start
        self._log.discard(self._hunt_fault, base + i, stop - i)
        if start < 0:
            return -1
        self._begin(base + start)
        return start + 1

    def _emit(self, frames: list[bytes]) -> None:
        """The frame in progress is complete: hand its payload on and close any discarded run before it."""
        frames.append(bytes(self._buf))
        self._buf.clear()
        self.stats.frames += 1
        self._log.end_run()


# ------------------------------------------------------------------------------------------------------ MLLP

_MLLP_SPECIAL: Final = re.compile(b"[\x0b\x1c]")


def mllp_wrap(payload: bytes) -> bytes:
    """Frame an HL7 message for MLLP: <VT> payload <FS><CR>.  ValueError if the payload holds VT or FS."""
    if VT in payload or FS in payload:
        raise ValueError("an MLLP payload cannot contain VT (0x0B) or FS (0x1C)")
    return MLLP_START + payload + MLLP_END


class MllpFramer(_Framer):
    """HL7 minimal lower layer protocol: <VT 0x0B> payload <FS 0x1C><CR 0x0D>.

    The payload never holds VT or FS, so a VT inside a frame starts a new one (the cut frame is TRUNCATED), and an
    FS not followed by CR discards the frame (BAD_TERMINATOR; the byte after FS is examined as a possible VT).
    Discarded runs count every byte of the frame, its markers included.
    """

    name = "mllp"

    def __init__(self, max_frame: int = 1 << 20, *, run_cap: int | None = None) -> None:
        super().__init__(max_frame, run_cap)
        self._in_frame = False
        self._end_pending = False  # FS seen, CR must follow
        self._frame_offset = 0  # stream offset of the frame's VT
        self._hunt_fault = FramingFault.GARBAGE

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._in_frame + self._end_pending

    def feed(self, data: bytes) -> list[bytes]:
        data = bytes(data)
        base = self._pos
        self._pos += len(data)
        frames: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                i = self._hunt(data, i, base, VT)
                if i < 0:
                    break
            elif self._end_pending:
                self._end_pending = False
                if data[i] == CR:
                    self._in_frame = False
                    self._emit(frames)
                    i += 1
                else:
                    self._abandon(FramingFault.BAD_TERMINATOR, len(self._buf) + 2)  # VT + payload + FS
            else:
                special = _MLLP_SPECIAL.search(data, i)
                stop = n if special is None else special.start()
                if len(self._buf) + stop - i > self.max_frame:
                    self._log.discard(FramingFault.OVERSIZE, self._frame_offset, len(self._buf) + 1 + stop - i)
                    self._buf.clear()
                    self._in_frame = False
                    self._hunt_fault = FramingFault.OVERSIZE  # the rest of the long frame belongs to this run
                    i = stop
                    continue
                self._buf += data[i:stop]
                if special is None:
                    break
                if data[stop] == VT:
                    self._log.discard(FramingFault.TRUNCATED, self._frame_offset, len(self._buf) + 1)
                    self._begin(base + stop)
                else:
                    self._end_pending = True
                i = stop + 1
        return frames

    def flush(self) -> list[FramingError]:
        if self._in_frame:
            self._abandon(FramingFault.TRUNCATED, len(self._buf) + 1 + self._end_pending)
            self._end_pending = False
        self._log.end_run()
        return self.take_problems()

    def _begin(self, offset: int) -> None:
        self._buf.clear()
        self._in_frame = True
        self._frame_offset = offset
        self._hunt_fault = FramingFault.GARBAGE

    def _abandon(self, fault: FramingFault, length: int) -> None:
        self._log.discard(fault, self._frame_offset, length)
        self._buf.clear()
        self._in_frame = False
        self._hunt_fault = FramingFault.GARBAGE


# --------------------------------------------------------------------------------------------------- STX/ETX


class Checksum(enum.Enum):
    """Block check over the payload (and ETX when `ChecksumSpec.include_etx`)."""

    NONE = "none"
    XOR = "xor"  # XOR of the bytes (the "LRC" of many instrument protocols)
    SUM8 = "sum8"  # sum of the bytes modulo 256
    LRC = "lrc"  # two's complement of the modulo-256 sum (ISO 1155): sum of bytes + LRC == 0 mod 256


def compute_checksum(data: bytes, algorithm: Checksum) -> int:
    """The 8-bit block check of ``data``; 0 for Checksum.NONE."""
    if algorithm is Checksum.XOR:
        value = 0
        for byte in data:
            value ^= byte
        return value
    if algorithm is Checksum.SUM8:
        return sum(data) & 0xFF
    if algorithm is Checksum.LRC:
        return -sum(data) & 0xFF
    return 0


@dataclass(frozen=True, slots=True)
class ChecksumSpec:
    """Which check follows ETX: the algorithm, whether ETX is covered, and one raw byte or two ASCII hex digits."""

    algorithm: Checksum = Checksum.XOR
    include_etx: bool = False
    ascii_hex: bool = False

    @property
    def length(self) -> int:
        if self.algorithm is Checksum.NONE:
            return 0
        return 2 if self.ascii_hex else 1

    def encode(self, payload: bytes) -> bytes:
        value = compute_checksum(payload + bytes([ETX]) if self.include_etx else payload, self.algorithm)
        if self.algorithm is Checksum.NONE:
            return b""
        return f"{value:02X}".encode("ascii") if self.ascii_hex else bytes([value])

    def verify(self, payload: bytes, received: bytes) -> bool:
        if self.ascii_hex:
            # Hex digits in either case; anything else (even what int() would accept, like "+F") is a mismatch.
            return bool(re.fullmatch(b"[0-9A-Fa-f]{2}", received)) and received.upper() == self.encode(payload)
        return received == self.encode(payload)


def stx_etx_wrap(payload: bytes, checksum: ChecksumSpec = ChecksumSpec()) -> bytes:
    """Frame a payload: <STX> payload <ETX> check.  ValueError if the payload holds STX or ETX (no escaping)."""
    if STX in payload or ETX in payload:
        raise ValueError("an STX/ETX payload cannot contain STX (0x02) or ETX (0x03)")
    return bytes([STX]) + payload + bytes([ETX]) + checksum.encode(payload)


_STX_ETX_SPECIAL: Final = re.compile(b"[\x02\x03]")


class StxEtxFramer(_Framer):
    """<STX 0x02> payload <ETX 0x03> followed by a configurable check (`ChecksumSpec`); the payload is returned.

    The payload never holds STX or ETX: an STX inside a frame starts a new one (the cut frame is TRUNCATED).  The
    check bytes after ETX may take any value; when they do not match, STX..ETX is discarded (CHECKSUM) and the check
    bytes themselves are examined again as a possible start, so a frame that lost its check byte does not take the
    next frame's STX with it.
    """

    name = "stx_etx"

    def __init__(
        self, checksum: ChecksumSpec = ChecksumSpec(), max_frame: int = 4096, *, run_cap: int | None = None
    ) -> None:
        super().__init__(max_frame, run_cap)
        self.checksum = checksum
        self._in_frame = False
        self._after_etx = False  # ETX seen, collecting the check bytes
        self._check = bytearray()
        self._check_offset = 0
        self._frame_offset = 0
        self._hunt_fault = FramingFault.GARBAGE

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._check) + self._in_frame + self._after_etx

    def feed(self, data: bytes) -> list[bytes]:
        data = bytes(data)
        base = self._pos
        self._pos += len(data)
        frames: list[bytes] = []
        self._process(data, base, frames)
        return frames

    def flush(self) -> list[FramingError]:
        if self._in_frame:
            length = len(self._buf) + 1 + (1 + len(self._check) if self._after_etx else 0)
            self._log.discard(FramingFault.TRUNCATED, self._frame_offset, length)
            self._reset()
        self._log.end_run()
        return self.take_problems()

    def _process(self, data: bytes, base: int, frames: list[bytes]) -> None:
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                i = self._hunt(data, i, base, STX)
                if i < 0:
                    return
            elif self._after_etx:
                take = min(self.checksum.length - len(self._check), n - i)
                if not self._check:
                    self._check_offset = base + i
                self._check += data[i : i + take]
                i += take
                if len(self._check) == self.checksum.length:
                    self._complete(frames)
            else:
                special = _STX_ETX_SPECIAL.search(data, i)
                stop = n if special is None else special.start()
                if len(self._buf) + stop - i > self.max_frame:
                    self._log.discard(FramingFault.OVERSIZE, self._frame_offset, len(self._buf) + 1 + stop - i)
                    self._reset()
                    self._hunt_fault = FramingFault.OVERSIZE
                    i = stop
                    continue
                self._buf += data[i:stop]
                if special is None:
                    return
                i = stop + 1
                if data[stop] == STX:
                    self._log.discard(FramingFault.TRUNCATED, self._frame_offset, len(self._buf) + 1)
                    self._begin(base + stop)
                else:
                    self._after_etx = True
                    if self.checksum.length == 0:
                        self._complete(frames)

    def _complete(self, frames: list[bytes]) -> None:
        if self.checksum.verify(bytes(self._buf), bytes(self._check)):
            self._in_frame = self._after_etx = False
            self._check.clear()
            self._emit(frames)
            return
        check, check_offset = bytes(self._check), self._check_offset
        self._log.discard(FramingFault.CHECKSUM, self._frame_offset, len(self._buf) + 2)  # STX + payload + ETX
        self._reset()
        self._process(check, check_offset, frames)

    def _begin(self, offset: int) -> None:
        self._reset()
        self._in_frame = True
        self._frame_offset = offset

    def _reset(self) -> None:
        self._buf.clear()
        self._check.clear()
        self._in_frame = self._after_etx = False
        self._hunt_fault = FramingFault.GARBAGE


# ----------------------------------------------------------------------------------------------------- lines


class LineEnding(enum.Enum):
    """What ends a line.  ANY: CR, LF or CRLF (a CR directly followed by LF ends one line, not two)."""

    CR = "cr"
    LF = "lf"
    CRLF = "crlf"
    ANY = "any"


_LINE_SPECIAL: Final = {
    LineEnding.CR: re.compile(b"\r"),
    LineEnding.LF: re.compile(b"\n"),
    LineEnding.CRLF: re.compile(b"\r"),
    LineEnding.ANY: re.compile(b"[\r\n]"),
}
_NOT_ASCII: Final = re.compile(b"[^\t\x20-\x7e]")
_LINE_ENDING_BYTES: Final = {LineEnding.CR: b"\r", LineEnding.LF: b"\n", LineEnding.CRLF: b"\r\n"}


def line_wrap(line: bytes, ending: LineEnding = LineEnding.CRLF) -> bytes:
    """Terminate a line (ANY writes CRLF).  ValueError if the line holds CR or LF."""
    if b"\r" in line or b"\n" in line:
        raise ValueError("a line cannot contain CR or LF")
    return line + _LINE_ENDING_BYTES.get(ending, b"\r\n")


class LineFramer(_Framer):
    """ASCII lines; the returned payload excludes the terminator.  Empty lines are skipped (neither frame nor fault).

    With ``ascii_only`` a line holding anything but printable ASCII and tab is discarded as NON_ASCII.  A line
    longer than ``max_frame`` is discarded as OVERSIZE up to its terminator.  Discarded runs count line content
    only; terminators are framing.  In CRLF mode a CR not followed by LF is line content.
    """

    name = "line"

    def __init__(
        self,
        ending: LineEnding = LineEnding.ANY,
        max_frame: int = 1024,
        *,
        ascii_only: bool = True,
        run_cap: int | None = None,
    ) -> None:
        super().__init__(max_frame, run_cap)
        self.ending = ending
        self.ascii_only = ascii_only
        self._special = _LINE_SPECIAL[ending]
        self._line_offset = 0  # stream offset of the current line's first byte
        self._discarding = False  # the current line went over max_frame
        self._skip_lf = False  # ANY: a CR ended the last line, an LF right after it belongs to it
        self._cr_pending = False  # CRLF: a CR was seen, LF decides whether it ends the line

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._cr_pending

    def feed(self, data: bytes) -> list[bytes]:
        data = bytes(data)
        base = self._pos
        self._pos += len(data)
        frames: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if self._skip_lf:
                self._skip_lf = False
                if data[i] == LF:
                    self._line_offset = base + i + 1
                    i += 1
                    continue
            if self._cr_pending:
                self._cr_pending = False
                if data[i] == LF:
                    i += 1
                    self._end_line(frames, base + i)
                    continue
                self._take(b"\r", base + i - 1)  # a bare CR is content in CRLF mode
            special = self._special.search(data, i)
            stop = n if special is None else special.start()
            self._take(data[i:stop], base + i)
            if special is None:
                break
            i = stop + 1
            if self.ending is LineEnding.CRLF:
                self._cr_pending = True
                continue
            if self.ending is LineEnding.ANY and data[stop] == CR:
                self._skip_lf = True
            self._end_line(frames, base + i)
        return frames

    def flush(self) -> list[FramingError]:
        if self._cr_pending:
            self._take(b"\r", self._pos - 1)
            self._cr_pending = False
        if self._discarding:
            self._discarding = False
        elif self._buf:
            self._log.discard(FramingFault.TRUNCATED, self._line_offset, len(self._buf))
            self._buf.clear()
        self._log.end_run()
        return self.take_problems()

    def _take(self, content: bytes, offset: int) -> None:
        if not content:
            return
        if self._discarding:
            self._log.discard(FramingFault.OVERSIZE, offset, len(content))
        elif len(self._buf) + len(content) > self.max_frame:
            self._log.discard(FramingFault.OVERSIZE, self._line_offset, len(self._buf) + len(content))
            self._buf.clear()
            self._discarding = True
        else:
            self._buf += content

    def _end_line(self, frames: list[bytes], next_offset: int) -> None:
        if self._discarding:
            self._discarding = False
            self._log.end_run()
        elif self._buf:
            if self.ascii_only and _NOT_ASCII.search(self._buf):
                self._log.discard(FramingFault.NON_ASCII, self._line_offset, len(self._buf))
                self._buf.clear()
            else:
                self._emit(frames)
        self._line_offset = next_offset
