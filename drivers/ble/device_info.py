"""Pure codecs for the Device Information Service (0x180A) and the Current Time Service (0x1805).

Layouts follow the GATT Specification Supplement.  Decoders accept bytes, bytearray or memoryview and raise only
`InvalidFrame`; error fields name the characteristic and lengths, never the content (a serial number identifies a
device, and through it a patient).  Encoders exist for simulated peripherals, tests, and the gateway setting a
device clock, and raise `ValueError` for values the wire format cannot carry.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final

from drivers.ble.fields import Buffer, DateTimeTuple, check_uint, date_time_valid, enum_or_int, require_length, uuid16
from gateway.core.errors import InvalidFrame

DEVICE_INFORMATION_SERVICE: Final = uuid16(0x180A)
MANUFACTURER_NAME: Final = uuid16(0x2A29)
MODEL_NUMBER: Final = uuid16(0x2A24)
SERIAL_NUMBER: Final = uuid16(0x2A25)
FIRMWARE_REVISION: Final = uuid16(0x2A26)

__all__ = [
    # UUIDs
    "DEVICE_INFORMATION_SERVICE",
    "MANUFACTURER_NAME",
    "MODEL_NUMBER",
    "SERIAL_NUMBER",
    "HARDWARE_REVISION",
    "FIRMWARE_REVISION",
    "SOFTWARE_REVISION",
    "SYSTEM_ID",
    "PNP_ID",
    "REGULATORY_CERTIFICATION_DATA_LIST",
    "CURRENT_TIME_SERVICE",
    "CURRENT_TIME",
    "LOCAL_TIME_INFORMATION",
    # device information
    "MAX_ATTRIBUTE_LENGTH",
    "DIS_STRING_CHARACTERISTICS",
    "DIS_CHARACTERISTICS",
    "decode_dis_string",
    "encode_dis_string",
    "SystemId",
    "decode_system_id",
    "encode_system_id",
    "VendorIdSource",
    "PnpId",
    "decode_pnp_id",
    "encode_pnp_id",
    "decode_regulatory_certification_data_list",
    "encode_regulatory_certification_data_list",
    "DeviceIdentity",
    "decode_device_identity",
    # current time
    "DayOfWeek",
    "AdjustReason",
    "CurrentTime",
    "decode_current_time",
    "encode_current_time",
    "encode_current_time_from_ns",
    "DstOffset",
    "LocalTimeInformation",
    "decode_local_time_information",
    "encode_local_time_information",
]

HARDWARE_REVISION: Final = uuid16(0x2A27)
SOFTWARE_REVISION: Final = uuid16(0x2A28)
SYSTEM_ID: Final = uuid16(0x2A23)
PNP_ID: Final = uuid16(0x2A50)
REGULATORY_CERTIFICATION_DATA_LIST: Final = uuid16(0x2A2A)

CURRENT_TIME_SERVICE: Final = uuid16(0x1805)
CURRENT_TIME: Final = uuid16(0x2A2B)
LOCAL_TIME_INFORMATION: Final = uuid16(0x2A0F)

MAX_ATTRIBUTE_LENGTH: Final = 512  # ATT: no attribute value is longer, so no DIS string or list can be either

_U64: Final = struct.Struct("<Q")
_PNP_ID: Final = struct.Struct("<BHHH")  # vendor ID source, vendor ID, product ID, product version
_CURRENT_TIME: Final = struct.Struct("<HBBBBBBBB")  # Date Time, day of week, fractions256, adjust reason
_LOCAL_TIME: Final = struct.Struct("<bB")  # time zone (15 min units), DST offset code
_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NS_PER_S: Final = 1_000_000_000


def _max_length(data: bytes, characteristic: str) -> None:
    if len(data) > MAX_ATTRIBUTE_LENGTH:
        raise InvalidFrame(
            f"{characteristic} is longer than an attribute value can be",
            characteristic=characteristic,
            length=len(data),
            expected=f"<={MAX_ATTRIBUTE_LENGTH}",
        )


# --------------------------------------------------------------------------------------- device information


def decode_dis_string(buf: Buffer, characteristic: str = "dis_string") -> str:
    """Decode a DIS UTF-8 string characteristic; trailing NUL padding is removed, invalid UTF-8 is InvalidFrame."""
    data = bytes(buf)
    _max_length(data, characteristic)
    try:
        return data.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as err:
        # The foreign error quotes the offending bytes; ours names only where they are.
        raise InvalidFrame(
            f"{characteristic} is not valid UTF-8", characteristic=characteristic, length=len(data), offset=err.start
        ) from None


def encode_dis_string(value: str) -> bytes:
    """Encode a DIS string as UTF-8 without terminator; raises ValueError beyond an attribute's 512 bytes."""
    data = value.encode("utf-8")
    if len(data) > MAX_ATTRIBUTE_LENGTH:
        raise ValueError(f"a DIS string must encode to at most {MAX_ATTRIBUTE_LENGTH} bytes")
    return data


