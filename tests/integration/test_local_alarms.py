"""Alarms reach the local channel at once, even when the cloud is unreachable."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from cloud_sync.mqtt import MqttClient
from gateway.config import parse_config
from hil.ble_sim import SimBleWorld, SimPulseOximeter
from hil.physiology import Trajectory
from tests.conftest import Mosquitto, config_dict, free_port
from tests.support.harness import running_gateway


async def test_alarm_published_locally_while_the_cloud_is_down(tmp_path: Path, mosquitto: Mosquitto) -> None:
    data = config_dict(tmp_path / "state", free_port())  # the cloud broker: nobody listens there
    data["devices"] = [data["devices"][1]]
    data["alarms"]["local"] = {"host": "127.0.0.1", "port": mosquitto.port}
    config = parse_config(data)
    world = SimBleWorld()
    oximeter = world.add(SimPulseOximeter("ox-1"))
    assert isinstance(oximeter, SimPulseOximeter)
    oximeter.spo2 = Trajectory(84.0, 0.0)  # desaturated from the start: high-priority alarm after 1 s
    async with MqttClient("127.0.0.1", mosquitto.port, client_id=f"nurse-{time.time_ns()}") as nurse:
        await nurse.subscribe("iomt/local/test-gw/alarms/#", qos=1)
        async with running_gateway(config, world=world, receiver_port=mosquitto.port, drain_s=0.2) as run:
            async with asyncio.timeout(20):
                message = await anext(aiter(nurse.messages))
            alarm = json.loads(bytes(message.payload))
            assert (alarm["condition"], alarm["priority"], alarm["state"]) == (
                "MDC_PULS_OXIM_SAT_O2.low",
                "high",
                "active",
            )
            assert alarm["device"] == "ox-1" and message.topic == "iomt/local/test-gw/alarms/ox-1"
            assert run.gateway.parts.uplink.state != "online"  # type: ignore[union-attr]
            assert run.gateway.metrics.publishes == 0  # the cloud got nothing: the local channel did not wait
            assert str(alarm["v"]) == "1" and alarm["published_ns"] - alarm["t_gw"] < 5e9
            run.stop.set()
            await run.task


async def test_local_alarm_channel_over_mutual_tls_with_credentials(tmp_path: Path, mosquitto: Mosquitto) -> None:
    import ssl  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    import pytest  # noqa: PLC0415

    from gateway.core.errors import ConfigError  # noqa: PLC0415
    from tests.conftest import start_mosquitto  # noqa: PLC0415
    from tests.support.pki import make_pki, mosquitto_tls_conf  # noqa: PLC0415

    pki = make_pki(tmp_path / "pki")
    passwords = tmp_path / "passwd"
    password = f"ward-{time.time_ns()}"  # a throw-away broker's throw-away password
    await asyncio.to_thread(
        subprocess.run, ["mosquitto_passwd", "-b", "-c", str(passwords), "gw-ward", password], check=True
    )
    (tmp_path / "ward").mkdir()
    conf = mosquitto_tls_conf(pki).replace("use_identity_as_username true", "use_identity_as_username false")
    ward = start_mosquitto(tmp_path / "ward", conf + f"allow_anonymous false\npassword_file {passwords}\n")
    try:
        secret = tmp_path / "ward-password"
        secret.write_text(password + "\n")
        tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
        data = config_dict(tmp_path / "state", free_port())
        data["devices"] = [data["devices"][1]]
        local = {
            "host": "127.0.0.1",
            "port": ward.port,
            "tls": tls,
            "username": "gw-ward",
            "password_file": str(secret),
        }
        data["alarms"]["local"] = local
        config = parse_config(data)
        with pytest.raises(ConfigError, match=r"alarms.local.*tls"):  # plaintext off loopback is refused
            parse_config({**data, "alarms": {"local": {"host": "10.20.0.5", "port": 1883}}})
        world = SimBleWorld()
        oximeter = world.add(SimPulseOximeter("ox-1"))
        assert isinstance(oximeter, SimPulseOximeter)
        oximeter.spo2 = Trajectory(84.0, 0.0)
        nurse_tls = ssl.create_default_context(cafile=str(pki.ca))
        nurse_tls.load_cert_chain(pki.client_cert, pki.client_key)
        async with MqttClient(
            "127.0.0.1",
            ward.port,
            client_id=f"nurse-{time.time_ns()}",
            tls_context=nurse_tls,
            username="gw-ward",
            password=password,
        ) as nurse:
            await nurse.subscribe("iomt/local/test-gw/alarms/#", qos=1)
            async with running_gateway(config, world=world, receiver_port=mosquitto.port, drain_s=0.2) as run:
                async with asyncio.timeout(20):
                    message = await anext(aiter(nurse.messages))
                assert json.loads(bytes(message.payload))["condition"] == "MDC_PULS_OXIM_SAT_O2.low"
                run.stop.set()
                await run.task
    finally:
        ward.stop()
