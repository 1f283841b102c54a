"""DICOM with bounded memory: objects arrive in an encrypted spool and are validated, de-identified and chunked
piece by piece; a refused object costs one small record; the SCP has an idle/size discipline.

Objects of 12-20 MB here are over the 8 MB in-memory limit, so they take the large-object path the 300 MB
object of `bench soak` takes; the memory figures themselves are the benchmark's (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest

from drivers.dicom import intake
from drivers.dicom.spool import SEGMENT, Spool, SpoolError
from drivers.dicom.validate import DicomRejected, validate, validate_source
from gateway.config import parse_config
from hil.demo import free_loopback_port
from hil.dicom_sim import send_file, write_large_object
from tests.conftest import Mosquitto, config_dict
from tests.support.harness import Running, running_gateway

MARKER = b"PLAINTEXT-PIXELS"
DATA = Path(pydicom.__file__).parent / "data" / "test_files"


class Source:
    """A byte source that is not bytes: validation must go through its slicing, as for a spooled object."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: slice) -> bytes:
        return self.data[index]


def test_the_spool_is_sealed_reads_back_by_offset_and_refuses_tampering(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "left-over.spool").write_bytes(b"from a crashed process")
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    assert not list((tmp_path / "spool").iterdir()), "left-overs wiped at start"
    payload = MARKER * 20_000  # 320 kB: several segments
    writer = spool.writer()
    for at in range(0, len(payload), 7_777):  # pynetdicom writes PDU fragments of any size
        writer.write(payload[at : at + 7_777])
    obj = spool.finish(writer.name)
    assert MARKER not in Path(writer.name).read_bytes(), "sealed on disk"
    assert len(obj) == len(payload) and obj[0 : len(payload)] == payload
    assert obj[SEGMENT - 3 : SEGMENT + 5] == payload[SEGMENT - 3 : SEGMENT + 5]
    sealed = bytearray(Path(writer.name).read_bytes())
    Path(writer.name).write_bytes(sealed[: -(len(sealed) % (SEGMENT + 16))])  # the last segment cut off
    with pytest.raises(SpoolError):
        obj[len(payload) - 10 : len(payload)]
    spool.discard(writer.name)
    big = spool.writer()
    big.write(b"x" * (1 << 20))
    big.write(b"y")
    assert spool.finish(big.name).too_large and big.size == (1 << 20) + 1


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_validation_through_a_source_agrees_with_validation_in_memory(name: str) -> None:
    raw = (DATA / name).read_bytes()
    variants = [raw, raw[:-2], raw[: len(raw) // 2], raw.replace(b"DICM", b"DICX", 1)]
    for data in variants:
        try:
            expected: Any = validate(data).sop_instance_uid
        except DicomRejected as err:
            expected = err.status
        try:
            got: Any = validate_source(Source(data)).sop_instance_uid
        except DicomRejected as err:
            got = err.status
        assert got == expected, name


def test_a_large_deflated_object_is_refused_as_too_large_to_inflate_at_the_edge() -> None:
    with pytest.raises(DicomRejected) as err:
        validate_source(Source((DATA / "image_dfl.dcm").read_bytes()))
    assert err.value.status == 0xA700 and err.value.fields["part"] == "deflate"


def _config(tmp_path: Path, port: int, listen: int, **device: Any) -> Any:
    data = config_dict(tmp_path / "state", port)
    key = tmp_path / "deid.key"
    key.write_bytes(b"k" * 32)
    data["devices"] = [
        {
            "id": "us-cart-1",
            "transport": "dicom",
            "profile": "storage_scp",
            "address": f"listen://127.0.0.1:{listen}",
            "allowed_calling_aes": ["POC_US_CART"],
            **device,
        }
    ]
    if device.get("deidentify"):
        data["devices"][0]["deidentify_key"] = str(key)
    return parse_config(data)


def _image_rows(run: Running) -> int:
    return int(run.receiver.stats.by_lane["images"])


async def test_a_refused_large_object_costs_one_record_not_its_size_in_rows(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    listen = free_loopback_port()
    bad = write_large_object(tmp_path / "bad.dcm", 20, valid=False)
    async with running_gateway(_config(tmp_path, mosquitto.port, listen), receiver_port=mosquitto.port) as run:
        await run.wait_until(lambda: run.receiver.stats.unique["us-cart-1"] >= 1, 20)
        assert await asyncio.to_thread(send_file, "127.0.0.1", listen, bad) == 0xA900
        await run.wait_until(lambda: any("quarantine" in m for m in run.receiver.object_meta.values()), 20)
        await run.finish()
    records = [m for m in run.receiver.object_meta.values() if "quarantine" in m]
    assert [m["quarantine"] for m in records] == ["pixel-data-length"]
    assert int(records[0]["original_bytes"]) > 20 * 1024 * 1024
    assert _image_rows(run) == 1, "was: the whole object quarantined (~320 rows of 64 KiB)"


async def test_a_large_object_streams_through_the_spool_deidentified_and_intact(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    listen = free_loopback_port()
    path = write_large_object(tmp_path / "cine.dcm", 12, fill=MARKER, patient_name="Doe^Jane^Large")
    config = _config(tmp_path, mosquitto.port, listen, deidentify=True, patient="pt-LRG1", chunk_bytes=65536)
    spool_dir = config.state_dir / "dicom-spool"
    seen_plaintext: list[Path] = []

    async def watch_spool() -> None:
        while True:
            for file in spool_dir.glob("*.spool"):
                try:
                    if MARKER in file.read_bytes():
                        seen_plaintext.append(file)
                except OSError:
                    pass
            await asyncio.sleep(0.05)

    held: list[int] = []
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        pipeline = run.gateway.parts.pipeline  # type: ignore[union-attr]
        watcher = asyncio.create_task(watch_spool())

        async def sample_held() -> None:
            while True:
                held.append(pipeline._image_held)
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample_held())
        try:
            assert await asyncio.to_thread(send_file, "127.0.0.1", listen, path) == 0x0000
        finally:
            for task in (watcher, sampler):
                task.cancel()
            await asyncio.gather(watcher, sampler, return_exceptions=True)
        await run.wait_until(lambda: len(run.receiver.objects) >= 1, 60)
        await run.finish()
    assert not seen_plaintext, "the spool never held plaintext"
    assert not list(spool_dir.glob("*.spool")), "the spool is emptied after each object"
    assert max(held) <= 4 * 1024 * 1024 + 65536 + 1024, "the pipeline held a few MB of the object, not all of it"
    (stored,) = run.receiver.objects.values()
    ds = pydicom.dcmread(BytesIO(stored))
    original = pydicom.dcmread(path)
    assert str(ds.PatientName) != "Doe^Jane^Large" and ds.PatientIdentityRemoved == "YES"
    assert ds.PixelData == original.PixelData, "pixel data copied across intact"


async def test_an_idle_connection_to_the_scp_is_closed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    listen = free_loopback_port()
    config = _config(tmp_path, mosquitto.port, listen, idle_timeout_s=1.0)
    async with running_gateway(config, receiver_port=mosquitto.port) as run:
        await run.wait_until(lambda: run.receiver.stats.unique["us-cart-1"] >= 1, 20)
        reader, writer = await asyncio.open_connection("127.0.0.1", listen)
        try:
            async with asyncio.timeout(10):
                assert await reader.read(100) == b"", "closed by the SCP, not held open"
        finally:
            writer.close()
        await run.finish()


def test_the_chunked_receive_seam_exists() -> None:
    from pynetdicom import _config, dimse_messages  # noqa: PLC0415

    assert hasattr(dimse_messages, "NamedTemporaryFile") and hasattr(_config, "STORE_RECV_CHUNKED_DATASET")
    assert intake.IN_MEMORY_BYTES < 12 * 1024 * 1024  # the objects above take the large-object path
