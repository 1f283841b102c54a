"""Check a received DICOM object before the gateway stores it, and name the C-STORE status a Storage SCP answers.

Pure: bytes in, an `Accepted` (holding the parsed pydicom Dataset) or a `DicomRejected` out; no network, no asyncio.
The structure is walked here, element by element, before pydicom parses it: pydicom reads a file that ends inside
an element without complaint (a short value, or a last element silently dropped), and a gateway must not store
half an image.  The walk is stricter than pydicom in two ways, both deliberate: the data set must be encoded as
its transfer syntax says (no silent switch between implicit and explicit VR), and nothing may follow the last
element.

Statuses, as PS3.4 Annex B.2.3 (Storage Service Class) and PS3.7 Annex C (general statuses) define them:

  0xC000  Error: Cannot understand (Cxxx) — not DICOM, truncated, malformed, bad file meta, unsupported syntax
  0xA900  Error: Data Set does not match SOP Class (A9xx) — required attribute missing/empty, meta disagrees with
          the data set, pixel or waveform data of the wrong length or encapsulation
  0xA700  Refused: Out of Resources (A7xx) — larger than the gateway will buffer (also after inflating Deflate)
  0x0122  Refused: SOP Class not supported (PS3.7 Annex C; pynetdicom lists it among C-STORE statuses)

`DicomRejected` is an `InvalidFrame` (not a DeviceError: the fault is in the bytes received, and like every codec
error they can never become a valid object); the caller answers the sender with its `status`.  Its message and
fields hold a reason name, the status, attribute keywords, UIDs of SOP classes and transfer syntaxes, and lengths:
never an attribute's value.  pydicom's own warnings quote values (a patient's name among them), so they are
silenced while pydicom runs (`quiet_pydicom`).
"""

from __future__ import annotations

import contextlib
import enum
import io
import itertools
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

from pydicom import uid as dicom_uid
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset as _parse_dataset

from gateway.core.errors import InvalidFrame

__all__ = [
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_DATASET_MISMATCH",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "MAX_OBJECT_BYTES",
    "SUPPORTED_SOP_CLASSES",
    "WAVEFORM_SOP_CLASSES",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "NATIVE_TRANSFER_SYNTAXES",
    "Reason",
    "DicomRejected",
    "Accepted",
    "validate",
    "validate_dataset",
    "validate_source",
    "ByteSource",
    "LARGE_HEADER_BYTES",
    "read_dataset",
    "quiet_pydicom",
]

STATUS_CANNOT_UNDERSTAND: Final = 0xC000  # PS3.4 B.2.3 Error "Cannot understand", range C000-CFFF
STATUS_DATASET_MISMATCH: Final = 0xA900  # PS3.4 B.2.3 Error "Data Set does not match SOP Class", A900-A9FF
STATUS_OUT_OF_RESOURCES: Final = 0xA700  # PS3.4 B.2.3 Refused "Out of Resources", A700-A7FF
STATUS_SOP_CLASS_NOT_SUPPORTED: Final = 0x0122  # PS3.7 Annex C "Refused: SOP Class not supported"

MAX_OBJECT_BYTES: Final = 256 * 1024 * 1024  # an ultrasound cine loop fits; a gateway buffer does not take more

SUPPORTED_SOP_CLASSES: Final[Mapping[str, str]] = MappingProxyType(
    {
        str(sop): sop.name
        for sop in (
            dicom_uid.UltrasoundImageStorage,
            dicom_uid.UltrasoundMultiFrameImageStorage,
            dicom_uid.ComputedRadiographyImageStorage,
            dicom_uid.DigitalXRayImageStorageForPresentation,
            dicom_uid.DigitalXRayImageStorageForProcessing,
            dicom_uid.SecondaryCaptureImageStorage,
            dicom_uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
            dicom_uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
            dicom_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
            dicom_uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
            dicom_uid.TwelveLeadECGWaveformStorage,
            dicom_uid.GeneralECGWaveformStorage,
            dicom_uid.CTImageStorage,
            dicom_uid.MRImageStorage,
        )
    }
)
WAVEFORM_SOP_CLASSES: Final = frozenset(
    {str(dicom_uid.TwelveLeadECGWaveformStorage), str(dicom_uid.GeneralECGWaveformStorage)}
)

