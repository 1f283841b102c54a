"""`hil sim hl7`: a bedside monitor sending IHE PCD-01 ORU^R01 over MLLP, as a TCP client or on a serial line.

The monitor sends a message every `--interval` seconds and waits for its ACK (original acknowledgement mode, one
message in flight): an ACK that does not come within `--ack-timeout` is waited for again after sending the
message once more, up to `--retries` times.  Over TCP it reconnects when the gateway closes the connection or goes
away (the message in flight is sent again on the new connection); the first connection must succeed within
`--connect-timeout`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hil.standalone.options import add_fault_options, add_serial_options, faults, serial_config

if TYPE_CHECKING:
    from hil.rig import ByteStream, MllpAddress, SerialPortConfig
    from hil.serial_sim import Faults, Hl7Monitor, OutgoingMessage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="HOST:PORT", help="the gateway's MLLP listener (TCP)")
    where.add_argument("--port", metavar="PATH", help="a serial port (/dev/ttyUSB0) or pyserial URL")
    where.add_argument("--pty", action="store_true", help="a new pty, its path printed (the gateway opens it)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between messages (1)")
    parser.add_argument("--ack-timeout", type=float, default=5.0, metavar="S", help="wait for each ACK (5 s)")
    parser.add_argument("--retries", type=int, default=2, help="sends again of a message without ACK (default 2)")
    tcp = parser.add_argument_group("TCP")
    tcp.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="first connection (10 s)")
    tcp.add_argument("--tls-ca", metavar="FILE", help="MLLP over TLS: the CA that verifies the gateway")
    tcp.add_argument("--tls-cert", metavar="FILE", help="client certificate, if the listener asks for one")
    tcp.add_argument("--tls-key", metavar="FILE", help="its private key")
    add_serial_options(parser, baudrate=9600, parity="N")
    add_fault_options(parser)


class Hl7Simulator:
    name = "hl7"

    def __init__(
        self,
        target: MllpAddress | SerialPortConfig,
        faults: Faults,
        *,
        interval_s: float,
        ack_timeout_s: float,
        retries: int,
    ) -> None:
        from hil.rig import MllpAddress  # noqa: PLC0415
        from hil.serial_sim import Hl7Monitor  # noqa: PLC0415

        self.target = target
        self.tcp = isinstance(target, MllpAddress)
        self.where = target.where if isinstance(target, MllpAddress) else (target.path or "pty")
        self.monitor: Hl7Monitor = Hl7Monitor(interval_s=interval_s, faults=faults, record_sent=False)
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.transmissions = 0
        self.acks: collections.Counter[str] = collections.Counter()  # MSA-1 code -> count
        self.ack_timeouts = 0
        self.unacknowledged = 0
        self.stray_acks = 0
        self.connections = 0
        self._in_flight: OutgoingMessage | None = None
        self._tries = 0
        self._waiting: dict[str, asyncio.Future[str]] = {}

    async def run(self, announce: Callable[[str], None]) -> None:
        from gateway.core.errors import TransportError  # noqa: PLC0415
        from gateway.core.logs import get_logger  # noqa: PLC0415
        from gateway.core.reconnect import ReconnectPolicy  # noqa: PLC0415
        from hil.rig import MllpAddress, open_mllp, open_serial  # noqa: PLC0415

        if not isinstance(self.target, MllpAddress):
            async with open_serial(self.target) as port:
                self.where = port.where
                self.connections = 1
                kind = "new pty" if self.target.path is None else "serial port"
                announce(
                    f"PCD-01 over MLLP on {kind} {port.where} ({port.settings}), a message every "
                    f"{self.monitor.interval_s:g} s"
                )
                announce(f'gateway device: address = "{port.where}", profile = "hl7_pcd01"')
                await self._session(port)
            return
        log = get_logger(__name__)
        loop = asyncio.get_running_loop()
        policy = ReconnectPolicy(initial_s=0.25, max_s=5.0)
        first_deadline = loop.time() + self.target.connect_timeout_s
        while True:
            try:
                async with open_mllp(self.target) as connection:
                    self.connections += 1
                    if policy.succeeded():
                        log.info("reconnected to the gateway's MLLP listener")
                    if self.connections == 1:
                        announce(
                            f"PCD-01 over MLLP to {connection.where}, a message every {self.monitor.interval_s:g} s"
                        )
                    await self._session(connection)
            except TransportError as err:
                now = loop.time()
                if not self.connections and now >= first_deadline:
                    raise  # never reached the gateway: a wrong address, or nothing listening there
                delay = policy.failed()
                if self.connections and policy.first_failure:
                    log.warning("MLLP connection lost; reconnecting", reason=err.message)
                await asyncio.sleep(delay if self.connections else min(delay, first_deadline - now))

    async def _session(self, stream: ByteStream) -> None:
        """Send and wait for ACKs until the stream ends (a TransportError) or the run is cancelled."""
        reading = asyncio.create_task(self._read_acks(stream), name="hil-sim-hl7-acks")
        sending = asyncio.create_task(self._send_loop(stream), name="hil-sim-hl7-send")
        try:
            done, _ = await asyncio.wait({reading, sending}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the reader's end of stream, or a write that failed, as a TransportError
        finally:
            for task in (reading, sending):
                task.cancel()
            for task in (reading, sending):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for waiter in self._waiting.values():
                waiter.cancel()
            self._waiting.clear()

    async def _read_acks(self, stream: ByteStream) -> None:
        from drivers.serial.framing import MllpFramer  # noqa: PLC0415
        from gateway.core.errors import TransportError  # noqa: PLC0415
        from hil.serial_sim import parse_ack  # noqa: PLC0415

        framer = MllpFramer()
        while True:
            try:
                data = await stream.reader.read(4096)
            except OSError as err:
                raise TransportError(f"read from {stream.where} failed", where=stream.where) from err
            if not data:
                raise TransportError(f"{stream.where} closed the connection", where=stream.where)
            for frame in framer.feed(data):
                answer = parse_ack(frame)
                waiter = self._waiting.pop(answer[0], None) if answer is not None else None
                if answer is None or waiter is None:
                    self.stray_acks += 1  # not an ACK, or one for a message no longer waited for
                elif not waiter.done():
                    waiter.set_result(answer[1])

    async def _send_loop(self, stream: ByteStream) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if self._in_flight is None:
                due = max(due + self.monitor.interval_s, loop.time())  # behind after waiting for ACKs: no burst
                await asyncio.sleep(due - loop.time())
                if self.monitor.faults.silent:
                    continue
                self._in_flight, self._tries = self.monitor.next_frame(), 0
            message = self._in_flight
            waiter = loop.create_future()
            self._waiting[message.control_id] = waiter
            # A message sent again goes out whole: only its first transmission carries the injected fault.
            await stream.write(message.data if self._tries == 0 else message.frame)
            self.transmissions += 1
            try:
                async with asyncio.timeout(self.ack_timeout_s):
                    code = await waiter
            except TimeoutError:
                self._waiting.pop(message.control_id, None)
                self.ack_timeouts += 1
                self._tries += 1
                if self._tries > self.retries:
                    self.unacknowledged += 1
                    self._in_flight = None
                continue
            self.acks[code] += 1
            self._in_flight = None

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.where,
            "transport": "tcp" if self.tcp else "serial",
            "messages": self.monitor.messages,
            "transmissions": self.transmissions,
            "acks": dict(sorted(self.acks.items())),
            "acks_received": sum(self.acks.values()),
            "ack_timeouts": self.ack_timeouts,
            "unacknowledged": self.unacknowledged + (1 if self._in_flight is not None else 0),
            "stray_acks": self.stray_acks,
            "connections": self.connections,
            "source": self.monitor.source,
        }

    def failure(self) -> str | None:
        return None


def build(args: argparse.Namespace) -> Hl7Simulator:
    from gateway.core.errors import ConfigError  # noqa: PLC0415
    from hil.rig import MllpAddress  # noqa: PLC0415

    if not args.interval > 0 or not args.ack_timeout > 0 or args.retries < 0:
        raise ConfigError("--interval and --ack-timeout must be more than 0, --retries 0 or more")
    target: MllpAddress | SerialPortConfig
    if args.connect:
        target = MllpAddress.parse(args.connect, connect_timeout_s=args.connect_timeout, **_tls(args))
    else:
        target = serial_config(args, None if args.pty else args.port)
    return Hl7Simulator(
        target, faults(args), interval_s=args.interval, ack_timeout_s=args.ack_timeout, retries=args.retries
    )


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path  # noqa: PLC0415

    files = {"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    return {key: Path(value) for key, value in files.items() if value}
