"""The local admin API: newline-delimited JSON over a Unix socket, for the technician's CLI.

Who may connect is decided twice: by the socket file's owner, group and mode (0660, the service user and the
technicians' group), and by the peer's credentials (SO_PEERCRED) checked on every connection, so a socket
left world-writable by mistake still refuses everyone else.  There is no TCP listener.

Each connection carries one request `{"op": ..., ...}` and gets one response `{"ok": true, "result": ...}` or
`{"ok": false, "error": ..., "hint": ...}`.  Responses carry counts, states and identifiers, never measured
values or patient identifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import platform
import pwd
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.core.backlog import LaneStats
from gateway.core.errors import GatewayError
from gateway.core.logs import RECENT, get_logger
from gateway.core.model import AlarmState
from gateway.status import GatewayControl, StatusSnapshot

log = get_logger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
_PEERCRED = struct.Struct("3i")


class Forbidden(GatewayError):
    """A peer that is neither root, the service user, nor in the technicians' group."""


def peer_allowed(uid: int, group: str | None) -> bool:
    if uid in (0, os.getuid()):
        return True
    if group is None:
        return False
    try:
        gid = grp.getgrnam(group).gr_gid
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return gid in os.getgrouplist(user.pw_name, user.pw_gid)


class AdminServer:
    def __init__(self, gateway: GatewayControl, path: Path, group: str | None) -> None:
        self._gateway = gateway
        self.path = path
        self._group = group
        self._server: asyncio.Server | None = None
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "status": self._status,
            "devices": self._devices,
            "alarms": self._alarms,
            "ack_alarm": self._ack,
            "silence_alarm": self._silence,
            "sync_now": self._sync_now,
            "logs": self._logs,
            "buffer_stats": self._buffer_stats,
            "diag": self._diag,
        }

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from an unclean stop
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)
        if self._group is not None:
            try:
                os.chown(self.path, -1, grp.getgrnam(self._group).gr_gid)
            except (KeyError, PermissionError):
                log.warning(
                    "admin socket group not applied; only root and the service user may connect", path=str(self.path)
                )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            async with asyncio.timeout(10):
                line = await reader.readline()  # read first, so a refusal reaches the peer instead of a reset
            if not peer_allowed(uid, self._group):
                log.warning("admin connection refused", status=uid)
                response: dict[str, Any] = {
                    "ok": False,
                    "error": "forbidden",
                    "hint": "ask for membership of the technicians' group",
                }
            else:
                response = await self._answer(line)
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line[:MAX_REQUEST_BYTES])
            handler = self._ops[request["op"]]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            return {"ok": False, "error": "bad request", "hint": f"ops: {', '.join(sorted(self._ops))}"}
        try:
            return {"ok": True, "result": await handler(request)}
        except GatewayError as err:
            return {"ok": False, "error": err.message, "hint": "see `iomt-gateway logs` for details"}

    # -- operations ------------------------------------------------------------------------------------------
    async def _status(self, _: dict[str, Any]) -> dict[str, Any]:
        snap = await self._gateway.snapshot()
        return {
            "gateway_id": snap.gateway_id,
            "version": _version(),
            "uptime_s": round(snap.uptime_s, 1),
            "health": "ok" if snap.sync_state == "online" else "degraded",
            "sync": {
                "state": snap.sync_state,
                "last_error": snap.sync_last_error,
                "inflight": snap.sync_inflight,
                "publishes": snap.metrics.publishes,
                "reconnects": snap.metrics.reconnects,
                "publish_errors": snap.metrics.publish_errors,
            },
            "drivers": {
                name: {"running": task.running, "restarts": task.restarts, "last_error": task.last_error}
                for name, task in snap.tasks.items()
            },
            "devices": len(snap.devices),
            "pipeline_backlog": snap.pipeline_backlog,
            "buffer": _lanes(snap.lanes),
            "active_alarms": len(snap.active_alarms),
        }

    async def _devices(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        snap = await self._gateway.snapshot()
        now = time.time_ns()
        out = []
        for device in snap.devices:
            counters = snap.metrics.device(device.device_id)
            driver = snap.metrics.drivers.get(device.device_id)
            task = snap.tasks.get(f"driver:{device.device_id}")
            out.append(
                {
                    "device": device.device_id,
                    "profile": device.profile,
                    "transport": device.transport,
                    "state": device.connection or "unknown",
                    "battery_pct": device.battery_pct,
                    "rssi_dbm": device.rssi_dbm,
                    "last_seen_s": None
                    if counters.last_seen_ns is None
                    else round((now - counters.last_seen_ns) / 1e9, 1),
                    "received": counters.received,
                    "delivered": counters.delivered,
                    "invalid_frames": driver.invalid_frames if driver else 0,
                    "restarts": task.restarts if task else 0,
                }
            )
        return out

    async def _alarms(self, _: dict[str, Any]) -> list[dict[str, Any]]:
        snap = await self._gateway.snapshot()
        return [
            {
                "id": a.alarm_id,
                "event_id": a.id,
                "device": a.device_id,
                "condition": a.condition,
                "kind": a.kind.value,
                "priority": a.priority.value,
                "state": a.state.value,
                "since_s": round((time.time_ns() - a.gateway_time_ns) / 1e9, 1),
            }
            for a in snap.active_alarms
        ]

    async def _ack(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._change_alarm(request, AlarmState.ACKNOWLEDGED)

    async def _silence(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._change_alarm(request, AlarmState.SILENCED)

    def _change_alarm(self, request: dict[str, Any], state: AlarmState) -> dict[str, Any]:
        alarm = self._gateway.set_alarm_state(str(request.get("id", "")), state)
        if alarm is None:
            raise GatewayError("no active alarm with that id; list them with `iomt-gateway alarms`")
        return {"id": alarm.alarm_id, "event_id": alarm.id, "state": alarm.state.value}

    async def _sync_now(self, _: dict[str, Any]) -> dict[str, Any]:
        state = self._gateway.sync_now()
        if state is None:
            raise GatewayError("the gateway is still starting")
        return {"state": state}

    async def _logs(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Recent log records (already redacted), as objects, oldest first."""
        level = str(request.get("level", "debug"))
        text = str(request.get("grep", ""))
        limit = min(int(request.get("limit", 200)), len(RECENT.lines) or 1)
        order = ["debug", "info", "warning", "error", "critical"]
        floor = order.index(level) if level in order else 0
        out = []
        for line in RECENT.lines:
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if not isinstance(record, dict) or record.get("level", "info") not in order:
                    continue
                if order.index(record.get("level", "info")) < floor or (text and text not in line):
                    continue
                out.append(record)
        return out[-limit:]

    async def _buffer_stats(self, _: dict[str, Any]) -> dict[str, Any]:
        snap = await self._gateway.snapshot()
        return _lanes(snap.lanes) if snap.started else {}

    async def _diag(self, _: dict[str, Any]) -> dict[str, Any]:
        snap = await self._gateway.snapshot()
        return {
            "config": redacted_config(self._gateway.configuration()),
            "versions": {
                "iomt-gateway": _version(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                **_library_versions(),
            },
            "status": await self._status({}),
            "devices": await self._devices({}),
            "logs": list(RECENT.lines)[-1000:],
            "metrics": _metrics_text(snap),
        }


def _metrics_text(snap: StatusSnapshot) -> str:
    from gateway.metrics_http import render_metrics  # noqa: PLC0415 - prometheus_client only for a diagnostics bundle

    return render_metrics(snap)


def _lanes(lanes: list[LaneStats]) -> dict[str, Any]:
    return {
        s.lane.topic_name: {
            "rows": s.rows,
            "items": s.items,
            "bytes": s.bytes,
            "oldest_age_s": None if s.oldest_age_s is None else round(s.oldest_age_s, 1),
        }
        for s in lanes
    }


SECRET_KEYS = {"key_file", "cert_file", "ca_file", "public_key"}
PATIENT_KEYS = {"patient"}


def redacted_config(document: Any) -> Any:
    """The configuration for a support bundle: secret references and patient pseudonyms replaced."""
    if isinstance(document, dict):
        return {
            k: (
                "[secret reference]"
                if k in SECRET_KEYS
                else "[patient]"
                if k in PATIENT_KEYS and v
                else redacted_config(v)
            )
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [redacted_config(v) for v in document]
    return document


def _version() -> str:
    try:
        return metadata.version("iomt-gateway")
    except metadata.PackageNotFoundError:
        return "unknown"


def _library_versions() -> dict[str, str]:
    out = {}
    for name in ("paho-mqtt", "cryptography", "numpy", "structlog", "pydantic", "zstandard"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


async def request(path: Path, op: str, **args: Any) -> dict[str, Any]:
    """The client side: one request to the admin socket."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(json.dumps({"op": op, **args}).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    response: dict[str, Any] = json.loads(line) if line else {"ok": False, "error": "no answer"}
    return response
