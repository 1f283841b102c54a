"""Decode 12-lead and General ECG Waveform objects into per-lead samples and the gateway's WaveformChunks.

Pure: a parsed (and validated) pydicom Dataset in, numbers out.  The decoder reads Waveform Data itself rather
than through pydicom's `waveform_array`, which reads the bytes in the machine's byte order (wrong for the retired
big endian syntax), applies no units (this module converts mV and V to µV) and returns mu-law and A-law samples
as plain bytes; the physical formula is the same as pydicom's:

    value = sample * Channel Sensitivity * Channel Sensitivity Correction Factor + Channel Baseline

in the units of the Channel Sensitivity Units Sequence (PS3.3 C.10.9.1.4.2: sensitivity is the value of one
least significant bit, the correction factor scales it to the calibrated value; the baseline is the offset of
encoded sample value 0 from actual 0, in the same units).  Leads are named from the Channel Source Sequence:
SCP-ECG codes "5.6.3-9-n" and MDC codes ("2:n", as CID 3001 lists them, or the per-lead MDC_ECG_ELEC_POTL terms)
map to the MDC_ECG_ELEC_POTL_* quantities of `gateway.core.nomenclature`; any other lead is reported as the
unspecified-lead quantity under its code meaning.  Errors raise `DicomRejected` (0xA900) naming the channel,
never a sample value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from drivers.dicom.validate import (
    STATUS_DATASET_MISMATCH,
    WAVEFORM_SOP_CLASSES,
    DicomRejected,
    Reason,
    quiet_pydicom,
)
from gateway.core.model import WaveformChunk, now_ns, stable_id
from gateway.core.nomenclature import quantity

__all__ = ["LEADS", "EcgChannel", "decode_ecg", "ecg_events", "lead_for_code"]

# 11073-10101 lead code -> (label, MDC reference id).  SCP-ECG (EN 1064) numbers its leads the same way.
LEADS: Final[Mapping[int, tuple[str, str]]] = {
    1: ("I", "MDC_ECG_ELEC_POTL_I"),
    2: ("II", "MDC_ECG_ELEC_POTL_II"),
    3: ("V1", "MDC_ECG_ELEC_POTL_V1"),
    4: ("V2", "MDC_ECG_ELEC_POTL_V2"),
    5: ("V3", "MDC_ECG_ELEC_POTL_V3"),
    6: ("V4", "MDC_ECG_ELEC_POTL_V4"),
    7: ("V5", "MDC_ECG_ELEC_POTL_V5"),
    8: ("V6", "MDC_ECG_ELEC_POTL_V6"),
    61: ("III", "MDC_ECG_ELEC_POTL_III"),
    62: ("aVR", "MDC_ECG_ELEC_POTL_AVR"),
    63: ("aVL", "MDC_ECG_ELEC_POTL_AVL"),
    64: ("aVF", "MDC_ECG_ELEC_POTL_AVF"),
}
_UNSPECIFIED_LEAD: Final = "MDC_ECG_ELEC_POTL"
_SCPECG_LEAD_PREFIX: Final = "5.6.3-9-"
_MDC_ELEC_POTL_BASE: Final = 256  # MDC_ECG_ELEC_POTL; the per-lead term adds the lead code
_MDC_SCADA: Final = 2

# Channel Sensitivity Units (UCUM, CID 3082) -> microvolts per unit
_MICROVOLTS: Final[Mapping[str, float]] = {"nV": 1e-3, "uV": 1.0, "mV": 1e3, "V": 1e6}
_SAMPLE_TYPES: Final[Mapping[tuple[int, str], str]] = {
    (8, "SB"): "i1",
    (8, "UB"): "u1",
    (16, "SS"): "i2",
    (16, "US"): "u2",
    (32, "SL"): "i4",
    (32, "UL"): "u4",
}  # 64-bit samples do not fit a WaveformChunk; mu-law (MB) and A-law (AB) are not ECG encodings


@dataclass(frozen=True, slots=True, eq=False)
class EcgChannel:
    """One lead of one multiplex group: raw samples and their scaling; `samples_uv` = raw * gain_uv + baseline_uv."""

    label: str
    reference_id: str
    source_code: tuple[str, str]  # (coding scheme designator, code value) from the Channel Source Sequence
    sample_rate_hz: float
    raw: npt.NDArray[np.int32]
    gain_uv: float
    baseline_uv: float
    skew_ns: int  # Channel Sample Skew: this channel's samples lag the group's nominal times by this much

    @property
    def samples_uv(self) -> npt.NDArray[np.float64]:
        return self.raw.astype(np.float64) * self.gain_uv + self.baseline_uv


def _reject(detail: str, **fields: str | int) -> DicomRejected:
    return DicomRejected(Reason.WAVEFORM_INVALID, STATUS_DATASET_MISMATCH, detail=detail, **fields)


def _lead_from_mdc(value: str) -> int | None:
    """An MDC code value as DICOM writes it, "partition:term" or context-free, to a lead code."""
    partition_text, _, term_text = value.partition(":")
    try:
        if term_text:
            partition, term = int(partition_text), int(term_text)
        else:
            code = int(partition_text)
            partition, term = code >> 16, code & 0xFFFF
    except ValueError:
        return None
    if partition != _MDC_SCADA:
        return None
    if term >= _MDC_ELEC_POTL_BASE:  # MDC_ECG_ELEC_POTL_x rather than MDC_ECG_LEAD_x
        term -= _MDC_ELEC_POTL_BASE
    return term


def lead_for_code(scheme: str, value: str) -> tuple[str, str] | None:
    """(label, MDC reference id) for a Channel Source code; None when the lead is not one of the twelve."""
    lead: int | None = None
    if scheme == "SCPECG" and value.startswith(_SCPECG_LEAD_PREFIX):
        suffix = value.removeprefix(_SCPECG_LEAD_PREFIX)
        lead = int(suffix) if suffix.isdigit() else None
    elif scheme == "MDC":
        lead = _lead_from_mdc(value)
    return LEADS.get(lead) if lead is not None else None


def _number(item: Dataset, keyword: str, default: float | None = None) -> float:
    value = item.get(keyword)
    if value is None or value == "":
        if default is None:
            raise _reject("missing channel attribute", attribute=keyword)
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(float(value)):
        raise _reject("channel attribute is not a single finite number", attribute=keyword)
    return float(value)


def _count(item: Dataset, keyword: str, group: int) -> int:
    value = item.get(keyword)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _reject("missing or non-positive count", attribute=keyword, group=group)
    return int(value)


def _pick_group(sequence: list[Dataset]) -> int:
    """The first multiplex group with original samples: the rhythm, not the derived median beats."""
    for index, item in enumerate(sequence):
        if str(item.get("WaveformOriginality", "")).strip() == "ORIGINAL":
            return index
    return 0


def _decode(ds: Dataset, group: int | None) -> list[EcgChannel]:
    if str(ds.get("SOPClassUID", "")) not in WAVEFORM_SOP_CLASSES:
        raise _reject("not an ECG waveform object")
    sequence = list(ds.get("WaveformSequence") or [])
    if not sequence:
        raise _reject("no waveform sequence")
    index = _pick_group(sequence) if group is None else group
    if not 0 <= index < len(sequence):
        raise _reject("no such multiplex group", group=index)
    item = sequence[index]
    channels = _count(item, "NumberOfWaveformChannels", index)
    samples = _count(item, "NumberOfWaveformSamples", index)
    bits = _count(item, "WaveformBitsAllocated", index)
    interpretation = str(item.get("WaveformSampleInterpretation", "")).strip()
    dtype_code = _SAMPLE_TYPES.get((bits, interpretation))
    if dtype_code is None:
        raise _reject("waveform sample type not supported", group=index, bits=bits)
    rate = _number(item, "SamplingFrequency")
    if rate <= 0:
        raise _reject("sampling frequency must be positive", group=index)
    data = item.get("WaveformData")
    expected = channels * samples * bits // 8
    if not isinstance(data, bytes) or len(data) < expected:
        raise _reject("waveform data shorter than its channels and samples", group=index, expected=expected)
    little = ds.original_encoding[1] is not False  # pydicom keeps OW bytes as stored
    dtype = np.dtype(("<" if little else ">") + dtype_code)
    matrix = np.frombuffer(data, dtype=dtype, count=channels * samples).reshape(samples, channels)
    if dtype_code == "u4" and int(matrix.max(initial=0)) > np.iinfo(np.int32).max:
        raise _reject("unsigned 32-bit samples exceed the signed range", group=index)
    definitions = list(item.get("ChannelDefinitionSequence") or [])
    if len(definitions) != channels:
        raise _reject("one channel definition per channel is required", group=index)
    out: list[EcgChannel] = []
    for number, definition in enumerate(definitions):
        source = (definition.get("ChannelSourceSequence") or [None])[0]
        scheme = str(source.get("CodingSchemeDesignator", "")).strip() if source is not None else ""
        value = str(source.get("CodeValue", "")).strip() if source is not None else ""
        lead = lead_for_code(scheme, value)
        if lead is None:
            meaning = str(source.get("CodeMeaning", "")).strip() if source is not None else ""
            label, reference_id = meaning or f"channel {number + 1}", _UNSPECIFIED_LEAD
        else:
            label, reference_id = lead
        units_item = (definition.get("ChannelSensitivityUnitsSequence") or [None])[0]
        unit = str(units_item.get("CodeValue", "")).strip() if units_item is not None else ""
        if unit not in _MICROVOLTS:
            raise _reject("channel sensitivity units are not a voltage", group=index, channel=number)
        scale = _MICROVOLTS[unit]
        gain = _number(definition, "ChannelSensitivity") * _number(
            definition, "ChannelSensitivityCorrectionFactor", 1.0
        )
        if gain == 0:
            raise _reject("channel sensitivity is zero", group=index, channel=number)
        baseline = _number(definition, "ChannelBaseline", 0.0)
        skew_ms = _number(definition, "ChannelSampleSkew", 0.0)
        raw = np.ascontiguousarray(matrix[:, number]).astype(np.int32)
        raw.flags.writeable = False
        out.append(
            EcgChannel(
                label=label,
                reference_id=reference_id,
                source_code=(scheme, value),
                sample_rate_hz=rate,
                raw=raw,
                gain_uv=gain * scale,
                baseline_uv=baseline * scale,
                skew_ns=round(skew_ms * 1e6),
            )
        )
    return out


def decode_ecg(ds: Dataset, group: int | None = None) -> list[EcgChannel]:
    """Every channel of one multiplex group (default: the first ORIGINAL one, i.e. the rhythm, not median beats)."""
    with quiet_pydicom():
        try:
            return _decode(ds, group)
        except DicomRejected:
            raise
        except Exception:  # noqa: BLE001 - a value pydicom cannot convert: the object is unreadable
            raise _reject("waveform attributes unreadable") from None


def ecg_events(ds: Dataset, device_id: str, start_ns: int, group: int | None = None) -> list[WaveformChunk]:
    """One WaveformChunk per lead; physical µV = (sample - offset) * gain, ids stable for a re-sent object.

    `start_ns` is the device time of the group's first sample (the caller knows the device's clock and time zone,
    the object's Acquisition DateTime does not say); Multiplex Group Time Offset and each channel's sample skew
    are added to it.
    """
    channels = decode_ecg(ds, group)
    with quiet_pydicom():
        sequence = list(ds.get("WaveformSequence") or [])
        index = _pick_group(sequence) if group is None else group
        offset_ms = sequence[index].get("MultiplexGroupTimeOffset")
    group_offset_ns = round(float(offset_ms) * 1e6) if isinstance(offset_ms, int | float) else 0
    received = now_ns()
    chunks: list[WaveformChunk] = []
    for number, channel in enumerate(channels):
        q = quantity(channel.reference_id)
        start = start_ns + group_offset_ns + channel.skew_ns
        chunks.append(
            WaveformChunk(
                stable_id(device_id, q.code, start_ns, index, number),
                device_id,
                q,
                channel.raw,
                channel.sample_rate_hz,
                channel.gain_uv,
                -channel.baseline_uv / channel.gain_uv,  # (raw - offset) * gain = raw * gain + baseline
                start,
                received,
            )
        )
    return chunks
