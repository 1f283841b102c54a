"""Tests for the pure DICOM layer: validation and its C-STORE statuses, PS3.15 de-identification, ECG decoding.

Every object here is one of the test files bundled in the installed pydicom wheel (nothing is downloaded).
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom import uid as dicom_uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator

from drivers.dicom.deidentify import (
    BASIC_PROFILE_CODE,
    DEIDENTIFICATION_METHOD,
    Deidentifier,
    burned_in_text_suspected,
)
from drivers.dicom.ecg import LEADS, decode_ecg, ecg_events, lead_for_code
from drivers.dicom.validate import (
    NATIVE_TRANSFER_SYNTAXES,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    SUPPORTED_SOP_CLASSES,
    Accepted,
    DicomRejected,
    Reason,
    read_dataset,
    validate,
    validate_dataset,
)
from gateway.core.errors import InvalidFrame
from gateway.core.model import Lane
from gateway.core.nomenclature import Kind, quantity
from tests.support.fuzzing import FAST, Mutation, mutate, mutations

BUNDLED = Path(pydicom.__file__).parent / "data" / "test_files"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PSEUDONYM = "pt-7f3a9c"


def path_of(name: str) -> Path:
    path = Path(str(get_testdata_file(name)))
    assert path.parent == BUNDLED, f"{name} is not bundled with pydicom; tests must not download"
    return path


def raw(name: str) -> bytes:
    return path_of(name).read_bytes()


def encode(ds: Dataset) -> bytes:
    """Re-encode a data set read with dcmread as it was (pydicom's enforce_file_format would rewrite the meta)."""
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def status_of(data: bytes) -> int | None:
    """The status `validate` answers, or None when it accepts the object."""
    try:
        validate(data)
    except DicomRejected as error:
        return error.status
    return None


def rejection(data: bytes, **kwargs: int) -> DicomRejected:
    with pytest.raises(DicomRejected) as info:
        validate(data, **kwargs)
    return info.value


# name -> (SOP Class UID, Transfer Syntax UID)
ACCEPTED = {
    "CT_small.dcm": (dicom_uid.CTImageStorage, dicom_uid.ExplicitVRLittleEndian),
    "MR_small.dcm": (dicom_uid.MRImageStorage, dicom_uid.ExplicitVRLittleEndian),
    "MR_small_implicit.dcm": (dicom_uid.MRImageStorage, dicom_uid.ImplicitVRLittleEndian),
    "MR_small_bigendian.dcm": (dicom_uid.MRImageStorage, dicom_uid.ExplicitVRBigEndian),
    "MR_small_RLE.dcm": (dicom_uid.MRImageStorage, dicom_uid.RLELossless),
    "MR_small_jpeg_ls_lossless.dcm": (dicom_uid.MRImageStorage, dicom_uid.JPEGLSLossless),
    "MR_small_jp2klossless.dcm": (dicom_uid.MRImageStorage, dicom_uid.JPEG2000Lossless),
    "SC_rgb_small_odd.dcm": (dicom_uid.SecondaryCaptureImageStorage, dicom_uid.ExplicitVRLittleEndian),
    "SC_rgb_rle_2frame.dcm": (dicom_uid.SecondaryCaptureImageStorage, dicom_uid.RLELossless),
    "SC_ybr_full_422_uncompressed.dcm": (dicom_uid.SecondaryCaptureImageStorage, dicom_uid.ExplicitVRLittleEndian),
    "SC_rgb_jpeg_gdcm.dcm": (dicom_uid.SecondaryCaptureImageStorage, dicom_uid.JPEGLosslessSV1),
    "JPEG2000.dcm": (dicom_uid.SecondaryCaptureImageStorage, dicom_uid.JPEG2000),
    "JPGExtended.dcm": (dicom_uid.SecondaryCaptureImageStorage, dicom_uid.JPEGExtended12Bit),
    "image_dfl.dcm": (dicom_uid.SecondaryCaptureImageStorage, dicom_uid.DeflatedExplicitVRLittleEndian),
    "examples_ybr_color.dcm": (dicom_uid.UltrasoundMultiFrameImageStorage, dicom_uid.JPEGBaseline8Bit),
    "examples_jpeg2k.dcm": (dicom_uid.UltrasoundImageStorage, dicom_uid.JPEG2000Lossless),
    "ExplVR_BigEnd.dcm": (dicom_uid.UltrasoundImageStorage, dicom_uid.ExplicitVRBigEndian),
    "examples_overlay.dcm": (dicom_uid.MRImageStorage, dicom_uid.ExplicitVRLittleEndian),
    "waveform_ecg.dcm": (dicom_uid.TwelveLeadECGWaveformStorage, dicom_uid.ExplicitVRLittleEndian),
}
DEIDENTIFIED = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "SC_rgb_small_odd.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "examples_ybr_color.dcm",
    "ExplVR_BigEnd.dcm",
    "examples_overlay.dcm",
    "waveform_ecg.dcm",
]


