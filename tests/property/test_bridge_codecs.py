"""Fuzzing the bridges' parsers and builders: the ACK parser and MLLP unframing only ever raise AckError; the FHIR
mapper turns any item into a valid resource or a reason; HL7 built from any text parses with python-hl7."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import hl7
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given
from hypothesis import strategies as st

from cloud_sync.bridge.fhir_map import to_bundle
from cloud_sync.bridge.hl7 import AckError, SenderIdentity, mllp_payload, parse_ack, pcd01, pcd04
from cloud_sync.bridge.patients import PatientDirectory
from gateway.core.model import Lane
from gateway.core.wire import Batch, decode_message
from tests.support.bridging import alarm, message, numerics
from tests.support.fuzzing import FAST, Mutation, mutate, mutations

VALID_ACK = (
    b"MSH|^~\\&|ENGINE|H|IOMT||20240101120000||ACK^R01^ACK|A1|P|2.6\r"
    b"MSA|AE|533C14258CA6F73AC2E7\rERR|||207^Application internal error^HL70357|E\r"
)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_are_an_ack_or_ackerror(data: bytes) -> None:
    with contextlib.suppress(AckError):
        parse_ack(data)
    with contextlib.suppress(AckError):
        mllp_payload(data)


@FAST
@given(mutations)
def test_a_mutated_ack_is_an_ack_or_ackerror(mutation: Mutation) -> None:
    try:
        ack = parse_ack(mutate(VALID_ACK, mutation))
    except AckError:
        return
    assert ack.code in {"AA", "AE", "AR", "CA", "CE", "CR"} and ack.control_id


def test_the_valid_ack_reads() -> None:
    ack = parse_ack(VALID_ACK)
    assert (ack.code, ack.control_id, ack.errors) == ("AE", "533C14258CA6F73AC2E7", ("207",))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["id", "code", "ref", "unit", "value", "special", "t_dev", "t_gw", "condition", "kind", "priority", "state"]


@FAST
@given(
    st.lists(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)), min_size=1, max_size=4),
    st.sampled_from([Lane.NUMERICS, Lane.ALARMS]),
)
def test_any_item_maps_to_valid_fhir_or_a_reason(edits: list[dict[str, Any]], lane: Lane) -> None:
    events = numerics("ox-1", len(edits)) if lane is Lane.NUMERICS else [alarm("ox-1") for _ in edits]
    doc = json.loads(message("gw-1", "ox-1", lane, events))
    for item, edit in zip(doc["batches"][0]["items"], edits, strict=True):
        item.update(edit)
        item["id"] = item["id"] if isinstance(item.get("id"), str) else "x"  # the wire format requires a string id
    mapped = to_bundle(decode_message(json.dumps(doc).encode()), PatientDirectory())
    assert mapped.observations + len(mapped.rejected) == len(edits)
    for entry in (mapped.bundle or {}).get("entry", []):
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(
            {k: v for k, v in resource.items() if k != "resourceType"}
        )


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)


@FAST
@given(names, names, st.one_of(st.none(), names))
def test_hl7_built_from_any_text_parses_with_python_hl7(device: str, condition: str, patient: str | None) -> None:
    sender = SenderIdentity(application="APP|^~\\&", facility=device)
    (numeric,) = decode_message(message("gw-1", "ox-1", Lane.NUMERICS, numerics("ox-1", 2)))
    batch = Batch("gw-1", device, patient, Lane.NUMERICS, numeric.items)
    item = dict(decode_message(message("gw-1", "ox-1", Lane.ALARMS, [alarm("ox-1")]))[0].items[0], condition=condition)
    for built in (pcd01(batch, sender), pcd04(Batch("gw-1", device, patient, Lane.ALARMS, [item]), item, sender)):
        parsed = hl7.parse(built.text)
        assert str(parsed.segment("MSH")[10]) == built.control_id
        assert len(parsed.segments("OBX")) >= 2
        if built.trigger == "R40":
            assert parsed.unescape(str(parsed.segment("OBX")[5])) == condition.translate(
                {c: " " for c in range(0x20) if c != 0} | {0: " ", 0x7F: " "}
            )
