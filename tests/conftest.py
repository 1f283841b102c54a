"""Shared fixtures: a real Mosquitto broker on a loopback port, gateway configs, and leak checks."""

from __future__ import annotations

import asyncio
import getpass
import io
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.config import Config, parse_config
from gateway.core.logs import configure_logging
from gateway.storage.keys import generate_key_file

REPO = Path(__file__).resolve().parent.parent


# -- leak checks ----------------------------------------------------------------------------------------------
def _socket_fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(f"{fd}:{target}")
    return out


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks, threads or sockets behind."""
    threads_before = set(threading.enumerate())
    sockets_before = _socket_fds()
    yield
    current = asyncio.current_task()
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in pending:
        task.cancel()
    # The loop's default executor (the MQTT client connects there) belongs to the loop, not to the test.
    await asyncio.get_running_loop().shutdown_default_executor()
    assert not pending, f"test leaked tasks: {[t.get_name() for t in pending]}"
    deadline = time.monotonic() + 3.0
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        sockets = _socket_fds() - sockets_before
        if (not threads and not sockets) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert not threads, f"test leaked threads: {[t.name for t in threads]}"
    assert not sockets, f"test leaked {len(sockets)} socket(s)"


# -- a real broker --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Mosquitto:
    """A Mosquitto process on a loopback port; `stop()`/`start()` simulate broker outages."""

    conf: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto is not installed: run ./scripts/test (it installs it) or apt-get install mosquitto")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def start_mosquitto(folder: Path, extra_conf: str = "", *, persistence: bool = False) -> Mosquitto:
    """A fresh Mosquitto on a free loopback port; `extra_conf` adds lines (ACLs, TLS listeners).

    With `persistence`, sessions and queued messages survive a stop/start, as on a production broker.
    """
    port = free_port()
    conf = folder / "mosquitto.conf"
    persist = f"persistence true\npersistence_location {folder}/\n" if persistence else "persistence false\n"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n{persist}"
        f"max_queued_messages 100000\nlog_dest stderr\n"
        # Run as the test's user: as root, Mosquitto would drop to "mosquitto", who cannot read our temp files.
        f"user {getpass.getuser()}\n{extra_conf}"
    )
    broker = Mosquitto(conf, port, folder / "mosquitto.log")
    broker.start()
    _STARTED.append(broker)
    return broker


_STARTED: list[Mosquitto] = []


@pytest.fixture(autouse=True)
def no_stray_brokers() -> Iterator[None]:
    """Stop any broker a test started and did not stop (e.g. it failed before its own cleanup)."""
    before = len(_STARTED)
    yield
    for broker in _STARTED[before:]:
        broker.stop()
    del _STARTED[before:]


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


# -- gateway configuration ------------------------------------------------------------------------------------
DEVICES = [
    {"id": "ecg-1", "transport": "ble", "profile": "ecg_patch", "address": "sim:ecg-1", "patient": "pt-ZX81Q"},
    {"id": "ox-1", "transport": "ble", "profile": "pulse_oximeter", "address": "sim:ox-1", "patient": "pt-ZX81Q"},
    {"id": "cgm-1", "transport": "ble", "profile": "cgm", "address": "sim:cgm-1", "patient": "pt-ZX81Q"},
    {"id": "pump-1", "transport": "ble", "profile": "insulin_pump", "address": "sim:pump-1", "patient": "pt-ZX81Q"},
]


def config_dict(state_dir: Path, port: int, **overrides: Any) -> dict[str, Any]:
    key = state_dir / "buffer.key"
    if not key.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        generate_key_file(key)
    data: dict[str, Any] = {
        "gateway": {"id": "test-gw", "state_dir": str(state_dir)},
        "buffer": {"key_file": str(key), "flush_interval_ms": 50},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "allow_plaintext_loopback": True,
            "reconnect_initial_s": 0.1,
            "reconnect_max_s": 1.0,
            "client_id": f"gw-{state_dir.name}",
        },
        "supervisor": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
        "alarms": {
            "limits": [
                {"quantity": "MDC_PULS_OXIM_SAT_O2", "low": 90, "priority": "high", "delay_s": 1, "hysteresis": 2},
            ]
        },
        "devices": [dict(d) for d in DEVICES],
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return data


def make_config(state_dir: Path, port: int, **overrides: Any) -> Config:
    return parse_config(config_dict(state_dir, port, **overrides))


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """The gateway's log lines (JSON, debug level) in a string, for tests that check what is and is not logged."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()
