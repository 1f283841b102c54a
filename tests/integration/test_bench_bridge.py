"""`iomt-gateway bench bridge` runs as a technician runs it and reports its contract's figures."""

from __future__ import annotations

from tests.support.harness import bench_figures


def test_bench_bridge_reports_its_contract_keys() -> None:
    figures = bench_figures("bridge", "--gateways", "3", "--workers", "2", timeout_s=120)
    assert figures["duplicates"] == 0 and figures["lost"] == 0
    assert figures["resources_per_s"] > 0
    assert figures["conditional_matches"] > 0  # the resent messages met the conditional creates
    assert figures["fhir_validation"] == "fhir.resources R4B"
    assert figures["targets_met"] is True
