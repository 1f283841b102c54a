"""HL7 v2 out: IHE PCD-01 (ORU^R01) observations and PCD-04 (ORU^R40) alarm reports over MLLP, with ACKs.

Written over the core alone (the serial driver's HL7 code is the inbound side of another layer).  The builders,
the ACK parser and the MLLP framing are pure; `MllpClient` and `Hl7Sink` do the I/O.

- One ORU^R01 per numerics batch (a batch is one stored row of one device, re-sent byte for byte), one ORU^R40
  per alarm event.  MSH-10 is derived from the batch's or the event's stable ids and MSH-7 from the events'
  gateway times, so a redelivered MQTT message produces the very same HL7 message: the interface engine drops
  the repeat by MSH-10, as HL7's original acknowledgement mode expects of a sender's retry.
- OBX-3 carries the MDC code (`code^REFID^MDC`) and, where a standard mapping exists, the LOINC code as the
  alternate identifier; OBX-6 the UCUM unit; OBX-14 the device's time (the gateway's when the device has none);
  OBX-18 the device and its gateway.
- ACKs: AA/CA delivered; AE/CE/AR/CR refused for good (the message's items are parked with the code); anything
  that is not an ACK for this message (no answer in time, a lost connection, a garbled or foreign ACK) is
  retried on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cloud_sync.bridge.errors import MappingError, TargetRejected, TargetUnavailable
from cloud_sync.bridge.fhir_map import LOINC
from cloud_sync.bridge.worker import Delivery
from gateway.core.errors import InvalidFrame
from gateway.core.logs import get_logger
from gateway.core.model import Lane
from gateway.core.wire import Batch

log = get_logger(__name__)

VT: Final = b"\x0b"
FS_CR: Final = b"\x1c\r"
MAX_ACK_BYTES: Final = 64 * 1024
VERSION: Final = "2.6"
PCD01_PROFILE: Final = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
PCD04_PROFILE: Final = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ACK_CODES: Final = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_PRIORITY: Final = {"high": "PH", "medium": "PM", "low": "PL"}
_ALERT_TYPE: Final = {"physiological": "SP", "technical": "ST"}
_FACETS: Final = {
    "active": ("start", "active", "enabled"),
    "cleared": ("end", "inactive", "enabled"),
    "acknowledged": ("update", "active", "alert-acknowledged"),
    "silenced": ("update", "active", "audio-paused"),
}


class AckError(InvalidFrame):
    """Bytes that are not an HL7 acknowledgement."""


@dataclass(frozen=True, slots=True)
class SenderIdentity:
    application: str = "IOMT_GATEWAY"
    facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""


@dataclass(frozen=True, slots=True)
class Hl7Message:
    control_id: str
    trigger: str  # "R01" or "R40"
    text: str
    items: tuple[dict[str, Any], ...] = field(repr=False)

    def encode(self) -> bytes:
        return self.text.encode("utf-8")


def escape(text: str) -> str:
    """HL7 escape sequences for the default delimiters (|^~\\&); other control characters become spaces."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\E\\")
        elif char == "|":
            out.append("\\F\\")
        elif char == "^":
            out.append("\\S\\")
        elif char == "&":
            out.append("\\T\\")
        elif char == "~":
            out.append("\\R\\")
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


