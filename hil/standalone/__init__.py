"""`iomt-gateway hil sim ble|hl7|nonin|modbus|dicom`: one simulator as a standalone program, for a rig's own hardware.

Each simulator opens its transport through hil.rig (a real HCI controller, a serial port or a new pty, a Modbus
address, an MLLP or DICOM peer), says on stderr where the gateway reaches it, and runs until Ctrl-C, SIGTERM or
`--duration S` (dicom: until its objects are sent, unless `--every S` repeats them).

Exit codes: 0 a normal stop (`--duration`, SIGTERM, everything sent), 1 a transport failure or a refused
transfer, 2 invalid options, 130 Ctrl-C.  `--json` prints one JSON object on stdout at exit, whatever the
outcome: what was sent (frames, notifications, messages, ACKs...), how the run `stopped`, and `error` when it
failed.  Status lines and logs go to stderr, so stdout holds that object alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

# simulator -> (module with `add_arguments(parser)` and `build(args) -> Simulator`, help)
SIMULATORS = {
    "ble": ("hil.standalone.ble", "BLE peripherals as GATT servers on real HCI controllers (bumble transports)"),
    "hl7": ("hil.standalone.hl7", "a bedside monitor sending IHE PCD-01 over MLLP, to an address or on a serial port"),
    "nonin": ("hil.standalone.nonin", "a Nonin oximeter (data format #2 or #7) on a serial port or a new pty"),
    "modbus": ("hil.standalone.modbus", "medication fridges as a Modbus TCP server or RTU units on a serial line"),
    "dicom": ("hil.standalone.dicom", "a modality sending generated or given DICOM objects to a Storage SCP"),
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's code for Ctrl-C
STOP_TIMEOUT_S = 15.0  # a simulator's orderly stop (links dropped, ports closed) takes far less


class Simulator(Protocol):
    """One standalone simulator: built from the command line, run until cancelled (or done), then summarised."""

    name: str

    async def run(self, announce: Callable[[str], None]) -> None:
        """Open the transport, `announce` where the gateway reaches it, and simulate until cancelled; return when
        there is nothing left to do (dicom); raise a GatewayError when the transport fails."""
        ...

    def summary(self) -> dict[str, Any]:
        """What was sent and received, JSON-ready."""
        ...

    def failure(self) -> str | None:
        """After a run that ended by itself or by a stop: why it counts as failed (e.g. objects refused), or None."""
        ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="simulator", required=True, metavar="{" + ",".join(SIMULATORS) + "}")
    for name, (module, text) in SIMULATORS.items():
        sim_parser = sub.add_parser(name, help=text, description=text)
        importlib.import_module(module).add_arguments(sim_parser)
        common = sim_parser.add_argument_group("run")
        common.add_argument("--duration", type=_positive, metavar="S", help="stop after S seconds (default: Ctrl-C)")
        common.add_argument("--json", action="store_true", help="print one JSON summary on stdout at exit")
        common.add_argument(
            "--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="stderr log level"
        )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def run(args: argparse.Namespace) -> int:
    from gateway.core.errors import ConfigError  # noqa: PLC0415 - the CLI imports what a command needs
    from gateway.core.logs import configure_logging  # noqa: PLC0415

    name: str = args.simulator
    configure_logging(args.log_level, "auto", stream=sys.stderr)
    outcome = Outcome(name, time.monotonic())
    simulator: Simulator | None = None
    try:
        simulator = importlib.import_module(SIMULATORS[name][0]).build(args)
        asyncio.run(_simulate(simulator, args.duration, outcome))
    except KeyboardInterrupt:  # before the loop's own handler was in place (while loading, starting)
        outcome.stopped = "interrupted"
    except ConfigError as err:
        outcome.fail(err.message, EXIT_CONFIG)
    return outcome.report(simulator, as_json=args.json)


class Outcome:
    """How a run ended, and its report."""

    def __init__(self, name: str, started: float) -> None:
        self.name = name
        self.started = started
        self.stopped = "finished"  # finished | duration | interrupted | terminated | failed
        self.error: str | None = None
        self.code = EXIT_OK

    def fail(self, message: str, code: int = EXIT_FAILURE) -> None:
        self.stopped, self.error, self.code = "failed", message, code

    def report(self, simulator: Simulator | None, *, as_json: bool) -> int:
        if simulator is not None and self.error is None and self.stopped != "interrupted":
            failure = simulator.failure()
            if failure is not None:
                self.fail(failure)
        summary: dict[str, Any] = {"simulator": self.name, "stopped": self.stopped}
        summary["elapsed_s"] = round(time.monotonic() - self.started, 3)
        if simulator is not None:
            summary |= simulator.summary()
        if self.stopped == "interrupted":
            self.code = EXIT_INTERRUPTED
        if self.error is not None:
            summary["error"] = self.error
            print(f"iomt-gateway hil sim {self.name}: error: {self.error}", file=sys.stderr, flush=True)  # noqa: T201
        if as_json:
            print(json.dumps(summary, indent=2), flush=True)  # noqa: T201 - the command's output
        else:
            print(_human(summary), flush=True)  # noqa: T201
        return self.code


def _human(summary: dict[str, Any]) -> str:
    lines = []
    for key, value in summary.items():
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        lines.append(f"{key}: {text}")
    return "\n".join(lines)


async def _simulate(simulator: Simulator, duration_s: float | None, outcome: Outcome) -> None:
    """Run until the simulator ends, fails, or a signal or the duration stops it; then an orderly stop."""
    from gateway.core.errors import ConfigError, GatewayError  # noqa: PLC0415
    from gateway.core.logs import get_logger  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            outcome.stopped = "interrupted" if signum == signal.SIGINT else "terminated"
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    def announce(text: str) -> None:
        print(f"iomt-gateway hil sim {simulator.name}: {text}", file=sys.stderr, flush=True)  # noqa: T201

    try:
        running = asyncio.create_task(simulator.run(announce), name=f"hil-sim-{simulator.name}")
        stopping = asyncio.create_task(stop.wait(), name="hil-sim-stop")
        done, _ = await asyncio.wait({running, stopping}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        if running not in done:
            if not stop.is_set():
                outcome.stopped = "duration"
            running.cancel()
        stopping.cancel()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                with contextlib.suppress(asyncio.CancelledError):
                    await running
                with contextlib.suppress(asyncio.CancelledError):
                    await stopping
        except ConfigError as err:
            outcome.fail(err.message, EXIT_CONFIG)
        except GatewayError as err:
            outcome.fail(err.message)
        except TimeoutError:
            outcome.fail(f"did not stop within {STOP_TIMEOUT_S:.0f} s")
        except Exception as err:  # noqa: BLE001 - a foreign error no adapter translated: one line; frames to the log
            get_logger(__name__).error("simulator crashed", exc_info=err)
            outcome.fail(f"crashed: {type(err).__name__}")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
