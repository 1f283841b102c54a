"""Where a rig's simulators meet the gateway: BLE controllers, serial ports, Modbus, MLLP and DICOM addresses.

One typed description per kind of transport (pydantic models, so scenario files and command lines validate the
same way) and one async context manager per description that opens it, for the standalone simulators
(`iomt-gateway hil sim`, hil.standalone) and the scenario runner alike:

    async with open_ble_host(BleTransport(spec="usb:0"), SimPulseOximeter("ox-1")) as host:
        ...  # a GATT server advertising from host.address on the USB controller
    async with open_serial(SerialPortConfig(path="/dev/ttyUSB0", baudrate=9600)) as port:
        await port.write(packet)  # port.reader for what comes back
    async with open_mllp(MllpAddress(host="10.20.0.5", port=2575)) as connection:
        ...  # an MLLP connection to the gateway's listener
    async with serve_modbus(parse_modbus_address("tcp://0.0.0.0:5020"), [MedicationFridge()]) as server:
        ...  # server.gateway_address: what the gateway's config names

Every failure to open is a `TransportError` (a spec or setting that can never work: `ConfigError`) whose
message says what could not be opened and why, in one line.  Opening imports the transport's library then,
so a rig that only drives serial ports never loads the BLE stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import ssl
import tty
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.core.errors import ConfigError, TransportError

if TYPE_CHECKING:
    from pydicom import Dataset

    from hil.ble_radio import PeripheralHost
    from hil.ble_sim import SimPeripheral
    from hil.modbus_sim import SimModbusDevice

__all__ = [
    "BLE_TRANSPORT_SCHEMES",
    "BlePeripheralConfig",
    "BleTransport",
    "ByteStream",
    "DicomPeer",
    "MllpAddress",
    "ModbusAddress",
    "ModbusRtuAddress",
    "ModbusServing",
    "ModbusTcpAddress",
    "SerialPortConfig",
    "open_ble_host",
    "open_ble_hosts",
    "open_mllp",
    "open_serial",
    "parse_modbus_address",
    "random_static_address",
    "send_dicom",
    "serve_modbus",
    "validated",
]

# bumble's transport schemes (bumble.transport.open_transport), and those that need a parameter after the colon.
_NEEDS_PARAMETER = frozenset(
    {"usb", "pyusb", "serial", "tcp-client", "tcp-server", "udp", "ws-client", "ws-server", "file", "unix"}
    | {"unix-client", "unix-server"}
)
BLE_TRANSPORT_SCHEMES: frozenset[str] = _NEEDS_PARAMETER | {
    "pty",
    "vhci",
    "hci-socket",
    "android-emulator",
    "android-netsim",
}
HCI_START_TIMEOUT_S = 10.0  # a controller that has not answered a reset by then is not a controller


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


M = TypeVar("M", bound=BaseModel)


def validated(what: str, model: type[M], data: dict[str, Any]) -> M:
    """`model` validated from `data` (a scenario file's section, command-line options); a ConfigError naming
    the first bad field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _invalid(what, err) from None


def _invalid(what: str, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or what
    return ConfigError(f"{what}: {where}: {first['msg']}")


# ------------------------------------------------------------------------------------------------------ BLE
class BleTransport(_Model):
    """An HCI transport in bumble's syntax: `usb:0` (the first USB controller), `usb:2fe3:000b` (by vendor and
    product id), `serial:/dev/ttyACM0,1000000` (a UART controller and its speed), `hci-socket:0` (a Linux HCI
    socket, the controller taken from BlueZ), `tcp-client:HOST:PORT` (a controller served over TCP), `vhci`."""

    spec: Annotated[str, Field(min_length=1, max_length=300)]

    @field_validator("spec")
    @classmethod
    def _known_scheme(cls, spec: str) -> str:
        scheme, _, parameter = spec.partition(":")
        if scheme not in BLE_TRANSPORT_SCHEMES:
            raise ValueError(f"unknown HCI transport {scheme!r}; use one of {', '.join(sorted(BLE_TRANSPORT_SCHEMES))}")
        if scheme in _NEEDS_PARAMETER and not parameter:
            raise ValueError(f"the {scheme} transport needs a parameter, e.g. {_EXAMPLES.get(scheme, scheme + ':...')}")
        return spec

    @classmethod
    def parse(cls, spec: str) -> BleTransport:
        try:
            return cls(spec=spec)
        except ValidationError as err:
            raise _invalid("HCI transport", err) from None


_EXAMPLES = {
    "usb": "usb:0",
    "serial": "serial:/dev/ttyACM0,1000000",
    "tcp-client": "tcp-client:127.0.0.1:9001",
    "tcp-server": "tcp-server:_:9001",
}


_HCI_HINTS = {
    "usb": " (is the controller plugged in, and may this user open it? `bumble-usb-probe` lists what libusb sees)",
    "pyusb": " (is the controller plugged in, and may this user open it?)",
    "hci-socket": " (an HCI socket needs CAP_NET_RAW and the controller down in BlueZ: `hciconfig hciN down`)",
}


def random_static_address(name: str) -> str:
    """A random static Bluetooth address derived from a peripheral's name: the same on every run, so the
    gateway's configuration can name it (the two top bits set, as the Core specification requires)."""
    digest = bytearray(hashlib.sha256(name.encode()).digest()[:6])
    digest[0] |= 0xC0
    if digest[1:] in (b"\x00" * 5, b"\xff" * 5):
        digest[5] ^= 0x01  # all-zero and all-one random parts are not valid
    return ":".join(f"{b:02X}" for b in digest)


class BlePeripheralConfig(_Model):
    """One simulated peripheral on its own controller: a controller hosts one peripheral, as a device has one
    radio.  `address` is the random static address it advertises from (default: derived from the name)."""

    profile: Literal["ecg_patch", "pulse_oximeter", "cgm", "insulin_pump"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,19}$")]
    transport: BleTransport
    address: Annotated[str, Field(pattern=r"^[C-Fc-f][0-9A-Fa-f](:[0-9A-Fa-f]{2}){5}$")] | None = None
    keystore: Path | None = None  # pairing keys kept across runs (see open_ble_host)

    @property
    def resolved_address(self) -> str:
        return (self.address or random_static_address(self.name)).upper()

    def build(self) -> SimPeripheral:
        """The profile's default simulated peripheral (hil.ble_sim.default_peripheral)."""
        from hil.ble_sim import default_peripheral  # noqa: PLC0415 - the BLE simulators load with the BLE stack

        return default_peripheral(self.name, self.profile)


@contextlib.asynccontextmanager
async def open_ble_host(
    transport: BleTransport | str,
    peripheral: SimPeripheral,
    *,
    address: str | None = None,
    keystore: Path | None = None,
) -> AsyncIterator[PeripheralHost]:
    """`peripheral` as a GATT server advertising from `address` (default: derived from its name) on the
    controller `transport` reaches; stopped (advertising off, links dropped) and the transport closed on exit.

    `keystore`: a JSON file keeping the pairing keys the peripheral exchanges (an insulin pump pairs), so a
    gateway that bonded with it reconnects encrypted after the simulator restarts, as with a real device; without
    it the keys live as long as the run, and the gateway's stale bond must be removed (`bluetoothctl remove`).
    `host.hci_lost` completes when the transport is lost (a controller unplugged, its TCP server gone).
    """
    from bumble.core import BaseBumbleError  # noqa: PLC0415 - bumble loads with the first BLE host
    from bumble.keys import JsonKeyStore  # noqa: PLC0415
    from bumble.transport import open_transport  # noqa: PLC0415

    from hil.ble_radio import PeripheralHost  # noqa: PLC0415

    spec = transport if isinstance(transport, BleTransport) else BleTransport.parse(transport)
    address = (address or random_static_address(peripheral.name)).upper()
    try:
        hci = await open_transport(spec.spec)
    except Exception as err:  # each transport raises its own library's errors (libusb, pyserial, OS, ...)
        hint = _HCI_HINTS.get(spec.spec.partition(":")[0], "")
        raise TransportError(
            f"cannot open the HCI transport {spec.spec}: {_reason(err)}{hint}", transport=spec.spec
        ) from err
    try:
        host = PeripheralHost.on_hci(hci.source, hci.sink, peripheral, address)
        host.hci_lost = hci.source.terminated
        if keystore is not None:
            host.device.keystore = JsonKeyStore(namespace=address, filename=str(keystore))
        try:
            async with asyncio.timeout(HCI_START_TIMEOUT_S):
                await host.start()
        except (TimeoutError, OSError, BaseBumbleError) as err:  # no answer, a broken link, an HCI error status
            why = f"no answer within {HCI_START_TIMEOUT_S:g} s" if isinstance(err, TimeoutError) else _reason(err)
            raise TransportError(f"the controller on {spec.spec} did not start: {why}", transport=spec.spec) from err
        try:
            yield host
        finally:
            # A controller that stopped answering is left as it is: its transport is closed below anyway.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HCI_START_TIMEOUT_S):
                    await host.stop()
    finally:
        await hci.close()


@contextlib.asynccontextmanager
async def open_ble_hosts(peripherals: Iterable[BlePeripheralConfig]) -> AsyncIterator[dict[str, PeripheralHost]]:
    """Each configured peripheral on its own controller (`open_ble_host`), by name."""
    async with contextlib.AsyncExitStack() as stack:
        hosts: dict[str, PeripheralHost] = {}
        for config in peripherals:
            hosts[config.name] = await stack.enter_async_context(
                open_ble_host(
                    config.transport, config.build(), address=config.resolved_address, keystore=config.keystore
                )
            )
        yield hosts


# --------------------------------------------------------------------------------------------------- serial
@dataclass
class ByteStream:
    """An open byte stream to the gateway: a serial port, a new pty, or a TCP connection.  `where` is what
    the gateway names to reach it (a device path, HOST:PORT); `settings` the line settings, for serial ports."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    where: str
    settings: str = ""

    async def write(self, data: bytes) -> None:
        """Write and wait until the stream has taken it (flow control as the port or socket applies it)."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError as err:
            raise TransportError(f"write to {self.where} failed: {_reason(err)}", where=self.where) from err


class SerialPortConfig(_Model):
    """A serial line: `path` is a device (`/dev/ttyUSB0`, a pty's path) or a pyserial URL (`socket://HOST:PORT`,
    `rfc2217://HOST:PORT` for a serial-to-Ethernet converter); None opens a new pseudo-terminal, whose path the
    opened stream's `where` names (the gateway opens that).  Line settings as the device documents them."""

    path: Annotated[str, Field(min_length=1, max_length=300)] | None = None
    baudrate: Annotated[int, Field(gt=0, le=4_000_000)] = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = 1
    rtscts: bool = False
    xonxoff: bool = False

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stop bits are 1, 1.5 or 2")
        return value

    @property
    def settings(self) -> str:
        """The line settings as a technician writes them, e.g. `9600 8N1`."""
        flow = " RTS/CTS" if self.rtscts else (" XON/XOFF" if self.xonxoff else "")
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits_text}{flow}"

    @property
    def stopbits_text(self) -> str:
        return "1.5" if self.stopbits == 1.5 else str(int(self.stopbits))


@contextlib.asynccontextmanager
async def open_serial(config: SerialPortConfig) -> AsyncIterator[ByteStream]:
    """The serial port `config` describes, opened through pyserial (or a new pty when `config.path` is None)."""
    if config.path is None:
        async with _open_new_pty(config) as stream:
            yield stream
        return
    import serial_asyncio_fast  # noqa: PLC0415 - pyserial loads with the first serial port

    try:
        async with asyncio.timeout(10):
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=config.path,
                baudrate=config.baudrate,
                bytesize=config.bytesize,
                parity=config.parity,
                stopbits=config.stopbits,
                rtscts=config.rtscts,
                xonxoff=config.xonxoff,
            )
    except (OSError, ValueError, TimeoutError) as err:  # pyserial's SerialException is an OSError
        raise TransportError(f"cannot open serial port {config.path}: {_reason(err)}", where=config.path) from err
    try:
        yield ByteStream(reader, writer, config.path, config.settings)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def _open_new_pty(config: SerialPortConfig) -> AsyncIterator[ByteStream]:
    """A new pseudo-terminal pair in raw mode: the simulator reads and writes the master end; `where` is the
    slave's path, for the gateway.  The slave stays open here too, so the master never reads EIO while the
    gateway has not opened it yet (or between two of its opens)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    path = os.ttyname(slave)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    read_end = os.fdopen(os.dup(master), "rb", buffering=0)
    write_end = os.fdopen(os.dup(master), "wb", buffering=0)
    os.close(master)
    read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_end)
    write_transport, write_protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, write_end)
    writer = asyncio.StreamWriter(write_transport, write_protocol, reader, loop)
    try:
        yield ByteStream(reader, writer, path, config.settings)
    finally:
        write_transport.close()
        read_transport.close()
        await asyncio.sleep(0)  # the transports close their files on the next turn of the loop
        os.close(slave)


# ----------------------------------------------------------------------------------------------------- MLLP
class MllpAddress(_Model):
    """The gateway's MLLP listener (`listen://HOST:PORT` in its config), and how to reach it: plain TCP, or TLS
    verified against `tls_ca` (with `tls_cert`/`tls_key` when the listener asks for a client certificate)."""

    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)]
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @classmethod
    def parse(cls, text: str, **options: object) -> MllpAddress:
        """From `HOST:PORT` (the gateway's `listen://HOST:PORT` is accepted too)."""
        host, _, port = text.removeprefix("listen://").rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"MLLP address {text!r}: use HOST:PORT, e.g. 10.20.0.5:2575")
        try:
            return cls.model_validate({"host": host.strip("[]"), "port": int(port), **options})
        except ValidationError as err:
            raise _invalid("MLLP address", err) from None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        return _client_tls("MLLP", self.tls_ca, self.tls_cert, self.tls_key)


