"""`iomt-gateway bench footprint`: what the daemon costs a small gateway box while it waits for data.

The daemon runs as systemd runs it (`iomt-gateway run` in its own process, readiness over $NOTIFY_SOCKET) with
one BLE device, one Modbus device and the uplink:

- the BLE device has a Bluetooth address, so it goes through bleak on this machine's stack, exactly as on a
  gateway; with no adapter or the device out of range the session retries with backoff, which is the idle case;
- the Modbus device is a simulated medication fridge on a loopback pymodbus server, polled once a second;
- the uplink connects to a loopback broker (Mosquitto when installed, else the demo's embedded broker).

Figures: `startup_s` (process start to READY=1), `idle_rss_mb` (resident size after it settled), `idle_cpu_pct`
(CPU time over a quiet window, in % of one core), `imported_modules` (how much the daemon loaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

from gateway.storage.keys import generate_key_file
from hil.bench.sync import LoopbackBroker
from hil.modbus_sim import MedicationFridge, ModbusSimServer

TARGETS = {"idle_rss_mb": 80.0, "startup_s": 2.0, "idle_cpu_pct": 1.0}
SETTLE_S = 5.0  # after READY: connections made, first polls done, start-up garbage collected
WINDOW_S = 10.0  # the quiet window the CPU figure is measured over
READY_TIMEOUT_S = 60.0


def _config(folder: Path, broker_port: int, modbus_port: int) -> dict[str, Any]:
    return {
        "gateway": {"id": "footprint-gw", "state_dir": str(folder / "state")},
        "logging": {"level": "warning"},
        "buffer": {"key_file": str(folder / "buffer.key")},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "protocol": "3.1.1", "allow_plaintext_loopback": True},
        "admin": {"socket": str(folder / "admin.sock")},
        "devices": [
            {"id": "pulse-ox-1", "transport": "ble", "profile": "pulse_oximeter", "address": "C0:FF:EE:00:00:01"},
            {
                "id": "med-fridge-1",
                "transport": "modbus",
                "profile": "medication_fridge",
                "address": f"tcp://127.0.0.1:{modbus_port}",
                "poll_interval_s": 1.0,
            },
        ],
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _wait_ready(notify: socket.socket, process: asyncio.subprocess.Process) -> bool:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and process.returncode is None:
        try:
            datagram = await asyncio.wait_for(loop.sock_recv(notify, 4096), timeout=0.5)
        except TimeoutError:
            continue
        if b"READY=1" in datagram.split(b"\n"):
            return True
    return False


async def bench_footprint(**_: Any) -> dict[str, Any]:
    if not sys.platform.startswith("linux"):
        return {"error": "the footprint bench reads /proc: Linux only"}
    with tempfile.TemporaryDirectory(prefix="iomt-bench-footprint-") as tmp:
        folder = Path(tmp)
        (folder / "state").mkdir()
        generate_key_file(folder / "buffer.key")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(folder / "notify.sock"))
        notify.setblocking(False)
        broker = LoopbackBroker(folder)
        await broker.start()
        try:
            return await _measure(folder, broker, notify)
        finally:
            await broker.stop()
            notify.close()


async def _measure(folder: Path, broker: LoopbackBroker, notify: socket.socket) -> dict[str, Any]:
    async with ModbusSimServer([MedicationFridge(unit_id=1)]) as modbus:
        config = folder / "gateway.toml"
        config.write_text(tomli_w.dumps(_config(folder, broker.port, modbus.port)))
        env = dict(os.environ, NOTIFY_SOCKET=str(folder / "notify.sock"))
        log = (folder / "daemon.log").open("wb")
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(config),
            "--safety-file",
            str(folder / "no-safety.toml"),  # the built-in ceilings, whatever this machine's /etc holds
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        try:
            if not await _wait_ready(notify, process):
                last = (folder / "daemon.log").read_text("utf-8", "replace").strip().splitlines()[-1:]
                return {"error": f"the daemon did not report READY: {' '.join(last)}", "exit_code": process.returncode}
            startup_s = time.monotonic() - started
            await asyncio.sleep(SETTLE_S)
            cpu_before, t_before = _cpu_s(process.pid), time.monotonic()
            await asyncio.sleep(WINDOW_S)
            idle_cpu_pct = 100 * (_cpu_s(process.pid) - cpu_before) / (time.monotonic() - t_before)
            idle_rss_mb = _rss_mb(process.pid)
            maps = await asyncio.to_thread(Path(f"/proc/{process.pid}/maps").read_text)
            modules = len({line.split()[-1] for line in maps.splitlines() if ".so" in line})
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=30)
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            log.close()
    figures: dict[str, Any] = {
        "startup_s": round(startup_s, 2),
        "idle_rss_mb": round(idle_rss_mb, 1),
        "idle_cpu_pct": round(idle_cpu_pct, 2),
        "mapped_shared_objects": modules,
        "broker": broker.name,
        "devices": 2,
        "exit_code": process.returncode,
    }
    figures["targets_met"] = all(figures[key] <= limit for key, limit in TARGETS.items()) and figures["exit_code"] == 0
    return figures
