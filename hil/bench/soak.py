"""The soak benchmark: the gateway as systemd runs it, for N minutes, under the faults a ward throws at it.

The gateway is a child process (`python -m gateway run`), restarted like `Restart=on-failure` would, so its
resident memory is its own and a crash is a process that died.  Around it, in this process: a loopback
Mosquitto (persistent sessions, so a broker outage loses no subscriber), the reference cloud receiver, a
subscriber on the local alarm channel, a Modbus medication fridge (pymodbus), an HL7 monitor that connects to
the gateway's MLLP listener and re-sends a message until it is acknowledged (as PCD-01 senders do), and a DICOM
modality.  The BLE devices of the demo (ECG patch, oximeter, CGM, insulin pump) run on the gateway's virtual
radio.  All signals are synthetic; nothing outside the installed wheel is needed.

Faults, at fixed fractions of the run: the broker stops for 20 s; the buffer's file system (a small tmpfs,
which needs root or mount rights: otherwise this fault is skipped and said so) is filled by another process for
20 s; eight strangers hold the MLLP listener's slots with a byte at a time for 30 s; a modality stores a 300 MB
object (refused: over the 256 MiB limit, received into the spool) and a valid 16 MB one.

Figures (keys carry units):
- values_lost: values the gateway took from its devices and either dropped (shed) or committed without the
  cloud receiving them, after a final drain; implausible values are counted apart (rejected input).
- alarms_lost: alarm events published on the local channel that never reached the cloud receiver.
- crashes: gateway processes that exited without being asked to.
- rss_mb_max: the gateway process's largest resident set (VmRSS, sampled each second).
- rss_growth_mb: its median RSS over the last tenth of the run minus that over 10-20 % of the run (after the
  first study and the first minute's release of freed memory, before any fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import tomli_w

from cloud_sync.mqtt import MqttClient, MqttError
from cloud_sync.receiver import ReferenceReceiver
from drivers.serial import hl7
from drivers.serial.framing import MllpFramer, mllp_wrap
from gateway.storage.keys import generate_key_file
from hil.bench.sync import LoopbackBroker
from hil.demo import DEMO_CONFIG, free_loopback_port, wait_for_port
from hil.dicom_sim import send_file, write_large_object
from hil.modbus_sim import MedicationFridge, ModbusSimServer

TARGETS = {
    "values_lost": ("<=", 0),
    "alarms_lost": ("<=", 0),
    "crashes": ("<=", 0),
    "rss_growth_mb": ("<=", 10),
    "rss_mb_max": ("<=", 250),
}
OUTAGE_S = 20.0
FLOOD_S = 30.0
HUGE_MB = 300  # refused: over the gateway's 256 MiB object limit (--dicom-mb chooses another size)
LARGE_MB = 16  # stored: over the 8 MiB in-memory limit, so streamed through the spool
WARM_MB = 9  # the first study, early: the same streaming path, so growth measures the run, not first use
DISK_MB = 128
ACK_TIMEOUT_S = 15.0


class ChildGateway:
    """`python -m gateway run --config PATH` in a child process, restarted when it dies unasked."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.crashes = 0
        self.exit_codes: list[int] = []
        self._stopping = False

    def start(self) -> None:
        with self.log.open("ab") as log:
            # Our own interpreter and module with our own config file: no shell, no user input.
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    async def supervise(self) -> None:
        """Restart after an exit nobody asked for (systemd's Restart=on-failure, RestartSec=2s)."""
        while True:
            await asyncio.sleep(0.5)
            process = self.process
            if process is None or self._stopping or process.poll() is None:
                continue
            self.crashes += 1
            self.exit_codes.append(process.returncode)
            await asyncio.sleep(2.0)
            if not self._stopping:
                self.start()

    async def stop(self) -> int | None:
        self._stopping = True
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
        self.exit_codes.append(code)
        self._stopping = False
        return code


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _mount_small_disk(mountpoint: Path) -> Path | None:
    """A tmpfs of DISK_MB for the buffer (so a full disk can be made real), or None when mounting is not allowed."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(  # noqa: S603 - fixed arguments
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(mountpoint)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    return mountpoint if result.returncode == 0 else None


def _unmount(mountpoint: Path) -> None:
    for _ in range(50):
        if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode == 0:  # noqa: S603, S607
            return
        time.sleep(0.2)


def _config(
    folder: Path, broker: int, modbus: int, hl7_port: int, dicom_port: int, metrics: int, disk: Path | None
) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415

    data: dict[str, Any] = tomllib.loads(DEMO_CONFIG.read_text("utf-8"))
    state = folder / "state"
    state.mkdir(mode=0o700)
    generate_key_file(state / "buffer.key")
    data["gateway"]["state_dir"] = str(state)
    data["logging"] = {"level": "info", "format": "json"}
    data["buffer"] |= {
        "key_file": str(state / "buffer.key"),
        "path": str((disk or state) / "buffer.sqlite3"),
        "min_free_disk_mb": 1,
    }
    data["mqtt"] |= {"port": broker, "protocol": "5", "reconnect_max_s": 2.0, "client_id": "soak-gateway"}
    data["alarms"]["local"] = {"host": "127.0.0.1", "port": broker, "protocol": "5"}
    data["metrics"] = {"enabled": True, "port": metrics}
    data["devices"] += [
        {
            "id": "med-fridge-1",
            "transport": "modbus",
            "profile": "medication_fridge",
            "address": f"tcp://127.0.0.1:{modbus}",
            "poll_interval_s": 1.0,
        },
        {
            "id": "bedside-monitor-1",
            "transport": "serial",
            "profile": "hl7_pcd01",
            "address": f"listen://127.0.0.1:{hl7_port}",
            "patient": "pt-3c51e0",
            "idle_timeout_s": 30.0,
        },
        {
            "id": "us-cart-1",
            "transport": "dicom",
            "profile": "storage_scp",
            "address": f"listen://127.0.0.1:{dicom_port}",
            "allowed_calling_aes": ["POC_US_CART"],
        },
    ]
    return data


class Hl7Sender:
    """A bedside monitor: one ORU^R01 a second, each re-sent (same control id) until acknowledged AA."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self.acknowledged = 0
        self.reconnects = 0

    async def run(self) -> None:
        index = 0
        pending: bytes | None = None
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.reconnects += 1
                await asyncio.sleep(1.0)
                continue
            try:
                while True:
                    if pending is None:
                        index += 1
                        pending = self._message(index)
                    writer.write(mllp_wrap(pending))
                    await writer.drain()
                    self.sent += 1
                    if await self._ack(reader) == "AA":
                        self.acknowledged += 1
                        pending = None
                        await asyncio.sleep(1.0)
            except (OSError, TimeoutError, ConnectionError):
                self.reconnects += 1
                await asyncio.sleep(0.5)
            finally:
                writer.close()

    @staticmethod
    def _message(index: int) -> bytes:
        t = index % 60
        readings = [
            hl7.OruObservation("MDC_PRESS_BLD_ART_SYS", 118.0 + t % 7, "1.1.1.1"),
            hl7.OruObservation("MDC_PRESS_BLD_ART_DIA", 76.0 + t % 5, "1.1.1.2"),
            hl7.OruObservation("MDC_ECG_HEART_RATE", 70.0 + t % 9, "1.1.2.1"),
            hl7.OruObservation("MDC_CONC_AWAY_CO2_ET", 36.0 + t % 4, "1.1.3.1"),
        ]
        return hl7.build_oru(readings, control_id=f"SOAK{index:07d}", timestamp=datetime.now(UTC))

    @staticmethod
    async def _ack(reader: asyncio.StreamReader) -> str:
        framer = MllpFramer()
        async with asyncio.timeout(ACK_TIMEOUT_S):
            while True:
                data = await reader.read(4096)
                if not data:
                    raise ConnectionError("closed")
                for frame in framer.feed(data):
                    msa = next((s for s in frame.split(b"\r") if s.startswith(b"MSA")), b"MSA|AR")
                    return msa.split(b"|")[1].decode()


