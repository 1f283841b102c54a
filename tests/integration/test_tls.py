"""Mutual TLS to a real Mosquitto with certificates the test generates; no plaintext fallback, ever."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sync.tls import client_context
from cloud_sync.uplink import SyncState
from gateway.config import Config, parse_config
from tests.conftest import Mosquitto, config_dict, start_mosquitto
from tests.support.harness import running_gateway
from tests.support.pki import Pki, make_pki, mosquitto_tls_conf


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    broker = start_mosquitto(tmp_path / "broker", mosquitto_tls_conf(pki))
    yield broker
    broker.stop()


def _tls_config(tmp_path: Path, port: int, pki: Pki, ca: Path | None = None, **tls: Any) -> Config:
    data = config_dict(tmp_path / "state", port)
    data["mqtt"].pop("allow_plaintext_loopback")
    data["mqtt"]["tls"] = {
        "ca_file": str(ca or pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
        **tls,
    }
    data["devices"] = [data["devices"][1]]  # the pulse oximeter is enough here
    return parse_config(data)


def _receiver_tls(pki: Pki) -> Any:
    return client_context(pki.ca, pki.client_cert, pki.client_key)


async def test_mutual_tls_delivers_and_pinning_accepts_the_right_key(
    tmp_path: Path, pki: Pki, tls_broker: Mosquitto
) -> None:
    config = _tls_config(tmp_path, tls_broker.port, pki, pin_sha256=[pki.server_spki_sha256])
    async with running_gateway(config, receiver_tls=_receiver_tls(pki)) as run:
        await run.wait_until(lambda: run.receiver.stats.unique["ox-1"] > 3)
        assert run.gateway.parts.uplink.state is SyncState.ONLINE  # type: ignore[union-attr]
        await run.finish()
        assert run.receiver.stats.unique["ox-1"] == run.gateway.metrics.device("ox-1").accepted


@pytest.mark.parametrize("fault", ["broker certificate from another CA", "pinned key does not match"])
async def test_gateway_refuses_an_untrusted_broker(tmp_path: Path, pki: Pki, tls_broker: Mosquitto, fault: str) -> None:
    if fault == "broker certificate from another CA":
        config = _tls_config(tmp_path, tls_broker.port, pki, ca=pki.rogue_ca)
    else:
        config = _tls_config(tmp_path, tls_broker.port, pki, pin_sha256=["0" * 64])
    async with running_gateway(config, receiver_tls=_receiver_tls(pki), drain_s=0.2) as run:
        uplink = run.gateway.parts.uplink  # type: ignore[union-attr]
        await run.wait_until(lambda: uplink.last_error is not None and run.received("ox-1") > 3)
        await asyncio.sleep(1.0)
        assert uplink.state is not SyncState.ONLINE
        assert run.gateway.metrics.publishes == 0
        assert run.receiver.stats.unique["ox-1"] == 0
        expected = "PinMismatchError" if "pinned" in fault else "MqttError"
        assert uplink.last_error == expected
        # The data waits, sealed, in the buffer: refused means not sent, never sent in clear.
        assert run.gateway.metrics.device("ox-1").accepted > 0
