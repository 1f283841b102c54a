"""Byte-exact BLE test vectors from outside this project: specifications, other projects' published test vectors,
and public captures of real devices.

Every vector names its source.  None was produced by this project's encoders or simulators: the bytes are either
copied from the source (hex or byte-array literals there), or, where the source gives only field values, composed
by hand from the specification's field layout (the `source` then says so, and any E2E-CRC in such bytes was
computed from the CRC definition, CRC-16/MCRF4XX, outside this project's code).  Decoded values are written as
the source states them; where a source interprets a field differently from the specification, `note` says why
the specification's reading is the one expected here.

The table is consumed by tests/unit/test_spec_vectors.py.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Final

from drivers.ble import (
    bas,
    bps,
    cgms,
    device_info,
    fields,
    gls,
    hrs,
    hts,
    idd_history,
    idd_status,
    ids,
    plxs,
    pmd,
    racp,
)
from drivers.ble import sfloat as sfloat_module
from drivers.ble.bps import BloodPressureMeasurement, IntermediateCuffPressure, PressureUnit
from drivers.ble.cgms import CgmFeature, CgmMeasurement
from drivers.ble.device_info import PnpId, SystemId, VendorIdSource
from drivers.ble.gls import (
    CarbohydrateId,
    GlucoseConcentrationUnit,
    GlucoseFeature,
    GlucoseHealth,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseSampleLocation,
    GlucoseSampleType,
    GlucoseTester,
    Meal,
    MedicationId,
    MedicationUnit,
)
from drivers.ble.hrs import HeartRateMeasurement
from drivers.ble.hts import TemperatureMeasurement, TemperatureType, TemperatureUnit
from drivers.ble.idd_history import (
    BolusAmounts,
    HistoryEventType,
    HistoryRecord,
    RacpRecordCount,
    RacpResponseCode,
    RacpResponseCodeValue,
    RecordingReason,
    ReferenceTime,
)
from drivers.ble.idd_history import RacpOpcode as IddRacpOpcode
from drivers.ble.idd_status import IddStatus, OperationalState, TherapyControlState
from drivers.ble.ids import (
    ActiveBolusIdsResponse,
    BolusType,
    ResponseCode,
    ResponseCodeValue,
    StatusChangedFlag,
    StatusReaderOpCode,
    StatusReaderResponseCode,
    StatusReaderResponseCodeValue,
)
from drivers.ble.plxs import PlxContinuousMeasurement, PlxSpotCheckMeasurement
from drivers.ble.racp import RacpOpcode, RacpOperator, RacpResponse
from drivers.ble.racp import RacpResponseCode as GenericRacpResponseCode
from drivers.ble.sfloat import SfloatSpecial, classify_float, classify_sfloat, read_float, read_sfloat

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")


@dataclass(frozen=True)
class Refused:
    """The expected outcome of a vector the decoder must refuse: InvalidFrame whose message matches `match`.

    `why` is the specification's reason for refusing it.
    """

    why: str
    match: str


@dataclass(frozen=True)
class SpecVector:
    """One byte-exact example: what it is, its bytes, the decoder and its arguments, the value expected, the source."""

    name: str
    characteristic: str
    hex: str
    codec: ModuleType  # the drivers.ble module whose decoder the vector exercises
    decode: Callable[..., object]
    expected: object
    source: str
    kwargs: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.hex)


def sfloat_with_kind(data: bytes) -> tuple[float, SfloatSpecial | None]:
    """An SFLOAT's value and, for the reserved encodings, which special it is."""
    return read_sfloat(data, 0), classify_sfloat(_U16.unpack(data)[0])


def float_with_kind(data: bytes) -> tuple[float, SfloatSpecial | None]:
    """A FLOAT's value and, for the reserved encodings, which special it is."""
    return read_float(data, 0), classify_float(_U32.unpack(data)[0])


def pmd_ecg_samples(data: bytes) -> tuple[int, tuple[int, ...]]:
    """A PMD ECG frame as (timestamp ns, samples in microvolts): the numpy array as plain ints for comparison."""
    frame = pmd.decode_pmd_ecg_frame(data)
    return frame.timestamp_ns, tuple(int(v) for v in frame.samples_uv)


# ------------------------------------------------------------------------------------------------------- sources

_NORDIC: Final = (
    "NordicSemiconductor/Android-BLE-Common-Library, ble-common/src/test/java/no/nordicsemi/android/ble/common/"
)
_POLAR: Final = (
    "polarofficial/polar-ble-sdk, sources/Android/android-communications/library/src/test/java/com/polar/"
    "androidcommunications/api/ble/model/gatt/client/"
)
_SPEZI_PLX: Final = "StanfordSpezi/SpeziBluetooth, Tests/SpeziBluetoothServicesTests/PLXTests.swift"
_EHI: Final = "ehealthinnovation/AndroidBLEParser, parser/src/test/java/org/ehealthinnovation/android/bluetooth/"
_SIG_PY: Final = "RonanB96/bluetooth-sig-python, tests/gatt/characteristics/"
_OPENGUARDIAN: Final = (
    "palmarci/OpenGuardian, docs/data-protocol.md (capture of a Medtronic MiniMed 780G pump talking to the "
    "MiniMed Mobile app, SAKE layer removed)"
)
_IEEE_20601: Final = "ISO/IEEE 11073-20601-2008, SFLOAT-Type/FLOAT-Type reserved values"
_HAND: Final = "bytes composed by hand from the field layout"
_SPECIAL_NOTE: Final = "every exponent gives the same special; exponent 0 is the canonical form"

# ----------------------------------------------------------------------------------------------- CRC / numbers

