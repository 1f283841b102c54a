"""`iomt-gateway bench NAME`: capacity measurements a technician can run on a new gateway box.

Each benchmark returns a flat dict of figures whose key names carry their units (`samples_per_s`, `rss_mb`),
and the targets it is judged against.  `--json` prints exactly that dict as one JSON object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

Figures = dict[str, Any]
Benchmark = Callable[..., Coroutine[Any, Any, Figures]]


def _registry() -> dict[str, Benchmark]:
    from gateway.benchmarks.alarms import bench_alarms  # noqa: PLC0415 - import only what is run
    from gateway.benchmarks.buffer import bench_buffer  # noqa: PLC0415
    from gateway.benchmarks.hl7 import bench_hl7  # noqa: PLC0415
    from gateway.benchmarks.modbus import bench_modbus  # noqa: PLC0415
    from gateway.benchmarks.pipeline import bench_pipeline  # noqa: PLC0415
    from gateway.benchmarks.qrs import bench_qrs  # noqa: PLC0415
    from gateway.benchmarks.soak import bench_soak  # noqa: PLC0415
    from gateway.benchmarks.sync import bench_sync  # noqa: PLC0415

    return {
        "alarms": bench_alarms,
        "buffer": bench_buffer,
        "sync": bench_sync,
        "qrs": bench_qrs,
        "pipeline": bench_pipeline,
        "modbus": bench_modbus,
        "hl7": bench_hl7,
        "soak": bench_soak,
    }


def run_benchmark(name: str, *, as_json: bool, **options: Any) -> int:
    registry = _registry()
    if name not in registry:
        print(f"iomt-gateway: no benchmark {name!r}; choose from {', '.join(sorted(registry))}")  # noqa: T201
        return 2
    figures: Figures = asyncio.run(registry[name](**options))
    failed = "error" in figures
    if as_json:
        print(json.dumps(figures, indent=2))  # noqa: T201
    else:
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")  # noqa: T201
    return 1 if failed else 0  # a missing or unreadable input is a failed run, not a result