NATIVE_TRANSFER_SYNTAXES: Final = frozenset(
    {
        str(dicom_uid.ImplicitVRLittleEndian),
        str(dicom_uid.ExplicitVRLittleEndian),
        str(dicom_uid.DeflatedExplicitVRLittleEndian),
        str(dicom_uid.ExplicitVRBigEndian),  # retired, still sent by old carts
    }
)
SUPPORTED_TRANSFER_SYNTAXES: Final[Mapping[str, str]] = MappingProxyType(
    {
        str(ts): ts.name
        for ts in (
            dicom_uid.ImplicitVRLittleEndian,
            dicom_uid.ExplicitVRLittleEndian,
            dicom_uid.DeflatedExplicitVRLittleEndian,
            dicom_uid.ExplicitVRBigEndian,
            dicom_uid.JPEGBaseline8Bit,
            dicom_uid.JPEGExtended12Bit,
            dicom_uid.JPEGLossless,
            dicom_uid.JPEGLosslessSV1,
            dicom_uid.JPEGLSLossless,
            dicom_uid.JPEGLSNearLossless,
            dicom_uid.JPEG2000Lossless,
            dicom_uid.JPEG2000,
            dicom_uid.RLELossless,
        )
    }
)


class Reason(enum.StrEnum):
    """Why an object was rejected: a stable name for logs, metrics and the SCP's Error Comment."""

    TOO_LARGE = "too-large"
    NOT_DICOM = "not-dicom"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    FILE_META_INVALID = "file-meta-invalid"
    TRANSFER_SYNTAX_NOT_SUPPORTED = "transfer-syntax-not-supported"
    SOP_CLASS_NOT_SUPPORTED = "sop-class-not-supported"
    MISSING_ATTRIBUTE = "missing-attribute"
    SOP_CLASS_MISMATCH = "sop-class-mismatch"
    SOP_INSTANCE_MISMATCH = "sop-instance-mismatch"
    IMAGE_PIXEL_INVALID = "image-pixel-invalid"
    PIXEL_DATA_LENGTH = "pixel-data-length"
    PIXEL_DATA_ENCAPSULATION = "pixel-data-encapsulation"
    WAVEFORM_INVALID = "waveform-invalid"


class DicomRejected(InvalidFrame):
    """A DICOM object the gateway refuses: `status` is the C-STORE status to answer, `reason` a `Reason` value."""

    def __init__(self, reason: str, status: int, **fields: str | int) -> None:
        super().__init__(f"DICOM object rejected: {reason}", reason=str(reason), status=status, **fields)
        self.reason = str(reason)
        self.status = status


def _cannot_understand(reason: Reason, **fields: str | int) -> DicomRejected:
    return DicomRejected(reason, STATUS_CANNOT_UNDERSTAND, **fields)


def _mismatch(reason: Reason, **fields: str | int) -> DicomRejected:
    return DicomRejected(reason, STATUS_DATASET_MISMATCH, **fields)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A DICOM object that passed every check; `dataset` is fully parsed (and holds patient data: never log it)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    transfer_syntax_uid: str
    is_waveform: bool
    dataset: Dataset = field(repr=False, compare=False)
    # A large object's data set is parsed without its Pixel Data (left in the source): where that element starts
    # and ends in the source.
    pixel_data_span: tuple[int, int] | None = None

    @property
    def sop_class_name(self) -> str:
        return SUPPORTED_SOP_CLASSES[self.sop_class_uid]


# ------------------------------------------------------------------------------------------- pydicom guard

_PYDICOM_LOCK: Final = threading.RLock()


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Run pydicom with its warnings silenced, since they quote element values (which may be patient data).

    `warnings.catch_warnings` swaps process-wide state; the lock keeps this package's own concurrent callers (one
    thread per DICOM association) from restoring each other's filters out of order.
    """
    with _PYDICOM_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------- structure walk

_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_DELIMITER: Final = 0xFFFEE00D
_SEQUENCE_DELIMITER: Final = 0xFFFEE0DD
_PIXEL_DATA: Final = 0x7FE00010
_MAX_DEPTH: Final = 24  # nested sequences; real objects use a handful, a hostile one could recurse without end

# PS3.5 7.1.2: these VRs have a 2-byte reserved field and a 4-byte length in explicit VR.
_LONG_VRS: Final = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_SHORT_VRS: Final = frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"SV", b"TM", b"UI", b"UL", b"US", b"UV",
    }
)  # fmt: skip
_ALL_VRS: Final = _LONG_VRS | _SHORT_VRS

_TAG: Final = {True: struct.Struct("<HH"), False: struct.Struct(">HH")}
_U16: Final = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_U32: Final = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_ITEM_HEAD: Final = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}


class ByteSource(Protocol):
    """Random access to an object's bytes without holding them all: `len(src)` and `src[start:stop]`."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> bytes: ...