_CRC: Final = (
    SpecVector(
        "crc_check_123456789",
        "E2E-CRC (CRC-16/MCRF4XX)",
        b"123456789".hex(),
        fields,
        fields.crc16_mcrf4xx,
        0x6F91,
        f"{_NORDIC}util/CRC16Test.java (MCRF4XX_123456789); the catalogued check value of CRC-16/MCRF4XX",
    ),
    SpecVector(
        "crc_single_A",
        "E2E-CRC (CRC-16/MCRF4XX)",
        b"A".hex(),
        fields,
        fields.crc16_mcrf4xx,
        0x5C0A,
        f"{_NORDIC}util/CRC16Test.java (MCRF4XX_A)",
    ),
    SpecVector(
        "crc_microchip_an752",
        "E2E-CRC (CRC-16/MCRF4XX)",
        "58251f98",
        fields,
        fields.crc16_mcrf4xx,
        0x07F1,
        f"{_NORDIC}util/CRC16Test.java (MCRF4XX_8552F189), citing Microchip application note AN752",
    ),
    SpecVector(
        "crc_cgms_example",
        "E2E-CRC (CRC-16/MCRF4XX)",
        "3e010203040506070809",
        fields,
        fields.crc16_mcrf4xx,
        0x2F01,
        f"CGMS v1.0.1 §3.11 CRC Calculation example, as {_NORDIC}util/CRC16Test.java (MCRF4XX_CGMS) carries it",
        note="Nordic notes that the CGMS 1.0.1 PDF prints this CRC byte-swapped (0x012F); 0x2F01 is the uint16, "
        "sent least significant octet first as 01 2F",
    ),
    SpecVector(
        "crc_two_zero_octets",
        "E2E-CRC (CRC-16/MCRF4XX)",
        "0000",
        fields,
        fields.crc16_mcrf4xx,
        0xF0B8,
        f"{_EHI}parser/CrcUtilityTest.kt (calculateCcittCrc16SmokeTest)",
    ),
    SpecVector(
        "crc_glucose_packet",
        "E2E-CRC (CRC-16/MCRF4XX)",
        "130100e20706060e350e000054b019",
        fields,
        fields.crc16_mcrf4xx,
        0x8368,
        f"{_EHI}parser/CrcUtilityTest.kt ('a typical glucose measurement packet')",
    ),
)

_NUMBERS: Final = (
    SpecVector(
        "sfloat_nan",
        "SFLOAT",
        "ff07",
        sfloat_module,
        sfloat_with_kind,
        (math.nan, SfloatSpecial.NAN),
        f"{_IEEE_20601} (NaN 0x07FF); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "sfloat_nres",
        "SFLOAT",
        "0008",
        sfloat_module,
        sfloat_with_kind,
        (math.nan, SfloatSpecial.NRES),
        f"{_IEEE_20601} (NRes 0x0800); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "sfloat_positive_infinity",
        "SFLOAT",
        "fe07",
        sfloat_module,
        sfloat_with_kind,
        (math.inf, SfloatSpecial.POS_INF),
        f"{_IEEE_20601} (+INFINITY 0x07FE); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "sfloat_negative_infinity",
        "SFLOAT",
        "0208",
        sfloat_module,
        sfloat_with_kind,
        (-math.inf, SfloatSpecial.NEG_INF),
        f"{_IEEE_20601} (-INFINITY 0x0802); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "sfloat_reserved",
        "SFLOAT",
        "0108",
        sfloat_module,
        sfloat_with_kind,
        (math.nan, SfloatSpecial.RESERVED),
        f"{_IEEE_20601} (reserved for future use 0x0801); bytes composed by hand, little-endian",
        note=_SPECIAL_NOTE,
    ),
    SpecVector(
        "float_nan",
        "FLOAT",
        "ffff7f00",
        sfloat_module,
        float_with_kind,
        (math.nan, SfloatSpecial.NAN),
        f"{_IEEE_20601} (NaN 0x007FFFFF); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "float_nres",
        "FLOAT",
        "00008000",
        sfloat_module,
        float_with_kind,
        (math.nan, SfloatSpecial.NRES),
        f"{_IEEE_20601} (NRes 0x00800000); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "float_positive_infinity",
        "FLOAT",
        "feff7f00",
        sfloat_module,
        float_with_kind,
        (math.inf, SfloatSpecial.POS_INF),
        f"{_IEEE_20601} (+INFINITY 0x007FFFFE); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "float_negative_infinity",
        "FLOAT",
        "02008000",
        sfloat_module,
        float_with_kind,
        (-math.inf, SfloatSpecial.NEG_INF),
        f"{_IEEE_20601} (-INFINITY 0x00800002); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "float_reserved",
        "FLOAT",
        "01008000",
        sfloat_module,
        float_with_kind,
        (math.nan, SfloatSpecial.RESERVED),
        f"{_IEEE_20601} (reserved for future use 0x00800001); bytes composed by hand, little-endian",
    ),
    SpecVector(
        "sfloat_two",
        "SFLOAT",
        "0200",
        sfloat_module,
        sfloat_with_kind,
        (2.0, None),
        "HL7 Personal Health Device FHIR IG, 'Mder FLOATs and SFLOATs' table (0x0002: exponent 0, mantissa 2)",
    ),
    SpecVector(
        "sfloat_two_point_zero",
        "SFLOAT",
        "14f0",
        sfloat_module,
        sfloat_with_kind,
        (2.0, None),
        "HL7 Personal Health Device FHIR IG, 'Mder FLOATs and SFLOATs' table (0xF014: exponent -1, mantissa 20)",
    ),
    SpecVector(
        "sfloat_two_point_zero_zero",
        "SFLOAT",
        "c8e0",
        sfloat_module,
        sfloat_with_kind,
        (2.0, None),
        "HL7 Personal Health Device FHIR IG, 'Mder FLOATs and SFLOATs' table (0xE0C8: exponent -2, mantissa 200)",
    ),
    SpecVector(
        "sfloat_negative_mantissa",
        "SFLOAT",
        "0ff9",
        sfloat_module,
        sfloat_with_kind,
        (-177.7, None),
        f"{_OPENGUARDIAN}, 'Data types' (0xf90f = -1777 x 10^-1)",
    ),
    SpecVector(
        "float_small_positive",
        "FLOAT",
        "a02526f8",
        sfloat_module,
        float_with_kind,
        (0.025, None),
        f"{_OPENGUARDIAN}, 'Data types' (0xf82625a0 = 2500000 x 10^-8)",
    ),
)

