"""`iomt-gateway hil run SCENARIO... [--junit FILE] [--json]`: play scenario files, report, exit non-zero on
any failure (1) or unusable input (2).  Against a gateway on another box: `--admin-socket` and `--broker`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SHIPPED = Path(__file__).resolve().parent.parent / "scenarios"  # the scenario library, installed with the wheel


def shipped() -> dict[str, Path]:
    """The shipped scenarios by name (their files' stems, e.g. ventricular_tachycardia)."""
    return {path.stem: path for path in sorted(SHIPPED.glob("*.yaml"))}


def resolve(names: list[Path]) -> list[Path]:
    """Files as given; a name that is no file but a shipped scenario's (`ventricular-tachycardia`) is that one."""
    library = shipped()
    return [
        path if path.exists() else library.get(str(path).replace("-", "_").removesuffix(".yaml"), path)
        for path in names
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenarios", nargs="*", type=Path, help="scenario files (YAML; see docs/HIL.md) or shipped scenarios' names"
    )
    parser.add_argument("--all", action="store_true", help="every shipped scenario (`--list` names them)")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument("--junit", type=Path, help="write a JUnit XML report here (one testcase per expectation)")
    parser.add_argument("--json", action="store_true", help="print one JSON object of results")
    parser.add_argument("--schema", action="store_true", help="print the scenario format's JSON Schema and exit")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="play N scenarios at once, each in its own process (in-process gateways only)",
    )
    remote = parser.add_argument_group("a gateway already running (default: one in this process)")
    remote.add_argument("--admin-socket", type=Path, help="its admin socket (local alarms, counters)")
    remote.add_argument("--broker", metavar="HOST:PORT", help="the MQTT broker it syncs to (the sync API)")
    remote.add_argument("--gateway-id", help="its gateway id (the sync API's topic level)")
    remote.add_argument("--topic-prefix", default="iomt/v1")
    remote.add_argument("--ca", type=Path, help="TLS: the broker's CA certificate")
    remote.add_argument("--cert", type=Path, help="TLS: this rig's client certificate (mutual TLS)")
    remote.add_argument("--key", type=Path, help="TLS: this rig's client key")
    remote.add_argument(
        "--issuer-key", action="append", default=[], metavar="NAME=FILE", help="Ed25519 PEM key the gateway trusts"
    )


def _remote(args: argparse.Namespace) -> object:
    from hil.runner.cloud import Issuers  # noqa: PLC0415
    from hil.runner.play import RemoteGateway  # noqa: PLC0415
    from hil.runner.scenario import ScenarioError  # noqa: PLC0415

    if args.admin_socket is None and args.broker is None:
        return None
    if args.admin_socket is None or args.broker is None or args.gateway_id is None:
        raise ScenarioError("a running gateway needs --admin-socket, --broker and --gateway-id together")
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise ScenarioError("--broker must be HOST:PORT")
    tls = None
    if args.ca is not None:
        tls = ssl.create_default_context(cafile=str(args.ca))
        if args.cert is not None:
            tls.load_cert_chain(str(args.cert), str(args.key) if args.key else None)
    keys = {}
    for item in args.issuer_key:
        name, _, file = item.partition("=")
        if not name or not file:
            raise ScenarioError("--issuer-key must be NAME=FILE")
        keys[name] = Path(file)
    return RemoteGateway(
        args.admin_socket, host, int(port), args.gateway_id, args.topic_prefix, tls, Issuers.from_files(keys)
    )