Buf = bytes | ByteSource


def _read(fmt: struct.Struct, buf: Buf, pos: int) -> tuple[Any, ...]:
    """`fmt.unpack_from(buf, pos)` for bytes, and for a byte source (a spooled or on-disk object) alike."""
    if isinstance(buf, bytes):
        return fmt.unpack_from(buf, pos)
    return fmt.unpack(buf[pos : pos + fmt.size])


@dataclass(frozen=True, slots=True)
class _Window:
    """Part of a byte source, itself a byte source (the value of one element)."""

    src: Buf
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: slice) -> bytes:
        start, stop, _ = index.indices(len(self))
        return self.src[self.start + start : self.start + stop]


class _Truncated(Exception):
    """The bytes end inside an element (internal: becomes a DicomRejected)."""


class _Malformed(Exception):
    """The bytes cannot be an element here (internal: becomes a DicomRejected)."""


def _short(buf: Buf, end: int) -> Exception:
    """Running out of bytes at the end of the buffer is truncation; inside a bounded container it is malformation."""
    return _Truncated() if end == len(buf) else _Malformed()


def _implicit_sequence(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private or unknown: its defined length bounds it, so it is skipped whole
        return False


def _walk_element(buf: Buf, pos: int, end: int, implicit: bool, little: bool, depth: int) -> int:
    """Walk one element (not an item or delimiter) starting at `pos`; return where it ends."""
    if end - pos < 8:
        raise _short(buf, end)
    group, element = _read(_TAG[little], buf, pos)
    tag = group << 16 | element
    vr: bytes | None
    if implicit:
        length: int = _read(_U32[little], buf, pos + 4)[0]
        vr = None
        pos += 8
    else:
        vr = buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if end - pos < 12:
                raise _short(buf, end)
            length = _read(_U32[little], buf, pos + 8)[0]
            pos += 12
        elif vr in _SHORT_VRS:
            length = _read(_U16[little], buf, pos + 6)[0]
            pos += 8
        else:
            raise _Malformed
    if length == _UNDEFINED:
        if vr is not None and vr not in (b"SQ", b"UN", b"OB", b"OW"):
            raise _Malformed
        # PS3.5 6.2.2: an undefined-length UN holds a sequence in implicit VR little endian.
        item_implicit, item_little = (True, True) if vr == b"UN" else (implicit, little)
        fragments = vr in (b"OB", b"OW") or (vr is None and tag == _PIXEL_DATA)
        return _walk_items(buf, pos, end, item_implicit, item_little, depth + 1, datasets=not fragments, delimited=True)
    if length > end - pos:
        raise _short(buf, end)
    if vr == b"SQ" or (vr is None and _implicit_sequence(tag)):
        _walk_items(buf, pos, pos + length, implicit, little, depth + 1, datasets=True, delimited=False)
    return pos + length


def _walk_dataset(buf: Buf, pos: int, end: int, implicit: bool, little: bool, depth: int, *, delimited: bool) -> int:
    """Walk a data set's elements; a delimited one (an undefined-length item) ends after its Item Delimitation."""
    if depth > _MAX_DEPTH:
        raise _Malformed
    while True:
        if pos == end:
            if delimited:
                raise _short(buf, end)
            return pos
        if end - pos < 8:
            raise _short(buf, end)
        group, element = _read(_TAG[little], buf, pos)
        if group == 0xFFFE:  # items and delimiters belong in sequences, not among a data set's elements
            if not delimited or (group << 16 | element) != _ITEM_DELIMITER:
                raise _Malformed
            if _read(_U32[little], buf, pos + 4)[0] != 0:
                raise _Malformed
            return pos + 8
        pos = _walk_element(buf, pos, end, implicit, little, depth)


def _walk_items(
    buf: Buf, pos: int, end: int, implicit: bool, little: bool, depth: int, *, datasets: bool, delimited: bool
) -> int:
    """Walk a sequence's items (data sets) or encapsulated pixel data's fragments; return where the list ends."""
    if depth > _MAX_DEPTH:
        raise _Malformed
    head = _ITEM_HEAD[little]  # items and delimiters are tag + 4-byte length in every encoding
    while True:
        if pos == end and not delimited:
            return pos
        if end - pos < 8:
            raise _short(buf, end)
        group, element, length = _read(head, buf, pos)
        pos += 8
        tag = group << 16 | element
        if delimited and tag == _SEQUENCE_DELIMITER:
            if length != 0:
                raise _Malformed
            return pos
        if tag != _ITEM:
            raise _Malformed
        if length == _UNDEFINED:
            if not datasets:
                raise _Malformed  # PS3.5 A.4: fragments have an explicit length
            pos = _walk_dataset(buf, pos, end, implicit, little, depth + 1, delimited=True)
            continue
        if length > end - pos:
            raise _short(buf, end)
        if datasets:
            _walk_dataset(buf, pos, pos + length, implicit, little, depth + 1, delimited=False)
        pos += length


# ----------------------------------------------------------------------------------------------- parsing


def _walk_file_meta(data: Buf, start: int, part10: bool) -> int:
    """Walk the group 0002 elements (always explicit VR little endian) from `start`; return where they end."""
    pos = start
    try:
        while len(data) - pos >= 8 and _read(_TAG[True], data, pos)[0] == 0x0002:
            pos = _walk_element(data, pos, len(data), False, True, 0)
    except _Truncated:
        raise _cannot_understand(Reason.TRUNCATED if part10 else Reason.NOT_DICOM, part="file-meta") from None
    except _Malformed:
        raise _cannot_understand(Reason.MALFORMED if part10 else Reason.NOT_DICOM, part="file-meta") from None
    return pos


def _parse_file_meta(meta_bytes: bytes) -> FileMetaDataset:
    """The file meta group, each element with the VR PS3.10 gives it (a writer must not improvise there)."""
    with quiet_pydicom():
        try:
            meta = FileMetaDataset(_parse_dataset(io.BytesIO(meta_bytes), False, True))
            vrs_match = all(dictionary_VR(elem.tag) == elem.VR for elem in meta)
        except Exception:  # noqa: BLE001 - pydicom raises many types (KeyError: unknown tag); all mean the same
            raise _cannot_understand(Reason.FILE_META_INVALID) from None
    if not vrs_match:
        raise _cannot_understand(Reason.FILE_META_INVALID, detail="file meta element with the wrong VR")
    return meta


def _guess_bare_encoding(data: bytes) -> tuple[bool, bool, str]:
    """(implicit, little, transfer syntax) of a data set sent without file meta, as pydicom guesses it.

    Every composite object's first element is in group 0008 (SOP Common and General Study live there), so the
    first tag tells the byte order and a VR after it tells explicit from implicit VR.
    """
    if len(data) < 8:
        raise _cannot_understand(Reason.NOT_DICOM)
    explicit = data[4:6] in _ALL_VRS
    if _U16[True].unpack_from(data, 0)[0] == 0x0008:
        if explicit:
            return False, True, str(dicom_uid.ExplicitVRLittleEndian)
        return True, True, str(dicom_uid.ImplicitVRLittleEndian)
    if explicit and _U16[False].unpack_from(data, 0)[0] == 0x0008:
        return False, False, str(dicom_uid.ExplicitVRBigEndian)
    raise _cannot_understand(Reason.NOT_DICOM)


def _inflate(body: bytes, max_bytes: int) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian data set (PS3.5 A.5), refusing a decompression bomb."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise _cannot_understand(Reason.MALFORMED, part="deflate") from None
    if len(out) > max_bytes:
        raise DicomRejected(Reason.TOO_LARGE, STATUS_OUT_OF_RESOURCES, limit=max_bytes, part="deflate")
    if not inflater.eof:
        raise _cannot_understand(Reason.TRUNCATED, part="deflate")
    tail = inflater.unused_data
    # One pad byte may make the stream's length even.  Some writers (dclunie's samples among them) append a gzip
    # trailer, CRC-32 and length of the inflated bytes: harmless when it checks out, so it is allowed too.
    gzip_trailer = struct.pack("<II", zlib.crc32(out), len(out) & 0xFFFFFFFF)
    if tail not in (b"", b"\x00", gzip_trailer):
        raise _cannot_understand(Reason.MALFORMED, part="deflate")
    return out


def _load_all(ds: Dataset) -> None:
    """Convert every raw element now, so later readers neither fail nor warn (pydicom converts lazily)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _load_all(item)


@dataclass(frozen=True, slots=True)
class _Encoding:
    meta: FileMetaDataset
    implicit: bool
    little: bool
    transfer_syntax: str
    meta_end: int  # where the data set starts
    known: bool  # Part 10 or file meta present: a failure is "malformed", not "not DICOM"


def _encoding(data: Buf) -> _Encoding:
    """The file meta group and the data set's encoding (from the meta, or guessed for a bare data set)."""
    part10 = len(data) >= 132 and data[128:132] == b"DICM"
    start = 132 if part10 else 0
    meta_end = _walk_file_meta(data, start, part10)
    if meta_end > start:
        meta = _parse_file_meta(data[start:meta_end])
        declared = meta.get("TransferSyntaxUID")
        if not isinstance(declared, str) or not declared.strip():
            raise _cannot_understand(Reason.FILE_META_INVALID, attribute="TransferSyntaxUID")
        ts = str(declared).strip()
        if ts not in SUPPORTED_TRANSFER_SYNTAXES:
            raise _cannot_understand(Reason.TRANSFER_SYNTAX_NOT_SUPPORTED, transfer_syntax=ts[:64])
        implicit = ts == dicom_uid.ImplicitVRLittleEndian
        little = ts != dicom_uid.ExplicitVRBigEndian
    elif part10:
        raise _cannot_understand(Reason.FILE_META_INVALID, attribute="FileMetaInformationGroup")
    else:
        implicit, little, ts = _guess_bare_encoding(data[0:8])
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = dicom_uid.UID(ts)
    return _Encoding(meta, implicit, little, ts, meta_end, part10 or meta_end > start)


def _walk_body(data: Buf, enc: _Encoding, start: int) -> None:
    try:
        _walk_dataset(data, start, len(data), enc.implicit, enc.little, 0, delimited=False)
    except _Truncated:
        raise _cannot_understand(Reason.TRUNCATED if enc.known else Reason.NOT_DICOM, part="data-set") from None
    except _Malformed:
        raise _cannot_understand(Reason.MALFORMED if enc.known else Reason.NOT_DICOM, part="data-set") from None


def _parse_values(body: bytes, enc: _Encoding) -> Dataset:
    with quiet_pydicom():
        try:
            ds = _parse_dataset(io.BytesIO(body), enc.implicit, enc.little)
            _load_all(ds)
        except Exception:  # noqa: BLE001 - pydicom raises many types; the walk passed, so the values are bad
            raise _cannot_understand(Reason.MALFORMED, part="values") from None
    ds.file_meta = enc.meta
    return ds


def read_dataset(raw: bytes | bytearray | memoryview, *, max_bytes: int = MAX_OBJECT_BYTES) -> Dataset:
    """Parse a Part 10 file (or a bare data set) after checking its structure; `ds.file_meta` is always set.

    A bare data set (what C-STORE carries, or a file without preamble) is accepted when it parses in the encoding
    its first element shows; its `file_meta` then holds only that Transfer Syntax UID.  Raises `DicomRejected`
    with 0xC000 (or 0xA700 when too large) and nothing else.
    """
    data = bytes(raw)
    if len(data) > max_bytes:
        raise DicomRejected(Reason.TOO_LARGE, STATUS_OUT_OF_RESOURCES, length=len(data), limit=max_bytes)
    enc = _encoding(data)
    body = data[enc.meta_end :]
    if not body:
        raise _cannot_understand(Reason.TRUNCATED, part="data-set")
    if enc.transfer_syntax == dicom_uid.DeflatedExplicitVRLittleEndian:
        body = _inflate(body, max_bytes)
    _walk_body(body, enc, 0)
    return _parse_values(body, enc)


# ---------------------------------------------------------------------------------------------- checking

_REQUIRED: Final = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
_IMAGE_REQUIRED: Final = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")
_WAVEFORM_SAMPLES: Final = frozenset(
    {
        (8, "SB"), (8, "UB"), (8, "MB"), (8, "AB"), (16, "SS"), (16, "US"),
        (32, "SL"), (32, "UL"), (64, "SV"), (64, "UV"),
    }
)  # fmt: skip  # PS3.3 C.10.9.1.5 Waveform Bits Allocated and Waveform Sample Interpretation


def _text(ds: Dataset, keyword: str) -> str | None:
    """A single-valued string attribute, stripped; None when absent, empty or multi-valued."""
    value = ds.get(keyword)
    if isinstance(value, str) and value.strip():
        return str(value).strip()
    return None


def _uint(ds: Dataset, keyword: str) -> int | None:
    """A single-valued integer attribute; None when absent, empty or not an integer."""
    value = ds.get(keyword)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class _Pixels:
    """The Pixel Data element: whether its length is undefined (encapsulated) and its value, read on demand."""

    undefined: bool
    value: Buf

    @classmethod
    def of(cls, ds: Dataset) -> _Pixels | None:
        if "PixelData" not in ds or not ds["PixelData"].value:
            return None
        element = ds["PixelData"]
        return cls(bool(element.is_undefined_length), bytes(element.value))


def _check_native_pixels(
    ds: Dataset, pixels: _Pixels, rows: int, columns: int, samples: int, bits: int, frames: int
) -> None:
    if pixels.undefined:
        raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="native pixel data must have a defined length")
    values_per_pixel = samples
    if samples == 3 and _text(ds, "PhotometricInterpretation") == "YBR_FULL_422":
        values_per_pixel = 2  # PS3.3 C.7.6.3.1.2: two chroma values shared by each horizontal pair of pixels
    expected = (rows * columns * values_per_pixel * bits * frames + 7) // 8
    length = len(pixels.value)
    if length != expected and not (expected % 2 and length == expected + 1):
        raise _mismatch(Reason.PIXEL_DATA_LENGTH, length=length, expected=expected)


