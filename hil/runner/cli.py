"""`iomt-gateway hil run SCENARIO... [--junit FILE] [--json]`: play scenario files, report, exit non-zero on
any failure (1) or unusable input (2).  Against a gateway on another box: `--admin-socket` and `--broker`."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from pathlib import Path

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
            for name, description in rows.items():
                print(f"{name}\n    {description}")
        return EXIT_OK
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
    outcomes = asyncio.run(play_all(scenarios, remote))  # type: ignore[arg-type]
    if args.junit is not None:
        write_junit(outcomes, args.junit)
    if args.json:
        print(json.dumps(summary(outcomes), indent=2))
    else:
        print(text(outcomes))
    return EXIT_OK if all(o.passed for o in outcomes) else EXIT_FAILED
