"""The Modbus transport: its configuration section and its polling driver (backend: a pymodbus client factory)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, cast

from pydantic import Field, model_validator

from drivers.base import Driver
from drivers.modbus.driver import ClientFactory, ModbusDeviceDriver, make_client
from drivers.modbus.profile import load_profile
from drivers.transport import BuildContext, DeviceSection, Transport
from gateway.core.errors import ConfigError


class ModbusDeviceSection(DeviceSection):
    """A Modbus device: `tcp://HOST:PORT` or `rtu:///dev/PATH?baudrate=19200&parity=E`, a profile in config/modbus/."""

    transport: Literal["modbus"]
    profile: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
    address: Annotated[str, Field(pattern=r"^(tcp://[A-Za-z0-9_.:\[\]-]+|rtu:///[A-Za-z0-9_./-]+(\?[A-Za-z0-9=&]*)?)$")]
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1
    poll_interval_s: Annotated[float, Field(ge=0.005, le=3600)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 0.5

    @model_validator(mode="after")
    def _profile_exists(self) -> ModbusDeviceSection:
        try:
            load_profile(self.profile)
        except ConfigError as err:
            raise ValueError(err.message) from None
        return self

    def default_silent_after_s(self) -> float:
        return max(3 * self.poll_interval_s, 10.0)

    @classmethod
    def check_together(cls, devices: Sequence[ModbusDeviceSection]) -> None:
        rtu: dict[str, str] = {}
        for device in devices:
            if device.address.startswith("rtu://"):
                path, _, settings = device.address.partition("?")
                if rtu.setdefault(path, settings) != settings:
                    raise ValueError(f"Modbus units on {path} must use the same line settings (one RS-485 line)")


def build(device: ModbusDeviceSection, context: BuildContext) -> Driver:
    # The Modbus backend is a ClientFactory (Backends' contract); pymodbus' own clients by default.
    client_factory = make_client if context.backend is None else cast(ClientFactory, context.backend)
    return ModbusDeviceDriver(
        device.id,
        device.address,
        load_profile(device.profile),
        unit_id=device.unit_id,
        interval_s=device.poll_interval_s,
        timeout_s=device.timeout_s,
        client_factory=client_factory,
    )


TRANSPORT = Transport("modbus", ModbusDeviceSection, build)