async def _local_alarms(port: int, seen: set[str]) -> None:
    """The ward display: a persistent session on the local alarm channel, so an outage loses nothing."""
    while True:
        try:
            async with MqttClient(
                "127.0.0.1",
                port,
                client_id="soak-ward-display",
                protocol="3.1.1",  # a session without clean start that never expires
                clean_start=False,
            ) as client:
                await client.subscribe("iomt/local/+/alarms/#", qos=1)
                async for message in client.messages:
                    seen.add(str(json.loads(message.payload)["id"]))
        except MqttError:
            await asyncio.sleep(0.5)


async def _flood(port: int, seconds: float) -> None:
    """Eight strangers from other loopback addresses hold connections with a byte every few seconds."""
    writers = []
    for n in range(2, 10):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{n}", 0))
            writers.append(writer)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for writer in writers:
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(b"M")
        await asyncio.sleep(3.0)
    for writer in writers:
        writer.close()


def _fill(folder: Path) -> Path:
    filler = folder / "filler.bin"
    block = b"\0" * (1 << 16)
    with filler.open("ab", buffering=0) as out:
        while True:
            try:
                out.write(block)
            except OSError:
                return filler


def _scrape(port: int) -> dict[str, float]:
    """Prometheus text from the gateway's metrics endpoint: series name (with labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _stopped_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(raw)
            if entry.get("event") == "gateway stopped":
                lines.append(entry)
    return lines


async def bench_soak(minutes: float | None = None, dicom_mb: int | None = None, **_: Any) -> dict[str, Any]:
    duration_s = 60.0 * (minutes if minutes is not None else 10.0)
    with tempfile.TemporaryDirectory(prefix="iomt-soak-") as tmp:
        folder = Path(tmp)
        disk = _mount_small_disk(folder / "disk")
        try:
            return await _soak(folder, disk, duration_s, dicom_mb or HUGE_MB)
        finally:
            if disk is not None:
                _unmount(disk)


async def _soak(folder: Path, disk: Path | None, duration_s: float, big_mb: int) -> dict[str, Any]:
    (folder / "broker").mkdir()
    broker = LoopbackBroker(folder / "broker", persistence=True)
    await broker.start()
    skipped: list[str] = []
    if not broker.restartable:
        skipped.append("broker_outage: needs Mosquitto (persistent sessions)")
    if disk is None:
        skipped.append("disk_full: needs root (or mount rights) for a small tmpfs")
    protocol: Literal["5", "3.1.1"] = "5" if broker.name == "mosquitto" else "3.1.1"
    receiver = ReferenceReceiver("127.0.0.1", broker.port, client_id="soak-receiver", protocol=protocol)
    local_ids: set[str] = set()
    fridge = MedicationFridge(unit_id=1)
    hl7_port, dicom_port, metrics_port = free_loopback_port(), free_loopback_port(), free_loopback_port()
    samples: list[tuple[float, float]] = []
    dicom_statuses: dict[str, int | None] = {}
    faults_done: list[str] = []
    tasks: list[asyncio.Task[Any]] = []
    async with ModbusSimServer([fridge]) as modbus:
        config = _config(
            folder, broker.port, int(modbus.address.rsplit(":", 1)[1]), hl7_port, dicom_port, metrics_port, disk
        )
        config_path = folder / "gateway.toml"
        config_path.write_text(tomli_w.dumps(config))
        gateway = ChildGateway(config_path, folder / "gateway.log")
        sender = Hl7Sender(hl7_port)
        started = time.monotonic()

        async def sample() -> None:
            while True:
                pid = gateway.pid
                rss = _rss_mb(pid) if pid is not None else None
                if rss is not None:
                    samples.append((time.monotonic() - started, rss))
                await asyncio.sleep(1.0)

        async def at(fraction: float) -> None:
            await asyncio.sleep(max(0.0, started + fraction * duration_s - time.monotonic()))

        async def faults() -> None:
            # A first small image warms the image path (its buffers and code), as a ward's first study would:
            # the growth figure measures the run, not first use.
            await at(0.02)
            warm = await asyncio.to_thread(write_large_object, folder / "warm.dcm", WARM_MB)
            dicom_statuses["warm-up"] = await asyncio.to_thread(send_file, "127.0.0.1", dicom_port, warm)
            warm.unlink()
            await at(0.15)
            if broker.restartable:
                await broker.stop()
                await asyncio.sleep(min(OUTAGE_S, 0.05 * duration_s))
                await broker.start()
                faults_done.append("broker_outage")
            await at(0.30)
            if disk is not None:
                filler = await asyncio.to_thread(_fill, disk)
                await asyncio.sleep(min(OUTAGE_S, 0.05 * duration_s))
                filler.unlink()
                faults_done.append("disk_full")
            await at(0.45)
            await _flood(hl7_port, min(FLOOD_S, 0.08 * duration_s))
            faults_done.append("hl7_slot_flood")
            await at(0.60)
            big = await asyncio.to_thread(write_large_object, folder / "big.dcm", big_mb)
            dicom_statuses["big"] = await asyncio.to_thread(send_file, "127.0.0.1", dicom_port, big)
            big.unlink()
            large = await asyncio.to_thread(write_large_object, folder / "large.dcm", LARGE_MB)
            dicom_statuses["large"] = await asyncio.to_thread(send_file, "127.0.0.1", dicom_port, large)
            large.unlink()
            faults_done.append("large_dicom")

        tasks.append(asyncio.create_task(receiver.run(), name="receiver"))
        tasks.append(asyncio.create_task(_local_alarms(broker.port, local_ids), name="ward-display"))
        await asyncio.wait_for(receiver.subscribed.wait(), 20)
        gateway.start()
        tasks.append(asyncio.create_task(gateway.supervise(), name="supervise"))
        tasks.append(asyncio.create_task(sample(), name="rss"))
        await wait_for_port(hl7_port, "the gateway's MLLP listener", tries=600)
        tasks.append(asyncio.create_task(sender.run(), name="hl7-monitor"))
        fault_task = asyncio.create_task(faults(), name="faults")
        try:
            await asyncio.sleep(duration_s)
            await asyncio.wait_for(fault_task, 600)  # a run too short for its faults still completes them
        finally:
            fault_task.cancel()
            tasks[-1].cancel()  # the monitor falls quiet before the gateway stops
        clean_exit = await gateway.stop()
        # Drain what the buffer still holds: the same gateway with no devices, until the buffer is empty.
        drain = dict(config, devices=[])
        config_path.write_text(tomli_w.dumps(drain))
        gateway.start()
        await _drained(metrics_port, receiver)
        await gateway.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await broker.stop()
    return _figures(
        folder / "gateway.log",
        receiver,
        local_ids,
        gateway,
        samples,
        duration_s,
        clean_exit=clean_exit,
        sender=sender,
        dicom=dicom_statuses,
        big_mb=big_mb,
        faults=faults_done,
        skipped=skipped,
    )


async def _drained(metrics_port: int, receiver: ReferenceReceiver, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        try:
            metrics = await asyncio.to_thread(_scrape, metrics_port)
        except OSError:
            continue
        rows = sum(v for k, v in metrics.items() if k.startswith("iomt_buffer_rows"))
        if rows == 0 and metrics.get("iomt_sync_online", 0) == 1:
            await asyncio.sleep(2.0)  # the last acknowledged messages reach the receiver
            return


def _figures(
    log: Path,
    receiver: ReferenceReceiver,
    local_ids: set[str],
    gateway: ChildGateway,
    samples: list[tuple[float, float]],
    duration_s: float,
    *,
    clean_exit: int | None,
    sender: Hl7Sender,
    dicom: dict[str, int | None],
    big_mb: int,
    faults: list[str],
    skipped: list[str],
) -> dict[str, Any]:
    stopped = _stopped_lines(log)
    received = sum(int(line.get("count", 0)) for line in stopped)
    accepted = sum(int(line.get("items", 0)) for line in stopped)
    shed = sum(int(line.get("shed", 0)) for line in stopped)
    evicted = sum(int(line.get("evicted", 0)) for line in stopped)
    implausible = sum(int(line.get("implausible", 0)) for line in stopped)
    delivered = sum(receiver.stats.unique.values())
    cloud_alarms = {str(a.get("id")) for a in receiver.alarms}

    def median_in(lo: float, hi: float) -> float:
        values = [mb for t, mb in samples if lo * duration_s <= t <= hi * duration_s]
        return statistics.median(values) if values else float("nan")

    return {
        "duration_s": round(duration_s, 1),
        "rss_mb_max": round(max((mb for _, mb in samples), default=0.0), 1),
        "rss_growth_mb": round(median_in(0.9, 1.01) - median_in(0.1, 0.2), 1),
        "rss_mb_by_tenth": [round(median_in(i / 10, (i + 1) / 10), 1) for i in range(10)],
        "values_lost": max(0, accepted - delivered) + (received - accepted - implausible),
        "alarms_lost": len(local_ids - cloud_alarms),
        "crashes": gateway.crashes + (0 if clean_exit == 0 else 1),
        "values_received": received,
        "values_accepted": accepted,
        "values_delivered": delivered,
        "values_shed": shed,
        "values_evicted": evicted,
        "values_implausible": implausible,
        "alarms_published_locally": len(local_ids),
        "alarms_delivered": len(cloud_alarms),
        "hl7_messages_acknowledged": sender.acknowledged,
        "hl7_resends": sender.sent - sender.acknowledged,
        "dicom_big_mb": big_mb,
        "dicom_big_status": _status(dicom.get("big")),  # 0xA700 for the default 300 MB: over the 256 MiB limit
        "dicom_16mb_status": _status(dicom.get("large")),
        "faults": faults,
        "faults_skipped": skipped,
        "gateway_exit_codes": gateway.exit_codes,
        "cpu": _cpu_model(),
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
    }


def _status(status: int | None) -> str | None:
    return None if status is None else f"0x{status:04X}"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return os.uname().machine