# ------------------------------------------------------------------------------------------------ validate


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_bundled_objects_of_supported_classes_validate(name: str) -> None:
    sop_class, transfer_syntax = ACCEPTED[name]
    accepted = validate(raw(name))
    assert accepted.sop_class_uid == sop_class
    assert accepted.transfer_syntax_uid == transfer_syntax
    assert accepted.is_waveform == (name == "waveform_ecg.dcm")
    assert accepted.sop_class_name == SUPPORTED_SOP_CLASSES[sop_class]
    assert accepted.sop_instance_uid == accepted.dataset.SOPInstanceUID
    assert accepted.dataset.file_meta.MediaStorageSOPInstanceUID == accepted.sop_instance_uid
    assert "dataset" not in repr(accepted), "the parsed data set (patient data) stays out of repr"


def test_accepted_objects_cover_every_required_transfer_syntax() -> None:
    covered = {ts for _, ts in ACCEPTED.values()}
    required = {
        dicom_uid.ImplicitVRLittleEndian,
        dicom_uid.ExplicitVRLittleEndian,
        dicom_uid.ExplicitVRBigEndian,
        dicom_uid.DeflatedExplicitVRLittleEndian,
        dicom_uid.JPEGBaseline8Bit,
        dicom_uid.JPEGLosslessSV1,
        dicom_uid.JPEGLSLossless,
        dicom_uid.JPEG2000Lossless,
        dicom_uid.JPEG2000,
        dicom_uid.RLELossless,
    }
    assert required <= covered


def test_accepted_is_a_value_without_the_dataset() -> None:
    a, b = validate(raw("MR_small.dcm")), validate(raw("MR_small.dcm"))
    assert a == b
    assert a.dataset is not b.dataset


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("MR_truncated.dcm", STATUS_CANNOT_UNDERSTAND, Reason.TRUNCATED),
        ("rtplan_truncated.dcm", STATUS_CANNOT_UNDERSTAND, Reason.TRUNCATED),
        ("no_meta.dcm", STATUS_CANNOT_UNDERSTAND, Reason.NOT_DICOM),
        ("meta_missing_tsyntax.dcm", STATUS_CANNOT_UNDERSTAND, Reason.FILE_META_INVALID),
        # Its file meta says JPEG Baseline (explicit VR) but the data set is implicit VR: not silently re-read.
        ("SC_rgb_jpeg.dcm", STATUS_CANNOT_UNDERSTAND, Reason.MALFORMED),
        ("rtplan.dcm", STATUS_SOP_CLASS_NOT_SUPPORTED, Reason.SOP_CLASS_NOT_SUPPORTED),
        ("rtdose.dcm", STATUS_SOP_CLASS_NOT_SUPPORTED, Reason.SOP_CLASS_NOT_SUPPORTED),
        ("test-SR.dcm", STATUS_SOP_CLASS_NOT_SUPPORTED, Reason.SOP_CLASS_NOT_SUPPORTED),
        # A bare data set (no preamble, no file meta) is parsed in the encoding its first element shows.
        ("ExplVR_LitEndNoMeta.dcm", STATUS_SOP_CLASS_NOT_SUPPORTED, Reason.SOP_CLASS_NOT_SUPPORTED),
        ("ExplVR_BigEndNoMeta.dcm", STATUS_SOP_CLASS_NOT_SUPPORTED, Reason.SOP_CLASS_NOT_SUPPORTED),
        # 128 bytes of pixel data beyond Rows x Columns x samples x bits: only one pad byte is allowed.
        ("MR_small_padded.dcm", STATUS_DATASET_MISMATCH, Reason.PIXEL_DATA_LENGTH),
        ("GDCMJ2K_TextGBR.dcm", STATUS_DATASET_MISMATCH, Reason.MISSING_ATTRIBUTE),
    ],
)
def test_bundled_objects_the_gateway_refuses(name: str, status: int, reason: Reason) -> None:
    error = rejection(raw(name))
    assert (error.status, error.reason) == (status, reason)


@pytest.mark.parametrize(
    "data",
    [b"", b"DICM", bytes(132), bytes(128) + b"DICM", b"\x08\x00\x16\x00", b"not a dicom object at all" * 8],
)
def test_not_dicom_is_cannot_understand(data: bytes) -> None:
    assert rejection(data).status == STATUS_CANNOT_UNDERSTAND