@dataclass(frozen=True, slots=True)
class SystemId:
    """System ID (0x2A23): an EUI-64 sent least significant octet first, manufacturer-defined part first."""

    manufacturer_identifier: int  # 40 bits
    organizationally_unique_identifier: int  # 24 bits

    @property
    def eui64(self) -> int:
        """The EUI-64 as one integer, OUI in the most significant 24 bits."""
        return self.organizationally_unique_identifier << 40 | self.manufacturer_identifier


def decode_system_id(buf: Buffer) -> SystemId:
    """Decode System ID: exactly one little-endian uint64."""
    data = bytes(buf)
    require_length(data, _U64.size, "system_id")
    value: int = _U64.unpack(data)[0]
    return SystemId(value & ((1 << 40) - 1), value >> 40)


def encode_system_id(system_id: SystemId) -> bytes:
    """Encode System ID."""
    check_uint(system_id.manufacturer_identifier, 40, "manufacturer_identifier")
    check_uint(system_id.organizationally_unique_identifier, 24, "organizationally_unique_identifier")
    return _U64.pack(system_id.eui64)


class VendorIdSource(enum.IntEnum):
    """PnP ID vendor ID source: which registry assigned the vendor ID."""

    BLUETOOTH_SIG = 1
    USB_IMPLEMENTERS_FORUM = 2


@dataclass(frozen=True, slots=True)
class PnpId:
    """PnP ID (0x2A50); vendor_id_source is a VendorIdSource member when known, the plain int otherwise."""

    vendor_id_source: int
    vendor_id: int
    product_id: int
    product_version: int  # 0xJJMN: major JJ, minor M, sub-minor N

    @property
    def version(self) -> str:
        """The product version as "major.minor.subminor"."""
        v = self.product_version
        return f"{v >> 8}.{(v >> 4) & 0x0F}.{v & 0x0F}"


def decode_pnp_id(buf: Buffer) -> PnpId:
    """Decode PnP ID: exactly vendor ID source (uint8), vendor ID, product ID and product version (uint16)."""
    data = bytes(buf)
    require_length(data, _PNP_ID.size, "pnp_id")
    source, vendor, product, version = _PNP_ID.unpack(data)
    return PnpId(enum_or_int(VendorIdSource, source), vendor, product, version)


def encode_pnp_id(pnp_id: PnpId) -> bytes:
    """Encode PnP ID."""
    check_uint(pnp_id.vendor_id_source, 8, "vendor_id_source")
    check_uint(pnp_id.vendor_id, 16, "vendor_id")
    check_uint(pnp_id.product_id, 16, "product_id")
    check_uint(pnp_id.product_version, 16, "product_version")
    return _PNP_ID.pack(pnp_id.vendor_id_source, pnp_id.vendor_id, pnp_id.product_id, pnp_id.product_version)


def decode_regulatory_certification_data_list(buf: Buffer) -> bytes:
    """The IEEE 11073-20601 Regulatory Certification Data List, kept opaque (its MDER layout is 20601's)."""
    data = bytes(buf)
    _max_length(data, "regulatory_certification_data_list")
    return data


def encode_regulatory_certification_data_list(data: bytes) -> bytes:
    """Encode the opaque Regulatory Certification Data List; raises ValueError beyond 512 bytes."""
    if len(data) > MAX_ATTRIBUTE_LENGTH:
        raise ValueError(f"the certification data list must be at most {MAX_ATTRIBUTE_LENGTH} bytes")
    return bytes(data)


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What a device's Device Information Service said about it; None where it has no such characteristic."""

    manufacturer_name: str | None = None
    model_number: str | None = None
    serial_number: str | None = None
    hardware_revision: str | None = None
    firmware_revision: str | None = None
    software_revision: str | None = None
    system_id: SystemId | None = None
    pnp_id: PnpId | None = None
    regulatory_certification_data: bytes | None = None

    @property
    def regulatory_certification_hex(self) -> str | None:
        """The certification data list as lowercase hex, for logs and uplink payloads."""
        data = self.regulatory_certification_data
        return None if data is None else data.hex()


