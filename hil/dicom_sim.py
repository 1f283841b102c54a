"""A simulated point-of-care modality: a pynetdicom Storage SCU that sends studies (and broken ones).

`send` opens one association, proposes a presentation context per object (its SOP class, in its own transfer
syntax), sends each object with C-STORE and returns each status (None for every object when the association
itself is rejected, e.g. a calling AE title the gateway does not allow).  `echo` is a technician's C-ECHO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MultiFrameGrayscaleByteSecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE

logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _load(item: Path | bytes | Dataset) -> Dataset:
    if isinstance(item, Dataset):
        return item
    if isinstance(item, bytes):
        return dcmread(BytesIO(item), force=True)
    return dcmread(item, force=True)


def send(
    host: str,
    port: int,
    objects: Sequence[Path | bytes | Dataset],
    *,
    calling_ae: str = "POC_US_CART",
    called_ae: str = "IOMT_GW",
    ssl_context: ssl.SSLContext | None = None,
) -> list[int | None]:
    """C-STORE each object over one association; the status of each (None: not sent)."""
    datasets = [_load(o) for o in objects]
    ae = AE(ae_title=calling_ae)
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    tls = (ssl_context, host) if ssl_context is not None else None
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls)
    if not assoc.is_established:
        _close_failed(assoc)
        return [None] * len(datasets)
    statuses: list[int | None] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if "Status" in status else None)
    finally:
        assoc.release()
    return statuses


async def send_async(
    host: str, port: int, objects: Sequence[Path | bytes | Dataset], **kwargs: object
) -> list[int | None]:
    return await asyncio.to_thread(send, host, port, objects, **kwargs)  # type: ignore[arg-type]


def echo(host: str, port: int, *, calling_ae: str = "TECHNICIAN", called_ae: str = "IOMT_GW") -> int | None:
    """A C-ECHO (Verification): the status, or None when no association was made."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def _close_failed(assoc: object) -> None:
    """pynetdicom leaves the socket of a failed TLS handshake open: close it (the modality would, on retry)."""
    dul = getattr(assoc, "dul", None)
    transport = getattr(dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def write_large_object(
    path: Path,
    megabytes: int,
    *,
    valid: bool = True,
    patient_name: str = "Large^Object",
    fill: bytes = b"\x80",
) -> Path:
    """A multi-frame Secondary Capture of `megabytes` 1024x1024 8-bit frames, written to `path` without ever
    holding the pixel data (a cine loop as an ultrasound cart sends it).  `valid=False` declares one frame more
    than it carries, so a receiver must answer 0xA900 (pixel data length)."""

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MultiFrameGrayscaleByteSecondaryCaptureImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "US", patient_name, "LARGE-0001"
    ds.Rows = ds.Columns = 1024
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = megabytes + (0 if valid else 1)
    ds.save_as(path, enforce_file_format=True)
    frame = (fill * (1024 * 1024 // len(fill) + 1))[: 1024 * 1024]
    with path.open("ab") as out:
        out.write(b"\xe0\x7f\x10\x00OB\x00\x00" + (megabytes * len(frame)).to_bytes(4, "little"))
        for _ in range(megabytes):
            out.write(frame)
    return path


def send_file(
    host: str, port: int, path: Path, *, calling_ae: str = "POC_US_CART", called_ae: str = "IOMT_GW"
) -> int | None:
    """C-STORE one Part 10 file streamed from disk (pynetdicom's chunked send): the sender never holds it whole."""
    from pynetdicom import _config  # noqa: PLC0415

    _config.STORE_SEND_CHUNKED_DATASET = True
    header = dcmread(path, stop_before_pixels=True)
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID))
    ae.maximum_pdu_size = 256 * 1024
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        _close_failed(assoc)
        return None
    try:
        status = assoc.send_c_store(path)
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()