def _check_encapsulated_pixels(ds: Dataset, pixels: _Pixels, frames: int) -> None:
    """PS3.5 A.4: a Basic Offset Table item, then one or more fragments; no frame shares a fragment."""
    if not pixels.undefined:
        raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="encapsulated pixel data must have undefined length")
    data = pixels.value
    head = _ITEM_HEAD[True]
    if len(data) < 8:
        raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="no basic offset table")
    group, elem, table_length = _read(head, data, 0)
    if (group << 16 | elem) != _ITEM or table_length % 4 or table_length > len(data) - 8:
        raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="invalid basic offset table")
    offsets = _read(struct.Struct(f"<{table_length // 4}I"), data, 8)
    first = pos = 8 + table_length
    starts: list[int] = []
    while pos < len(data):
        if len(data) - pos < 8:
            raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="fragment header cut")
        group, elem, length = _read(head, data, pos)
        if (group << 16 | elem) != _ITEM or length == _UNDEFINED or length > len(data) - pos - 8:
            raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="invalid fragment")
        starts.append(pos - first)
        pos += 8 + length
    if not starts:
        raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="no fragments")
    if len(starts) < frames:
        raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="fewer fragments than frames", frames=frames)
    if offsets:
        if "ExtendedOffsetTable" in ds:
            raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="offset table given twice")
        known = set(starts)
        increasing = all(a < b for a, b in itertools.pairwise(offsets))
        if len(offsets) != frames or offsets[0] != 0 or not increasing or not known.issuperset(offsets):
            raise _mismatch(Reason.PIXEL_DATA_ENCAPSULATION, detail="basic offset table does not match fragments")


