"""DICOM intake end to end: a simulated modality (pynetdicom SCU) and a drop folder, through the encrypted buffer's
images lane and a real broker, to the reference receiver, which reassembles and SHA-256-verifies each object."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file

from gateway.config import Config, parse_config
from gateway.core.model import Lane
from gateway.daemon import Gateway
from hil.demo import free_loopback_port
from hil.dicom_sim import echo, send_async
from tests.conftest import Mosquitto, config_dict, start_mosquitto
from tests.support.harness import Running, running_gateway

GOOD = ["CT_small.dcm", "MR_small.dcm", "SC_rgb_small_odd.dcm", "JPEG2000.dcm", "examples_ybr_color.dcm"]
ECG = "waveform_ecg.dcm"


def _file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


def _identities(names: list[str]) -> set[bytes]:
    """The patient names and ids in the test files: what must never reach the buffer in clear text."""
    found: set[bytes] = set()
    for name in names:
        ds = pydicom.dcmread(_file(name))
        for value in (ds.get("PatientName"), ds.get("PatientID")):
            text = str(value or "").strip()
            if len(text) >= 4:
                found.add(text.encode())
    return found


def _config(tmp_path: Path, port: int, devices: list[dict[str, Any]], **mqtt: Any) -> Config:
    data = config_dict(tmp_path / "state", port)
    key = tmp_path / "deid.key"
    key.write_bytes(b"k" * 32)
    data["devices"] = [{**d, **({"deidentify_key": str(key)} if d.get("deidentify") else {})} for d in devices]
    data["mqtt"] |= mqtt
    return parse_config(data)


def _scp(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": "us-cart-1",
        "transport": "dicom",
        "profile": "storage_scp",
        "address": f"listen://127.0.0.1:{port}",
        "allowed_calling_aes": ["POC_US_CART", "TECHNICIAN"],
        "chunk_bytes": 16384,
        **extra,
    }


def _objects(run: Running, device: str) -> dict[str, pydicom.Dataset]:
    receiver = run.receiver
    return {
        oid: pydicom.dcmread(BytesIO(data))
        for oid, data in receiver.objects.items()
        if receiver.object_meta[oid]["device"] == device and "quarantine" not in receiver.object_meta[oid]
    }


async def test_modality_studies_arrive_reassembled_verified_and_identical(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, [_scp(port)])
    async with running_gateway(config) as run:
        await run.wait_until(lambda: run.receiver.stats.unique["us-cart-1"] >= 1, 20)
        assert await asyncio.to_thread(echo, "127.0.0.1", port) == 0x0000
        statuses = await send_async("127.0.0.1", port, [_file(n) for n in [*GOOD, ECG]])
        assert statuses == [0x0000] * (len(GOOD) + 1), [hex(s or 0) for s in statuses]
        await run.wait_until(lambda: len(run.receiver.objects) >= len(GOOD) + 1, 30)
        await run.finish()
    stored = _objects(run, "us-cart-1")
    assert not run.receiver.object_failures, "every object's SHA-256 matched after reassembly"
    by_instance = {str(ds.SOPInstanceUID): ds for ds in stored.values()}
    for name in [*GOOD, ECG]:
        original = pydicom.dcmread(_file(name))
        received = by_instance[str(original.SOPInstanceUID)]
        assert received == original, f"{name}: the data set arrives unchanged"  # every element, pixel data included
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    # Objects bigger than one chunk were cut and put back together.
    assert max(int(i["count"]) for i in run.receiver.items.values() if i["lane"] == "images") > 1
    # The 12-lead ECG is also analysable: one waveform per lead.
    leads = {i["ref"] for i in run.receiver.items.values() if i["lane"] == "waveforms" and i["device"] == "us-cart-1"}
    assert len(leads) == 12


async def test_bad_objects_get_their_status_a_log_line_and_quarantine(
    tmp_path: Path, mosquitto: Mosquitto, captured_logs: io.StringIO
) -> None:
    port = free_loopback_port()
    drop = tmp_path / "drop"
    drop.mkdir()
    folder = {"id": "xray-drop", "transport": "dicom", "profile": "drop_folder", "address": f"folder://{drop}"}
    config = _config(tmp_path, mosquitto.port, [_scp(port), folder])
    pixel_short = pydicom.dcmread(_file("CT_small.dcm"))
    pixel_short.PixelData = pixel_short.PixelData[:-2]
    buffer = BytesIO()
    pixel_short.save_as(buffer, enforce_file_format=True)
    truncated = _file("CT_small.dcm").read_bytes()[:3000]
    async with running_gateway(config) as run:
        await run.wait_until(lambda: run.receiver.stats.unique["xray-drop"] >= 1, 20)
        # Over the network: an unknown SOP class, a data set that disagrees with its pixel data, a stranger.
        statuses = await send_async("127.0.0.1", port, [_file("rtplan.dcm"), buffer.getvalue()])
        assert statuses[0] == 0x0122, "SOP class not supported"
        assert statuses[1] == 0xA900, "data set does not match SOP class"
        assert await send_async("127.0.0.1", port, [_file("CT_small.dcm")], calling_ae="UNKNOWN_AE") == [None]
        # Through the drop folder: non-DICOM bytes and a truncated file.
        (drop / "notes.txt").write_bytes(b"this is not a DICOM file\n" * 20)
        (drop / "cut.dcm").write_bytes(truncated)
        await run.wait_until(lambda: {p.name for p in drop.iterdir()} == {".rejected"}, 20)
        assert {p.name for p in (drop / ".rejected").iterdir()} == {"notes.txt", "cut.dcm"}, "set aside, not lost"
        await run.wait_until(lambda: sum("quarantine" in m for m in run.receiver.object_meta.values()) >= 4, 20)
        await run.finish()
    reasons = sorted(m["quarantine"] for m in run.receiver.object_meta.values() if "quarantine" in m)
    assert len(reasons) == 4, reasons
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines() if line.strip()]
    rejected = [line for line in lines if line["event"] == "DICOM object rejected"]
    assert len(rejected) >= 4 and all(line["reason"] != "[redacted]" for line in rejected)
    assert any(line["event"] == "DICOM association rejected" for line in lines)
    names = _identities(["CT_small.dcm", "rtplan.dcm"])
    assert not any(name.decode() in captured_logs.getvalue() for name in names), "no patient data in the log"


async def test_deidentified_drop_folder_keeps_patient_names_out_of_the_buffer(tmp_path: Path) -> None:
    """No broker: everything stays in the buffer, whose files are then scanned for the patients' names and ids."""
    drop = tmp_path / "drop"
    drop.mkdir()
    folder = {
        "id": "us-drop",
        "transport": "dicom",
        "profile": "drop_folder",
        "address": f"folder://{drop}",
        "deidentify": True,
        "patient": "pt-PSEUDO-17",
    }
    scp_port = free_loopback_port()
    config = _config(tmp_path, free_loopback_port(), [folder, _scp(scp_port)])
    gateway = Gateway(config)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop, drain_uplink_s=0.1))
    await asyncio.wait_for(gateway.started.wait(), 10)
    try:
        for name in GOOD[:3]:
            shutil.copy(_file(name), drop / name)
        assert await send_async("127.0.0.1", scp_port, [_file(n) for n in GOOD[3:]]) == [0x0000] * 2
        for _ in range(200):
            if not any(drop.iterdir()):
                break
            await asyncio.sleep(0.1)
        assert not any(drop.iterdir()), "each file removed once durable"
    finally:
        stop.set()
        await task
    names = _identities(GOOD)
    assert names, "the test files do carry identities"
    state = tmp_path / "state"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".sqlite3") for p in files)
    for path in files:
        content = path.read_bytes()
        for identity in names:
            assert identity not in content, f"{identity!r} found in {path.name}"
    stats = {s.lane: s for s in await _buffer_stats(config)}
    assert stats[Lane.IMAGES].rows >= 5