DIS_STRING_CHARACTERISTICS: Final[Mapping[str, str]] = MappingProxyType(
    {
        MANUFACTURER_NAME: "manufacturer_name",
        MODEL_NUMBER: "model_number",
        SERIAL_NUMBER: "serial_number",
        HARDWARE_REVISION: "hardware_revision",
        FIRMWARE_REVISION: "firmware_revision",
        SOFTWARE_REVISION: "software_revision",
    }
)
DIS_CHARACTERISTICS: Final[tuple[str, ...]] = (
    *DIS_STRING_CHARACTERISTICS,
    SYSTEM_ID,
    PNP_ID,
    REGULATORY_CERTIFICATION_DATA_LIST,
)


def decode_device_identity(values: Mapping[str, Buffer]) -> DeviceIdentity:
    """Build a DeviceIdentity from whichever DIS characteristics were read (uuid -> value); others are ignored.

    Raises InvalidFrame naming the first characteristic whose value is malformed.
    """
    strings = {
        field: decode_dis_string(values[uuid], field)
        for uuid, field in DIS_STRING_CHARACTERISTICS.items()
        if uuid in values
    }
    system_id = decode_system_id(values[SYSTEM_ID]) if SYSTEM_ID in values else None
    pnp_id = decode_pnp_id(values[PNP_ID]) if PNP_ID in values else None
    certification = (
        decode_regulatory_certification_data_list(values[REGULATORY_CERTIFICATION_DATA_LIST])
        if REGULATORY_CERTIFICATION_DATA_LIST in values
        else None
    )
    return DeviceIdentity(
        manufacturer_name=strings.get("manufacturer_name"),
        model_number=strings.get("model_number"),
        serial_number=strings.get("serial_number"),
        hardware_revision=strings.get("hardware_revision"),
        firmware_revision=strings.get("firmware_revision"),
        software_revision=strings.get("software_revision"),
        system_id=system_id,
        pnp_id=pnp_id,
        regulatory_certification_data=certification,
    )


# ----------------------------------------------------------------------------------------------- current time


class DayOfWeek(enum.IntEnum):
    """Day of Week (ISO 8601 numbering; 0 means unknown)."""

    UNKNOWN = 0
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7


class AdjustReason(enum.IntFlag):
    """Current Time adjust reason bits; bits 4-7 are reserved for future use."""

    MANUAL_TIME_UPDATE = 0x01
    EXTERNAL_REFERENCE_TIME_UPDATE = 0x02
    CHANGE_OF_TIME_ZONE = 0x04
    CHANGE_OF_DST = 0x08


_ADJUST_REASON_DEFINED: Final = 0x0F


@dataclass(frozen=True, slots=True)
class CurrentTime:
    """Current Time (0x2A2B): Exact Time 256 (Date Time, Day of Week, Fractions256) and Adjust Reason.

    date_time is (year, month, day, h, m, s) with 0 meaning unknown for the date parts; fractions256 counts
    1/256 s.  Reserved adjust-reason bits a server sets are kept in the value.
    """

    date_time: DateTimeTuple
    day_of_week: int
    fractions256: int = 0
    adjust_reason: int = 0


def decode_current_time(buf: Buffer) -> CurrentTime:
    """Decode Current Time: exactly 10 bytes; an out-of-range date, time or day of week is InvalidFrame."""
    name = "current_time"
    data = bytes(buf)
    require_length(data, _CURRENT_TIME.size, name)
    year, month, day, hours, minutes, seconds, weekday, fractions, reason = _CURRENT_TIME.unpack(data)
    date_time: DateTimeTuple = (year, month, day, hours, minutes, seconds)
    if not date_time_valid(date_time):
        raise InvalidFrame("current_time date time out of range", characteristic=name)
    if weekday > DayOfWeek.SUNDAY:
        raise InvalidFrame("current_time day of week reserved", characteristic=name)
    return CurrentTime(date_time, DayOfWeek(weekday), fractions, AdjustReason(reason))