def _check_image(ds: Dataset, transfer_syntax: str, pixels: _Pixels | None) -> None:
    values: dict[str, int] = {}
    for keyword in _IMAGE_REQUIRED:
        value = _uint(ds, keyword)
        if value is None:
            raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute=keyword)
        values[keyword] = value
    if pixels is None or not len(pixels.value):
        raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute="PixelData")
    rows, columns = values["Rows"], values["Columns"]
    bits, samples = values["BitsAllocated"], values["SamplesPerPixel"]
    if rows < 1 or columns < 1 or bits not in (1, 8, 16, 32, 64) or samples not in (1, 3):
        raise _mismatch(Reason.IMAGE_PIXEL_INVALID, rows=rows, columns=columns, bits=bits, samples=samples)
    frames = 1
    if ds.get("NumberOfFrames") not in (None, ""):
        frames_value = _uint(ds, "NumberOfFrames")
        if frames_value is None or frames_value < 1:
            raise _mismatch(Reason.IMAGE_PIXEL_INVALID, attribute="NumberOfFrames")
        frames = frames_value
    if transfer_syntax in NATIVE_TRANSFER_SYNTAXES:
        _check_native_pixels(ds, pixels, rows, columns, samples, bits, frames)
    else:
        _check_encapsulated_pixels(ds, pixels, frames)


