"""Logging: structlog, JSON lines off a TTY, readable console on a TTY, and redaction before any output.

Redaction is an allowlist: only keys named in SAFE_KEYS keep their values.  Anything else (a measured value,
a patient identifier, key material, a payload) is replaced by "[redacted]" whatever its name, so a developer
who logs `value=...` by mistake leaks nothing.  Exceptions are rendered as their type and, for the gateway's
own errors, their message (which by contract carries no values); a foreign exception's message is dropped
because libraries put arbitrary data in it.  Standard-library loggers (amqtt, asyncio, paho) go through
the same chain.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections import deque
from collections.abc import MutableMapping
from typing import Any, TextIO

# structlog's dev module imports rich (its console and traceback renderer, and with them pygments: 10 MB resident
# on a gateway) whenever rich is installed.  The daemon renders exceptions itself (type and frames, never a
# message) and needs none of it, so rich is hidden while structlog loads; whatever imports rich later (the CLI's
# tables) gets it as usual, and structlog's console renderer is given plain tracebacks explicitly.
_HIDDEN = [name for name in ("rich", "rich.console", "rich.traceback") if name not in sys.modules]
for _name in _HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]
try:
    import structlog
finally:
    for _name in _HIDDEN:
        del sys.modules[_name]

from gateway.core.errors import GatewayError  # noqa: E402 - after structlog, which must load first (above)

REDACTED = "[redacted]"
MAX_VALUE_CHARS = 200
_SAFE_TYPES = (str, int, float, bool, type(None))

# Foreign loggers whose messages are fixed text or format templates without data (checked in their source).
# Every other library's message text is dropped: asyncio, for one, puts exception messages into its text.
# None today: the MQTT client (cloud_sync.mqtt) logs through structlog and leaves paho's logger off.
FOREIGN_TEXT_ALLOWED: frozenset[str] = frozenset()

SAFE_KEYS = frozenset(
    {
        # structure added by structlog / our processors
        "event",
        "level",
        "timestamp",
        "logger",
        "exc_type",
        "exc_detail",
        "exc_trace",
        # identities that are configuration, not patient data
        "gateway_id",
        "device_id",
        "task",
        "driver",
        "profile",
        "transport",
        "lane",
        "topic",
        "host",
        "port",
        "client_id",
        "quantity",
        "condition",
        "conditions",  # the names a device reports (door_open, occlusion): the device's state, never the patient's
        "priority",
        "kind",
        "state",
        "key_id",
        "command_id",
        "outcome",
        "reason",
        "path",
        "config_path",
        "listener",
        # counts, sizes and timings of the gateway itself
        "attempt",
        "restarts",
        "delay_s",
        "elapsed_s",
        "rows",
        "items",
        "bytes",
        "count",
        "backlog",
        "inflight",
        "shed",
        "evicted",
        "implausible",
        "lanes",
        "duration_s",
        "interval_s",
        "version",
        "schema_version",
        "pid",
        "status",
        # errors (our errors' fields are designed to be safe)
        "error",
        "detail",
        "characteristic",
        "length",
        "expected",
        "config_key",
        "errno",
        # device protocols (names, counts and positions; never a value or an identifier of a patient or study)
        "source",
        "calling_ae",
        "ae_title",
        "protocol",
        "ack",
        "fault",
        "faults",
        "framer",
        "offset",
        "runs",
        "total_runs",
        "chunks",
        "requests_per_poll",
        "polls",
        "got",
        "rssi_dbm",
        "since_offset_min",
        "since_min",
        "refetch",
        "sop_class",
        "transfer_syntax",
        "attribute",
        "part",
        "limit",
        "group",
        "channel",
        # bridges (cloud side): counts and the sink's name
        "sink",
        "created",
        "existing",
        "parked",
    }
)


def _redact(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    exc = event_dict.pop("exc_info", None)
    if exc:
        if exc is True:
            exc = sys.exc_info()
        elif isinstance(exc, BaseException):
            exc = (type(exc), exc, exc.__traceback__)
        if isinstance(exc, tuple) and exc[0] is not None:
            event_dict["exc_type"] = exc[0].__name__
            if isinstance(exc[1], GatewayError):
                event_dict["exc_detail"] = exc[1].message
            # Frames only (file, line, function): never the exception message or locals.
            frames = traceback.extract_tb(exc[2])
            event_dict["exc_trace"] = " <- ".join(
                f"{f.name}@{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(frames[-6:])
            )
    for key in list(event_dict):
        value = event_dict[key]
        if key not in SAFE_KEYS or not isinstance(value, _SAFE_TYPES):
            event_dict[key] = REDACTED
        elif isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            event_dict[key] = value[:MAX_VALUE_CHARS] + "..."
    event = event_dict.get("event")
    if not isinstance(event, str):
        event_dict["event"] = REDACTED
    return event_dict


def _stdlib_event(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A foreign library's record: its template only (`use_get_message=False`), and only from allowed loggers."""
    record = event_dict.get("_record")
    name = record.name if record is not None else ""
    if name.split(".", 1)[0] not in FOREIGN_TEXT_ALLOWED or not isinstance(event_dict.get("event"), str):
        event_dict["event"] = "foreign log record (text withheld)"
    event_dict["logger"] = name
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _formatter(renderer: Any) -> logging.Formatter:
    """Our events and foreign records alike: redacted, then rendered."""
    return structlog.stdlib.ProcessorFormatter(
        use_get_message=False,
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.add_logger_name, _stdlib_event],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _redact, renderer],
    )


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Install the structlog chain and route the standard library's loggers through it."""
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*_shared_processors(), _redact, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(renderer))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    keep_recent_lines()
    root.setLevel(level.upper())
    # Chatty third-party loggers: their protocol traces would include payload bytes at debug.
    for name in ("amqtt", "transitions", "paho", "asyncio", "hpack", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


class RecentLines(logging.Handler):
    """Keeps the last log lines (already redacted, as JSON) in memory for `iomt-gateway logs`."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a log handler must never raise into the code that logs
            self.handleError(record)


RECENT = RecentLines()


def keep_recent_lines() -> RecentLines:
    """Attach the in-memory ring of recent (redacted) lines to the root logger, once."""
    root = logging.getLogger()
    if RECENT not in root.handlers:
        RECENT.setFormatter(_formatter(structlog.processors.JSONRenderer()))
        root.addHandler(RECENT)
    return RECENT


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