async def _buffer_stats(config: Config) -> list[Any]:
    from gateway.buffer import Buffer  # noqa: PLC0415
    from gateway.storage.keys import load_keyring  # noqa: PLC0415

    path = config.state_dir / config.buffer.path
    buffer = await Buffer.open(path, load_keyring(config.secret_path(config.buffer.key_file)))
    try:
        return list(await buffer.stats())
    finally:
        await buffer.close()


async def test_upload_resumes_after_an_outage_without_resending_acknowledged_chunks(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = start_mosquitto(tmp_path / "broker", persistence=True)
    port = free_loopback_port()
    config = _config(
        tmp_path,
        broker.port,
        [_scp(port, chunk_bytes=8192)],
        max_publishes_per_s=10.0,
        max_message_bytes=16384,
    )
    try:
        async with running_gateway(config, receiver_port=broker.port) as run:
            metrics = run.gateway.metrics
            statuses = await send_async("127.0.0.1", port, [_file(n) for n in GOOD])
            assert statuses == [0x0000] * len(GOOD)
            await run.wait_until(lambda: metrics.publishes >= 5, 30)
            broker.stop()  # mid-upload
            complete_at_outage = len(run.receiver.objects)
            await asyncio.sleep(3.0)
            broker.start()
            await run.wait_until(lambda: len(run.receiver.objects) >= len(GOOD), 60)
            await run.finish(drain_s=60)
    finally:
        broker.stop()
    assert complete_at_outage < len(GOOD), "the outage came in the middle of the upload"
    assert not run.receiver.object_failures
    chunks = {(i["object"], i["index"]): int(i["count"]) for i in run.receiver.items.values() if i["lane"] == "images"}
    assert len(chunks) == sum({obj: count for (obj, _), count in chunks.items()}.values()), "every chunk, once"
    duplicates = run.receiver.stats.duplicates["us-cart-1"]
    # Only what was in flight (published, not yet acknowledged) when the broker went away may come twice.
    assert duplicates <= config.mqtt.inflight_window, duplicates


async def test_scp_over_tls_accepts_a_trusting_modality_and_refuses_plaintext(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    import ssl  # noqa: PLC0415

    from tests.support.pki import make_pki  # noqa: PLC0415

    pki = make_pki(tmp_path / "pki")
    port = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, [_scp(port, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))])
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    stranger = ssl.create_default_context(cafile=str(pki.rogue_ca))
    async with running_gateway(config) as run:
        await run.wait_until(lambda: run.receiver.stats.unique["us-cart-1"] >= 1, 20)
        assert await send_async("127.0.0.1", port, [_file("CT_small.dcm")], ssl_context=trusting) == [0x0000]
        assert await send_async("127.0.0.1", port, [_file("MR_small.dcm")]) == [None], "no plaintext fallback"
        assert await send_async("127.0.0.1", port, [_file("MR_small.dcm")], ssl_context=stranger) == [None]
        await run.wait_until(lambda: len(run.receiver.objects) >= 1, 20)
        await run.finish()
    assert len(_objects(run, "us-cart-1")) == 1