def _check_waveform(ds: Dataset) -> None:
    sequence = ds.get("WaveformSequence")
    if not sequence:
        raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute="WaveformSequence")
    for index, item in enumerate(sequence):
        values: dict[str, int] = {}
        for keyword in ("NumberOfWaveformChannels", "NumberOfWaveformSamples", "WaveformBitsAllocated"):
            value = _uint(item, keyword)
            if value is None:
                raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute=keyword, item=index)
            values[keyword] = value
        channels, samples = values["NumberOfWaveformChannels"], values["NumberOfWaveformSamples"]
        bits = values["WaveformBitsAllocated"]
        interpretation = _text(item, "WaveformSampleInterpretation")
        frequency = item.get("SamplingFrequency")
        if not isinstance(frequency, int | float) or isinstance(frequency, bool):
            raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute="SamplingFrequency", item=index)
        if channels < 1 or samples < 1 or not float(frequency) > 0 or (bits, interpretation) not in _WAVEFORM_SAMPLES:
            raise _mismatch(Reason.WAVEFORM_INVALID, item=index, detail="channels, samples, rate or sample type")
        definitions = item.get("ChannelDefinitionSequence")
        if not definitions or len(definitions) != channels:
            raise _mismatch(Reason.WAVEFORM_INVALID, item=index, detail="one channel definition per channel")
        data = item.get("WaveformData")
        if not isinstance(data, bytes) or not data:
            raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute="WaveformData", item=index)
        expected = channels * samples * bits // 8
        if len(data) != expected and not (expected % 2 and len(data) == expected + 1):
            raise _mismatch(Reason.WAVEFORM_INVALID, item=index, length=len(data), expected=expected)


