"""The Modbus benchmark: one Modbus TCP device, 100 registers, polled by the gateway, delivered to the receiver.

The device is a pymodbus server (hil.modbus_sim, its own process) with the `bench_100_registers` profile; the
gateway is `iomt-gateway run` (its own process, so its CPU time is measured alone); the broker is Mosquitto
when installed (else the embedded amqtt) and the reference receiver counts what arrives.

- values_per_s: values the receiver got per second while the device was polled every 5 ms (load phase).
- requests_per_poll: Modbus requests one poll takes (the 100 registers coalesce into one read).
- cpu_s_per_1000_values: the gateway process's CPU seconds per 1000 delivered values (load phase);
  values_per_cpu_s is the same figure inverted.
- idle_cpu_pct: the gateway process's CPU (percent of one core) while connected and polling the device at the
  default once a second, with the uplink up and no backlog.
Targets: >= 10,000 values/s delivered, >= 50,000 values per CPU-second, idle < 1 % of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

from cloud_sync.receiver import ReferenceReceiver
from drivers.modbus.plan import plan_reads
from drivers.modbus.profile import load_profile
from gateway.storage.keys import generate_key_file
from hil.bench.sync import LoopbackBroker
from hil.demo import free_loopback_port, wait_for_port

PROFILE = "bench_100_registers"
DEVICE = "bank-1"
LOAD_INTERVAL_S = 0.005
IDLE_INTERVAL_S = 1.0
TARGETS = {"values_per_s": (">=", 10_000), "values_per_cpu_s": (">=", 50_000), "idle_cpu_pct": ("<", 1.0)}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _config(folder: Path, broker: LoopbackBroker, modbus_port: int, interval_s: float) -> Path:
    state = folder / f"state-{interval_s}"
    state.mkdir()
    key = state / "buffer.key"
    generate_key_file(key)
    config = {
        "gateway": {"id": "bench-modbus", "state_dir": str(state)},
        "buffer": {"key_file": str(key)},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "allow_plaintext_loopback": True,
            "client_id": f"bench-modbus-{interval_s}",
            "protocol": "5" if broker.name == "mosquitto" else "3.1.1",
        },
        "devices": [
            {
                "id": DEVICE,
                "transport": "modbus",
                "profile": PROFILE,
                "address": f"tcp://127.0.0.1:{modbus_port}",
                "poll_interval_s": interval_s,
                "timeout_s": 0.5,
            }
        ],
    }
    path = folder / f"gateway-{interval_s}.toml"
    path.write_text(tomli_w.dumps(config))
    return path


async def _phase(config: Path, receiver: ReferenceReceiver, seconds: float) -> tuple[int, float, float]:
    """Run the gateway; after it delivers, measure (values delivered, gateway CPU s, wall s) over `seconds`."""
    gateway = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        start = receiver.stats.unique[DEVICE]
        deadline = time.monotonic() + 30
        while receiver.stats.unique[DEVICE] <= start + 100:
            if time.monotonic() > deadline or gateway.returncode is not None:
                raise RuntimeError("the gateway delivered nothing; see `iomt-gateway run` with that config")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # steady state
        values0, cpu0, wall0 = receiver.stats.unique[DEVICE], _cpu_s(gateway.pid), time.monotonic()
        await asyncio.sleep(seconds)
        values1, cpu1, wall1 = receiver.stats.unique[DEVICE], _cpu_s(gateway.pid), time.monotonic()
        return values1 - values0, cpu1 - cpu0, wall1 - wall0
    finally:
        with contextlib.suppress(ProcessLookupError):
            gateway.terminate()
        await gateway.wait()


async def bench_modbus(seconds: float | None = None, **_: Any) -> dict[str, Any]:
    seconds = 10.0 if seconds is None else seconds
    with tempfile.TemporaryDirectory(prefix="iomt-bench-modbus-") as tmp:
        folder = Path(tmp)
        broker = LoopbackBroker(folder)
        await broker.start()
        modbus_port = free_loopback_port()
        device = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hil.modbus_sim",
            "--profile",
            PROFILE,
            "--port",
            str(modbus_port),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        receiver = ReferenceReceiver(
            "127.0.0.1",
            broker.port,
            client_id="bench-modbus-receiver",
            protocol="5" if broker.name == "mosquitto" else "3.1.1",
        )
        receiver_task = asyncio.create_task(receiver.run())
        try:
            await wait_for_port(modbus_port, "the simulated Modbus device")
            await asyncio.wait_for(receiver.subscribed.wait(), 10)
            load = await _phase(_config(folder, broker, modbus_port, LOAD_INTERVAL_S), receiver, seconds)
            idle = await _phase(_config(folder, broker, modbus_port, IDLE_INTERVAL_S), receiver, seconds)
        finally:
            receiver_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver_task
            device.terminate()
            await device.wait()
            await broker.stop()
    values, cpu_s, wall_s = load
    requests = len(plan_reads(load_profile(PROFILE)))
    return {
        "values_per_s": round(values / wall_s),
        "requests_per_poll": requests,
        "cpu_s_per_1000_values": round(cpu_s / values * 1000, 4) if values else None,
        "values_per_cpu_s": round(values / cpu_s) if cpu_s else None,
        "idle_cpu_pct": round(idle[1] / idle[2] * 100, 2),
        "poll_interval_ms": LOAD_INTERVAL_S * 1000,
        "registers_per_poll": 100,
        "broker": broker.name,
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
    }
