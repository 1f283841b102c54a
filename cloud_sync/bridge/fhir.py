"""The FHIR sink: one message -> one transaction Bundle of conditional creates; a refused Bundle is split to find
the item the server refuses, so one bad value is parked and the rest of its message is still written."""

from __future__ import annotations

import dataclasses
from typing import Any

from cloud_sync.bridge.errors import TargetRejected
from cloud_sync.bridge.fhir_client import FhirClient
from cloud_sync.bridge.fhir_map import BRIDGED_LANES, PatientLookup, to_bundle
from cloud_sync.bridge.worker import Delivery
from gateway.core.logs import get_logger
from gateway.core.wire import Batch

log = get_logger(__name__)


class FhirSink:
    name = "fhir"
    lanes = BRIDGED_LANES

    def __init__(self, client: FhirClient, patients: PatientLookup) -> None:
        self.client = client
        self.patients = patients

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, batches: list[Batch]) -> Delivery:
        mapped = to_bundle(batches, self.patients)
        rejected: list[tuple[dict[str, Any], str]] = [(r.item, r.reason) for r in mapped.rejected]
        if mapped.bundle is None:
            return Delivery(rejected=rejected)
        try:
            result = await self.client.transaction(mapped.bundle)
        except TargetRejected as err:
            if mapped.observations <= 1:
                raise
            log.info("FHIR server refused a bundle; sending its items one by one", reason=err.reason)
            return await self._one_by_one(batches, rejected)
        return Delivery(written=result.created, existing=result.existing, rejected=rejected)

    async def _one_by_one(self, batches: list[Batch], rejected: list[tuple[dict[str, Any], str]]) -> Delivery:
        written = existing = 0
        for batch in batches:
            if batch.lane not in self.lanes:
                continue
            for item in batch.items:
                single = to_bundle([dataclasses.replace(batch, items=[item])], self.patients)
                if single.bundle is None:
                    continue  # already among `rejected` from the whole message's mapping
                try:
                    result = await self.client.transaction(single.bundle)
                except TargetRejected as err:
                    rejected.append(
                        ({k: v.tolist() if hasattr(v, "tolist") else v for k, v in item.items()}, err.reason)
                    )
                    continue
                written += result.created
                existing += result.existing
        return Delivery(written=written, existing=existing, rejected=rejected)