def _check(ds: Dataset, pixels: _Pixels | None = None, pixel_span: tuple[int, int] | None = None) -> Accepted:
    """Check a parsed data set; `pixels` given when the Pixel Data was left in the source (a large object)."""
    meta = getattr(ds, "file_meta", None)
    if not isinstance(meta, Dataset):
        raise _cannot_understand(Reason.FILE_META_INVALID, attribute="TransferSyntaxUID")
    transfer_syntax = _text(meta, "TransferSyntaxUID")
    if transfer_syntax is None:
        raise _cannot_understand(Reason.FILE_META_INVALID, attribute="TransferSyntaxUID")
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise _cannot_understand(Reason.TRANSFER_SYNTAX_NOT_SUPPORTED, transfer_syntax=transfer_syntax[:64])
    sop_class = _text(ds, "SOPClassUID")
    if sop_class is None:
        raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute="SOPClassUID")
    if sop_class not in SUPPORTED_SOP_CLASSES:
        raise DicomRejected(Reason.SOP_CLASS_NOT_SUPPORTED, STATUS_SOP_CLASS_NOT_SUPPORTED, sop_class=sop_class[:64])
    required: dict[str, str] = {}
    for keyword in _REQUIRED:
        value = _text(ds, keyword)
        if value is None:
            raise _mismatch(Reason.MISSING_ATTRIBUTE, attribute=keyword)
        required[keyword] = value
    media_class = _text(meta, "MediaStorageSOPClassUID")
    if media_class is not None and media_class != sop_class:
        raise _mismatch(Reason.SOP_CLASS_MISMATCH, sop_class=sop_class, media_storage_sop_class=media_class[:64])
    media_instance = _text(meta, "MediaStorageSOPInstanceUID")
    if media_instance is not None and media_instance != required["SOPInstanceUID"]:
        raise _mismatch(Reason.SOP_INSTANCE_MISMATCH)
    is_waveform = sop_class in WAVEFORM_SOP_CLASSES
    if is_waveform:
        _check_waveform(ds)
    else:
        _check_image(ds, transfer_syntax, pixels if pixel_span is not None else _Pixels.of(ds))
    return Accepted(
        sop_class_uid=sop_class,
        sop_instance_uid=required["SOPInstanceUID"],
        study_instance_uid=required["StudyInstanceUID"],
        series_instance_uid=required["SeriesInstanceUID"],
        modality=required["Modality"],
        transfer_syntax_uid=transfer_syntax,
        is_waveform=is_waveform,
        dataset=ds,
        pixel_data_span=pixel_span,
    )