_DATE_TIME: Final = (
    SpecVector(
        "date_time_known",
        "Date Time (0x2A08), the field inside BPS, HTS, GLS and PLXS",
        "e2 07 04 11 0f 33 00",
        fields,
        fields.read_date_time,
        (2018, 4, 17, 15, 51, 0),
        f"{_NORDIC}callback/DateTimeDataCallbackTest.java (today)",
        MappingProxyType({"offset": 0, "characteristic": "date_time"}),
    ),
    SpecVector(
        "date_time_date_unknown",
        "Date Time (0x2A08), the field inside BPS, HTS, GLS and PLXS",
        "00 00 00 00 12 1a 20",
        fields,
        fields.read_date_time,
        (0, 0, 0, 18, 26, 32),
        f"{_NORDIC}callback/DateTimeDataCallbackTest.java (dateNotKnown)",
        MappingProxyType({"offset": 0, "characteristic": "date_time"}),
        note="year, month and day 0 mean 'not known'",
    ),
)

# ----------------------------------------------------------------------------------------------------- HRS

_HRS: Final = (
    SpecVector(
        "hrs_uint8_minimal",
        "Heart Rate Measurement (0x2A37)",
        "0055",
        hrs,
        hrs.decode_heart_rate_measurement,
        HeartRateMeasurement(85),
        f"{_NORDIC}callback/hr/HeartRateMeasurementDataCallbackTest.java (simple)",
    ),
    SpecVector(
        "hrs_contact_supported_not_detected",
        "Heart Rate Measurement (0x2A37)",
        "04ff",
        hrs,
        hrs.decode_heart_rate_measurement,
        HeartRateMeasurement(255, sensor_contact=False),
        f"{_NORDIC}callback/hr/HeartRateMeasurementDataCallbackTest.java (noContact)",
    ),
    SpecVector(
        "hrs_uint8_energy_one_rr",
        "Heart Rate Measurement (0x2A37)",
        "1e5532002100",
        hrs,
        hrs.decode_heart_rate_measurement,
        HeartRateMeasurement(85, True, 50, (33 * 1000 / 1024,)),
        f"{_NORDIC}callback/hr/HeartRateMeasurementDataCallbackTest.java (uint8)",
        note="RR intervals are in 1/1024 s on the wire (33); the decoder reports milliseconds",
    ),
    SpecVector(
        "hrs_uint16_energy_three_rr",
        "Heart Rate Measurement (0x2A37)",
        "1f 01 01 32 01 01 00 02 01 ff ff",
        hrs,
        hrs.decode_heart_rate_measurement,
        HeartRateMeasurement(257, True, 306, (1000 / 1024, 258 * 1000 / 1024, 65535 * 1000 / 1024)),
        f"{_NORDIC}callback/hr/HeartRateMeasurementDataCallbackTest.java (uint16)",
    ),
    SpecVector(
        "hrs_contact_status_without_support",
        "Heart Rate Measurement (0x2A37)",
        "0200",
        hrs,
        hrs.decode_heart_rate_measurement,
        HeartRateMeasurement(0, sensor_contact=None),
        f"{_POLAR}BleHrClientTest.kt ('sensor contact not supported')",
        note="status bit set without the support bit: the sensor does not report contact",
    ),
    SpecVector(
        "hrs_uint16_energy_max",
        "Heart Rate Measurement (0x2A37)",
        "090000ffff",
        hrs,
        hrs.decode_heart_rate_measurement,
        HeartRateMeasurement(0, None, 65535),
        f"{_POLAR}BleHrClientTest.kt ('energy expended')",
    ),
    SpecVector(
        "hrs_uint16_two_rr",
        "Heart Rate Measurement (0x2A37)",
        "110000ffff7f80",
        hrs,
        hrs.decode_heart_rate_measurement,
        HeartRateMeasurement(0, None, None, (65535 * 1000 / 1024, 32895 * 1000 / 1024)),
        f"{_POLAR}BleHrClientTest.kt ('rr interval')",
        note="Polar truncates the milliseconds (63999, 32124); the decoder keeps the exact fractions",
    ),
)

# ---------------------------------------------------------------------------------------------------- PLXS