def hl7_time(ns: int) -> str:
    """UTC nanoseconds as an HL7 DTM with a zone (YYYYMMDDHHMMSS.FFFF+0000)."""
    if not isinstance(ns, int) or isinstance(ns, bool) or not 0 <= ns < 253402300800 * 10**9:
        raise MappingError("time out of range", reason="bad-time")
    moment = _EPOCH + timedelta(microseconds=ns // 1000)
    return moment.strftime("%Y%m%d%H%M%S.") + f"{moment.microsecond // 100:04d}+0000"


def control_id(*parts: object) -> str:
    """A 20-character MSH-10 derived from stable ids (fits every HL7 version's ST(20))."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:20].upper()


def _segment(*fields: str) -> str:
    return "|".join(fields).rstrip("|")


def _msh(sender: SenderIdentity, when_ns: int, trigger: str, ctrl: str, profile: str) -> str:
    return "|".join(
        [
            "MSH",
            "^~\\&",
            escape(sender.application),
            escape(sender.facility),
            escape(sender.receiving_application),
            escape(sender.receiving_facility),
            hl7_time(when_ns),
            "",
            f"ORU^{trigger}^ORU_{trigger}",
            ctrl,
            "P",
            VERSION,
            "",
            "",
            "AL",
            "NE",
            "",
            "UNICODE UTF-8",
            "",
            "",
            profile,
        ]
    )


def _pid(patient: str | None) -> list[str]:
    # PID-5 is required: the gateway knows no name, so a pseudo-name (HL7 table 0200 "S", coded for anonymity).
    return [_segment("PID", "", "", f"{escape(patient)}^^^^PI", "", "^^^^^^S")] if patient else []


def _time_of(item: Mapping[str, Any]) -> int:
    t_dev, t_gw = item.get("t_dev"), item.get("t_gw")
    when = t_dev if t_dev is not None else t_gw
    if not isinstance(when, int) or isinstance(when, bool):
        raise MappingError("item without a time", reason="bad-time")
    return when


def _nm(value: float) -> str:
    text = repr(float(value))
    if "e" in text or "E" in text:
        text = f"{value:.15f}".rstrip("0")
    return text[:-2] if text.endswith(".0") else text.rstrip(".")


def _identifier(code: int, ref: object) -> str:
    text = escape(ref) if isinstance(ref, str) else ""
    identifier = f"{code}^{text}^MDC"
    loinc = LOINC.get(ref, ()) if isinstance(ref, str) else ()
    if loinc:
        identifier += f"^{loinc[0].code}^{escape(loinc[0].display)}^LN"
    return identifier


def _obx_numeric(n: int, item: Mapping[str, Any], equipment: str) -> str:
    code, unit, value = item.get("code"), item.get("unit"), item.get("value")
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(unit, str) or not unit:
        raise MappingError("numeric item without a code or unit", reason="bad-code")
    flag, status, text = "", "R", ""
    if value is None:
        special = item.get("special")
        flag = {"-inf": "<", "+inf": ">"}.get(str(special), "")
        status = "X"
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        text = _nm(value)
    else:
        raise MappingError("numeric item with a bad value", reason="bad-value")
    units = f"{escape(unit)}^{escape(unit)}^UCUM"
    return _segment(
        "OBX", str(n), "NM", _identifier(code, item.get("ref")), f"1.0.0.{n}", text, units, "", flag,
        "", "", status, "", "", hl7_time(_time_of(item)), "", "", "", equipment,
    )  # fmt: skip


def pcd01(batch: Batch, sender: SenderIdentity) -> Hl7Message:
    """One ORU^R01 for a numerics batch (MappingError if any item cannot be written)."""
    if batch.lane is not Lane.NUMERICS or not batch.items:
        raise MappingError("PCD-01 carries numerics", reason="bad-lane")
    ids = [str(item["id"]) for item in batch.items]
    ctrl = control_id(batch.gateway, batch.device, *ids)
    times = [_time_of(item) for item in batch.items]
    t_gw = [item.get("t_gw") for item in batch.items]
    stamp = max((t for t in t_gw if isinstance(t, int) and not isinstance(t, bool)), default=max(times))
    equipment = f"{escape(batch.device)}^{escape(batch.gateway)}"
    lines = [_msh(sender, stamp, "R01", ctrl, PCD01_PROFILE), *_pid(batch.patient)]
    order = f"{ctrl}^{escape(sender.application)}"
    lines.append(
        _segment("OBR", "1", order, order, "182777000^monitoring of patient^SCT", "", "", hl7_time(min(times)))
    )
    lines += [_obx_numeric(n, item, equipment) for n, item in enumerate(batch.items, start=1)]
    return Hl7Message(ctrl, "R01", "\r".join(lines) + "\r", tuple(batch.items))


def pcd04(batch: Batch, item: Mapping[str, Any], sender: SenderIdentity) -> Hl7Message:
    """One ORU^R40 (IHE PCD-04 alarm report) for one alarm event."""
    condition = item.get("condition")
    priority = _PRIORITY.get(str(item.get("priority")))
    kind = _ALERT_TYPE.get(str(item.get("kind")))
    facets = _FACETS.get(str(item.get("state")))
    if not isinstance(condition, str) or not condition or priority is None or kind is None or facets is None:
        raise MappingError("alarm without a condition, priority, kind or state", reason="bad-alarm")
    phase, state, inactivation = facets
    when = hl7_time(_time_of(item))
    stamp = item.get("t_gw")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        stamp = _time_of(item)
    ctrl = control_id(batch.gateway, batch.device, item.get("id"))
    instance = control_id(batch.gateway, batch.device, condition)  # the alarm across its phases
    equipment = f"{escape(batch.device)}^{escape(batch.gateway)}"
    app = escape(sender.application)
    lines = [
        _msh(sender, stamp, "R40", ctrl, PCD04_PROFILE),
        *_pid(batch.patient),
        _segment("OBR", "1", f"{ctrl}^{app}", f"{instance}^{app}", "196616^MDC_EVT_ALARM^MDC", "", "", when),
        _segment("OBX", "1", "ST", "196616^MDC_EVT_ALARM^MDC", "1.0.0.0.1", escape(condition), "", "",
                 f"{priority}~{kind}", "", "", "R", "", "", when, "", "", "", equipment),
    ]  # fmt: skip
    code = item.get("code")
    facet_rows: list[tuple[str, str, str]] = []
    if isinstance(code, int) and not isinstance(code, bool):
        facet_rows.append(("CWE", "68480^MDC_ATTR_ALERT_SOURCE^MDC", _identifier(code, item.get("ref"))))
    facet_rows += [
        ("ST", "68481^MDC_ATTR_EVENT_PHASE^MDC", phase),
        ("ST", "68482^MDC_ATTR_ALARM_STATE^MDC", state),
        ("ST", "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC", inactivation),
        ("ST", "68484^MDC_ATTR_ALARM_PRIORITY^MDC", priority),
        ("ST", "68485^MDC_ATTR_ALERT_TYPE^MDC", kind),
    ]
    for n, (value_type, identifier, value) in enumerate(facet_rows, start=2):
        lines.append(_segment("OBX", str(n), value_type, identifier, f"1.0.0.0.{n}", value, "", "", "", "", "", "R"))
    return Hl7Message(ctrl, "R40", "\r".join(lines) + "\r", (dict(item),))


def messages_for(
    batches: Iterable[Batch], sender: SenderIdentity
) -> tuple[list[Hl7Message], list[tuple[dict[str, Any], str]]]:
    """The HL7 messages for one sync-API message's numerics and alarms; the items that cannot be written apart."""
    messages: list[Hl7Message] = []
    rejected: list[tuple[dict[str, Any], str]] = []
    for batch in batches:
        if batch.lane is Lane.NUMERICS and batch.items:
            try:
                messages.append(pcd01(batch, sender))
            except (MappingError, KeyError) as err:
                reason = err.reason if isinstance(err, MappingError) else "bad-id"
                rejected += [(dict(item), reason) for item in batch.items]
        elif batch.lane is Lane.ALARMS:
            for item in batch.items:
                try:
                    messages.append(pcd04(batch, item, sender))
                except MappingError as err:
                    rejected.append((dict(item), err.reason))
    return messages, rejected


# ------------------------------------------------------------------------------------------------ ACKs, MLLP


@dataclass(frozen=True, slots=True)
class Ack:
    code: str  # MSA-1
    control_id: str  # MSA-2: the MSH-10 it acknowledges
    errors: tuple[str, ...] = ()  # ERR-3 error codes, if any


def parse_ack(raw: bytes) -> Ack:
    """An ACK's MSA (and ERR codes); AckError for anything that is not an HL7 acknowledgement.  Never else."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AckError("ACK is not UTF-8", length=len(raw)) from None
    segments = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s]
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise AckError("ACK does not start with MSH", length=len(raw))
    field_sep, component_sep = segments[0][3], segments[0][4]
    if field_sep.isalnum() or component_sep.isalnum() or field_sep == component_sep:
        raise AckError("ACK has bad delimiters", length=len(raw))
    msa = [s.split(field_sep) for s in segments if s.startswith("MSA" + field_sep)]
    if len(msa) != 1 or len(msa[0]) < 3:
        raise AckError("ACK without one MSA", length=len(raw))
    code, ctrl = msa[0][1], msa[0][2]
    if code not in _ACK_CODES or not ctrl:
        raise AckError("ACK with an unknown code or no control id", length=len(raw))
    errors = []
    for segment in segments:
        fields = segment.split(field_sep)
        if fields[0] == "ERR" and len(fields) > 3:
            errors.append(fields[3].split(component_sep)[0][:20])
    return Ack(code, ctrl, tuple(errors))


def mllp_frame(payload: bytes) -> bytes:
    return VT + payload + FS_CR


def mllp_payload(frame: bytes) -> bytes:
    """The payload of one received MLLP frame (bytes before the start block are dropped)."""
    start = frame.rfind(VT)
    if start < 0 or not frame.endswith(FS_CR):
        raise AckError("not an MLLP frame", length=len(frame))
    return frame[start + 1 : -len(FS_CR)]


class MllpClient:
    """One MLLP connection to the interface engine, opened on demand and replaced after any fault."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 30.0, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.tls = tls
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(self, payload: bytes) -> bytes:
        """Send one message and return the payload of the answer; TargetUnavailable on any transport fault."""
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._writer is None or self._reader is None:
                    self._reader, self._writer = await asyncio.open_connection(
                        self.host, self.port, ssl=self.tls, limit=MAX_ACK_BYTES
                    )
                self._writer.write(mllp_frame(payload))
                await self._writer.drain()
                frame = await self._reader.readuntil(FS_CR)
            return mllp_payload(frame)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, AckError) as err:
            await self.aclose()
            raise TargetUnavailable("MLLP exchange failed", reason="mllp", error=type(err).__name__) from None

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await writer.wait_closed()