def _written(write: Callable[[], None], path: Path) -> bool:
    """Write the report; a full disk or a refused path is said in one line (the results are printed first)."""
    try:
        write()
    except OSError as err:
        print(f"iomt-gateway hil run: cannot write the report to {path}: {err.strerror}", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from gateway.core.logs import configure_logging  # noqa: PLC0415
    from hil.runner.play import play_all  # noqa: PLC0415
    from hil.runner.report import summary, text, write_junit  # noqa: PLC0415
    from hil.runner.scenario import ScenarioError, json_schema  # noqa: PLC0415

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return EXIT_OK
    if args.list:
        from hil.runner.scenario import ScenarioError, load_scenario  # noqa: PLC0415

        rows = {}
        for name, path in shipped().items():
            try:
                rows[name] = " ".join(load_scenario(path).description.split())
            except ScenarioError as err:
                rows[name] = f"(unreadable: {err.message})"
        if args.json:
            print(json.dumps({"scenarios": [{"name": n, "description": d} for n, d in rows.items()]}, indent=2))
        else:
            import shutil  # noqa: PLC0415
            import textwrap  # noqa: PLC0415

            width = max(40, shutil.get_terminal_size().columns - 1)
            for name, description in rows.items():
                print(name)
                print(textwrap.fill(description, width, initial_indent="    ", subsequent_indent="    "))
        return EXIT_OK
    if args.junit is not None and not os.access(args.junit.resolve().parent, os.W_OK):
        print(
            f"iomt-gateway hil run: cannot write the report to {args.junit}: no such writable folder", file=sys.stderr
        )
        return EXIT_USAGE  # said before the scenarios play, not after minutes of them
    scenarios = [*resolve(args.scenarios), *(shipped().values() if args.all else ())]
    if not scenarios:
        print("iomt-gateway hil run: name scenario files, shipped scenarios (--list) or --all", file=sys.stderr)
        return EXIT_USAGE
    configure_logging("warning", "auto")
    try:
        remote = _remote(args)
    except (ScenarioError, OSError, ssl.SSLError) as err:
        print(f"iomt-gateway hil run: {getattr(err, 'message', err)}", file=sys.stderr)
        return EXIT_USAGE
    if args.jobs > 1:
        if remote is not None:
            print(
                "iomt-gateway hil run: --jobs plays scenarios side by side; against one running gateway they would "
                "see each other's devices: play them one at a time",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return _in_parallel(scenarios, args)
    outcomes = asyncio.run(play_all(scenarios, remote))  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(summary(outcomes), indent=2))
    else:
        print(text(outcomes))
    if args.junit is not None and not _written(lambda: write_junit(outcomes, args.junit), args.junit):
        return EXIT_FAILED  # the rig's CI would read no report: not a pass
    return EXIT_OK if all(o.passed for o in outcomes) else EXIT_FAILED


def _in_parallel(scenarios: list[Path], args: argparse.Namespace) -> int:
    """Each scenario in a process of its own (`hil run FILE`), `args.jobs` at a time; their reports merged."""
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    import xml.etree.ElementTree as ET  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="iomt-hil-jobs-") as tmp:

        def play(index: int, path: Path) -> tuple[dict[str, Any], ET.Element]:
            report = Path(tmp) / f"{index}.xml"
            child = subprocess.run(  # noqa: S603 - this interpreter, this command, the user's own file names
                [sys.executable, "-m", "gateway", "hil", "run", str(path), "--json", "--junit", str(report)],
                capture_output=True,
                text=True,
                check=False,
            )
            try:
                summary: dict[str, Any] = json.loads(child.stdout)
                root = ET.parse(report).getroot()  # noqa: S314 - the report our own child just wrote
            except (json.JSONDecodeError, OSError, ET.ParseError):
                why = (child.stderr.strip().splitlines() or ["no output"])[-1][:300]
                summary = {
                    "scenarios": [
                        {
                            "name": path.stem,
                            "file": str(path),
                            "passed": False,
                            "duration_s": 0,
                            "error": f"the run's process failed: {why}",
                            "expectations": [],
                        }
                    ]
                }
                root = ET.Element("testsuites")
                suite = ET.SubElement(root, "testsuite", name=path.stem, tests="1", failures="0", errors="1")
                case = ET.SubElement(suite, "testcase", classname=f"hil.{path.stem}", name="scenario runs")
                ET.SubElement(case, "error", message=summary["scenarios"][0]["error"])
            return summary, root

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(play, range(len(scenarios)), scenarios))
    merged = ET.Element("testsuites", name="iomt-gateway hil run")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for _, root in results:
        for suite in root.iter("testsuite"):
            merged.append(suite)
            for key in totals:
                totals[key] += int(suite.get(key, "0"))
    for key, value in totals.items():
        merged.set(key, str(value))
    rows = [row for summary, _ in results for row in summary["scenarios"]]
    if args.json:
        failed = [r for r in rows if not r["passed"]]
        print(
            json.dumps(
                {
                    "scenarios": rows,
                    "passed": len(rows) - len(failed),
                    "failed": len(failed),
                    "expectations_failed": sum(
                        1 for r in rows for e in r["expectations"] if not (e["passed"] or e["skipped"])
                    ),
                },
                indent=2,
            )
        )
    else:
        failures = {
            (suite.get("name"), case.get("name")): (child.text or "")
            for suite in merged.iter("testsuite")
            for case in suite.iter("testcase")
            for child in case
            if child.tag in ("failure", "error")
        }
        for row in rows:
            print(f"{'PASS' if row['passed'] else 'FAIL'}  {row['name']}  ({row['duration_s']:.1f} s, {row['file']})")
            if row["error"]:
                print(f"      error: {row['error']}")
            for e in row["expectations"]:
                mark = "skip" if e["skipped"] else ("ok" if e["passed"] else "FAILED")
                print(f"      {mark:<6} {e['name']}: {e['message']}")
                for line in failures.get((row["name"], e["name"]), "").splitlines()[3:][-15:]:
                    print(f"             {line}")
        print(f"{sum(1 for r in rows if r['passed'])} of {len(rows)} scenarios passed")
    ET.indent(merged)
    report = ET.ElementTree(merged)
    if args.junit is not None and not _written(
        lambda: report.write(args.junit, encoding="utf-8", xml_declaration=True), args.junit
    ):
        return EXIT_FAILED  # the rig's CI would read no report: not a pass
    return EXIT_OK if all(r["passed"] for r in rows) else EXIT_FAILED
