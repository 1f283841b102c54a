"""Crash-test child: ingests numerics through the production pipeline as fast as it can, reporting progress.

Run as `python -m tests.support.crash_ingest DB KEYFILE CYCLE`.  Value i of cycle c has the id stable_id("crash", c, i);
after every commit it prints `ACCEPTED <n>` (values 0..n-1 of this cycle are committed: one device, one lane,
and the pipeline keeps order).  The parent kills it with SIGKILL at a random instant and checks the database.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gateway.alarms import AlarmEngine
from gateway.buffer import Buffer
from gateway.config import AlarmsSection
from gateway.core.model import Observation, stable_id
from gateway.core.nomenclature import quantity
from gateway.core.stats import Metrics
from gateway.pipeline import Pipeline
from gateway.storage.keys import load_keyring

DEVICE = "crash-device"


def value_id(cycle: int, index: int) -> str:
    return stable_id("crash", cycle, index)


async def ingest(db: Path, key_file: Path, cycle: int) -> None:
    buffer = await Buffer.open(db, load_keyring(key_file))
    metrics = Metrics()
    pipeline = Pipeline(
        buffer,
        AlarmEngine(AlarmsSection()),
        metrics,
        gateway_id="crash",
        patients={},
        flush_interval_s=0.01,
        max_batch_items=256,
    )
    q = quantity("MDC_PULS_OXIM_SAT_O2")
    task = asyncio.create_task(pipeline.run())

    async def report() -> None:
        last = -1
        while True:
            await pipeline.stored.wait()
            pipeline.stored.clear()
            accepted = metrics.device(DEVICE).accepted
            if accepted != last:
                sys.stdout.write(f"ACCEPTED {accepted}\n")
                sys.stdout.flush()
                last = accepted

    background = (asyncio.create_task(report()), task)  # kept referenced until the parent's SIGKILL
    index = 0
    while background:
        await pipeline.emit(Observation(value_id(cycle, index), DEVICE, q, 90.0 + index % 10, index, index))
        index += 1
        if index % 1000 == 0:
            await asyncio.sleep(0)  # let the pipeline and the reporter run between bursts


if __name__ == "__main__":
    asyncio.run(ingest(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