def test_rejections_are_invalid_frames_with_safe_log_fields() -> None:
    ds = pydicom.dcmread(path_of("CT_small.dcm"))
    del ds.StudyInstanceUID
    error = rejection(encode(ds))
    assert isinstance(error, InvalidFrame)
    assert (error.status, error.reason) == (STATUS_DATASET_MISMATCH, Reason.MISSING_ATTRIBUTE)
    fields = error.log_fields()
    assert fields["attribute"] == "StudyInstanceUID"
    text = repr(fields) + str(error)
    for secret in ("CompressedSamples", "1CT1"):
        assert secret not in text


def _top_level_boundaries(data: bytes) -> set[int]:
    """File offsets where a top-level element of an explicit VR little endian Part 10 file ends (pydicom's view)."""
    start = 144 + int.from_bytes(data[140:144], "little")  # after (0002,0000) and the group it measures
    fp = io.BytesIO(data)
    fp.seek(start)
    ends = {start}
    for _ in data_element_generator(fp, False, True):
        ends.add(fp.tell())  # the generator has read the whole element when it yields it
    return ends


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "waveform_ecg.dcm", "SC_rgb_small_odd.dcm"])
def test_truncations_are_rejected_as_cannot_understand(name: str) -> None:
    data = raw(name)
    boundaries = _top_level_boundaries(data)
    assert len(data) in boundaries
    cuts = set(range(400)) | set(range(0, len(data), max(1, len(data) // 600))) | set(range(len(data) - 64, len(data)))
    for cut in sorted(cuts):
        status = status_of(data[:cut])
        if cut in boundaries:
            # A cut between elements leaves a shorter, well-formed object that lacks what followed (or, after
            # Pixel Data, only Data Set Trailing Padding): accepted, or missing attributes.
            assert status in (None, STATUS_CANNOT_UNDERSTAND, STATUS_DATASET_MISMATCH), cut
        else:
            assert status == STATUS_CANNOT_UNDERSTAND, cut


def test_pixel_data_two_bytes_short_does_not_match_the_sop_class() -> None:
    ds = pydicom.dcmread(path_of("CT_small.dcm"))
    ds.PixelData = ds.PixelData[:-2]
    error = rejection(encode(ds))
    assert (error.status, error.reason) == (STATUS_DATASET_MISMATCH, Reason.PIXEL_DATA_LENGTH)
    assert error.log_fields()["expected"] == 128 * 128 * 2


def test_one_pad_byte_after_odd_length_pixel_data_is_allowed() -> None:
    accepted = validate(raw("SC_rgb_small_odd.dcm"))
    ds = accepted.dataset
    assert (ds.Rows * ds.Columns * 3) % 2 == 1
    assert len(ds.PixelData) == ds.Rows * ds.Columns * 3 + 1


_ENCAPSULATED_PIXEL_DATA = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"  # (7FE0,0010) OB, undefined length
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _with_items(name: str, items: bytes) -> bytes:
    """The bundled object with its encapsulated Pixel Data (its last element) made of `items` (pydicom would
    refuse to write most of the broken ones, so the bytes are spliced)."""
    data = raw(name)
    at = data.rindex(_ENCAPSULATED_PIXEL_DATA) + len(_ENCAPSULATED_PIXEL_DATA)
    assert data.endswith(_SEQUENCE_DELIMITER)
    return data[:at] + items + _SEQUENCE_DELIMITER


def _item(payload: bytes) -> bytes:
    return b"\xfe\xff\x00\xe0" + len(payload).to_bytes(4, "little") + payload


def test_encapsulated_pixel_data_needs_an_offset_table_and_a_fragment() -> None:
    fragment = _item(b"\xff\xd8" + bytes(30) + b"\xff\xd9")
    assert validate(_with_items("JPEG2000.dcm", _item(b"") + fragment))
    assert validate(_with_items("JPEG2000.dcm", _item(bytes(4)) + fragment))  # one frame at offset 0
    empty = rejection(_with_items("JPEG2000.dcm", b""))
    assert (empty.status, empty.reason, empty.fields["attribute"]) == (
        STATUS_DATASET_MISMATCH,
        Reason.MISSING_ATTRIBUTE,
        "PixelData",
    )
    bad = {
        "no fragment": _item(b""),
        "no offset table": fragment,  # the fragment read as a table: 34 bytes are not whole offsets
        "offset table not whole offsets": _item(bytes(2)) + fragment,
        "offset past the fragments": _item((64).to_bytes(4, "little")) + fragment,
        "two offsets for one frame": _item(bytes(8)) + fragment,
    }
    for case, items in bad.items():
        error = rejection(_with_items("JPEG2000.dcm", items))
        assert (error.status, error.reason) == (STATUS_DATASET_MISMATCH, Reason.PIXEL_DATA_ENCAPSULATION), case


def test_broken_item_structure_in_pixel_data_cannot_be_understood() -> None:
    fragment = _item(b"\xff\xd8" + bytes(30) + b"\xff\xd9")
    broken = {
        "fragment longer than the data": _item(b"") + fragment[:-3],
        "not an item": _item(b"") + b"\x08\x00\x16\x00" + fragment[4:],
        "fragment of undefined length": _item(b"") + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + fragment[8:],
    }
    for case, items in broken.items():
        assert rejection(_with_items("JPEG2000.dcm", items)).status == STATUS_CANNOT_UNDERSTAND, case


def test_multi_frame_offset_table_must_point_at_each_frame() -> None:
    ds = validate(raw("SC_rgb_rle_2frame.dcm")).dataset
    assert ds.NumberOfFrames == 2
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=2))
    first, second = _item(frames[0]), _item(frames[1])
    good = _item((0).to_bytes(4, "little") + len(first).to_bytes(4, "little")) + first + second
    assert validate(_with_items("SC_rgb_rle_2frame.dcm", good))
    assert validate(_with_items("SC_rgb_rle_2frame.dcm", _item(b"") + first + second))  # no table is fine
    wrong = _item((0).to_bytes(4, "little") + (len(first) + 2).to_bytes(4, "little")) + first + second
    one_fragment = _item(b"") + _item(frames[0] + frames[1])
    for items in (wrong, one_fragment):
        error = rejection(_with_items("SC_rgb_rle_2frame.dcm", items))
        assert (error.status, error.reason) == (STATUS_DATASET_MISMATCH, Reason.PIXEL_DATA_ENCAPSULATION)


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows"])
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_required_attributes_missing_or_empty(keyword: str, how: str) -> None:
    ds = pydicom.dcmread(path_of("MR_small.dcm"))
    if how == "missing":
        delattr(ds, keyword)
    else:
        ds[keyword].value = None
    error = rejection(encode(ds))
    assert (error.status, error.reason, error.fields["attribute"]) == (
        STATUS_DATASET_MISMATCH,
        Reason.MISSING_ATTRIBUTE,
        keyword,
    )


def test_image_without_pixel_data_does_not_match() -> None:
    ds = pydicom.dcmread(path_of("CT_small.dcm"))
    del ds.PixelData
    error = rejection(encode(ds))
    assert (error.status, error.fields["attribute"]) == (STATUS_DATASET_MISMATCH, "PixelData")


def test_media_storage_sop_class_must_match_the_data_set() -> None:
    ds = pydicom.dcmread(path_of("CT_small.dcm"))
    ds.file_meta.MediaStorageSOPClassUID = dicom_uid.MRImageStorage
    error = rejection(encode(ds))
    assert (error.status, error.reason) == (STATUS_DATASET_MISMATCH, Reason.SOP_CLASS_MISMATCH)


def test_unsupported_transfer_syntax_cannot_be_understood() -> None:
    data = bytearray(raw("MR_small.dcm"))
    at = data.index(b"1.2.840.10008.1.2.1\x00")
    data[at : at + 20] = b"1.2.840.10008.1.2.9\x00"  # same length, so the file meta stays well formed
    error = rejection(bytes(data))
    assert (error.status, error.reason) == (STATUS_CANNOT_UNDERSTAND, Reason.TRANSFER_SYNTAX_NOT_SUPPORTED)


def test_too_large_is_out_of_resources_also_after_inflating() -> None:
    assert rejection(raw("CT_small.dcm"), max_bytes=10_000).status == STATUS_OUT_OF_RESOURCES
    deflated = raw("image_dfl.dcm")
    error = rejection(deflated, max_bytes=len(deflated) + 1000)  # inflates to about 260 kB
    assert (error.status, error.fields["part"]) == (STATUS_OUT_OF_RESOURCES, "deflate")


def test_waveform_data_length_must_match_channels_and_samples() -> None:
    ds = pydicom.dcmread(path_of("waveform_ecg.dcm"))
    ds.WaveformSequence[0].WaveformData = ds.WaveformSequence[0].WaveformData[:-2]
    error = rejection(encode(ds))
    assert (error.status, error.reason) == (STATUS_DATASET_MISMATCH, Reason.WAVEFORM_INVALID)


def test_validate_dataset_needs_a_transfer_syntax() -> None:
    ds = read_dataset(raw("MR_small.dcm"))
    bare = Dataset()
    bare.update(ds)
    with pytest.raises(DicomRejected) as info:
        validate_dataset(bare)
    error = info.value
    assert (error.status, error.reason) == (STATUS_CANNOT_UNDERSTAND, Reason.FILE_META_INVALID)
    assert validate_dataset(ds).sop_class_uid == dicom_uid.MRImageStorage


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_dicom_rejected(data: bytes) -> None:
    assert status_of(data) in (STATUS_CANNOT_UNDERSTAND, STATUS_DATASET_MISMATCH, STATUS_SOP_CLASS_NOT_SUPPORTED)


@FAST
@given(st.binary(min_size=1, max_size=400))
def test_random_bytes_after_a_valid_preamble_only_raise_dicom_rejected(tail: bytes) -> None:
    assert status_of(bytes(128) + b"DICM" + tail) is not None


@FAST
@given(mutations, st.sampled_from(["MR_small.dcm", "SC_rgb_rle_2frame.dcm", "waveform_ecg.dcm", "JPEG2000.dcm"]))
def test_mutated_objects_only_raise_dicom_rejected(mutation: Mutation, name: str) -> None:
    data = mutate(raw(name), mutation)
    status_of(data)  # anything but DicomRejected fails the test
    with contextlib.suppress(DicomRejected):
        Deidentifier(KEY).deidentify_bytes(data, PSEUDONYM)


# ---------------------------------------------------------------------------------------------- deidentify


def _identifiers(ds: Dataset) -> set[str]:
    """The patient's names, ids and birth date as they appear in the original (pieces long enough to scan for)."""
    found: set[str] = set()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames"):
        value = ds.get(keyword)
        if value is None:
            continue
        text = str(value)
        found.add(text)
        found.update(re.split(r"[\^= \\]", text))
    return {s for s in found if len(s) >= 4}


def _scannable(data: bytes) -> bytes:
    """The object's bytes with a Deflate-compressed data set inflated, so a scan sees every value."""
    if b"1.2.840.10008.1.2.1.99" not in data[:400]:
        return data
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL comes first in the file meta
    start = 144 + group_length
    return data[:start] + zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[start:])