def validate_dataset(ds: Dataset) -> Accepted:
    """Check an already parsed data set (e.g. pynetdicom's `event.dataset`, file_meta set) as `validate` does."""
    with quiet_pydicom():
        try:
            return _check(ds)
        except DicomRejected:
            raise
        except Exception:  # noqa: BLE001 - a value pydicom cannot convert: the sender's object is unreadable
            raise _cannot_understand(Reason.MALFORMED, part="values") from None


def validate(raw: bytes | bytearray | memoryview, *, max_bytes: int = MAX_OBJECT_BYTES) -> Accepted:
    """Accept a received DICOM object or raise `DicomRejected` with the C-STORE status to answer."""
    return validate_dataset(read_dataset(raw, max_bytes=max_bytes))


LARGE_HEADER_BYTES: Final = 8 * 1024 * 1024  # a large object's elements before its Pixel Data, parsed in memory


def validate_source(src: ByteSource, *, max_bytes: int = MAX_OBJECT_BYTES) -> Accepted:
    """`validate` for an object too large to hold: the structure is walked through `src` piece by piece, the
    elements before Pixel Data are parsed (at most `LARGE_HEADER_BYTES`), and Pixel Data is checked from its
    element header and, when encapsulated, its item headers; its value is never loaded.

    A Deflated object cannot be checked without inflating it whole: refused as too large for the edge (0xA700).
    """
    size = len(src)
    if size > max_bytes:
        raise DicomRejected(Reason.TOO_LARGE, STATUS_OUT_OF_RESOURCES, length=size, limit=max_bytes)
    enc = _encoding(src)
    if size == enc.meta_end:
        raise _cannot_understand(Reason.TRUNCATED, part="data-set")
    if enc.transfer_syntax == dicom_uid.DeflatedExplicitVRLittleEndian:
        raise DicomRejected(Reason.TOO_LARGE, STATUS_OUT_OF_RESOURCES, part="deflate", limit=LARGE_HEADER_BYTES)
    _walk_body(src, enc, enc.meta_end)
    pixel_at = _top_level(src, enc, _PIXEL_DATA)
    header_end = size if pixel_at is None else pixel_at
    if header_end - enc.meta_end > LARGE_HEADER_BYTES:
        raise DicomRejected(Reason.TOO_LARGE, STATUS_OUT_OF_RESOURCES, part="header", limit=LARGE_HEADER_BYTES)
    ds = _parse_values(src[enc.meta_end : header_end], enc)
    pixels, pixel_end = (None, header_end) if pixel_at is None else _pixel_element(src, pixel_at, enc)
    with quiet_pydicom():
        try:
            return _check(ds, pixels, (header_end, pixel_end))
        except DicomRejected:
            raise
        except Exception:  # noqa: BLE001 - a value pydicom cannot convert: the sender's object is unreadable
            raise _cannot_understand(Reason.MALFORMED, part="values") from None


def _top_level(src: Buf, enc: _Encoding, wanted: int) -> int | None:
    """Where the top-level element `wanted` starts (the walk already proved the structure sound)."""
    pos, end = enc.meta_end, len(src)
    while pos < end:
        group, element = _read(_TAG[enc.little], src, pos)
        if (group << 16 | element) == wanted:
            return pos
        pos = _walk_element(src, pos, end, enc.implicit, enc.little, 0)
    return None


def _pixel_element(src: Buf, pos: int, enc: _Encoding) -> tuple[_Pixels, int]:
    end = _walk_element(src, pos, len(src), enc.implicit, enc.little, 0)
    long_header = not enc.implicit and src[pos + 4 : pos + 6] in _LONG_VRS
    at = pos + (8 if enc.implicit else 8 if not long_header else 12)
    length_field = _read(_U32[enc.little], src, at - 4)[0] if enc.implicit or long_header else 0
    undefined = length_field == _UNDEFINED
    stop = end - 8 if undefined else end  # the value, without the Sequence Delimitation Item
    return _Pixels(undefined, _Window(src, at, stop)), end