_PLXS: Final = (
    SpecVector(
        "plxs_continuous_minimal",
        "PLX Continuous Measurement (0x2A5F)",
        "00 64 00 5a 00",
        plxs,
        plxs.decode_plx_continuous,
        PlxContinuousMeasurement(100.0, 90.0),
        f"{_SPEZI_PLX} (testVerySimpleMeasurementCoding, decoded form)",
    ),
    SpecVector(
        "plxs_continuous_status_and_pai",
        "PLX Continuous Measurement (0x2A5F)",
        "1c 5f 00 5a 00 20 00 00 00 00 57 f0",
        plxs,
        plxs.decode_plx_continuous,
        PlxContinuousMeasurement(95.0, 90.0, 8.7, 0x0020, 0x000000),
        f"{_SPEZI_PLX} (testSimpleMeasurementCoding)",
        note="measurement status bit 5: measurement ongoing",
    ),
    SpecVector(
        "plxs_continuous_fast_and_slow",
        "PLX Continuous Measurement (0x2A5F)",
        "1fdef3caf3caf35af5d4f3b2f220010000007ae3",
        plxs,
        plxs.decode_plx_continuous,
        PlxContinuousMeasurement(99.0, 97.0, 8.9, 0x0120, 0x000000),
        f"{_SPEZI_PLX} (testFullMeasurementCoding)",
        note="SpO2PR-Fast (97 %, 137 bpm) and -Slow (98 %, 69 bpm) are skipped by the decoder, which reports "
        "SpO2PR-Normal; the other fields after them prove the skip is the right length",
    ),
    SpecVector(
        "plxs_spot_check_full",
        "PLX Spot-check Measurement (0x2A5E)",
        "0facf3bef5e8070b1d170839204022000066e3",
        plxs,
        plxs.decode_plx_spot_check,
        PlxSpotCheckMeasurement(94.0, 147.0, (2024, 11, 29, 23, 8, 57), 0x4020, 0x000022, 8.7),
        f"{_SPEZI_PLX} (testSpotCheckMeasurementCoding)",
        note="status: measurement ongoing, questionable measurement; device status: equipment malfunction, "
        "low perfusion",
    ),
)

# ----------------------------------------------------------------------------------------------------- BPS

_BPS: Final = (
    SpecVector(
        "bps_mmhg_full",
        "Blood Pressure Measurement (0x2A35)",
        "1e 8a 00 58 00 78 00 00 00 04 11 14 29 3b 3c 00 01 27 00",
        bps,
        bps.decode_blood_pressure_measurement,
        BloodPressureMeasurement(138.0, 88.0, 120.0, PressureUnit.MMHG, (0, 4, 17, 20, 41, 59), 60.0, 1, 0x0027),
        f"{_NORDIC}callback/bps/BloodPressureMeasurementDataCallbackTest.java (full, assertArrayEquals bytes)",
        note="year 0 means 'not known' in a GSS Date Time; status: body movement, cuff too loose, irregular "
        "pulse, improper position, pulse rate in range",
    ),
    SpecVector(
        "bps_kpa_pulse_status",
        "Blood Pressure Measurement (0x2A35)",
        "15bdf00b009ff03c001200",
        bps,
        bps.decode_blood_pressure_measurement,
        BloodPressureMeasurement(18.9, 11.0, 15.9, PressureUnit.KPA, None, 60.0, None, 0x0012),
        f"{_NORDIC}callback/bps/BloodPressureMeasurementDataCallbackTest.java (some, assertArrayEquals bytes)",
        note="status 0x0012: cuff too loose, pulse rate less than lower limit",
    ),
    SpecVector(
        "bps_minimal",
        "Blood Pressure Measurement (0x2A35)",
        "00bdf00b009ff0",
        bps,
        bps.decode_blood_pressure_measurement,
        BloodPressureMeasurement(18.9, 11.0, 15.9, PressureUnit.MMHG),
        f"{_NORDIC}callback/bps/BloodPressureMeasurementDataCallbackTest.java (minimal, assertArrayEquals bytes)",
    ),
    SpecVector(
        "bps_cuff_mmhg_full",
        "Intermediate Cuff Pressure (0x2A36)",
        "1e 04 00 00 00 00 00 00 00 04 11 14 29 3b 3c 00 01 27 00",
        bps,
        bps.decode_intermediate_cuff_pressure,
        IntermediateCuffPressure(4.0, PressureUnit.MMHG, (0, 4, 17, 20, 41, 59), 60.0, 1, 0x0027),
        f"{_NORDIC}callback/bps/IntermediateCuffPressureDataCallbackTest.java (full, assertArrayEquals bytes)",
        note="the unused diastolic and MAP fields carry 0 here where GSS asks for NaN; the decoder skips them "
        "either way, so this sender's slip does not matter",
    ),
    SpecVector(
        "bps_cuff_kpa_pulse_status",
        "Intermediate Cuff Pressure (0x2A36)",
        "15 6f f0 00 00 00 00 3c 00 12 00",
        bps,
        bps.decode_intermediate_cuff_pressure,
        IntermediateCuffPressure(11.1, PressureUnit.KPA, None, 60.0, None, 0x0012),
        f"{_NORDIC}callback/bps/IntermediateCuffPressureDataCallbackTest.java (some, assertArrayEquals bytes)",
    ),
    SpecVector(
        "bps_cuff_minimal",
        "Intermediate Cuff Pressure (0x2A36)",
        "00 d7 f0 00 00 00 00",
        bps,
        bps.decode_intermediate_cuff_pressure,
        IntermediateCuffPressure(21.5),
        f"{_NORDIC}callback/bps/IntermediateCuffPressureDataCallbackTest.java (minimal, assertArrayEquals bytes)",
    ),
)

# ----------------------------------------------------------------------------------------------------- HTS