@pytest.mark.parametrize("name", DEIDENTIFIED)
def test_deidentified_bytes_hold_no_patient_identifier(name: str) -> None:
    original = read_dataset(raw(name))
    out = Deidentifier(KEY).deidentify_bytes(raw(name), PSEUDONYM)
    plain = _scannable(out)
    for secret in _identifiers(original):
        assert secret.encode() not in plain, f"{secret!r} survived de-identification of {name}"
    ds = validate(out).dataset
    assert str(ds.PatientName) == PSEUDONYM
    assert ds.PatientID == PSEUDONYM
    for keyword in ("PatientBirthDate", "PatientSex"):
        assert ds.get(keyword) in (None, "")
    for keyword in ("OtherPatientIDs", "PatientAge", "PatientAddress", "InstitutionAddress", "AccessionNumber"):
        assert ds.get(keyword) in (None, "")


@pytest.mark.parametrize("name", DEIDENTIFIED)
def test_deidentified_object_still_validates_and_keeps_class_and_pixels(name: str) -> None:
    before = validate(raw(name))
    deidentifier = Deidentifier(KEY)
    out = deidentifier.deidentify_bytes(raw(name), PSEUDONYM)
    after = validate(out)
    assert after.sop_class_uid == before.sop_class_uid
    assert after.transfer_syntax_uid == before.transfer_syntax_uid
    assert after.sop_instance_uid == deidentifier.replacement_uid(before.sop_instance_uid)
    assert after.study_instance_uid == deidentifier.replacement_uid(before.study_instance_uid)
    assert after.series_instance_uid == deidentifier.replacement_uid(before.series_instance_uid)
    assert after.dataset.file_meta.MediaStorageSOPInstanceUID == after.sop_instance_uid
    if "PixelData" in before.dataset:
        assert after.dataset.PixelData == before.dataset.PixelData
    if "WaveformSequence" in before.dataset:
        for old, new in zip(before.dataset.WaveformSequence, after.dataset.WaveformSequence, strict=True):
            assert new.WaveformData == old.WaveformData


