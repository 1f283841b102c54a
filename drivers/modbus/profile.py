"""Modbus device profiles: which registers a kind of device has, and what each one means.

A profile is a TOML file `modbus/NAME.toml` in /etc/iomt-gateway or among the packaged defaults (config/modbus/
in the source tree), or in any directory given: the device's request limits and one
`[[points]]` table per value.  A point names its table (holding, input, coil, discrete), address, data type,
word and byte order, scale and offset (value = raw * scale + offset), and either the MDC quantity it is
(an Observation) or a status flag name (a DeviceStatus error while set).  Profiles are validated whole, with
the same one-line errors as the gateway config.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.core.errors import ConfigError
from gateway.core.nomenclature import quantity
from gateway.core.settings import config_file

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["uint16", "int16", "uint32", "int32", "float32", "bool"]

REGISTER_COUNT: dict[str, int] = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2, "bool": 1}
MAX_REGISTERS_PER_READ = 125  # Modbus application protocol: read holding/input registers, quantity 1..125
MAX_BITS_PER_READ = 2000  # read coils / discrete inputs, quantity 1..2000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Point(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
    table: Table
    address: Annotated[int, Field(ge=0, le=0xFFFF)]
    type: DataType = "uint16"
    word_order: Literal["big", "little"] = "big"  # for 32-bit values: which register holds the high word
    byte_order: Literal["big", "little"] = "big"  # within each register (Modbus itself is big-endian)
    scale: float = 1.0
    offset: float = 0.0
    quantity: str | None = None  # MDC reference id: the value is an Observation
    status: str | None = None  # or a status flag: while non-zero the device reports this condition (an alarm)
    priority: Literal["high", "medium", "low"] = "medium"  # of the technical alarm a status flag raises
    # Raw register values that mean "no measurement" (sensor fault, open circuit), e.g. 32767 (0x7FFF) and -32768
    # for an int16 temperature: while read, the value is not data but the condition sensor_fault.<name>.
    fault_values: Annotated[list[int], Field(max_length=16)] = []
    writable: bool = False  # a setpoint the verified command path may write
    min: float | None = None  # write limits (engineering units), required for a writable point
    max: float | None = None

    @property
    def bit(self) -> bool:
        return self.table in ("coil", "discrete")

    @property
    def width(self) -> int:
        """Registers (or bits) this point occupies."""
        return 1 if self.bit else REGISTER_COUNT[self.type]

    @model_validator(mode="after")
    def _meaning(self) -> Point:
        if self.quantity is not None and self.status is not None:
            raise ValueError("a point is a quantity (an MDC reference id) or a status flag, not both")
        if self.quantity is None and self.status is None and not self.writable:
            raise ValueError("a point needs a quantity (an MDC reference id) or a status flag (or be a setting)")
        if self.quantity is not None:
            try:
                quantity(self.quantity)
            except KeyError:
                raise ValueError(f"unknown MDC quantity {self.quantity}") from None
        if self.fault_values and self.quantity is None:
            raise ValueError("fault_values belong to a point with a quantity")
        if self.bit and self.type != "bool":
            raise ValueError("coils and discrete inputs are of type bool")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.writable:
            if self.table not in ("holding", "coil"):
                raise ValueError("only holding registers and coils can be written")
            if self.min is None or self.max is None or self.min > self.max:
                raise ValueError("a writable point needs min <= max (the safety limits of a write)")
        if self.address + self.width - 1 > 0xFFFF:
            raise ValueError("the point runs past register 65535")
        return self


class ModbusProfile(_Model):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
    description: str = ""
    max_registers_per_read: Annotated[int, Field(ge=1, le=MAX_REGISTERS_PER_READ)] = MAX_REGISTERS_PER_READ
    max_bits_per_read: Annotated[int, Field(ge=1, le=MAX_BITS_PER_READ)] = MAX_BITS_PER_READ
    max_gap: Annotated[int, Field(ge=0, le=MAX_REGISTERS_PER_READ)] = 8  # unused registers read to save a request
    points: Annotated[list[Point], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> ModbusProfile:
        names = [p.name for p in self.points]
        if len(set(names)) != len(names):
            raise ValueError("point names must be unique")
        taken: dict[tuple[str, int], str] = {}
        for p in self.points:
            for a in range(p.address, p.address + p.width):
                other = taken.setdefault((p.table, a), p.name)
                if other != p.name:
                    raise ValueError(f"points {other} and {p.name} overlap at {p.table} {a}")
        return self

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)


def parse_profile(data: dict[str, object], source: str = "profile") -> ModbusProfile:
    try:
        return ModbusProfile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']}" if where else f"{source}: {first['msg']}") from None


def load_profile(name: str, directory: Path | None = None) -> ModbusProfile:
    """The profile `name` from `directory/name.toml` (default: `modbus/name.toml` in the configuration folders,
    the machine's first); ConfigError with a one-line message."""
    path = config_file(f"modbus/{name}.toml") if directory is None else directory / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Modbus profile {name!r} not found (expected {path})") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"Modbus profile {path}: unreadable ({err})") from None
    profile = parse_profile(data, str(path))
    if profile.name != name:
        raise ConfigError(f"Modbus profile {path}: name {profile.name!r} differs from the file name")
    return profile
