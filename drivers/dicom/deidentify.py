"""De-identify DICOM objects with the PS3.15 Annex E Basic Application Level Confidentiality Profile.

`Deidentifier(key).deidentify(ds, pseudonym)` returns a cleaned copy.  The attributes of Table E.1-1 that occur in
point-of-care objects get their Basic Profile action: D dummy value, Z empty, X removed, K kept (a sequence's items
still cleaned), U replacement UID (the C action appears only in the option columns).  Private attributes, curves
and overlays are removed; every sequence is recursed into; Patient ID and Patient's Name carry the caller's
pseudonym (the gateway's pseudonymous patient id).  The markers E.1.1 asks for are set: Patient Identity Removed
= YES and De-identification Method (Code Sequence) with (113100, DCM, "Basic Application Confidentiality
Profile"); and, since no Retain Longitudinal Temporal Information option is applied, Longitudinal Temporal
Information Modified = REMOVED (E.2).  A re-encoded file gets a fresh zero preamble, so a TIFF header that the
original carried there (with whatever it held) does not travel.

Replacement UIDs are 2.25 UIDs (a UUID as a decimal integer, ISO/IEC 9834-8) derived from HMAC-SHA-256 of the
original under the gateway's key: the same original always maps to the same replacement under one key, so
references between objects (Study, Series, Frame of Reference, Referenced SOP Instance) stay consistent across
every object a gateway sends, and without the key nobody can link a replacement to its original.  SOP Class UIDs,
Transfer Syntax and any UID under the DICOM root 1.2.840.10008 (well-known UIDs, not instances) are kept.

Compound actions: X/Z, X/D, X/Z/D and Z/D mean "remove unless the IOD needs the attribute".  Without per-IOD type
tables the attribute is kept present with the most conservative content (X/Z -> Z; X/D, X/Z/D, Z/D -> D), which
never breaks an IOD and never keeps the original value; X/Z/U* sequences are kept and cleaned (their instance UIDs
replaced).  A sequence whose action is Z or D is emptied.  Beyond the table, as a safety net, every other Person
Name and every other date, time and date-time is emptied (the profile's intent: no names, no dates).

Not applied (a recipient must not assume them):
  * Clean Pixel Data: text burned into the pixels (ultrasound and secondary capture routinely carry it) is NOT
    removed.  `burned_in_text_suspected()` flags such objects; Burned In Annotation is left as the sender set it.
  * Clean Recognizable Visual Features, Clean Graphics, Clean Structured Content, Clean Descriptors: free text
    outside the table (e.g. waveform annotation text) is kept.
  * Retain Longitudinal Temporal Information (full or modified dates), Retain Patient Characteristics, Retain
    Device Identity, Retain Institution Identity, Retain UIDs, Retain Safe Private: none is applied.
  * Encrypted Attributes Sequence (re-identification data): not written; re-identification goes through the
    gateway's device/patient binding, not the object.
  * The table is the subset of Table E.1-1 that occurs in the SOP classes `validate` accepts (see `_TABLE`); an
    attribute outside it that is not a name, date, UID or private attribute is kept.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import hmac
import io
from collections.abc import Mapping
from typing import Final

from pydicom import uid as dicom_uid
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from drivers.dicom.validate import STATUS_CANNOT_UNDERSTAND, DicomRejected, Reason, quiet_pydicom, read_dataset

__all__ = [
    "BASIC_PROFILE_CODE",
    "DEIDENTIFICATION_METHOD",
    "Action",
    "Deidentifier",
    "burned_in_text_suspected",
]

# PS3.16 CID 7050 De-identification Method: (code value, coding scheme, code meaning)
BASIC_PROFILE_CODE: Final = ("113100", "DCM", "Basic Application Confidentiality Profile")
DEIDENTIFICATION_METHOD: Final = "PS3.15 E.1 Basic Profile; pixel data not cleaned"  # LO: at most 64 characters

_UID_ROOT: Final = "2.25."
_DICOM_ROOT: Final = "1.2.840.10008."


class Action(enum.StrEnum):
    """Table E.1-1 action codes, compound codes already resolved as the module docstring explains."""

    DUMMY = "D"  # replace with a non-zero length value consistent with the VR
    ZERO = "Z"  # replace with a zero length value
    REMOVE = "X"
    KEEP = "K"  # keep; a sequence's items are still cleaned
    UID = "U"  # replace with a consistent replacement UID


D, Z, X, K, U = Action.DUMMY, Action.ZERO, Action.REMOVE, Action.KEEP, Action.UID
ZD = D  # Z/D: Z unless D is needed for IOD conformance -> D
XZ = Z  # X/Z -> Z
XD = D  # X/D -> D
XZD = D  # X/Z/D -> D
XZU = K  # X/Z/U*: keep the sequence, replace the instance UIDs inside it

# Basic Profile column of PS3.15 Table E.1-1 (2023 edition), for the attributes found in point-of-care objects.
_TABLE: Final[Mapping[str, Action]] = {
    # Patient
    "PatientName": Z,  # replaced by the pseudonym afterwards
    "PatientID": Z,  # replaced by the pseudonym afterwards
    "IssuerOfPatientID": X,
    "PatientBirthDate": Z,
    "PatientBirthTime": X,
    "PatientSex": Z,
    "PatientAge": X,
    "PatientSize": X,
    "PatientWeight": X,
    "PatientAddress": X,
    "PatientTelephoneNumbers": X,
    "PatientTelecomInformation": X,
    "OtherPatientIDs": X,
    "OtherPatientIDsSequence": X,
    "OtherPatientNames": X,
    "PatientBirthName": X,
    "PatientMotherBirthName": X,
    "MilitaryRank": X,
    "BranchOfService": X,
    "MedicalRecordLocator": X,
    "MedicalAlerts": X,
    "Allergies": X,
    "CountryOfResidence": X,
    "RegionOfResidence": X,
    "EthnicGroup": X,
    "Occupation": X,
    "SmokingStatus": X,
    "AdditionalPatientHistory": X,
    "PregnancyStatus": X,
    "LastMenstrualDate": X,
    "PatientReligiousPreference": X,
    "PatientComments": X,
    "PatientState": X,
    "ResponsiblePerson": X,
    "ResponsibleOrganization": X,
    "PatientInsurancePlanCodeSequence": X,
    "InsurancePlanIdentification": X,
    "PatientPrimaryLanguageCodeSequence": X,
    "PatientPrimaryLanguageModifierCodeSequence": X,
    "PatientSexNeutered": XZ,
    "ReferencedPatientSequence": X,
    "ReferencedPatientPhotoSequence": X,
    "ReferencedPatientAliasSequence": X,
    # Visit and admission
    "PatientInstitutionResidence": X,
    "CurrentPatientLocation": X,
    "SpecialNeeds": X,
    "AdmissionID": X,
    "IssuerOfAdmissionID": X,
    "IssuerOfAdmissionIDSequence": X,
    "AdmittingDate": X,
    "AdmittingTime": X,
    "AdmittingDiagnosesDescription": X,
    "AdmittingDiagnosesCodeSequence": X,
    "ServiceEpisodeID": X,
    "ServiceEpisodeDescription": X,
    "IssuerOfServiceEpisodeID": X,
    "IssuerOfServiceEpisodeIDSequence": X,
    "VisitComments": X,
    "DischargeDate": X,
    "DischargeTime": X,
    "DischargeDiagnosisDescription": X,
    # Study and request
    "StudyInstanceUID": U,
    "StudyDate": Z,
    "StudyTime": Z,
    "AccessionNumber": Z,
    "StudyID": Z,
    "StudyIDIssuer": X,
    "StudyDescription": X,
    "StudyComments": X,
    "ReasonForStudy": X,
    "ReferringPhysicianName": Z,
    "ReferringPhysicianAddress": X,
    "ReferringPhysicianTelephoneNumbers": X,
    "ReferringPhysicianIdentificationSequence": X,
    "ConsultingPhysicianName": Z,
    "ConsultingPhysicianIdentificationSequence": X,
    "PhysiciansOfRecord": X,
    "PhysiciansOfRecordIdentificationSequence": X,
    "NameOfPhysiciansReadingStudy": X,
    "PhysiciansReadingStudyIdentificationSequence": X,
    "RequestingPhysician": X,
    "RequestingService": X,
    "RequestedProcedureDescription": XZ,
    "RequestedProcedureID": X,
    "RequestedProcedureLocation": X,
    "RequestedProcedureComments": X,
    "RequestedContrastAgent": X,
    "ReferencedStudySequence": XZ,
    "RequestAttributesSequence": X,
    "ReasonForTheRequestedProcedure": X,
    "ReasonForRequestedProcedureCodeSequence": X,
    "ReasonForTheImagingServiceRequest": X,
    "ReasonForVisit": X,
    "ReasonForVisitCodeSequence": X,
    "PlacerOrderNumberImagingServiceRequest": Z,
    "FillerOrderNumberImagingServiceRequest": Z,
    "OrderEnteredBy": X,
    "OrderEntererLocation": X,
    "OrderCallbackPhoneNumber": X,
    "OrderCallbackTelecomInformation": X,
    "ImagingServiceRequestComments": X,
    "IssueDateOfImagingServiceRequest": X,
    "IssueTimeOfImagingServiceRequest": X,
    # Scheduled and performed procedure steps
    "ScheduledProcedureStepDescription": X,
    "ScheduledProcedureStepID": X,
    "ScheduledPerformingPhysicianName": X,
    "ScheduledPerformingPhysicianIdentificationSequence": X,
    "ScheduledStationName": X,
    "ScheduledStationAETitle": X,
    "ScheduledProcedureStepLocation": X,
    "ScheduledProcedureStepStartDate": X,
    "ScheduledProcedureStepStartTime": X,
    "ScheduledProcedureStepEndDate": X,
    "ScheduledProcedureStepEndTime": X,
    "ScheduledHumanPerformersSequence": X,
    "PreMedication": X,
    "PerformedProcedureStepID": X,
    "PerformedProcedureStepDescription": X,
    "PerformedProcedureStepStartDate": X,
    "PerformedProcedureStepStartTime": X,
    "PerformedProcedureStepEndDate": X,
    "PerformedProcedureStepEndTime": X,
    "PerformedProcedureStepStartDateTime": X,
    "PerformedProcedureStepEndDateTime": X,
    "PerformedStationAETitle": X,
    "PerformedStationName": X,
    "PerformedLocation": X,
    "PerformedStationNameCodeSequence": X,
    "PerformedStationGeographicLocationCodeSequence": X,
    "ReferencedPerformedProcedureStepSequence": XZD,
    "CommentsOnThePerformedProcedureStep": X,
    "ActualHumanPerformersSequence": X,
    "HumanPerformerName": X,
    "HumanPerformerOrganization": X,
    # Series
    "SeriesInstanceUID": U,
    "SeriesDate": XD,
    "SeriesTime": XD,
    "SeriesDescription": X,
    "ProtocolName": XD,
    "OperatorsName": XZD,
    "OperatorIdentificationSequence": XD,
    "PerformingPhysicianName": X,
    "PerformingPhysicianIdentificationSequence": X,
    "FrameOfReferenceUID": U,
    "SynchronizationFrameOfReferenceUID": U,
    # Equipment (the device and where it stands)
    "InstitutionName": XZD,
    "InstitutionAddress": X,
    "InstitutionalDepartmentName": X,
    "InstitutionalDepartmentTypeCodeSequence": X,
    "InstitutionCodeSequence": XZD,
    "StationName": XZD,
    "StationAETitle": X,
    "RetrieveAETitle": X,
    "DeviceSerialNumber": XZD,
    "DeviceUID": U,
    "DeviceDescription": X,
    "LongDeviceDescription": X,
    "UniqueDeviceIdentifier": X,
    "UDISequence": X,
    "GantryID": X,
    "GeneratorID": X,
    "CassetteID": X,
    "PlateID": X,
    "DetectorID": XD,
    "TransducerIdentificationSequence": X,
    "DateOfLastCalibration": X,
    "TimeOfLastCalibration": X,
    "DateTimeOfLastCalibration": X,
    "DateOfLastDetectorCalibration": XD,
    "TimeOfLastDetectorCalibration": XD,
    "CalibrationDateTime": Z,
    "DateOfManufacture": X,
    "DateOfInstallation": X,
    # Instance, acquisition and image
    "SOPInstanceUID": U,
    "InstanceCreationDate": XD,
    "InstanceCreationTime": XZD,
    "InstanceCreatorUID": U,
    "InstanceCoercionDateTime": X,
    "ContentDate": ZD,
    "ContentTime": ZD,
    "AcquisitionDate": XZ,
    "AcquisitionTime": XZ,
    "AcquisitionDateTime": XZD,
    "FrameAcquisitionDateTime": D,
    "FrameReferenceDateTime": D,
    "StartAcquisitionDateTime": XD,
    "EndAcquisitionDateTime": XD,
    "AcquisitionUID": U,
    "AcquisitionComments": X,
    "AcquisitionProtocolDescription": X,
    "AcquisitionDeviceProcessingDescription": XD,
    "AcquisitionContextSequence": XZ,
    "ImageComments": X,
    "FrameComments": X,
    "ImagePresentationComments": X,
    "IdentifyingComments": X,
    "DerivationDescription": X,
    "ReferencedImageSequence": XZU,
    "SourceImageSequence": XZU,
    "ReferencedSOPInstanceUID": U,
    "ReferencedFrameOfReferenceUID": U,
    "RelatedFrameOfReferenceUID": U,
    "SourceFrameOfReferenceUID": U,
    "IrradiationEventUID": U,
    "ConcatenationUID": U,
    "DimensionOrganizationUID": U,
    "PyramidUID": U,
    "TrackingUID": U,
    "TargetUID": U,
    "PaletteColorLookupTableUID": U,
    "LargePaletteColorLookupTableUID": U,
    "StorageMediaFileSetUID": U,
    "FailedSOPInstanceUIDList": U,
    "TransactionUID": U,
    "DateOfSecondaryCapture": X,
    "TimeOfSecondaryCapture": X,
    "IconImageSequence": X,  # a thumbnail of the pixels, burned-in text included
    "ContrastBolusAgent": ZD,
    "ContrastBolusStartTime": X,
    "ContrastBolusStopTime": X,
    "TimezoneOffsetFromUTC": X,
    "OverlayDate": X,
    "OverlayTime": X,
    "CurveDate": X,
    "CurveTime": X,
    "TextComments": X,
    "Arbitrary": X,
    "TextString": X,
    "DataSetTrailingPadding": X,
    "DigitalSignaturesSequence": X,
    "DigitalSignatureUID": U,
    "ReferencedDigitalSignatureSequence": X,
    "ReferencedSOPInstanceMACSequence": X,
    "MAC": X,
    "ModifiedAttributesSequence": X,
    "OriginalAttributesSequence": X,
    "ContributionDateTime": X,
    "ContributionDescription": X,
    "ContentCreatorName": ZD,
    "ContentCreatorIdentificationCodeSequence": X,
    # Waveform
    "MultiplexGroupUID": U,
    "WaveformFilterDescription": X,
    # Observers and structured content
    "ContentSequence": D,
    "UID": U,
    "ObservationUID": U,
    "PersonName": D,
    "PersonIdentificationCodeSequence": D,
    "PersonAddress": X,
    "PersonTelephoneNumbers": X,
    "PersonTelecomInformation": X,
    "VerifyingObserverName": D,
    "VerifyingObserverSequence": D,
    "VerifyingObserverIdentificationCodeSequence": Z,
    "VerifyingOrganization": D,
    "AuthorObserverSequence": X,
    "ParticipantSequence": X,
    "CustodialOrganizationSequence": X,
    # Clinical trial and specimen
    "ClinicalTrialSponsorName": D,
    "ClinicalTrialProtocolID": D,
    "ClinicalTrialProtocolName": Z,
    "ClinicalTrialSiteID": Z,
    "ClinicalTrialSiteName": Z,
    "ClinicalTrialSubjectID": D,
    "ClinicalTrialSubjectReadingID": D,
    "ClinicalTrialTimePointID": Z,
    "ClinicalTrialTimePointDescription": X,
    "ClinicalTrialCoordinatingCenterName": Z,
    "ClinicalTrialSeriesID": X,
    "ClinicalTrialSeriesDescription": X,
    "ClinicalTrialProtocolEthicsCommitteeName": D,
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber": X,
    "SpecimenIdentifier": D,
    "SpecimenAccessionNumber": X,
    "SpecimenUID": U,
    "ContainerIdentifier": D,
    # Cameras (visible-light captures of the same encounter)
    "CameraOwnerName": X,
    "LensMake": X,
    "LensModel": X,
    "LensSerialNumber": X,
    "LensSpecification": X,
    "MakerNote": X,
}


def _by_tag(table: Mapping[str, Action]) -> dict[int, Action]:
    out: dict[int, Action] = {}
    for keyword, action in table.items():
        tag = tag_for_keyword(keyword)
        if tag is None:  # a typo would silently keep an identifying attribute: fail at import instead
            raise RuntimeError(f"unknown DICOM keyword in the de-identification table: {keyword}")
        out[tag] = action
    return out


_ACTIONS: Final = _by_tag(_TABLE)
_GPS_TAGS: Final = range(0x00160070, 0x0016008F)  # GPS Version ID .. GPS Differential: X
_PATIENT_NAME: Final = 0x00100010
_PATIENT_ID: Final = 0x00100020
_CURVE_GROUPS: Final = range(0x5000, 0x5020, 2)  # retired curves: X
_OVERLAY_GROUPS: Final = range(0x6000, 0x6020, 2)  # overlay data and comments are X; the plane goes whole

# UIDs that name a class or a syntax, not an instance: kept even outside the DICOM root (private SOP classes).
_CLASS_UIDS: Final = frozenset(
    tag_for_keyword(keyword)
    for keyword in (
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ReferencedTransferSyntaxUIDInFile",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "MappingResourceUID",
        "SOPClassesInStudy",
    )
)
# File meta elements that name the sending and receiving systems (PS3.10 7.1).
_META_REMOVED: Final = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
    "ImplementationVersionName",
)

_DUMMY_TEXT: Final = "ANONYMIZED"  # fits SH, CS and AE (16 characters) as well as the longer string VRs
_DUMMIES: Final[Mapping[str, object]] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000D",
    "IS": "0",
    "DS": "0",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}
_MAX_PSEUDONYM: Final = 64  # LO (Patient ID) and a PN component group hold at most 64 characters


def _check_pseudonym(pseudonym: str) -> None:
    if not 0 < len(pseudonym) <= _MAX_PSEUDONYM:
        raise ValueError(f"the pseudonym must be 1 to {_MAX_PSEUDONYM} characters")
    if not pseudonym.isascii() or not pseudonym.isprintable() or any(c in pseudonym for c in "\\^="):
        raise ValueError("the pseudonym must be printable ASCII without backslash, caret or equals sign")


def burned_in_text_suspected(ds: Dataset) -> bool:
    """Whether the pixels may carry identifying text that de-identification leaves in place (PS3.15 E.3.1).

    True when Burned In Annotation is YES, and when it is absent on ultrasound and secondary capture images,
    which routinely carry the patient's name on screen.  Such objects need the Clean Pixel Data option (or a
    human) before they leave the gateway as de-identified.
    """
    with quiet_pydicom():
        flag = ds.get("BurnedInAnnotation")
        if isinstance(flag, str) and flag.strip():
            return flag.strip().upper() == "YES"
        sop_class = str(ds.get("SOPClassUID", ""))
    screen_like = (
        dicom_uid.UltrasoundImageStorage,
        dicom_uid.UltrasoundMultiFrameImageStorage,
        dicom_uid.SecondaryCaptureImageStorage,
        dicom_uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        dicom_uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    )
    return sop_class in screen_like


class Deidentifier:
    """The Basic Application Level Confidentiality Profile under one gateway key (see the module docstring)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the de-identification key must be at least 16 bytes")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "Deidentifier(key=<redacted>)"

    def replacement_uid(self, original: str) -> str:
        """The replacement for an instance UID: a 2.25 UID from HMAC-SHA-256(key, UID), UUID version 8 layout."""
        digest = hmac.new(self._key, b"dicom-uid\x00" + original.strip("\x00 ").encode(), hashlib.sha256).digest()
        value = int.from_bytes(digest[:16], "big")
        value = (value & ~(0xF << 76)) | (0x8 << 76)  # RFC 9562 version 8: vendor-specific
        value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant 10
        return f"{_UID_ROOT}{value}"

    def deidentify(self, ds: Dataset, pseudonym: str) -> Dataset:
        """A de-identified copy of `ds` (its file meta too); `ds` itself is not modified."""
        _check_pseudonym(pseudonym)
        with quiet_pydicom():
            out = copy.deepcopy(ds)
            self._clean(out)
            out.PatientName = pseudonym
            out.PatientID = pseudonym
            out.PatientIdentityRemoved = "YES"
            methods = [str(m) for m in _values(out.get("DeidentificationMethod"))]
            if DEIDENTIFICATION_METHOD not in methods:
                methods.append(DEIDENTIFICATION_METHOD)
            out.DeidentificationMethod = methods[0] if len(methods) == 1 else methods
            codes = out.get("DeidentificationMethodCodeSequence") or Sequence()
            if not any(item.get("CodeValue") == BASIC_PROFILE_CODE[0] for item in codes):
                item = Dataset()
                item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = BASIC_PROFILE_CODE
                codes.append(item)
            out.DeidentificationMethodCodeSequence = codes
            out.LongitudinalTemporalInformationModified = "REMOVED"
            meta = getattr(ds, "file_meta", None)
            if isinstance(meta, Dataset):
                out.file_meta = self._clean_meta(meta, out)
        return out

    def deidentify_bytes(self, raw: bytes | bytearray | memoryview, pseudonym: str) -> bytes:
        """De-identify an encoded object; a Part 10 file comes back in the same transfer syntax.

        Raises `DicomRejected` for bytes `read_dataset` cannot parse, and ValueError for a bad pseudonym.
        """
        ds = read_dataset(raw)
        _check_pseudonym(pseudonym)
        buffer = io.BytesIO()
        try:
            out = self.deidentify(ds, pseudonym)
            with quiet_pydicom():
                out.save_as(buffer, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - parsed, but a value pydicom cannot rewrite: the object is unusable
            raise DicomRejected(Reason.MALFORMED, STATUS_CANNOT_UNDERSTAND, part="re-encode") from None
        return buffer.getvalue()

    # -- internals --------------------------------------------------------------------------------------------

    def _clean(self, ds: Dataset) -> None:
        for tag in list(ds.keys()):
            elem = ds[tag]
            group = tag.group
            if (
                tag.is_private
                or tag.element == 0  # group lengths: wrong once anything changes (pydicom redoes 0002's)
                or group in _CURVE_GROUPS
                or group in _OVERLAY_GROUPS
                or tag in _GPS_TAGS
            ):
                del ds[tag]
                continue
            action = _ACTIONS.get(tag)
            if action is None:
                action = self._default_action(elem)
            self._apply(ds, elem, action)

    @staticmethod
    def _default_action(elem: DataElement) -> Action:
        if elem.VR == "UI":
            return U
        if elem.VR in ("PN", "DA", "DT", "TM"):
            return Z
        return K

    def _apply(self, ds: Dataset, elem: DataElement, action: Action) -> None:
        if action is Action.REMOVE:
            del ds[elem.tag]
        elif elem.VR == "SQ":
            if action in (Action.ZERO, Action.DUMMY):
                elem.value = Sequence()
            else:
                for item in elem.value:
                    self._clean(item)
        elif action is Action.ZERO:
            elem.value = empty_value_for_VR(elem.VR)
        elif action is Action.DUMMY:
            elem.value = self._replace_uids(elem) if elem.VR == "UI" else _DUMMIES.get(elem.VR, _DUMMY_TEXT)
        elif action is Action.UID and elem.VR == "UI":
            elem.value = self._replace_uids(elem)
        # KEEP: the value stays

    def _replace_uids(self, elem: DataElement) -> str | list[str]:
        originals = [str(uid) for uid in _values(elem.value)]
        if elem.tag in _CLASS_UIDS:
            replaced = originals
        else:
            replaced = [
                uid if (not uid or uid.startswith(_DICOM_ROOT)) else self.replacement_uid(uid) for uid in originals
            ]
        return replaced[0] if len(replaced) == 1 else replaced

    def _clean_meta(self, meta: Dataset, cleaned: Dataset) -> FileMetaDataset:
        out = FileMetaDataset(copy.deepcopy(meta))
        for keyword in _META_REMOVED:
            if keyword in out:
                delattr(out, keyword)
        for keyword, source in (
            ("MediaStorageSOPClassUID", "SOPClassUID"),
            ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
        ):
            value = cleaned.get(source)
            if value:
                setattr(out, keyword, value)
            elif keyword in out:
                delattr(out, keyword)  # never leave the original instance UID behind in the meta
        out.ImplementationClassUID = dicom_uid.PYDICOM_IMPLEMENTATION_UID  # the file's writer is now the gateway
        return out


def _values(value: object) -> list[object]:
    """A possibly multi-valued element value as a list (empty for an empty value)."""
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]