@pytest.mark.parametrize("name", DEIDENTIFIED)
def test_deidentified_object_carries_the_ps3_15_markers(name: str) -> None:
    ds = validate(Deidentifier(KEY).deidentify_bytes(raw(name), PSEUDONYM)).dataset
    assert ds.PatientIdentityRemoved == "YES"
    assert DEIDENTIFICATION_METHOD in (
        [ds.DeidentificationMethod] if isinstance(ds.DeidentificationMethod, str) else ds.DeidentificationMethod
    )
    codes = [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in ds.DeidentificationMethodCodeSequence]
    assert codes == [BASIC_PROFILE_CODE] == [("113100", "DCM", "Basic Application Confidentiality Profile")]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def _walk(ds: Dataset) -> list[pydicom.DataElement]:
    out = []
    for elem in ds:
        out.append(elem)
        if elem.VR == "SQ":
            for item in elem.value:
                out.extend(_walk(item))
    return out


@pytest.mark.parametrize("name", DEIDENTIFIED)
def test_no_private_tags_names_dates_or_foreign_instance_uids_remain(name: str) -> None:
    ds = validate(Deidentifier(KEY).deidentify_bytes(raw(name), PSEUDONYM)).dataset
    for elem in _walk(ds):
        assert not elem.tag.is_private, elem.tag
        assert elem.tag.group not in (*range(0x5000, 0x5020, 2), *range(0x6000, 0x6020, 2)), elem.tag
        if elem.VR == "PN" and elem.value:
            assert str(elem.value) in (PSEUDONYM, "ANONYMIZED"), elem.keyword
        if elem.VR in ("DA", "DT", "TM") and elem.value:
            assert str(elem.value) in ("19000101", "000000", "19000101000000"), elem.keyword
        if elem.VR == "UI" and elem.value and not elem.keyword.endswith("ClassUID"):
            for value in elem.value if isinstance(elem.value, list) else [elem.value]:
                assert value.startswith(("2.25.", "1.2.840.10008.")), elem.keyword
                assert len(value) <= 64