def _client_tls(what: str, ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """TLS 1.2+ verifying the gateway against `ca`, presenting `cert` when given; None without a CA."""
    if ca is None:
        if cert is not None:
            raise ConfigError(f"{what} TLS: a client certificate needs the CA that verifies the gateway (tls_ca)")
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            context.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"{what} TLS files: {_reason(err)}") from err
    return context


@contextlib.asynccontextmanager
async def open_mllp(address: MllpAddress) -> AsyncIterator[ByteStream]:
    """A TCP (or TLS) connection to the gateway's MLLP listener; closed on exit."""
    context = address.ssl_context()
    try:
        async with asyncio.timeout(address.connect_timeout_s):
            reader, writer = await asyncio.open_connection(
                address.host, address.port, ssl=context, server_hostname=address.host if context else None
            )
    except (OSError, TimeoutError) as err:
        raise TransportError(f"cannot connect to {address.where}: {_reason(err)}", where=address.where) from err
    try:
        yield ByteStream(reader, writer, address.where)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# ---------------------------------------------------------------------------------------------------- DICOM
class DicomPeer(_Model):
    """The gateway's DICOM Storage SCP (`listen://HOST:PORT` in its config) and the AE titles of the association:
    the gateway's (`called_ae`) and the modality's (`calling_ae`, which the SCP's allow-list must name)."""

    host: Annotated[str, Field(min_length=1, max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)]
    called_ae: Annotated[str, Field(pattern=r"^[ -~]{1,16}$")] = "IOMT_GW"
    calling_ae: Annotated[str, Field(pattern=r"^[ -~]{1,16}$")] = "POC_US_CART"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def parse(cls, text: str, **options: object) -> DicomPeer:
        """From `HOST:PORT`."""
        host, _, port = text.removeprefix("listen://").rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"DICOM address {text!r}: use HOST:PORT, e.g. 10.20.0.5:11112")
        try:
            return cls.model_validate({"host": host.strip("[]"), "port": int(port), **options})
        except ValidationError as err:
            raise _invalid("DICOM address", err) from None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


