"""The serial transport: wired stream devices (HL7 PCD-01 over MLLP, Nonin), its section and its driver."""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from drivers.base import Driver
from drivers.serial.driver import SerialDeviceDriver
from drivers.serial.listener import ListenerPolicy
from drivers.transport import BuildContext, DeviceSection, Transport, server_tls
from gateway.core.settings import SecretRef

DEFAULT_SILENT_AFTER_S = {"hl7_pcd01": 60.0, "nonin_df2": 15.0, "nonin_df7": 15.0}


class SerialDeviceSection(DeviceSection):
    """A wired device speaking a stream protocol: a serial port or pty, a pyserial URL, or an MLLP listener.

    address: `/dev/ttyUSB0` (or a pty path), `socket://HOST:PORT` / `rfc2217://HOST:PORT` (a serial-to-Ethernet
    converter), or `listen://HOST:PORT` (the gateway listens; HL7 senders connect, as monitors usually do).
    """

    transport: Literal["serial"]
    secret_fields: ClassVar[tuple[str, ...]] = ("tls_cert", "tls_key", "tls_client_ca")
    profile: Literal["hl7_pcd01", "nonin_df2", "nonin_df7"]
    address: Annotated[
        str,
        Field(pattern=r"^(/dev/[A-Za-z0-9_./-]+|(socket|rfc2217|listen)://[A-Za-z0-9_.-]+:[0-9]{1,5})$"),
    ]
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    silent_link_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # HL7: an observation whose code the gateway does not map is counted and answered AA (its message's other
    # observations are kept); "AE" names the unmapped ones in the ACK instead (still keeping the rest).
    unmapped_ack: Literal["AA", "AE"] = "AA"
    # HL7 MSH-4 sending facilities accepted (namespace or universal id); empty: any.  Others are answered AR.
    allowed_facilities: Annotated[
        tuple[Annotated[str, Field(min_length=1, max_length=64)], ...], Field(strict=False)
    ] = ()
    # The MLLP listener (listen://): source addresses or networks allowed to connect (empty: any), connections
    # at once and per source, and how long a connection may go without completing a message.
    allowed_sources: Annotated[tuple[str, ...], Field(strict=False)] = ()
    max_connections: Annotated[int, Field(ge=1, le=64)] = 8
    max_connections_per_source: Annotated[int, Field(ge=1, le=64)] = 2
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    # MLLP over TLS (listen:// only): the gateway's certificate and key; with tls_client_ca, senders must
    # present a certificate that CA issued.
    tls_cert: SecretRef | None = None
    tls_key: SecretRef | None = None
    tls_client_ca: SecretRef | None = None

    @field_validator("allowed_sources")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for source in value:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ValueError("IP addresses or networks, e.g. 10.20.0.7 or 10.20.0.0/24") from None
        return value

    @model_validator(mode="after")
    def _listener_options(self) -> SerialDeviceSection:
        listening = self.address.startswith("listen://")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not listening and (self.tls_cert is not None or self.allowed_sources):
            raise ValueError("tls_cert and allowed_sources apply to an MLLP listener (listen://HOST:PORT)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self

    def default_silent_after_s(self) -> float:
        return DEFAULT_SILENT_AFTER_S[self.profile]

    def waits_for_sender(self) -> bool:
        return self.address.startswith("listen://")


def build(device: SerialDeviceSection, context: BuildContext) -> Driver:
    return SerialDeviceDriver(
        device.id,
        device.address,
        device.profile,
        baudrate=device.baudrate,
        silent_link_timeout_s=device.silent_link_timeout_s,
        policy=ListenerPolicy.with_allowed(
            device.allowed_sources,
            max_connections=device.max_connections,
            max_per_source=device.max_connections_per_source,
            idle_timeout_s=device.idle_timeout_s,
            # A connection quiet this long may be replaced when every slot is taken; a monitor sending every
            # few seconds never is.
            stale_after_s=min(10.0, device.idle_timeout_s / 2),
        ),
        allowed_facilities=device.allowed_facilities,
        unmapped_ack=device.unmapped_ack,
        ssl_context=server_tls(context.secret_path, device.tls_cert, device.tls_key, device.tls_client_ca),
    )


TRANSPORT = Transport("serial", SerialDeviceSection, build)