def encode_current_time(ct: CurrentTime) -> bytes:
    """Encode Current Time; raises ValueError for out-of-range fields or reserved adjust-reason bits."""
    if len(ct.date_time) != 6 or not date_time_valid(ct.date_time):
        raise ValueError("date_time must be (year, month, day, hours, minutes, seconds) in range")
    if not 0 <= ct.day_of_week <= DayOfWeek.SUNDAY:
        raise ValueError("day_of_week must be in [0, 7]")
    check_uint(ct.fractions256, 8, "fractions256")
    if not 0 <= ct.adjust_reason <= _ADJUST_REASON_DEFINED:
        raise ValueError("adjust_reason may only set bits 0-3")
    return _CURRENT_TIME.pack(*ct.date_time, ct.day_of_week, ct.fractions256, ct.adjust_reason)


def encode_current_time_from_ns(
    unix_ns: int, adjust_reason: int = AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE
) -> bytes:
    """Current Time for a Unix time in ns, in UTC (fractions floored to 1/256 s): the gateway setting a device clock.

    The default reason says the clock came from an external reference, which the gateway's own clock is.
    """
    seconds, fraction_ns = divmod(unix_ns, _NS_PER_S)
    try:
        utc = _UNIX_EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError("time is outside the Date Time range") from None
    if not 1582 <= utc.year <= 9999:
        raise ValueError("time is outside the Date Time range")
    stamp: DateTimeTuple = (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
    return encode_current_time(CurrentTime(stamp, utc.isoweekday(), fraction_ns * 256 // _NS_PER_S, adjust_reason))


class DstOffset(enum.IntEnum):
    """DST Offset codes (Local Time Information); 255, "unknown", decodes to None."""

    STANDARD_TIME = 0
    HALF_HOUR_DAYLIGHT_TIME = 2
    DAYLIGHT_TIME = 4
    DOUBLE_DAYLIGHT_TIME = 8


_TIME_ZONE_UNKNOWN: Final = -128
_DST_UNKNOWN: Final = 255
_DST_MINUTES: Final[Mapping[int, int]] = MappingProxyType({0: 0, 2: 30, 4: 60, 8: 120})


@dataclass(frozen=True, slots=True)
class LocalTimeInformation:
    """Local Time Information (0x2A0F); None where the device reports the value as unknown."""

    time_zone_quarter_hours: int | None
    dst_offset: DstOffset | None

    @property
    def utc_offset_min(self) -> int | None:
        """Local time minus UTC in minutes (time zone plus DST), None when either part is unknown."""
        if self.time_zone_quarter_hours is None or self.dst_offset is None:
            return None
        return self.time_zone_quarter_hours * 15 + _DST_MINUTES[self.dst_offset]


def decode_local_time_information(buf: Buffer) -> LocalTimeInformation:
    """Decode Local Time Information: time zone in [-48, 56] quarter hours (or unknown) and a DST code."""
    name = "local_time_information"
    data = bytes(buf)
    require_length(data, _LOCAL_TIME.size, name)
    zone, dst = _LOCAL_TIME.unpack(data)
    if zone != _TIME_ZONE_UNKNOWN and not -48 <= zone <= 56:
        raise InvalidFrame("local_time_information time zone reserved", characteristic=name)
    if dst != _DST_UNKNOWN and dst not in _DST_MINUTES:
        raise InvalidFrame("local_time_information DST offset reserved", characteristic=name)
    return LocalTimeInformation(
        None if zone == _TIME_ZONE_UNKNOWN else zone, None if dst == _DST_UNKNOWN else DstOffset(dst)
    )


def encode_local_time_information(info: LocalTimeInformation) -> bytes:
    """Encode Local Time Information; None encodes the spec's "unknown" value."""
    zone = _TIME_ZONE_UNKNOWN if info.time_zone_quarter_hours is None else info.time_zone_quarter_hours
    if zone != _TIME_ZONE_UNKNOWN and not -48 <= zone <= 56:
        raise ValueError("time zone must be in [-48, 56] quarter hours")
    dst = _DST_UNKNOWN if info.dst_offset is None else int(info.dst_offset)
    if dst != _DST_UNKNOWN and dst not in _DST_MINUTES:
        raise ValueError("DST offset code must be 0, 2, 4 or 8")
    return _LOCAL_TIME.pack(zone, dst)
