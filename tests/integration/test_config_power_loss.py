"""A power cut (SIGKILL) at every step of a remote-configuration apply: the gateway always ends on a vetted
configuration, the one it ran before or, once confirmed healthy, the new one.  Real processes, a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.mqtt import MqttClient
from gateway.config import parse_config
from gateway.runner import STEPS, pending_path
from tests.conftest import Mosquitto, config_dict
from tests.support.commanding import Issuer, publish_to, signed_config
from tests.support.configs import to_toml


async def _line_with(process: asyncio.subprocess.Process, text: str, timeout_s: float = 30.0) -> None:
    assert process.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"process ended before printing {text!r}")
            if text.encode() in line:
                return


async def _online(port: int, started_after: int) -> None:
    """Wait for the gateway's retained state message to say online (published after it connected)."""
    async with (
        asyncio.timeout(30),
        MqttClient("127.0.0.1", port, client_id=f"watch-{time.time_ns()}") as client,
    ):
        await client.subscribe("iomt/v1/test-gw/state", qos=1)
        async for message in client.messages:
            state = json.loads(bytes(message.payload))
            if state["state"] == "online" and state["t_gw"] > started_after:
                return


@contextlib.contextmanager
def _notify_socket(path: Path) -> Iterator[socket.socket]:
    """A datagram socket where the daemon sends its sd_notify messages, as systemd would receive them."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


async def _ready(sock: socket.socket) -> None:
    """Until the daemon says READY=1 (it does once every part has started)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):
        while "READY=1" not in (await loop.sock_recv(sock, 4096)).decode().splitlines():
            pass


def _document(tmp_path: Path, port: int, issuer: Issuer) -> dict[str, Any]:
    document = config_dict(tmp_path / "state", port)
    document["devices"] = [{"id": "ox-1", "transport": "ble", "profile": "pulse_oximeter", "address": "sim:ox-1"}]
    document["commands"] = {"enabled": True, "issuers": issuer.issuers_config()}
    return document


@pytest.mark.parametrize("step", STEPS)
async def test_sigkill_at_each_step_of_a_remote_config_apply_ends_on_a_vetted_config(
    tmp_path: Path, mosquitto: Mosquitto, step: str
) -> None:
    issuer = Issuer()
    document = _document(tmp_path, mosquitto.port, issuer)
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(to_toml(document))
    new = copy.deepcopy(document)
    new["alarms"]["limits"][0]["low"] = 88

    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.config_apply_child", str(config_path), step,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _line_with(child, "STARTED")
        await publish_to(mosquitto.port, "config", signed_config(issuer, new, f"cfg-{step}"))
        async with asyncio.timeout(40):
            assert child.stdout is not None
            output = await child.stdout.read()  # until it dies
            assert await child.wait() == -signal.SIGKILL, output.decode(errors="replace")[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()

    killed_at = time.time_ns()
    # The real daemon starts on whatever the power cut left, under a systemd-style notify socket.
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log, _notify_socket(tmp_path / "notify.sock") as notify:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "run", "--config", str(config_path),
            "--safety-file", str(tmp_path / "no-safety-file.toml"), stdout=log, stderr=log,
            env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
        )  # fmt: skip
        try:
            await _online(mosquitto.port, started_after=killed_at)
            await _ready(notify)  # every part started (its uplink may still be subscribing: SIGTERM must work then)
            running = parse_config(tomllib.loads(config_path.read_text()))
            vetted = new if step == "confirmed" else document
            assert running == parse_config(vetted), f"killed at {step}: not on a vetted configuration"
            assert not pending_path(config_path).exists()
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await daemon.wait()
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
    assert daemon.returncode == 0, log_path.read_text(errors="replace")[-3000:]
