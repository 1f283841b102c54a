"""The HL7 benchmark: IHE PCD-01 ORU^R01 messages per second through MLLP framing, parsing, ACK and mapping.

The messages are what a bedside monitor sends each second (ABP systolic/diastolic/mean, heart rate, SpO2,
pulse rate, respiration rate, temperature: eight numerics), generated with `drivers.serial.hl7.build_oru`.
Each is MLLP-framed; the bytes go through the MllpFramer in 4 KiB reads (as a socket delivers them), then
`parse_and_ack` and `observations`, exactly as the serial driver does.

- messages_per_s: messages framed, parsed, acknowledged and mapped per second (one core).
- observations_per_s: the numerics they carried, per second.
- us_per_message: the inverse, in microseconds.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from drivers.serial import hl7
from drivers.serial.framing import MllpFramer, mllp_wrap

READINGS = (
    ("MDC_PRESS_BLD_ART_SYS", 120.0),
    ("MDC_PRESS_BLD_ART_DIA", 80.0),
    ("MDC_PRESS_BLD_ART_MEAN", 93.0),
    ("MDC_ECG_HEART_RATE", 72.0),
    ("MDC_PULS_OXIM_SAT_O2", 97.0),
    ("MDC_PULS_OXIM_PULS_RATE", 71.0),
    ("MDC_RESP_RATE", 16.0),
    ("MDC_TEMP_BODY", 36.8),
)


def _stream(messages: int) -> bytes:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = bytearray()
    for n in range(messages):
        readings = [
            hl7.OruObservation(ref, round(value + (n % 7) * 0.5, 1), f"1.1.{i + 1}.1")
            for i, (ref, value) in enumerate(READINGS)
        ]
        out += mllp_wrap(hl7.build_oru(readings, control_id=f"B{n:08d}", timestamp=start + timedelta(seconds=n)))
    return bytes(out)


async def bench_hl7(seconds: float | None = None, **_: Any) -> dict[str, Any]:
    window = 5.0 if seconds is None else min(seconds, 30.0)
    stream = _stream(2000)
    messages = observations = 0
    accepted = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    while time.perf_counter() - started < window:
        framer = MllpFramer()
        for offset in range(0, len(stream), 4096):
            for frame in framer.feed(stream[offset : offset + 4096]):
                message, ack = hl7.parse_and_ack(frame)
                messages += 1
                if message is not None:
                    accepted += 1
                    observations += len(hl7.observations(message, "bench-monitor"))
                if not ack:
                    raise RuntimeError("no ACK built")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {
        "messages_per_s": round(messages / elapsed),
        "observations_per_s": round(observations / elapsed),
        "us_per_message": round(elapsed / messages * 1e6, 1),
        "messages_per_cpu_s": round(messages / cpu) if cpu else None,
        "accepted_fraction": round(accepted / messages, 4),
        "numerics_per_message": len(READINGS),
        "bytes_per_message": round(len(stream) / 2000),
    }