async def send_dicom(peer: DicomPeer, objects: Sequence[Path | bytes | Dataset]) -> list[int | None]:
    """C-STORE each object over one association (hil.dicom_sim.send, in a thread): each object's status, None
    for every object when no association was made (nothing listening, or the SCP refused the AE titles)."""
    from hil.dicom_sim import send  # noqa: PLC0415 - pynetdicom loads with the first send

    context = _client_tls("DICOM", peer.tls_ca, peer.tls_cert, peer.tls_key)
    return await asyncio.to_thread(
        send, peer.host, peer.port, objects, calling_ae=peer.calling_ae, called_ae=peer.called_ae, ssl_context=context
    )


# --------------------------------------------------------------------------------------------------- Modbus
class ModbusTcpAddress(_Model):
    """A Modbus TCP server's address: where the simulator listens (0.0.0.0 for every interface)."""

    kind: Literal["tcp"] = "tcp"
    host: Annotated[str, Field(min_length=1, max_length=253)] = "0.0.0.0"  # noqa: S104 - a rig serves its LAN
    port: Annotated[int, Field(ge=0, le=65535)] = 502  # 0: any free port


class ModbusRtuAddress(_Model):
    """A Modbus RTU line: the simulator's end of the RS-485 bus (a USB-RS485 adapter), or a new null-modem
    pair of ptys when `serial.path` is None (the gateway opens the other end).  RTU lines usually run 8E1."""

    kind: Literal["rtu"] = "rtu"
    serial: SerialPortConfig = SerialPortConfig(baudrate=19200, parity="E")


