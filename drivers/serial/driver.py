"""The serial device driver: a byte stream in, a protocol codec, events out (and replies, such as HL7 ACKs, back).

Streams: a serial port or pty (`/dev/...`), pyserial URLs (`socket://HOST:PORT` for a serial-to-Ethernet
converter, `rfc2217://...`), both through pyserial-asyncio-fast; or `listen://HOST:PORT`, an MLLP listener for
monitors that connect to the gateway over TCP (HL7's usual direction).

Protocols: `hl7_pcd01` (HL7 v2 ORU^R01 per IHE PCD-01 in MLLP; every message gets its ACK: AA, AE or AR) and
`nonin_df2` / `nonin_df7` (Nonin oximeter serial data formats #2 / #7: pleth, SpO2, pulse rate, status).

Garbage, truncated frames and bad checksums cost only the bytes concerned: the framers resynchronise, every
discarded run is counted (`stats.invalid_frames`) and logged as one line per read with the counts (never the
bytes).  A stream that stays silent for `silent_link_timeout_s` is treated as lost and reopened by the
supervisor with backoff.  An ACK is written after the message's observations are in the gateway's pipeline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import serial_asyncio_fast

from drivers.base import EventSink, link_status, no_op
from drivers.serial import hl7
from drivers.serial.framing import FramingError, MllpFramer, mllp_wrap
from drivers.serial.listener import ListenerPolicy, Slot, Slots
from drivers.serial.nonin import DataFormat, NoninDecoder, NoninMapper
from gateway.core.errors import ConfigError, StorageError, TransportError
from gateway.core.logs import get_logger
from gateway.core.model import ConnectionState, Event
from gateway.core.stats import DriverStats

log = get_logger(__name__)

READ_SIZE = 4096
ACK_DURABLE_TIMEOUT_S = 10.0
MAX_HL7_MESSAGE = 1 << 20  # 1 MiB: far above any PCD-01 message, a hard cap on what one frame may buffer


class StreamCodec(Protocol):
    """Bytes of one stream in; events out, and bytes to write back (acknowledgements)."""

    messages: int  # complete messages accepted so far (a listener's idle timeout counts these, not bytes)

    def feed(self, data: bytes) -> tuple[list[Event], list[bytes]]: ...

    def take_problems(self) -> list[FramingError]: ...


_LOGGABLE_CODE = re.compile(r"^[0-9]{0,10}\^(MDC_[A-Z0-9_]{1,80})?$")  # an MDC code or reference id, nothing else
MAX_UNMAPPED_KINDS = 256  # distinct unmapped codes counted by name; more are counted together


class Hl7Codec:
    """HL7 v2 in MLLP: each message is parsed, mapped and answered with its ACK (in the same MLLP framing).

    Observations with codes the gateway does not map do not cost the message: the mapped ones are kept, the
    unmapped counted per code (`unmapped`) and logged once per code.
    """

    def __init__(
        self,
        device_id: str,
        unmapped_ack: str = "AA",
        unmapped: dict[str, int] | None = None,
        allowed_facilities: tuple[str, ...] = (),
    ) -> None:
        self.device_id = device_id
        self.messages = 0
        self.allowed_facilities = frozenset(allowed_facilities)
        self.framer = MllpFramer(MAX_HL7_MESSAGE)
        self.acks: dict[str, int] = {"AA": 0, "AE": 0, "AR": 0}
        self.unmapped: dict[str, int] = unmapped if unmapped is not None else {}  # shared across a device's streams
        self._unmapped_mode = "error" if unmapped_ack == "AE" else "accept"

    def feed(self, data: bytes) -> tuple[list[Event], list[bytes]]:
        events: list[Event] = []
        replies: list[bytes] = []
        for frame in self.framer.feed(data):
            result = hl7.assess(frame, unmapped=self._unmapped_mode, allowed_facilities=self.allowed_facilities)
            code = result.code.value
            if result.code is not hl7.AckCode.REJECT:
                self.messages += 1
            self.acks[code] = self.acks.get(code, 0) + 1
            self._count_unmapped(result.unmapped)
            if result.message is not None and result.keep:
                events.extend(hl7.observations(result.message, self.device_id))
            if code != "AA":
                log.warning("HL7 message not accepted", device_id=self.device_id, ack=code)
            replies.append(mllp_wrap(result.ack))
        return events, replies

    def _count_unmapped(self, codes: tuple[str, ...]) -> None:
        for raw in codes:
            name = raw if _LOGGABLE_CODE.match(raw) else "non-MDC code"
            if name not in self.unmapped and len(self.unmapped) >= MAX_UNMAPPED_KINDS:
                name = "other"
            if name not in self.unmapped:
                log.info(
                    "HL7 observation code not mapped; counted, not stored", device_id=self.device_id, quantity=name
                )
            self.unmapped[name] = self.unmapped.get(name, 0) + 1

    def take_problems(self) -> list[FramingError]:
        return self.framer.take_problems()


class NoninCodec:
    """A Nonin oximeter's serial data format (#2 or #7): packets to pleth, SpO2, pulse rate and status."""

    def __init__(self, device_id: str, data_format: DataFormat) -> None:
        self.decoder = NoninDecoder(data_format)
        self.mapper = NoninMapper(device_id)
        self.messages = 0

    def feed(self, data: bytes) -> tuple[list[Event], list[bytes]]:
        events: list[Event] = []
        for packet in self.decoder.feed(data):
            self.messages += 1
            events.extend(self.mapper.events(packet))
        return events, []

    def take_problems(self) -> list[FramingError]:
        return self.decoder.take_problems()


