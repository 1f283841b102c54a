"""`iomt-gateway hil`: what a hardware-in-the-loop rig runs.

- `hil run SCENARIO... [--junit FILE] [--json]`: play scenario files (hil/scenarios/, docs/HIL.md) against a
  gateway, in-process or already running on another box, and report one testcase per expectation.
- `hil sim ble|hl7|nonin|modbus|dicom ...`: one simulator as a standalone program, on virtual or real
  transports (a real HCI controller, a real serial port, a real Modbus address).

A rig: it depends on the product, never the reverse; the command reaches the CLI as an `iomt_gateway.commands`
entry point (pyproject.toml).  Each part is imported only when its subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib

# subcommand -> module with `add_arguments(parser)` and `run(args) -> int`
SUBCOMMANDS = {
    "run": ("hil.runner.cli", "play scenario files against a gateway; JUnit and JSON reports"),
    "sim": ("hil.standalone", "run one simulator (ble, hl7, nonin, modbus, dicom) as a standalone program"),
}


class HilCommand:
    help = "hardware-in-the-loop: scenarios (hil run) and standalone simulators (hil sim); see docs/HIL.md"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="hil_command", required=True, metavar="{run,sim}")
        for name, (module, text) in SUBCOMMANDS.items():
            sub_parser = sub.add_parser(name, help=text, description=text)
            importlib.import_module(module).add_arguments(sub_parser)

    def run(self, args: argparse.Namespace) -> int:
        module, _ = SUBCOMMANDS[args.hil_command]
        code: int = importlib.import_module(module).run(args)
        return code


COMMAND = HilCommand()