ModbusAddress = ModbusTcpAddress | ModbusRtuAddress


def parse_modbus_address(text: str) -> ModbusAddress:
    """The gateway's own syntax: `tcp://HOST:PORT`, `rtu:///dev/PATH?baudrate=19200&parity=E&stopbits=1`
    (`rtu://pty?...`: a new null-modem pair of ptys)."""
    url = urlsplit(text)
    try:
        if url.scheme == "tcp":
            return ModbusTcpAddress(host=url.hostname or "0.0.0.0", port=url.port if url.port is not None else 502)  # noqa: S104
        if url.scheme == "rtu":
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            serial = SerialPortConfig.model_validate(
                {
                    "path": None if url.netloc == "pty" else url.path,
                    "baudrate": int(query.get("baudrate", "19200")),
                    "parity": query.get("parity", "E"),
                    "stopbits": float(query.get("stopbits", "1")),
                    "bytesize": int(query.get("bytesize", "8")),
                }
            )
            return ModbusRtuAddress(serial=serial)
    except ValidationError as err:
        raise _invalid("Modbus address", err) from None
    except ValueError:
        raise ConfigError(f"Modbus address {text!r}: a setting is not a number") from None
    raise ConfigError(f"Modbus address {text!r}: use tcp://HOST:PORT or rtu:///dev/PATH?baudrate=19200&parity=E")