_HTS: Final = (
    SpecVector(
        "hts_celsius_timestamp_type",
        "Temperature Measurement (0x2A1C)",
        "06b00e00fedc070c050b321b04",
        hts,
        hts.decode_temperature_measurement,
        TemperatureMeasurement(37.6, TemperatureUnit.CELSIUS, (2012, 12, 5, 11, 50, 27), TemperatureType.FINGER),
        f"{_NORDIC}callback/ht/TemperatureMeasurementDataCallbackTest.java",
        note="FLOAT 0xFE000EB0: mantissa 3760, exponent -2",
    ),
    SpecVector(
        "hts_fahrenheit",
        "Temperature Measurement (0x2A1C)",
        "01da0300ff",
        hts,
        hts.decode_temperature_measurement,
        TemperatureMeasurement(98.6, TemperatureUnit.FAHRENHEIT),
        f"GSS, Temperature Measurement: flags bit 0 = Fahrenheit, FLOAT 986 x 10^-1; {_HAND}",
    ),
)

# ----------------------------------------------------------------------------------------------------- GLS

_GLS: Final = (
    SpecVector(
        "gls_offset_concentration_status_context",
        "Glucose Measurement (0x2A18)",
        "1b0100e307021b0b0a1efbff1e00120501",
        gls,
        gls.decode_glucose_measurement,
        GlucoseMeasurement(
            1,
            (2019, 2, 27, 11, 10, 30),
            -5,
            30.0,
            GlucoseConcentrationUnit.KG_PER_L,
            GlucoseSampleType.CAPILLARY_PLASMA,
            GlucoseSampleLocation.FINGER,
            0x0105,
            context_follows=True,
        ),
        f"{_NORDIC}callback/glucose/GlucoseMeasurementDataCallbackTest.java",
        note="status 0x0105 (Nordic asserts the value 261): battery low, sample size insufficient, temperature too low",
    ),
    SpecVector(
        "gls_interstitial_context_follows",
        "Glucose Measurement (0x2A18)",
        "130100e20706060e350e000054b019",
        gls,
        gls.decode_glucose_measurement,
        GlucoseMeasurement(
            1,
            (2018, 6, 6, 14, 53, 14),
            0,
            84e-5,
            GlucoseConcentrationUnit.KG_PER_L,
            GlucoseSampleType.INTERSTITIAL_FLUID,
            GlucoseSampleLocation.FINGER,
            None,
            context_follows=True,
        ),
        f"{_EHI}parser/CrcUtilityTest.kt ('a typical glucose measurement packet', CRC 0x8368)",
        note="84 x 10^-5 kg/L is 84 mg/dL",
    ),
    SpecVector(
        "gls_capillary_whole_blood",
        "Glucose Measurement (0x2A18)",
        "030200e20706060e3612100060b011",
        gls,
        gls.decode_glucose_measurement,
        GlucoseMeasurement(
            2,
            (2018, 6, 6, 14, 54, 18),
            16,
            96e-5,
            GlucoseConcentrationUnit.KG_PER_L,
            GlucoseSampleType.CAPILLARY_WHOLE_BLOOD,
            GlucoseSampleLocation.FINGER,
        ),
        f"{_EHI}parser/CrcUtilityTest.kt ('a typical glucose measurement packet', CRC 0xa45f)",
    ),
    SpecVector(
        "gls_context_all_fields",
        "Glucose Measurement Context (0x2A34)",
        "7f000003640004123c003204d2f459f1",
        gls,
        gls.decode_glucose_measurement_context,
        GlucoseMeasurementContext(
            0,
            CarbohydrateId.DINNER,
            100.0,
            Meal.CASUAL,
            GlucoseTester.HEALTH_CARE_PROFESSIONAL,
            GlucoseHealth.MINOR_HEALTH_ISSUES,
            60,
            50,
            MedicationId.LONG_ACTING_INSULIN,
            123.4,
            MedicationUnit.LITRES,
            34.5,
        ),
        f"values from {_NORDIC}callback/glucose/GlucoseMeasurementContextDataCallbackTest.java (full); "
        f"GSS, Glucose Measurement Context field table; {_HAND}",
        note="Nordic's 123.45 cannot be an SFLOAT (mantissa over 2047), so 1234 x 10^-1; Nordic's reserved "
        "extended flags (0xB3) are left out: this decoder refuses set extended-flag bits by design (gls.py)",
    ),
    SpecVector(
        "gls_feature",
        "Glucose Feature (0x2A51)",
        "f0 03",
        gls,
        gls.decode_glucose_feature,
        GlucoseFeature.STRIP_TYPE_ERROR_DETECTION
        | GlucoseFeature.RESULT_HIGH_LOW_DETECTION
        | GlucoseFeature.TEMPERATURE_HIGH_LOW_DETECTION
        | GlucoseFeature.READ_INTERRUPT_DETECTION
        | GlucoseFeature.GENERAL_DEVICE_FAULT
        | GlucoseFeature.TIME_FAULT,
        f"{_NORDIC}callback/glucose/GlucoseFeatureDataCallbackTest.java",
    ),
)

# ---------------------------------------------------------------------------------------------------- CGMS

