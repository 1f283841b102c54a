"""The daemon as systemd runs it: sd_notify READY/WATCHDOG/STATUS/STOPPING, and SIGTERM drains cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from cloud_sync.receiver import ReferenceReceiver
from gateway.buffer import Buffer
from gateway.core.model import Lane
from gateway.sdnotify import SystemdNotifier
from gateway.storage.keys import load_keyring
from tests.conftest import Mosquitto, config_dict
from tests.support.configs import to_toml


def test_notifier_is_silent_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.ready("x")  # no socket, no error
    notifier.close()


async def test_sigterm_drains_to_buffer_and_exits_cleanly_with_sd_notify(tmp_path: Path, mosquitto: Mosquitto) -> None:
    data = config_dict(tmp_path / "state", mosquitto.port)
    data["logging"] = {"level": "info", "format": "json"}
    data["supervisor"]["watchdog_interval_s"] = 0.2
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(to_toml(data))

    receiver = ReferenceReceiver("127.0.0.1", mosquitto.port, client_id=f"lifecycle-{time.time_ns()}")
    receiver_task = asyncio.create_task(receiver.run())
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(config_path),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    loop = asyncio.get_running_loop()
    messages: list[str] = []
    try:
        await asyncio.wait_for(receiver.subscribed.wait(), 10)

        async def wait_message(prefix: str, timeout: float = 20.0) -> None:
            async with asyncio.timeout(timeout):
                while not any(m.startswith(prefix) for m in messages):
                    data = await loop.sock_recv(sock, 4096)
                    messages.extend(data.decode().splitlines())

        await wait_message("READY=1")
        await wait_message("WATCHDOG=1")
        await wait_message("STATUS=sync online")
        await asyncio.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        await wait_message("STOPPING=1")
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        sock.close()
        receiver_task.cancel()
        await asyncio.gather(receiver_task, return_exceptions=True)

    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    stopped = next(line for line in lines if line["event"] == "gateway stopped")
    received, accepted = stopped["count"], stopped["items"]
    assert received > 0
    assert accepted == received, "every event a driver handed over was committed before exit"

    # Whatever the uplink had not yet delivered is durable in the buffer: delivered + buffered == accepted.
    keyring = load_keyring(tmp_path / "state" / "buffer.key")
    buffer = await Buffer.open(tmp_path / "state" / "buffer.sqlite3", keyring)
    try:
        buffered = sum(s.items for s in await buffer.stats())
        rows = await buffer.read({}, 1_000_000)
        assert all(r.lane in Lane for r in rows)
    finally:
        await buffer.close()
    assert sum(receiver.stats.unique.values()) + buffered >= accepted
    assert sum(receiver.stats.unique.values()) <= accepted
