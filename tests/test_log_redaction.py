"""No measured value, patient identifier or key material ever reaches a log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.errors import TransportError
from gateway.logs import REDACTED, SAFE_KEYS, configure_logging, get_logger
from tests.conftest import Mosquitto, make_config
from tests.harness import running_gateway

PATIENT = "pt-ZX81Q"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_unknown_keys_are_redacted_and_foreign_exception_messages_dropped(captured_logs: io.StringIO) -> None:
    log = get_logger("test")
    log.info("reading", device_id="ox-1", value=97.3, spo2=88, patient=PATIENT, key=b"\x01" * 32, payload="x")
    try:
        raise ValueError(f"bad reading 97.3 for {PATIENT}")
    except ValueError:
        log.warning("decode failed", exc_info=True)
    try:
        raise TransportError("link lost", device_id="ox-1")
    except TransportError:
        log.warning("link failed", exc_info=True)
    logging.getLogger("some.library").warning("payload %s from %s", "97.3", PATIENT)
    first, second, third, fourth = _lines(captured_logs)
    assert first["device_id"] == "ox-1"
    for key in ("value", "spo2", "patient", "key", "payload"):
        assert first[key] == REDACTED
    assert second["exc_type"] == "ValueError"
    assert "exc_detail" not in second
    assert third["exc_detail"] == "link lost"
    assert fourth["event"] == "payload %s from %s"
    text = captured_logs.getvalue()
    assert "97.3" not in text
    assert PATIENT not in text


async def test_demo_path_logs_hold_no_vital_value_or_patient_id(
    tmp_path: Path, mosquitto: Mosquitto, captured_logs: io.StringIO
) -> None:
    config = make_config(tmp_path / "state", mosquitto.port)
    async with running_gateway(config) as run:
        await run.wait_until(lambda: all(run.receiver.stats.unique[d.id] > 2 for d in config.devices))
        # Provoke the log lines that sit closest to data: invalid frames, link loss, restarts.
        run.world.peripherals["ox-1"].garbage_every = 2
        run.world.peripherals["cgm-1"].drop_links()
        run.gateway.parts.supervisor.kill("driver:ecg-1")  # type: ignore[union-attr]
        await asyncio.sleep(3.0)
        run.world.peripherals["ox-1"].garbage_every = 0
        await run.finish()

    lines = _lines(captured_logs)
    events = {str(line["event"]) for line in lines}
    assert "invalid frame dropped" in events
    assert "task failed; restarting" in events
    text = captured_logs.getvalue()
    assert PATIENT not in text
    for line in lines:
        unsafe = {k for k, v in line.items() if k not in SAFE_KEYS and v != REDACTED}
        assert not unsafe, line
    # Every non-integer value the receiver got (SpO2 97.1, glucose trend -1.5, RR 833.3 ms ...) is absent.
    decimals = {
        f"{item['value']}"
        for item in run.receiver.items.values()
        if isinstance(item.get("value"), float) and not float(item["value"]).is_integer()  # type: ignore[arg-type]
    }
    assert decimals, "the run produced decimal values to look for"
    for value in decimals:
        assert not re.search(rf"(?<![\d.]){re.escape(value)}(?!\d)", text), value
    # No waveform samples: no JSON array of numbers in any line.
    assert not re.search(r"\[\s*-?\d+(\s*,\s*-?\d+){4,}", text)