_CGMS: Final = (
    SpecVector(
        "cgms_full_record_with_crc",
        "CGM Measurement (0x2AA7)",
        "0fe3d2e405000214ff02f0e5f38e3f",
        cgms,
        cgms.decode_cgm_measurements,
        [CgmMeasurement(12.34, 5, 0xFF1402, 0.2, 99.7)],
        f"{_NORDIC}callback/cgm/ContinuousGlucoseMeasurementDataCallbackTest.java (full, E2E-CRC 0x3F8E)",
        MappingProxyType({"e2e_crc": True}),
        note="annunciation octets in wire order 02 14 FF: the 24-bit field least significant octet first "
        "(session stopped..general fault in bits 0-7, time sync..temperature in 8-15, result/rate warnings in "
        "16-23), as the SIG's cgm_measurement field definition numbers the bits.  With all three octets present "
        "the order cannot be misread; with only some, implementations differ: nrfconnect/sdk-nrf "
        "subsys/bluetooth/services/cgms/cgms.c sends status, cal/temp, warning as this decoder reads them, while "
        "Nordic's Android library reads the octet of flag bit 5 as bits 0-7",
    ),
    SpecVector(
        "cgms_small_record",
        "CGM Measurement (0x2AA7)",
        "06000c100600",
        cgms,
        cgms.decode_cgm_measurements,
        [CgmMeasurement(120.0, 6)],
        f"{_NORDIC}callback/cgm/ContinuousGlucoseMeasurementDataCallbackTest.java (small)",
        MappingProxyType({"e2e_crc": False}),
    ),
    SpecVector(
        "cgms_two_records",
        "CGM Measurement (0x2AA7)",
        "06000c10050006000c100600",
        cgms,
        cgms.decode_cgm_measurements,
        [CgmMeasurement(120.0, 5), CgmMeasurement(120.0, 6)],
        f"{_NORDIC}callback/cgm/ContinuousGlucoseMeasurementDataCallbackTest.java (double)",
        MappingProxyType({"e2e_crc": False}),
    ),
    SpecVector(
        "cgms_wrong_crc",
        "CGM Measurement (0x2AA7)",
        "08000c100600586f",
        cgms,
        cgms.decode_cgm_measurements,
        Refused("E2E-CRC 0x6F58 where the record's CRC is 0x6F59", "E2E-CRC mismatch"),
        f"{_NORDIC}callback/cgm/ContinuousGlucoseMeasurementDataCallbackTest.java (crcError)",
        MappingProxyType({"e2e_crc": True}),
    ),
    SpecVector(
        "cgms_feature_with_crc",
        "CGM Feature (0x2AA8)",
        "6e9e01168ac1",
        cgms,
        cgms.decode_cgm_feature,
        CgmFeature(0x019E6E, 6, 1),
        f"{_NORDIC}callback/cgm/CGMFeatureDataCallbackTest.java (full, E2E-CRC 0xC18A)",
        note="type 6 arterial plasma, sample location 1 finger; bit 12 (E2E-CRC supported) is set",
    ),
    SpecVector(
        "cgms_feature_without_crc",
        "CGM Feature (0x2AA8)",
        "6e8e0116ffff",
        cgms,
        cgms.decode_cgm_feature,
        CgmFeature(0x018E6E, 6, 1),
        f"{_NORDIC}callback/cgm/CGMFeatureDataCallbackTest.java (crcNotSupported)",
    ),
    SpecVector(
        "cgms_feature_wrong_crc",
        "CGM Feature (0x2AA8)",
        "6e9e0116afbe",
        cgms,
        cgms.decode_cgm_feature,
        Refused("E2E-CRC supported but 0xBEAF is not the CRC", "E2E-CRC mismatch"),
        f"{_NORDIC}callback/cgm/CGMFeatureDataCallbackTest.java (WithCrcError)",
    ),
    SpecVector(
        "cgms_session_start_with_crc",
        "CGM Session Start Time (0x2AAA)",
        "e20704180d08180804e0c2",
        cgms,
        cgms.decode_cgm_session_start_time,
        1_524_564_504 * 1_000_000_000,
        f"{_NORDIC}callback/cgm/CGMSessionStartTimeDataCallbackTest.java (E2E-CRC 0xC2E0)",
        note="local 2018-04-24 13:08:24, time zone 8 x 15 min, DST code 4 (+1 h): 10:08:24 UTC.  Nordic's test "
        "asserts a zone offset of 8 minutes; the GSS Time Zone field counts 15-minute steps, as read here",
    ),
    SpecVector(
        "cgms_session_start_unknown_year",
        "CGM Session Start Time (0x2AAA)",
        "000004180d08180802",
        cgms,
        cgms.decode_cgm_session_start_time,
        None,
        f"{_NORDIC}callback/cgm/CGMSessionStartTimeDataCallbackTest.java (noYear, no E2E-CRC)",
        note="year 0 is 'not known': a start time without a year cannot be placed on the UTC axis",
    ),
    SpecVector(
        "cgms_session_start_wrong_crc",
        "CGM Session Start Time (0x2AAA)",
        "e20704180d08180804e0c3",
        cgms,
        cgms.decode_cgm_session_start_time,
        Refused("E2E-CRC 0xC3E0 where the CRC is 0xC2E0", "E2E-CRC mismatch"),
        f"{_NORDIC}callback/cgm/CGMSessionStartTimeDataCallbackTest.java (WithCrcError)",
    ),
)

# ---------------------------------------------------------------------------------------------------- RACP

_RACP: Final = (
    SpecVector(
        "racp_success",
        "Record Access Control Point (0x2A52)",
        "06000101",
        racp,
        racp.decode_racp_response,
        RacpResponse(
            RacpOpcode.RESPONSE_CODE,
            RacpOperator.NULL,
            RacpOpcode.REPORT_STORED_RECORDS,
            GenericRacpResponseCode.SUCCESS,
        ),
        f"{_NORDIC}callback/RecordAccessControlPointDataCallbackTest.java (onRecordAccessOperationCompleted)",
    ),
    SpecVector(
        "racp_no_records_found",
        "Record Access Control Point (0x2A52)",
        "06000106",
        racp,
        racp.decode_racp_response,
        RacpResponse(
            RacpOpcode.RESPONSE_CODE,
            RacpOperator.NULL,
            RacpOpcode.REPORT_STORED_RECORDS,
            GenericRacpResponseCode.NO_RECORDS_FOUND,
        ),
        f"{_NORDIC}callback/RecordAccessControlPointDataCallbackTest.java (CompletedWithNoRecords)",
    ),
    SpecVector(
        "racp_unknown_request_opcode",
        "Record Access Control Point (0x2A52)",
        "06000c02",
        racp,
        racp.decode_racp_response,
        RacpResponse(RacpOpcode.RESPONSE_CODE, RacpOperator.NULL, 12, GenericRacpResponseCode.OP_CODE_NOT_SUPPORTED),
        f"{_NORDIC}callback/RecordAccessControlPointDataCallbackTest.java (opCodeNotSupported)",
        note="request op code 12 is not defined: kept as a plain int",
    ),
    SpecVector(
        "racp_number_of_records",
        "Record Access Control Point (0x2A52)",
        "05000201",
        racp,
        racp.decode_racp_response,
        RacpResponse(RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE, RacpOperator.NULL, number_of_records=258),
        f"{_NORDIC}callback/RecordAccessControlPointDataCallbackTest.java (onNumberOfRecordsReceived_uint16)",
        note="Nordic also accepts 1- and 4-octet counts; GLS and CGMS define the operand as uint16, the only form "
        "used here",
    ),
)