class Hl7Sink:
    """The HL7 sink: numerics as PCD-01, alarms as PCD-04, one message at a time on one MLLP connection."""

    name = "hl7"
    lanes = frozenset({Lane.NUMERICS, Lane.ALARMS})

    def __init__(self, client: MllpClient, sender: SenderIdentity) -> None:
        self.client = client
        self.sender = sender

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, batches: list[Batch]) -> Delivery:
        messages, rejected = messages_for(batches, self.sender)
        written = 0
        for message in messages:
            try:
                await self._send(message)
            except TargetRejected as err:
                log.warning(
                    "interface engine refused a message", sink=self.name, reason=err.reason, ack=err.fields.get("ack")
                )
                rejected += [(dict(item), err.reason) for item in message.items]
                continue
            written += 1
        return Delivery(written=written, rejected=rejected)

    async def _send(self, message: Hl7Message) -> None:
        answer = await self.client.exchange(message.encode())
        try:
            ack = parse_ack(answer)
        except AckError:
            await self.client.aclose()
            raise TargetUnavailable("the interface engine's answer is not an ACK", reason="bad-ack") from None
        if ack.control_id != message.control_id:
            await self.client.aclose()  # an answer to another message: the connection is out of step
            raise TargetUnavailable("ACK for another message", reason="ack-mismatch")
        if ack.code in ("AA", "CA"):
            return
        codes = ",".join(ack.errors) or "none"
        raise TargetRejected(
            "interface engine refused the message", reason=f"hl7-{ack.code}:{codes}"[:80], ack=ack.code
        )
