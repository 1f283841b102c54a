"""`iomt-gateway bench NAME`: capacity measurements a technician can run on a new gateway box.

A rig: the load generators and simulators depend on the product, never the reverse; the command reaches the CLI
as an `iomt_gateway.commands` entry point (pyproject.toml).

Each benchmark returns a flat dict of figures whose key names carry their units (`samples_per_s`, `rss_mb`),
and the targets it is judged against.  `--json` prints exactly that dict as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

Figures = dict[str, Any]
Benchmark = Callable[..., Coroutine[Any, Any, Figures]]


# name -> (module, function): a bench imports only its own module, so one bench's dependencies never load another.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "alarms": ("hil.bench.alarms", "bench_alarms"),
    "bridge": ("hil.bench.bridge", "bench_bridge"),
    "buffer": ("hil.bench.buffer", "bench_buffer"),
    "sync": ("hil.bench.sync", "bench_sync"),
    "qrs": ("hil.bench.qrs", "bench_qrs"),
    "pipeline": ("hil.bench.pipeline", "bench_pipeline"),
    "modbus": ("hil.bench.modbus", "bench_modbus"),
    "hl7": ("hil.bench.hl7", "bench_hl7"),
    "soak": ("hil.bench.soak", "bench_soak"),
    "footprint": ("hil.bench.footprint", "bench_footprint"),
}


def _load(name: str) -> Benchmark:
    module, function = BENCHMARKS[name]
    bench: Benchmark = getattr(importlib.import_module(module), function)
    return bench


def run_benchmark(name: str, *, as_json: bool, **options: Any) -> int:
    if name not in BENCHMARKS:
        print(f"iomt-gateway: no benchmark {name!r}; choose from {', '.join(sorted(BENCHMARKS))}")  # noqa: T201
        return 2
    try:
        figures: Figures = asyncio.run(_load(name)(**options))
    except OSError as err:  # the bench's folder missing, unwritable or full ($IOMT_BENCH_DIR or the temp folder)
        where = f" ({err.filename})" if err.filename else ""
        print(f"iomt-gateway: bench {name}: {err.strerror or err}{where}", file=sys.stderr)  # noqa: T201
        return 1
    failed = "error" in figures
    if as_json:
        print(json.dumps(figures, indent=2))  # noqa: T201
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")  # noqa: T201
    return 1 if failed else 0  # a missing or unreadable input is a failed run, not a result


class BenchCommand:
    help = "measure this box's capacity (see docs/BENCHMARKS.md)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="alarms, buffer, bridge, sync, qrs, pipeline, modbus, hl7, soak or footprint")
        parser.add_argument("--json", action="store_true", help="print one JSON object of figures")
        parser.add_argument("--record", type=Path, help="WFDB record (path without extension) where the bench uses one")
        parser.add_argument(
            "--records", type=Path, help="qrs bench: score every record with .atr labels in this folder"
        )
        parser.add_argument("--dataset", type=Path, help="alarms bench: Challenge-format records and their ALARMS file")
        parser.add_argument("--backlog-mb", type=int, default=1024, help="buffer bench: backlog size for the RSS check")
        parser.add_argument("--devices", type=int, default=50, help="sync bench: simulated devices")
        parser.add_argument("--seconds", type=float, help="modbus and hl7 benches: measuring window (default 10 and 5)")
        parser.add_argument("--backlog-s", type=int, default=3600, help="sync bench: seconds of backlog per device")
        parser.add_argument("--minutes", type=float, help="soak bench: how long to run (default 10)")
        parser.add_argument("--dicom-mb", type=int, help="soak bench: size of the large DICOM object (default 300)")
        parser.add_argument("--gateways", type=int, default=50, help="bridge bench: simulated gateways")
        parser.add_argument("--workers", type=int, default=2, help="bridge bench: FHIR bridge worker processes")

    def run(self, args: argparse.Namespace) -> int:
        return run_benchmark(
            args.name,
            as_json=args.json,
            record=args.record,
            records=args.records,
            dataset=args.dataset,
            backlog_mb=args.backlog_mb,
            devices=args.devices,
            backlog_s=args.backlog_s,
            seconds=args.seconds,
            minutes=args.minutes,
            dicom_mb=args.dicom_mb,
            gateways=args.gateways,
            workers=args.workers,
        )


COMMAND = BenchCommand()