# ----------------------------------------------------------------------------------------------------- IDS

_IDS_STATUS_VALUES: Final = f"values from {_EHI}idd/IddStatusParserTest.kt"

_IDS: Final = (
    SpecVector(
        "idd_status_plain",
        "IDD Status (0x2B21)",
        "559617f001",
        idd_status,
        idd_status.decode_idd_status,
        IddStatus(TherapyControlState.RUN, OperationalState.READY, 2.3, True),
        f"{_IDS_STATUS_VALUES}; IDS v1.0.1, IDD Status field layout; {_HAND} (2.3 IU as 23 x 10^-1)",
        MappingProxyType({"e2e": False}),
    ),
    SpecVector(
        "idd_status_e2e",
        "IDD Status (0x2B21)",
        "559617f001007758",
        idd_status,
        idd_status.decode_idd_status,
        IddStatus(TherapyControlState.RUN, OperationalState.READY, 2.3, True, 0),
        f"{_IDS_STATUS_VALUES}; IDS v1.0.1, IDD Status with E2E-Counter and E2E-CRC; {_HAND}",
        MappingProxyType({"e2e": True}),
    ),
    SpecVector(
        "idd_status_changed_e2e",
        "IDD Status Changed (0x2B20)",
        "110005d7b1",
        ids,
        ids.decode_status_changed,
        (
            StatusChangedFlag.THERAPY_CONTROL_STATE_CHANGED | StatusChangedFlag.TOTAL_DAILY_INSULIN_STATUS_CHANGED,
            5,
        ),
        f"flags 0x11 from {_EHI}idd/IddStatusChangedParserTest.kt; IDS v1.0.1, IDD Status Changed; {_HAND}",
        MappingProxyType({"e2e": True}),
    ),
    SpecVector(
        "idd_status_reader_response_code_e2e",
        "IDD Status Reader Control Point (0x2B24)",
        "03030c0371010499",
        ids,
        ids.decode_status_reader_response,
        (
            StatusReaderResponseCode(StatusReaderOpCode.RESET_STATUS, StatusReaderResponseCodeValue.INVALID_OPERAND),
            1,
        ),
        f"values from {_EHI}idd/IddStatusReaderControlPointParserTest.kt (parseIntegrationTest); IDS v1.0.1, "
        f"Response Code op code 0x0303; {_HAND}",
        MappingProxyType({"e2e": True}),
    ),
    SpecVector(
        "idd_status_reader_active_bolus_ids_e2e",
        "IDD Status Reader Control Point (0x2B24)",
        "3f 03 04 01 00 02 00 03 00 04 00 02 eb 40",
        ids,
        ids.decode_status_reader_response,
        (ActiveBolusIdsResponse((1, 2, 3, 4)), 2),
        f"values from {_EHI}idd/IddStatusReaderControlPointParserTest.kt (readActiveBolusIdsResponse); IDS v1.0.1, "
        f"Get Active Bolus IDs Response 0x033F; {_HAND}",
        MappingProxyType({"e2e": True}),
    ),
    SpecVector(
        "idd_command_response_code_780g",
        "IDD Command Control Point",
        "550f8e140f",
        ids,
        ids.decode_response,
        (ResponseCode(0x148E, ResponseCodeValue.SUCCESS), None),
        f"{_OPENGUARDIAN}, step 3 of the example capture",
        MappingProxyType({"e2e": False}),
        note="the request op code 0x148E is Medtronic's own (Get High/Low SG Settings): kept as a plain int",
    ),
    SpecVector(
        "idd_features_780g_extension",
        "IDD Features",
        "ffff006400fede801f",
        ids,
        ids.decode_idd_features,
        Refused(
            "Feature Extension (bit 23) set: the octet after the Flags is not defined by IDS 1.0.x",
            "feature extension",
        ),
        f"{_OPENGUARDIAN}, 'Reading pump features'",
        note="a real pump: E2E off (CRC 0xFFFF), 100 IU/mL, Flags 0x80DEFE and one vendor extension octet 0x1F. "
        "The decoder refuses the extension by design (ids.decode_idd_features); IDS reserves the bit for "
        "future octets, so a reader that only skipped them would also be conformant: see the report",
    ),
    SpecVector(
        "idd_racp_response_code_e2e",
        "IDD Record Access Control Point (0x2B27)",
        "0f0f3cf0031385",
        idd_history,
        idd_history.decode_racp_response,
        (RacpResponseCode(IddRacpOpcode.DELETE_STORED_RECORDS, RacpResponseCodeValue.SUCCESS), 3),
        f"values from {_EHI}idd/recordaccesscontrolpoint/RacpParserTest.kt (parsingMethodGenericResponse...); "
        f"op codes as that project's idd RACP enums; {_HAND}",
        MappingProxyType({"e2e": True}),
    ),
    SpecVector(
        "idd_racp_number_of_records_e2e",
        "IDD Record Access Control Point (0x2B27)",
        "660f7b0000000475a6",
        idd_history,
        idd_history.decode_racp_response,
        (RacpRecordCount(123), 4),
        f"values from {_EHI}idd/recordaccesscontrolpoint/RacpParserTest.kt (readGetRecordNumberResponse...); {_HAND}",
        MappingProxyType({"e2e": True}),
    ),
    SpecVector(
        "idd_history_reference_time",
        "IDD History Data (0x2B28)",
        "0f 00 01 00 00 00 02 00 55 e2 07 01 02 03 04 05 ff 02",
        idd_history,
        idd_history.decode_history_record,
        (
            HistoryRecord(
                HistoryEventType.REFERENCE_TIME,
                1,
                2,
                ReferenceTime(RecordingReason.DATE_TIME_LOSS, (2018, 1, 2, 3, 4, 5), -1, 2),
            ),
            None,
        ),
        f"event data from {_EHI}idd/historydata/ReferenceTimeEventParserTest.kt; header (sequence 1, offset 2) "
        f"as in {_EHI}idd/historydata/BolusProgrammedPart1EventParserTest.kt; {_HAND}",
        MappingProxyType({"e2e": False}),
    ),
    SpecVector(
        "idd_history_bolus_programmed_part1",
        "IDD History Data (0x2B28)",
        "5a 00 01 00 00 00 02 00 03 00 33 04 00 00 00 00 00",
        idd_history,
        idd_history.decode_history_record,
        (
            HistoryRecord(
                HistoryEventType.BOLUS_PROGRAMMED_PART_1_OF_2, 1, 2, BolusAmounts(3, BolusType.FAST, 4.0, 0.0, 0)
            ),
            None,
        ),
        f"values from {_EHI}idd/historydata/BolusProgrammedPart1EventParserTest.kt; {_HAND}",
        MappingProxyType({"e2e": False}),
    ),
)