def make_codec(
    protocol: str,
    device_id: str,
    *,
    unmapped_ack: str = "AA",
    unmapped: dict[str, int] | None = None,
    allowed_facilities: tuple[str, ...] = (),
) -> StreamCodec:
    if protocol == "hl7_pcd01":
        return Hl7Codec(device_id, unmapped_ack, unmapped, allowed_facilities)
    if protocol == "nonin_df2":
        return NoninCodec(device_id, DataFormat.DF2)
    if protocol == "nonin_df7":
        return NoninCodec(device_id, DataFormat.DF7)
    raise ConfigError(f"serial protocol {protocol!r} is not supported")


class SerialDeviceDriver:
    """One serial (or stream-like) device, or one MLLP listener (see `drivers.serial.listener` for admission)."""

    def __init__(
        self,
        device_id: str,
        address: str,
        protocol: str,
        *,
        baudrate: int = 9600,
        silent_link_timeout_s: float = 30.0,
        policy: ListenerPolicy | None = None,
        allowed_facilities: tuple[str, ...] = (),
        unmapped_ack: str = "AA",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.device_id = device_id
        self.address = address
        self.protocol = protocol
        self.baudrate = baudrate
        self.silent_timeout_s = silent_link_timeout_s
        self.policy = policy or ListenerPolicy()
        self.allowed_facilities = allowed_facilities
        self.unmapped_ack = unmapped_ack
        self.ssl_context = ssl_context
        self.stats = DriverStats()
        self.on_healthy: Callable[[], None] = no_op  # set by whoever supervises this driver
        self.codecs: collections.deque[StreamCodec] = collections.deque(maxlen=16)  # the latest streams' codecs
        self.slots: Slots[asyncio.StreamWriter] = Slots(self.policy)
        self.port: int | None = None  # the listener's bound port, once listening
        make_codec(protocol, device_id)  # fail at build time, not at the first byte

    @property
    def command_target(self) -> None:
        """A stream device takes no commands."""
        return None

    async def run(self, sink: EventSink) -> None:
        sink.emit_nowait(link_status(self.device_id, ConnectionState.CONNECTING))
        reason = "link_lost"
        try:
            if self.address.startswith("listen://"):
                await self._listen(sink)
            else:
                reader, writer = await self._open()
                try:
                    await sink.emit(link_status(self.device_id, ConnectionState.CONNECTED))
                    log.info("device connected", device_id=self.device_id, protocol=self.protocol)
                    await self._pump(reader, writer, sink)
                finally:
                    writer.close()
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        finally:
            sink.emit_nowait(link_status(self.device_id, ConnectionState.DISCONNECTED, detail={"reason": reason}))

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            async with asyncio.timeout(10):
                return await serial_asyncio_fast.open_serial_connection(url=self.address, baudrate=self.baudrate)
        except (OSError, TimeoutError, ValueError) as err:
            raise TransportError("serial port open failed", error=type(err).__name__) from err

    async def _listen(self, sink: EventSink) -> None:
        url = urlsplit(self.address)
        loop = asyncio.get_running_loop()
        slots = self.slots = Slots[asyncio.StreamWriter](self.policy)
        tasks: set[asyncio.Task[None]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            peer = writer.get_extra_info("peername")
            source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            admission = slots.admit(source, writer, loop.time())
            if admission.slot is None or task is None:
                log.warning("HL7 sender refused", device_id=self.device_id, reason=admission.refused)
                writer.transport.abort()
                return
            if admission.evict is not None:
                log.warning("HL7 connection replaced by a newer one", device_id=self.device_id, reason="stale")
                admission.evict.handle.transport.abort()  # its pump ends with "stream closed"
            tasks.add(task)
            log.info("HL7 sender connected", device_id=self.device_id)
            await sink.emit(link_status(self.device_id, ConnectionState.CONNECTED))
            try:
                await self._pump(reader, writer, sink, slot=admission.slot)
            except asyncio.CancelledError:
                # The listener stopping (below) cancels its connections and awaits them.  This task is asyncio's
                # (start_server's), whose done-callback on Python 3.11 calls task.exception(), which raises for a
                # cancelled task, so the loop logs an error for every connection still open at a stop: end normally.
                return
            except TransportError as err:
                log.warning("HL7 sender disconnected", device_id=self.device_id, reason=err.message)
                slots.release(admission.slot)
                if not slots.held:  # the last sender is gone: the monitor is not being heard
                    sink.emit_nowait(
                        link_status(self.device_id, ConnectionState.DISCONNECTED, detail={"reason": "link_lost"})
                    )
            finally:
                slots.release(admission.slot)
                tasks.discard(task)
                writer.close()

        try:
            tls: dict[str, Any] = {"ssl": self.ssl_context, "ssl_handshake_timeout": 10.0} if self.ssl_context else {}
            server = await asyncio.start_server(serve, url.hostname, url.port, **tls)
        except OSError as err:
            raise TransportError("cannot listen", error=type(err).__name__) from err
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            async with server:
                await server.serve_forever()
        finally:
            for task in list(tasks):
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sink: EventSink,
        slot: Slot[asyncio.StreamWriter] | None = None,
    ) -> None:
        """Read, decode, emit, acknowledge.  On a listener's connection (`slot`), a connection that completes no
        message for the idle timeout is closed, however many bytes trickle in."""
        codec = make_codec(
            self.protocol,
            self.device_id,
            unmapped_ack=self.unmapped_ack,
            unmapped=self.stats.unmapped_codes,
            allowed_facilities=self.allowed_facilities,
        )
        self.codecs.append(codec)
        loop = asyncio.get_running_loop()
        while True:
            wait = self.silent_timeout_s
            if slot is not None:
                wait = min(wait, slot.last_message + self.policy.idle_timeout_s - loop.time())
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), max(0.0, wait))
            except TimeoutError:
                if slot is not None and wait < self.silent_timeout_s:
                    raise TransportError("idle: no message", interval_s=self.policy.idle_timeout_s) from None
                raise TransportError("link silent", interval_s=self.silent_timeout_s) from None
            except OSError as err:
                raise TransportError("read failed", error=type(err).__name__) from err
            if not data:
                raise TransportError("stream closed by the device")
            messages = codec.messages
            events, replies = codec.feed(data)
            if slot is not None and codec.messages > messages:
                self.slots.heard(slot, loop.time())
            self.stats.notifications += 1
            # An acknowledgement promises the data is kept: it is written only once the events are committed.
            when_durable = getattr(sink, "when_durable", None)
            waiters = [when_durable(e.id) for e in events] if replies and when_durable is not None else []
            await self._emit_all(sink, events)
            if waiters:
                try:
                    async with asyncio.timeout(ACK_DURABLE_TIMEOUT_S):
                        await asyncio.gather(*waiters)
                except (TimeoutError, StorageError):
                    raise TransportError("not durable in time: no acknowledgement sent") from None
                finally:
                    for waiter in waiters:
                        waiter.cancel()
            self._report(codec.take_problems())
            if events:
                self.on_healthy()
            for reply in replies:
                writer.write(reply)
            if replies:
                try:
                    await writer.drain()
                except OSError as err:
                    raise TransportError("write failed", error=type(err).__name__) from err

    @staticmethod
    async def _emit_all(sink: EventSink, events: Sequence[Event]) -> None:
        for event in events:
            await sink.emit(event)

    def _report(self, problems: list[FramingError]) -> None:
        if not problems:
            return
        self.stats.invalid_frames += len(problems)
        faults = sorted({str(p.fault) for p in problems})
        log.warning(
            "bytes discarded",
            device_id=self.device_id,
            runs=len(problems),
            bytes=sum(p.length for p in problems),
            faults=",".join(faults),
            total_runs=self.stats.invalid_frames,
        )