def test_replacement_uids_are_uuid_derived_stable_and_keyed() -> None:
    uid = "1.2.3.4.5.6.7.8.9"
    one, again, other = Deidentifier(KEY), Deidentifier(KEY), Deidentifier(OTHER_KEY)
    assert one.replacement_uid(uid) == again.replacement_uid(uid) == one.replacement_uid(uid + "\x00")
    assert one.replacement_uid(uid) != other.replacement_uid(uid)
    assert one.replacement_uid(uid) != one.replacement_uid(uid + ".1")
    value = one.replacement_uid(uid)
    assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", value) and len(value) <= 64
    number = int(value.removeprefix("2.25."))
    assert number < 1 << 128
    assert (number >> 76) & 0xF == 8 and (number >> 62) & 0x3 == 0b10  # UUID version 8, RFC variant


def test_deidentification_is_deterministic_per_key_and_differs_across_keys() -> None:
    data = raw("CT_small.dcm")
    first = Deidentifier(KEY).deidentify_bytes(data, PSEUDONYM)
    assert Deidentifier(KEY).deidentify_bytes(data, PSEUDONYM) == first
    other = Deidentifier(OTHER_KEY).deidentify_bytes(data, PSEUDONYM)
    assert other != first
    assert validate(other).sop_instance_uid != validate(first).sop_instance_uid


def test_objects_of_one_study_keep_consistent_references() -> None:
    deidentifier = Deidentifier(KEY)
    a = validate(deidentifier.deidentify_bytes(raw("MR_small.dcm"), PSEUDONYM))
    b = validate(deidentifier.deidentify_bytes(raw("MR_small_bigendian.dcm"), PSEUDONYM))
    assert (
        validate(raw("MR_small.dcm")).study_instance_uid == validate(raw("MR_small_bigendian.dcm")).study_instance_uid
    )
    assert (a.study_instance_uid, a.series_instance_uid) == (b.study_instance_uid, b.series_instance_uid)
    assert a.dataset.FrameOfReferenceUID == b.dataset.FrameOfReferenceUID


def test_deidentify_never_mutates_its_input() -> None:
    ds = read_dataset(raw("CT_small.dcm"))
    snapshot = copy.deepcopy(ds)
    out = Deidentifier(KEY).deidentify(ds, PSEUDONYM)
    assert ds == snapshot
    assert ds.file_meta == snapshot.file_meta
    assert out.SOPInstanceUID != ds.SOPInstanceUID
    assert any(elem.tag.is_private for elem in ds)


