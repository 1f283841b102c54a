"""A simulated point-of-care modality: a pynetdicom Storage SCU that sends studies (and broken ones).

`send` opens one association, proposes a presentation context per object (its SOP class, in its own transfer
syntax), sends each object with C-STORE and returns each status (None for every object when the association
itself is rejected, e.g. a calling AE title the gateway does not allow).  `echo` is a technician's C-ECHO.
`twelve_lead_ecg` and `ultrasound_image` make new objects of a synthetic patient (an ECG cart's resting
12-lead ECG from hil.physiology, an ultrasound cart's still image), each with fresh UIDs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    TwelveLeadECGWaveformStorage,
    UltrasoundImageStorage,
    generate_uid,
)
from pynetdicom import AE

from hil.physiology import SyntheticEcg

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


# SCP-ECG lead codes (CID 3001) and each lead as a mix of the cardiac vector's frontal (x: lead I, y: aVF) and
# horizontal (z: towards V1..V6) components, so the limb leads keep Einthoven's and Goldberger's relations.
_TWELVE_LEADS = (
    ("5.6.3-9-1", "Lead I", (1.0, 0.0, 0.0)),
    ("5.6.3-9-2", "Lead II", (0.5, 0.866, 0.0)),
    ("5.6.3-9-61", "Lead III", (-0.5, 0.866, 0.0)),
    ("5.6.3-9-62", "aVR", (-0.75, -0.433, 0.0)),
    ("5.6.3-9-63", "aVL", (0.75, -0.433, 0.0)),
    ("5.6.3-9-64", "aVF", (0.0, 0.866, 0.0)),
    ("5.6.3-9-3", "Lead V1", (-0.2, 0.0, -0.6)),
    ("5.6.3-9-4", "Lead V2", (0.0, 0.1, -0.2)),
    ("5.6.3-9-5", "Lead V3", (0.2, 0.2, 0.3)),
    ("5.6.3-9-6", "Lead V4", (0.4, 0.3, 0.7)),
    ("5.6.3-9-7", "Lead V5", (0.6, 0.3, 0.5)),
    ("5.6.3-9-8", "Lead V6", (0.7, 0.3, 0.3)),
)


def _new_object(sop_class: UID, modality: str, patient_name: str, patient_id: str) -> Dataset:
    now = datetime.now(UTC)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = modality, patient_name, patient_id
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Manufacturer, ds.ManufacturerModelName = "IoMT Gateway HIL", f"SIM-{modality}"
    ds.SeriesNumber = ds.InstanceNumber = 1
    return ds


def twelve_lead_ecg(
    *,
    seconds: float = 10.0,
    rate_hz: int = 500,
    heart_rate_bpm: float = 72.0,
    seed: int = 21,
    patient_name: str = "Simulated^Patient",
    patient_id: str = "HIL-0001",
) -> Dataset:
    """A resting 12-lead ECG (12-lead ECG Waveform Storage, 16-bit samples of 1 µV) from a synthetic rhythm."""
    ecg = SyntheticEcg(rate_hz, heart_rate_bpm, seed)
    samples = round(seconds * rate_hz)
    frontal = ecg.next(samples)
    delayed = np.roll(frontal, round(0.02 * rate_hz))  # the vector turns during the QRS: a later component
    vector = np.stack([frontal, 0.8 * delayed, 0.5 * frontal - 0.7 * delayed])
    leads = np.stack([np.asarray(mix) @ vector for _, _, mix in _TWELVE_LEADS], axis=1)
    raw = np.clip(np.round(leads), -32768, 32767).astype("<i2")

    ds = _new_object(TwelveLeadECGWaveformStorage, "ECG", patient_name, patient_id)
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(_TWELVE_LEADS)
    group.NumberOfWaveformSamples = samples
    group.SamplingFrequency = rate_hz
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    definitions = []
    for number, (code, meaning, _) in enumerate(_TWELVE_LEADS, start=1):
        source = Dataset()
        source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = code, "SCPECG", meaning
        source.CodingSchemeVersion = "1.3"
        units = Dataset()
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "microvolt"
        definition = Dataset()
        definition.ChannelNumber = number
        definition.ChannelSourceSequence = [source]
        definition.ChannelSensitivity = 1
        definition.ChannelSensitivityUnitsSequence = [units]
        definition.ChannelSensitivityCorrectionFactor = 1
        definition.ChannelBaseline = 0
        definition.ChannelSampleSkew = 0
        definition.WaveformBitsStored = 16
        definitions.append(definition)
    group.ChannelDefinitionSequence = definitions
    group.WaveformData = raw.tobytes()
    ds.WaveformSequence = [group]
    return ds


def ultrasound_image(
    *, rows: int = 240, columns: int = 320, seed: int = 22, patient_name: str = "Simulated^Patient"
) -> Dataset:
    """An ultrasound cart's still image (Ultrasound Image Storage, 8-bit monochrome): a speckled sector."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    depth = np.hypot(x - columns / 2, y)
    angle = np.abs(np.arctan2(x - columns / 2, y + 1e-9))
    sector = (angle < 0.6) & (depth < rows * 0.95)
    speckle = rng.gamma(2.0, 40.0, size=(rows, columns)) * np.exp(-depth / rows)
    pixels = np.where(sector, np.clip(speckle, 0, 255), 0).astype(np.uint8)

    ds = _new_object(UltrasoundImageStorage, "US", patient_name, "HIL-0001")
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return ds