@dataclass
class ModbusServing:
    """A running Modbus server: what it serves and where.  `gateway_address` is what the gateway's config names
    as the device's `address` (on a real RS-485 line, the gateway's own adapter replaces the path)."""

    address: ModbusAddress
    devices: Sequence[SimModbusDevice]
    where: str
    gateway_address: str


@contextlib.asynccontextmanager
async def serve_modbus(address: ModbusAddress, devices: Sequence[SimModbusDevice]) -> AsyncIterator[ModbusServing]:
    """The simulated units served on a Modbus TCP address or an RTU line (pymodbus' servers); stopped on exit."""
    from hil.modbus_sim import ModbusRtuSimServer, ModbusSimServer  # noqa: PLC0415 - pymodbus loads with a server

    if isinstance(address, ModbusTcpAddress):
        where = f"{address.host}:{address.port}"
        if address.port:
            _check_bindable(address.host, address.port, f"cannot serve Modbus TCP on {where}")
        server = ModbusSimServer(devices, port=address.port, host=address.host)
        try:
            await server.start()
        except (OSError, RuntimeError) as err:  # pymodbus: RuntimeError("Could not start listen ...")
            raise TransportError(f"cannot serve Modbus TCP on {where}: {_reason(err)}", where=where) from err
        try:
            where = f"{address.host}:{server.port}"
            yield ModbusServing(address, devices, where, f"tcp://{_reachable(address.host)}:{server.port}")
        finally:
            await server.stop()
        return
    line = address.serial
    query = f"baudrate={line.baudrate}&parity={line.parity}&stopbits={line.stopbits_text}&bytesize={line.bytesize}"
    async with contextlib.AsyncExitStack() as stack:
        if line.path is None:
            from hil.serial_sim import NullModem  # noqa: PLC0415

            cable = await stack.enter_async_context(NullModem())
            path, gateway_path = cable.a.path, cable.b.path
            query = f"baudrate={line.baudrate}&parity=N"  # ptys refuse parity settings
            server_line = line.model_copy(update={"parity": "N"})
        else:
            path = gateway_path = line.path
            server_line = line
            _check_openable(path, f"cannot open the Modbus RTU line {path}")
        try:
            await stack.enter_async_context(
                ModbusRtuSimServer(devices, path, baudrate=server_line.baudrate, parity=server_line.parity)
            )
        except (OSError, ValueError, RuntimeError) as err:  # pymodbus: RuntimeError("Could not start listen ...")
            raise TransportError(f"cannot open the Modbus RTU line {path}: {_reason(err)}", where=path) from err
        yield ModbusServing(address, devices, f"{path} {server_line.settings}", f"rtu://{gateway_path}?{query}")


def _check_bindable(host: str, port: int, what: str) -> None:
    """Bind the address once, for the operating system's reason when it cannot be (pymodbus logs it and raises a
    bare RuntimeError)."""
    import socket  # noqa: PLC0415

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
            probe.bind(infos[0][4])
    except OSError as err:
        raise TransportError(f"{what}: {_reason(err)}", where=f"{host}:{port}") from err


def _check_openable(path: str, what: str) -> None:
    """Open a serial device once, for the operating system's reason when it cannot be (see _check_bindable)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as err:
        raise TransportError(f"{what}: {_reason(err)}", where=path) from err
    os.close(fd)


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - naming, not binding


def _reason(err: BaseException) -> str:
    """One line on why something could not be opened: the OS's words when it has them, else the error's."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[0].lower() + err.strerror[1:]
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text or type(err).__name__