def test_nested_sequences_are_cleaned_and_class_uids_kept() -> None:
    ds = read_dataset(raw("CT_small.dcm"))
    item = Dataset()
    item.PatientName = "Doe^Jane"
    item.ReferencedSOPClassUID = dicom_uid.CTImageStorage
    item.ReferencedSOPInstanceUID = "1.2.3.4.99"
    item.add_new(0x00091001, "LO", "private note")
    item.InstitutionName = "St Elsewhere"
    item.ContentDate = "20240102"
    ds.SourceImageSequence = [item]
    ds.add_new(0x50000005, "US", 2)  # a retired curve
    ds.add_new(0x60003000, "OW", bytes(8))  # overlay data
    ds.add_new(0x60000010, "US", 2)  # its plane's rows
    deidentifier = Deidentifier(KEY)
    out = deidentifier.deidentify(ds, PSEUDONYM)
    cleaned = out.SourceImageSequence[0]
    assert cleaned.PatientName == ""
    assert cleaned.ReferencedSOPClassUID == dicom_uid.CTImageStorage
    assert cleaned.ReferencedSOPInstanceUID == deidentifier.replacement_uid("1.2.3.4.99")
    assert 0x00091001 not in cleaned
    assert cleaned.InstitutionName == "ANONYMIZED"
    assert cleaned.ContentDate == "19000101"
    assert all(not 0x5000 <= elem.tag.group <= 0x601E for elem in out)


def test_burned_in_text_is_flagged_not_cleaned() -> None:
    us = read_dataset(raw("examples_ybr_color.dcm"))
    ct = read_dataset(raw("CT_small.dcm"))
    assert burned_in_text_suspected(us)  # ultrasound without Burned In Annotation: assume there is text
    assert not burned_in_text_suspected(ct)
    ct.BurnedInAnnotation = "YES"
    us.BurnedInAnnotation = "NO"
    assert burned_in_text_suspected(ct)
    assert not burned_in_text_suspected(us)
    out = Deidentifier(KEY).deidentify(ct, PSEUDONYM)
    assert out.BurnedInAnnotation == "YES"  # left as sent: the pixels were not cleaned
    assert burned_in_text_suspected(out)


@pytest.mark.parametrize("pseudonym", ["", "x" * 65, "a\\b", "Doe^Jane", "bad\nline", "naïve"])
def test_bad_pseudonyms_are_refused(pseudonym: str) -> None:
    with pytest.raises(ValueError, match="pseudonym"):
        Deidentifier(KEY).deidentify(read_dataset(raw("MR_small.dcm")), pseudonym)


def test_short_keys_are_refused_and_never_shown() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Deidentifier(b"short")
    assert KEY.hex() not in repr(Deidentifier(KEY))


def test_deidentify_bytes_rejects_what_it_cannot_parse() -> None:
    with pytest.raises(DicomRejected):
        Deidentifier(KEY).deidentify_bytes(raw("MR_truncated.dcm"), PSEUDONYM)


def test_preamble_is_not_carried_over() -> None:
    data = raw("MR_small_padded.dcm")
    assert data[:4] == b"II*\x00"  # a TIFF header in the preamble
    out = Deidentifier(KEY).deidentify_bytes(data, PSEUDONYM)
    assert out[:128] == bytes(128) and out[128:132] == b"DICM"


# ----------------------------------------------------------------------------------------------------- ECG

TWELVE = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _ecg() -> Dataset:
    return validate(raw("waveform_ecg.dcm")).dataset


def test_twelve_lead_ecg_decodes_to_twelve_leads_in_microvolts() -> None:
    ds = _ecg()
    channels = decode_ecg(ds)
    assert [c.label for c in channels] == TWELVE
    assert [c.reference_id for c in channels] == [LEADS[n][1] for n in (1, 2, 61, 62, 63, 64, 3, 4, 5, 6, 7, 8)]
    assert {c.source_code[0] for c in channels} == {"SCPECG"}
    for channel in channels:
        assert channel.sample_rate_hz == 1000.0
        assert channel.raw.shape == (10_000,) and channel.raw.dtype == np.int32
        assert not channel.raw.flags.writeable
        assert channel.gain_uv == pytest.approx(1.25)
        uv = channel.samples_uv
        assert np.abs(uv).max() < 5_000  # a surface ECG stays within a few millivolts
        assert 100 < np.ptp(uv) < 5_000, channel.label  # and every lead shows the QRS complexes
    # Matches pydicom's own scaling for this file (whose units are already µV).
    assert np.allclose(np.stack([c.samples_uv for c in channels], axis=1), ds.waveform_array(0))


def test_limb_leads_obey_einthoven_and_goldberger() -> None:
    lead = {c.label: c.samples_uv for c in decode_ecg(_ecg())}
    lsb = 1.25
    assert np.abs(lead["II"] - lead["I"] - lead["III"]).max() <= lsb
    assert np.abs(lead["aVR"] + (lead["I"] + lead["II"]) / 2).max() <= lsb
    assert np.abs(lead["aVL"] - (lead["I"] - lead["III"]) / 2).max() <= lsb
    assert np.abs(lead["aVF"] - (lead["II"] + lead["III"]) / 2).max() <= lsb