# ------------------------------------------------------------------------------------------- BAS, DIS, PMD

_BAS: Final = (
    SpecVector(
        "bas_full",
        "Battery Level (0x2A19)",
        "64",
        bas,
        bas.decode_battery_level,
        100,
        f"{_NORDIC}callback/battery/BatteryLevelDataCallbackTest.java (fullBattery)",
    ),
    SpecVector(
        "bas_low",
        "Battery Level (0x2A19)",
        "0f",
        bas,
        bas.decode_battery_level,
        15,
        f"{_NORDIC}callback/battery/BatteryLevelDataCallbackTest.java (lowBattery)",
    ),
    SpecVector(
        "bas_out_of_range",
        "Battery Level (0x2A19)",
        "65",
        bas,
        bas.decode_battery_level,
        Refused("101 %: Battery Level is a percentage in [0, 100]", "out of range"),
        f"{_NORDIC}callback/battery/BatteryLevelDataCallbackTest.java (batteryLevelOutOfRange)",
    ),
)

_DIS: Final = (
    SpecVector(
        "dis_manufacturer_name",
        "Manufacturer Name String (0x2A29)",
        b"Polar".hex(),
        device_info,
        device_info.decode_dis_string,
        "Polar",
        f"{_POLAR}BleDisClientTest.kt (MANUFACTURER_NAME_STRING as UTF-8)",
    ),
    SpecVector(
        "dis_pnp_id_bluetooth_sig",
        "PnP ID (0x2A50)",
        "010a000b000100",
        device_info,
        device_info.decode_pnp_id,
        PnpId(VendorIdSource.BLUETOOTH_SIG, 0x000A, 0x000B, 0x0001),
        f"{_SIG_PY}test_pnp_id.py ('Bluetooth SIG vendor')",
    ),
    SpecVector(
        "dis_pnp_id_usb",
        "PnP ID (0x2A50)",
        "02 ac 05 20 02 01 00",
        device_info,
        device_info.decode_pnp_id,
        PnpId(VendorIdSource.USB_IMPLEMENTERS_FORUM, 0x05AC, 0x0220, 0x0001),
        f"{_SIG_PY}test_pnp_id.py ('USB vendor device')",
    ),
    SpecVector(
        "dis_system_id",
        "System ID (0x2A23)",
        "0102030405060708",
        device_info,
        device_info.decode_system_id,
        SystemId(0x0504030201, 0x080706),
        f"{_SIG_PY}test_system_id.py (manufacturer identifier 01..05, OUI 06..08, least significant octet first)",
    ),
)

_PMD: Final = (
    SpecVector(
        "pmd_ecg_type0",
        "Polar PMD Data (ECG, frame type 0)",
        "00009435770000000000" + "0280ff028000",
        pmd,
        pmd_ecg_samples,
        (2_000_000_000, (-32766, 32770)),
        f"{_POLAR}pmd/model/EcgDataTest.kt ('process raw ecg data type 0')",
        note="measurement type 0, timestamp 2e9 ns (Polar epoch), frame type 0, int24 samples 02 80 FF and "
        "02 80 00; the test's comment writes the first as '02 08 FF', its byte array as 02 80 FF",
    ),
)

VECTORS: Final[tuple[SpecVector, ...]] = (
    *_CRC,
    *_NUMBERS,
    *_DATE_TIME,
    *_HRS,
    *_PLXS,
    *_BPS,
    *_HTS,
    *_GLS,
    *_CGMS,
    *_RACP,
    *_IDS,
    *_BAS,
    *_DIS,
    *_PMD,
)
