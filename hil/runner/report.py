"""Reports of a run: JUnit XML (one testsuite per scenario, one testcase per expectation) and one JSON object.

A failed expectation's testcase carries the reason in words and the timeline around the window it was about,
so a rig's CI shows what happened without re-running it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hil.runner.play import Outcome


def junit(outcomes: list[Outcome]) -> ET.ElementTree:
    suites = ET.Element("testsuites", name="iomt-gateway hil run")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for outcome in outcomes:
        name = outcome.name
        suite = ET.SubElement(suites, "testsuite", name=name, file=str(outcome.path), time=f"{outcome.duration_s:.2f}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if outcome.error is not None:
            case = ET.SubElement(
                suite, "testcase", classname=f"hil.{name}", name="scenario runs", time=f"{outcome.duration_s:.2f}"
            )
            error = ET.SubElement(case, "error", message=outcome.error)
            error.text = "\n".join([outcome.error, "", *outcome.timeline.around(-1e9, 1e9, margin_s=0, limit=40)])
            counts["tests"] += 1
            counts["errors"] += 1
        for verdict in outcome.verdicts:
            case = ET.SubElement(suite, "testcase", classname=f"hil.{name}", name=verdict.title, time="0")
            counts["tests"] += 1
            if verdict.skipped:
                ET.SubElement(case, "skipped", message=verdict.message)
                counts["skipped"] += 1
            elif not verdict.passed:
                failure = ET.SubElement(case, "failure", message=verdict.message)
                failure.text = "\n".join([verdict.message, "", "timeline:", *verdict.context])
                counts["failures"] += 1
            else:
                ET.SubElement(case, "system-out").text = verdict.message
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        suites.set(key, str(value))
    ET.indent(suites)
    return ET.ElementTree(suites)


def write_junit(outcomes: list[Outcome], path: Path) -> None:
    junit(outcomes).write(path, encoding="utf-8", xml_declaration=True)


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    scenarios = [
        {
            "name": o.name,
            "file": str(o.path),
            "passed": o.passed,
            "duration_s": round(o.duration_s, 2),
            "error": o.error,
            "expectations": [
                {"name": v.title, "passed": v.passed, "skipped": v.skipped, "message": v.message} for v in o.verdicts
            ],
        }
        for o in outcomes
    ]
    return {
        "scenarios": scenarios,
        "passed": sum(1 for o in outcomes if o.passed),
        "failed": sum(1 for o in outcomes if not o.passed),
        "expectations_failed": sum(1 for o in outcomes for v in o.verdicts if not (v.passed or v.skipped)),
    }


def text(outcomes: list[Outcome]) -> str:
    lines = []
    for o in outcomes:
        lines.append(f"{'PASS' if o.passed else 'FAIL'}  {o.name}  ({o.duration_s:.1f} s, {o.path})")
        if o.error is not None:
            lines.append(f"      error: {o.error}")
        for v in o.verdicts:
            mark = "skip" if v.skipped else ("ok" if v.passed else "FAILED")
            lines.append(f"      {mark:<6} {v.title}: {v.message}")
            if not (v.passed or v.skipped):
                lines.extend(f"             {line}" for line in v.context[-15:])
    passed = sum(1 for o in outcomes if o.passed)
    lines.append(f"{passed} of {len(outcomes)} scenarios passed")
    return "\n".join(lines)