def test_the_median_beat_group_is_chosen_explicitly() -> None:
    ds = _ecg()
    median = decode_ecg(ds, group=1)
    assert [c.label for c in median] == TWELVE
    assert {len(c.raw) for c in median} == {1200}
    with pytest.raises(DicomRejected):
        decode_ecg(ds, group=2)


def test_sensitivity_units_correction_and_baseline_are_applied() -> None:
    ds = _ecg()
    reference = decode_ecg(ds)[0]
    definition = ds.WaveformSequence[0].ChannelDefinitionSequence[0]
    definition.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
    definition.ChannelSensitivity = "0.00125"
    definition.ChannelSensitivityCorrectionFactor = "2"
    definition.ChannelBaseline = "0.5"
    changed = decode_ecg(ds)[0]
    assert np.allclose(changed.samples_uv, reference.samples_uv * 2 + 500)
    definition.ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"
    with pytest.raises(DicomRejected) as info:
        decode_ecg(ds)
    error = info.value
    assert error.status == STATUS_DATASET_MISMATCH and error.fields["channel"] == 0


def test_lead_codes_map_to_mdc_quantities() -> None:
    assert lead_for_code("SCPECG", "5.6.3-9-1") == ("I", "MDC_ECG_ELEC_POTL_I")
    assert lead_for_code("SCPECG", "5.6.3-9-62") == ("aVR", "MDC_ECG_ELEC_POTL_AVR")
    assert lead_for_code("MDC", "2:62") == ("aVR", "MDC_ECG_ELEC_POTL_AVR")  # CID 3001
    assert lead_for_code("MDC", "2:318") == ("aVR", "MDC_ECG_ELEC_POTL_AVR")  # per-lead potential term
    assert lead_for_code("MDC", "131390") == ("aVR", "MDC_ECG_ELEC_POTL_AVR")  # context-free
    assert lead_for_code("MDC", "2:9") is None  # V7: reported as an unspecified lead
    assert lead_for_code("SCPECG", "5.6.3-9-x") is None
    assert lead_for_code("LN", "5.6.3-9-1") is None
    for number, (_, reference_id) in LEADS.items():
        q = quantity(reference_id)
        assert q.code == (2 << 16) + 256 + number, reference_id
        assert (q.kind, q.ucum) == (Kind.WAVEFORM, "uV")


def test_ecg_events_make_one_chunk_per_lead() -> None:
    ds = _ecg()
    start = 1_700_000_000_000_000_000
    chunks = ecg_events(ds, "cart-7", start)
    channels = decode_ecg(ds)
    assert len(chunks) == 12
    assert len({c.id for c in chunks}) == 12
    assert [c.id for c in ecg_events(ds, "cart-7", start)] == [c.id for c in chunks]  # re-sent: same ids
    for chunk, channel in zip(chunks, channels, strict=True):
        assert chunk.quantity.reference_id == channel.reference_id
        assert chunk.device_id == "cart-7"
        assert chunk.lane is Lane.WAVEFORMS
        assert chunk.unit == "uV"
        assert chunk.sample_rate_hz == 1000.0
        assert chunk.start_device_time_ns == start
        assert chunk.duration_ns == 10 * 10**9
        assert np.allclose(chunk.physical(), channel.samples_uv)


def test_ecg_survives_deidentification_unchanged() -> None:
    out = validate(Deidentifier(KEY).deidentify_bytes(raw("waveform_ecg.dcm"), PSEUDONYM)).dataset
    before, after = decode_ecg(_ecg()), decode_ecg(out)
    assert [c.label for c in after] == TWELVE
    for a, b in zip(before, after, strict=True):
        assert np.array_equal(a.raw, b.raw) and a.gain_uv == b.gain_uv


def test_decode_refuses_objects_that_are_not_ecg() -> None:
    with pytest.raises(DicomRejected) as info:
        decode_ecg(read_dataset(raw("CT_small.dcm")))
    assert info.value.status == STATUS_DATASET_MISMATCH


def test_native_transfer_syntaxes_are_the_uncompressed_ones() -> None:
    assert {
        dicom_uid.ImplicitVRLittleEndian,
        dicom_uid.ExplicitVRLittleEndian,
        dicom_uid.DeflatedExplicitVRLittleEndian,
        dicom_uid.ExplicitVRBigEndian,
    } == NATIVE_TRANSFER_SYNTAXES
    assert all(isinstance(a, str) for a in SUPPORTED_SOP_CLASSES)
    assert Accepted.__dataclass_params__.frozen  # type: ignore[attr-defined]
