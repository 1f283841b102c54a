"""hil.rig's transport descriptions: each real-rig transport built from its config, and bad ones refused in one line."""

from __future__ import annotations

import argparse
import re

import pytest

from gateway.core.errors import ConfigError
from hil.rig import (
    BlePeripheralConfig,
    BleTransport,
    DicomPeer,
    MllpAddress,
    ModbusRtuAddress,
    ModbusTcpAddress,
    SerialPortConfig,
    parse_modbus_address,
    random_static_address,
    validated,
)
from hil.standalone import add_arguments


@pytest.mark.parametrize(
    "spec",
    ["usb:0", "usb:2fe3:000b", "serial:/dev/ttyACM0,1000000", "hci-socket:0", "tcp-client:127.0.0.1:9001", "vhci"],
)
def test_ble_transports_in_bumble_syntax(spec: str) -> None:
    assert BleTransport.parse(spec).spec == spec


@pytest.mark.parametrize(("spec", "says"), [("bluetooth:0", "unknown HCI transport"), ("usb", "needs a parameter")])
def test_bad_ble_transports_are_config_errors(spec: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        BleTransport.parse(spec)
    assert "\n" not in caught.value.message


def test_a_peripheral_advertises_from_a_stable_random_static_address() -> None:
    address = random_static_address("ox-1")
    assert address == random_static_address("ox-1") != random_static_address("ox-2")
    assert re.fullmatch(r"([0-9A-F]{2}:){5}[0-9A-F]{2}", address)
    assert int(address[:2], 16) >> 6 == 0b11, "a random static address has its two top bits set"
    config = BlePeripheralConfig(profile="cgm", name="cgm-1", transport=BleTransport(spec="usb:0"))
    assert config.resolved_address == random_static_address("cgm-1")
    assert config.build().profile == "cgm"
    given = BlePeripheralConfig(
        profile="cgm", name="cgm-1", transport=BleTransport(spec="usb:0"), address="c1:02:03:04:05:06"
    )
    assert given.resolved_address == "C1:02:03:04:05:06"
    with pytest.raises(ConfigError, match="address"):  # a public-looking address is not a random static one
        validated(
            "device",
            BlePeripheralConfig,
            {"profile": "cgm", "name": "c", "transport": given.transport, "address": "00:11:22:33:44:55"},
        )


def test_serial_line_settings_as_a_technician_writes_them() -> None:
    assert SerialPortConfig(path="/dev/ttyUSB0").settings == "9600 8N1"
    line = SerialPortConfig(path="/dev/ttyUSB1", baudrate=19200, parity="E", stopbits=2, rtscts=True)
    assert line.settings == "19200 8E2 RTS/CTS"
    assert SerialPortConfig().path is None, "no path: a new pty"
    with pytest.raises(ConfigError, match="stopbits"):
        validated("serial line", SerialPortConfig, {"path": "/dev/ttyUSB0", "stopbits": 3})
    with pytest.raises(ConfigError, match="parity"):
        validated("serial line", SerialPortConfig, {"path": "/dev/ttyUSB0", "parity": "X"})


def test_modbus_addresses_in_the_gateways_own_syntax() -> None:
    every_interface = "0.0.0.0"  # noqa: S104 - an address parsed, nothing bound
    assert parse_modbus_address("tcp://0.0.0.0:5020") == ModbusTcpAddress(host=every_interface, port=5020)
    rtu = parse_modbus_address("rtu:///dev/ttyUSB0?baudrate=9600&parity=N&stopbits=2")
    assert isinstance(rtu, ModbusRtuAddress)
    assert (rtu.serial.path, rtu.serial.settings) == ("/dev/ttyUSB0", "9600 8N2")
    default = parse_modbus_address("rtu:///dev/ttyUSB0")
    assert isinstance(default, ModbusRtuAddress) and default.serial.settings == "19200 8E1", "the gateway's defaults"
    pty = parse_modbus_address("rtu://pty?baudrate=19200")
    assert isinstance(pty, ModbusRtuAddress) and pty.serial.path is None
    for bad in ("udp://1.2.3.4:502", "rtu:///dev/ttyUSB0?baudrate=fast", "rtu:///dev/ttyUSB0?parity=Q"):
        with pytest.raises(ConfigError):
            parse_modbus_address(bad)


def test_mllp_and_dicom_peers() -> None:
    mllp = MllpAddress.parse("10.20.0.5:2575")
    assert (mllp.host, mllp.port, mllp.where, mllp.ssl_context()) == ("10.20.0.5", 2575, "10.20.0.5:2575", None)
    assert MllpAddress.parse("listen://[::1]:2575").host == "::1"
    peer = DicomPeer.parse("10.20.0.5:11112", calling_ae="ECG_CART")
    assert (peer.called_ae, peer.calling_ae) == ("IOMT_GW", "ECG_CART")
    for bad in ("10.20.0.5", "10.20.0.5:http", "10.20.0.5:70000"):
        with pytest.raises(ConfigError):
            MllpAddress.parse(bad)
    with pytest.raises(ConfigError, match="calling_ae"):
        DicomPeer.parse("10.20.0.5:11112", calling_ae="A_TITLE_FAR_TOO_LONG")


def test_every_simulator_has_its_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["ble", "--device", "cgm:cgm-1", "--transport", "usb:0", "--duration", "5", "--json"])
    assert (args.simulator, args.device, args.transport, args.duration, args.json) == (
        "ble",
        ["cgm:cgm-1"],
        ["usb:0"],
        5.0,
        True,
    )
    assert parser.parse_args(["nonin"]).port is None, "nonin: a new pty by default"
    assert parser.parse_args(["modbus", "--pty"]).baudrate == 19200
    assert parser.parse_args(["hl7", "--connect", "h:1"]).interval == 1.0
    assert parser.parse_args(["dicom", "--to", "h:104"]).every is None
    with pytest.raises(SystemExit):
        parser.parse_args(["hl7"])  # where to send is required
