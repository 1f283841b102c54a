"""`iomt-gateway`: the daemon, the demo, and the technician's commands.

Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or start-up input (nothing was started).
Every command that prints data takes `--json`: then stdout holds one JSON document (an object, or a list of
objects), also when the command fails (`{"error": ...}`, the exit code says it failed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from gateway.core.errors import BufferKeyError, ConfigError, GatewayError
from gateway.terminal import console, print_json, row, table

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

SOCKET_ENV = "IOMT_GATEWAY_SOCKET"  # the admin socket, for every admin command (e.g. the demo's)
COMMANDS_ENTRY_POINTS = "iomt_gateway.commands"
BUILT_IN = frozenset(
    {"run", "config", "keys", "buffer", "replay", "status", "devices", "alarms", "sync", "logs", "diag", "audit"}
)


class Command(Protocol):
    """A subcommand contributed by a plugin (the rigs' `demo` and `bench`), registered as an
    `iomt_gateway.commands` entry point named after the subcommand."""

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int:
        """The exit code (EXIT_OK, EXIT_FAILURE, EXIT_CONFIG)."""
        ...


# Which optional extra brings what a plugin needs, for the hint when it is missing.
EXTRA_FOR_PLUGIN = {"demo": "demo", "bench": "demo", "bridge": "bridge", "hil": "hil"}


class MissingExtra:
    """A plugin whose optional packages are not installed: it says which extra to install, and fails."""

    def __init__(self, name: str, missing: str) -> None:
        self.help = f"(needs: pip install 'iomt-gateway[{EXTRA_FOR_PLUGIN.get(name, name)}]')"
        self._name = name
        self._missing = missing

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER)

    def run(self, args: argparse.Namespace) -> int:
        extra = EXTRA_FOR_PLUGIN.get(self._name, self._name)
        print(
            f"iomt-gateway {self._name}: the package {self._missing!r} is not installed; "
            f"install the extra: pip install 'iomt-gateway[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_CONFIG


def plugin_commands(only: str | None = None) -> dict[str, Command]:
    """The installed plugins' subcommands, by name (the product's own names cannot be taken); with `only`, just
    that one, so running a command imports no other plugin (the rigs' imports are heavy)."""
    commands: dict[str, Command] = {}
    for entry in metadata.entry_points(group=COMMANDS_ENTRY_POINTS):
        if entry.name in BUILT_IN or (only is not None and entry.name != only):
            continue
        try:
            commands[entry.name] = entry.load()
        except ModuleNotFoundError as err:  # an optional extra is not installed
            commands[entry.name] = MissingExtra(entry.name, err.name or "?")
    return commands


def _parser(plugins: dict[str, Command]) -> argparse.ArgumentParser:
    from gateway.config import DEFAULT_CONFIG_PATH  # noqa: PLC0415 - a Ctrl-C while it loads is caught by main()

    parser = argparse.ArgumentParser(prog="iomt-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway daemon")
    run.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        help="TOML configuration file; remote configuration rewrites it, so it must be writable by the gateway",
    )
    run.add_argument(
        "--initial-config",
        type=Path,
        help="copied to --config on first start when --config does not exist yet (the installed configuration)",
    )
    run.add_argument(
        "--safety-file",
        type=Path,
        default=Path("/etc/iomt-gateway/safety.toml"),
        help="root-owned local safety ceilings that no configuration can loosen (built-in ceilings if absent)",
    )

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    validate = config_sub.add_parser("validate", help="validate a configuration file; exit 0 or 2")
    validate.add_argument("path", type=Path)
    validate.add_argument("--json", action="store_true")
    validate.add_argument(
        "--no-secrets",
        action="store_true",
        help="check keys and values only, not the secret files (e.g. outside systemd, where credential:NAME "
        "does not resolve); the service checks them when it starts",
    )

    keys = sub.add_parser("keys", help="buffer encryption keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="create a new key file (mode 0600)")
    generate.add_argument("path", type=Path)
    generate.add_argument("--json", action="store_true")
    rotate = keys_sub.add_parser("rotate", help="add a new active key; old keys stay to read old rows")
    rotate.add_argument("path", type=Path)
    rotate.add_argument("--json", action="store_true")
    prune = keys_sub.add_parser("prune", help="remove keys that no buffered row needs any more")
    prune.add_argument("path", type=Path)
    prune.add_argument("--json", action="store_true")
    prune.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="to find the buffer database")

    buffer = sub.add_parser("buffer", help="the store-and-forward buffer")
    buffer_sub = buffer.add_subparsers(dest="buffer_command", required=True)
    stats = buffer_sub.add_parser("stats", help="per lane: rows, items, bytes, oldest age (read-only, no key)")
    stats.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    stats.add_argument("--db", type=Path, help="a buffer database file (instead of --config)")
    stats.add_argument("--json", action="store_true")

    replay = sub.add_parser("replay", help="stream a WFDB record through the pipeline; print the alarms it raises")
    replay.add_argument("path", type=Path, help="the record's path without extension, e.g. data/100")
    replay.add_argument("--json", action="store_true")

    def admin_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        parser_ = sub.add_parser(name, help=help_text)
        parser_.add_argument(
            "--config", type=Path, help=f"to find the admin socket (default: ${SOCKET_ENV}, else {DEFAULT_CONFIG_PATH})"
        )
        parser_.add_argument(
            "--socket", type=Path, help=f"the admin socket (instead of --config; or set {SOCKET_ENV}, as the demo says)"
        )
        parser_.add_argument("--json", action="store_true", help="one JSON document on stdout, for scripts")
        return parser_

    admin_parser("status", "health, uptime, drivers, devices, buffer lanes, sync state, alarms")
    devices = admin_parser("devices", "devices: list (state, battery, RSSI, counts); scan for new ones; add one")
    devices.add_argument("action", nargs="?", choices=["list", "scan", "add"], default="list")
    devices.add_argument("--duration", type=float, default=10.0, help="scan: seconds to listen")
    devices.add_argument("--all", action="store_true", help="scan: also list devices with no health service")
    devices.add_argument(
        "--virtual", action="store_true", help="scan: the built-in virtual radio with the demo's simulated devices"
    )
    devices.add_argument("--id", dest="device_id", help="add: the new device's id")
    devices.add_argument("--address", help="add: its Bluetooth address (from `devices scan`)")
    devices.add_argument("--profile", help="add: its profile (from `devices scan`)")
    devices.add_argument("--patient", help="add: the patient it is bound to")
    alarms = admin_parser("alarms", "active alarms; acknowledge or silence one")
    alarms.add_argument("action", nargs="?", choices=["list", "ack", "silence"], default="list")
    alarms.add_argument("alarm_id", nargs="?")
    sync = admin_parser("sync", "sync control")
    sync.add_argument("action", choices=["now"])
    logs = admin_parser("logs", "recent log lines (redacted), filtered")
    logs.add_argument("--level", choices=["debug", "info", "warning", "error"], default="info")
    logs.add_argument("--grep", default="")
    logs.add_argument("--limit", type=int, default=200)
    diag = admin_parser("diag", "support tools")
    diag.add_argument("action", choices=["bundle"])
    diag.add_argument("-o", "--output", type=Path, help="archive path (default: iomt-diag-<time>.tar.gz)")

    audit = sub.add_parser("audit", help="the tamper-evident command audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify",
        help="check the hash chain, the state tables against it, and the head the cloud acknowledged; "
        "exit 0 if intact, 1 naming each problem",
    )
    verify.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    verify.add_argument("--json", action="store_true")
    verify.add_argument(
        "--expect-head",
        metavar="SEQ:HASH",
        help="the audit head the cloud last acknowledged (from its copy of the command results): finds a store "
        "restored from an older copy, replaced or deleted",
    )

    for name, command in plugins.items():
        command.add_arguments(sub.add_parser(name, help=command.help))
    return parser


def _requested(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def _config_failure(err: GatewayError, *, as_json: bool = False) -> int:
    return _fail(f"config error: {err.message}", as_json=as_json, code=EXIT_CONFIG)


def _fail(message: str, *, as_json: bool, code: int = EXIT_FAILURE) -> int:
    """A failure: one line on stderr, and with --json also `{"error": ...}` on stdout; the exit code."""
    print(f"iomt-gateway: {message}", file=sys.stderr)
    if as_json:
        print_json({"error": message})
    return code


def cmd_run(config_path: Path, initial_config: Path | None = None, safety_file: Path | None = None) -> int:
    import asyncio  # noqa: PLC0415 - the command line loads what its command needs: a Ctrl-C while loading is caught

    from gateway.commands.ceilings import DEFAULT_SAFETY_FILE, load_ceilings  # noqa: PLC0415
    from gateway.config import load_config  # noqa: PLC0415 - the command line imports what a command needs
    from gateway.core.logs import configure_logging, get_logger  # noqa: PLC0415
    from gateway.preflight import preflight  # noqa: PLC0415
    from gateway.runner import GatewayRunner, recover_pending, seed_config  # noqa: PLC0415 - daemon imports

    try:
        # Before the configuration is read: a configuration never confirmed healthy does not survive a restart.
        seed_config(config_path, initial_config)
        rolled_back = recover_pending(config_path)
        config = load_config(config_path)
        preflight(config)
        ceilings = load_ceilings(safety_file or DEFAULT_SAFETY_FILE)
    except ConfigError as err:
        return _config_failure(err)
    except OSError as err:
        print(f"iomt-gateway: cannot prepare {config_path}: {err.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    log = get_logger("gateway.cli")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await GatewayRunner(config_path, config, ceilings=ceilings, rolled_back_at_start=rolled_back).run(stop)

    code = EXIT_OK
    try:
        asyncio.run(main())
    except* (ConfigError, BufferKeyError) as group:
        code = _config_failure(group.exceptions[0])  # type: ignore[arg-type]
    except* GatewayError as group:
        for exc in group.exceptions:
            log.error("gateway failed", **exc.log_fields() if isinstance(exc, GatewayError) else {})
        code = EXIT_FAILURE
    except* Exception as crashed:  # last resort: a redacted log line, never a raw traceback
        for error in crashed.exceptions:
            log.error("gateway crashed", exc_info=error)
        code = EXIT_FAILURE
    return code


def cmd_config_validate(path: Path, *, check_secrets: bool = True, as_json: bool = False) -> int:
    from gateway.config import load_config  # noqa: PLC0415 - the command line imports what a command needs
    from gateway.preflight import preflight  # noqa: PLC0415

    try:
        config = load_config(path, check_secrets=check_secrets)
        if check_secrets:
            preflight(config)
    except ConfigError as err:
        return _config_failure(err, as_json=as_json)
    if as_json:
        print_json({"path": str(path), "valid": True, "secrets_checked": check_secrets})
    else:
        print(f"{path}: ok" + ("" if check_secrets else " (secrets not checked)"))
    return EXIT_OK


def cmd_keys(command: str, path: Path, config_path: Path | None, *, as_json: bool = False) -> int:
    from gateway.buffer.inspect import key_ids_in_use  # noqa: PLC0415
    from gateway.config import DEFAULT_CONFIG_PATH, load_config  # noqa: PLC0415
    from gateway.storage.keys import generate_key_file, prune_key_file, rotate_key_file  # noqa: PLC0415

    try:
        if command == "generate":
            generate_key_file(path)
            result: dict[str, Any] = {"path": str(path), "generated": True}
            text = f"{path}: new key written (mode 0600)"
        elif command == "rotate":
            key_id = rotate_key_file(path)
            result = {"path": str(path), "added": key_id}
            text = (
                f"{path}: added key {key_id}; it seals new rows after the next restart, older keys still open old rows"
            )
        else:
            config = load_config(config_path or DEFAULT_CONFIG_PATH, check_secrets=False)
            removed = prune_key_file(path, key_ids_in_use(config.state_dir / config.buffer.path))
            result = {"path": str(path), "removed": list(removed)}
            text = f"{path}: removed {', '.join(removed) if removed else 'nothing'} (only keys no stored row uses)"
    except FileExistsError:
        return _fail(f"{path} exists; refusing to overwrite a key", as_json=as_json)
    except (ConfigError, GatewayError) as err:
        return _fail(err.message, as_json=as_json, code=EXIT_CONFIG if isinstance(err, ConfigError) else EXIT_FAILURE)
    if as_json:
        print_json(result)
    else:
        print(text)
    return EXIT_OK


def cmd_buffer_stats(config_path: Path, db: Path | None, *, as_json: bool) -> int:
    from gateway.buffer.inspect import summarize  # noqa: PLC0415
    from gateway.config import load_config  # noqa: PLC0415 - the command line imports what a command needs

    try:
        if db is None:
            config = load_config(config_path, check_secrets=False)
            db = config.state_dir / config.buffer.path
        summary = summarize(db)
    except GatewayError as err:
        return _fail(f"{err.message} ({db or config_path}); check --config or --db", as_json=as_json)
    if as_json:
        print_json(summary.as_dict())
        return EXIT_OK
    from rich.text import Text  # noqa: PLC0415

    out = console()
    out.print(Text(f"buffer {summary.path} (schema v{summary.schema_version})", style="bold"))
    lanes = table("lane", "rows", "items", "bytes", "oldest")
    for lane in summary.lanes:
        age = None if lane.oldest_age_s is None else f"{lane.oldest_age_s:,.0f} s"
        lanes.add_row(*row(lane.lane, f"{lane.rows:,}", f"{lane.items:,}", f"{lane.bytes:,}", age))
    out.print(lanes)
    out.print(
        Text(
            f"file {summary.file_bytes:,} bytes, WAL {summary.wal_bytes:,} bytes, "
            f"quarantined rows {summary.quarantined_rows}, keys in use {', '.join(summary.key_ids_in_use) or '-'}"
        )
    )
    return EXIT_OK


def cmd_audit_verify(config_path: Path, *, as_json: bool, expect_head: str | None = None) -> int:
    from gateway.commands.store import AuditProblem, CommandStore  # noqa: PLC0415
    from gateway.config import load_config  # noqa: PLC0415 - the command line imports what a command needs
    from gateway.preflight import preflight  # noqa: PLC0415

    try:
        config = load_config(config_path)
        keyring, _ = preflight(config)
        head = _parse_head(expect_head) if expect_head else None
    except ConfigError as err:
        return _config_failure(err, as_json=as_json)
    path = config.state_dir / "commands.sqlite3"
    if not path.exists():
        if head is not None and head[0] > 0:
            problems = [AuditProblem(None, f"store-missing: the cloud acknowledged record {head[0]}")]
            _print_audit(0, problems, as_json=as_json)
            return EXIT_FAILURE
        return _fail(f"no command store at {path} (commands never enabled?)", as_json=as_json)
    store = CommandStore(path, keyring)
    try:
        problems = store.verify_audit()
        problems += [AuditProblem(None, f"state: {p}") for p in store.state_problems() if p != "audit-chain-broken"]
        state = store.state
        if state.untrusted is not None:
            pending = "" if state.resynced else " (no signed resync yet)"
            problems.append(AuditProblem(None, f"state untrusted since the gateway found {state.untrusted}{pending}"))
        if head is not None:
            found = store.head_problem(*head)
            if found is not None:
                problems.append(
                    AuditProblem(
                        head[0],
                        f"{found}: the store holds records up to {state.last_seq}, the cloud "
                        f"acknowledged record {head[0]}",
                    )
                )
        records = len(store.db.execute("SELECT seq FROM audit").fetchall())
    finally:
        store.close()
    _print_audit(records, problems, as_json=as_json)
    return EXIT_OK if not problems else EXIT_FAILURE


def _parse_head(text: str) -> tuple[int, str]:
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError("--expect-head: expected SEQ:HASH (a record number and 64 hex digits)")
    return int(seq), digest


def _print_audit(records: int, problems: list[Any], *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "records": records,
                "intact": not problems,
                "problems": [{"seq": p.seq, "problem": p.problem} for p in problems],
            }
        )
    else:
        for problem in problems:
            print(f"record {problem.seq if problem.seq is not None else '-'}: {problem.problem}")
        print(f"{records} audit records: " + ("chain intact" if not problems else f"{len(problems)} problem(s)"))


def _admin_socket(args: argparse.Namespace) -> Path:
    """--socket, else the socket of an explicit --config, else $IOMT_GATEWAY_SOCKET, else the default config's."""
    from gateway.config import DEFAULT_CONFIG_PATH, load_config  # noqa: PLC0415

    if args.socket is not None:
        return Path(args.socket)
    if args.config is None and os.environ.get(SOCKET_ENV):
        return Path(os.environ[SOCKET_ENV])
    return load_config(args.config or DEFAULT_CONFIG_PATH, check_secrets=False).admin_socket


def cmd_devices_scan(duration_s: float, *, virtual: bool, health_only: bool, as_json: bool) -> int:
    """Listen for BLE advertisements and list the health devices heard, with a progress display."""
    import asyncio  # noqa: PLC0415

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    from drivers.ble.transport import ble_backend  # noqa: PLC0415
    from gateway.commissioning import Found, scan  # noqa: PLC0415

    async def run(on_found: Any, on_tick: Any) -> list[Found]:
        if not virtual:
            return await scan(duration_s, on_found=on_found, on_tick=on_tick, health_only=health_only)
        async with ble_backend("virtual").scanner() as scanner:  # the rigs' virtual radio, a registered backend
            return await scan(
                duration_s,
                backend=scanner.backend,
                backend_kwargs=scanner.kwargs,
                on_found=on_found,
                on_tick=on_tick,
                health_only=health_only,
            )

    progress_console = console(stderr=True)
    heard: set[str] = set()
    try:
        if as_json:
            found = asyncio.run(run(None, None))
        else:
            with Progress(
                TextColumn("scanning"),
                BarColumn(),
                TextColumn("{task.fields[heard]} heard"),
                TimeRemainingColumn(),
                console=progress_console,
                transient=True,
            ) as progress:
                task = progress.add_task("scan", total=duration_s, heard=0)

                def on_found(entry: Found) -> None:
                    heard.add(entry.address)
                    progress.update(task, heard=len(heard))

                found = asyncio.run(run(on_found, lambda elapsed: progress.update(task, completed=elapsed)))
    except Exception as err:  # noqa: BLE001 - no adapter, no BlueZ, no permission: one clear line, exit 1
        return _fail(
            f"scan failed ({type(err).__name__}: {err}); is there a Bluetooth adapter and is the "
            "system's Bluetooth service (bluetoothd) running? `--virtual` scans the simulated devices instead",
            as_json=as_json,
        )
    if as_json:
        print_json([f.as_dict() for f in found])
        return EXIT_OK
    heard_table = table("address", "name", "RSSI (dBm)", "profile", "advertisements", ids=("address", "profile"))
    for f in found:
        heard_table.add_row(*row(f.address, f.name or "", f.rssi_dbm, f.profile, f.advertisements))
    console().print(heard_table)
    print(
        f"{len(found)} device(s). Add one: iomt-gateway devices add --id NAME --address ADDRESS --profile PROFILE",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_devices_add(args: argparse.Namespace) -> int:
    from gateway.commissioning import add_device  # noqa: PLC0415
    from gateway.config import DEFAULT_CONFIG_PATH  # noqa: PLC0415

    missing = [
        flag
        for flag, value in (("--id", args.device_id), ("--address", args.address), ("--profile", args.profile))
        if not value
    ]
    if missing:
        return _fail(f"devices add needs {', '.join(missing)}", as_json=args.json, code=EXIT_CONFIG)
    config_path = args.config or DEFAULT_CONFIG_PATH
    try:
        add_device(
            config_path, device_id=args.device_id, address=args.address, profile=args.profile, patient=args.patient
        )
    except ConfigError as err:
        return _config_failure(err, as_json=args.json)
    if args.json:
        print_json(
            {"config": str(config_path), "added": args.device_id, "profile": args.profile, "address": args.address}
        )
    else:
        print(
            f"{config_path}: added {args.device_id} ({args.profile} at {args.address}); restart the gateway to use it"
        )
    return EXIT_OK


def cmd_admin(args: argparse.Namespace) -> int:
    """The technician's commands: one request to the running gateway's admin socket each."""
    import asyncio  # noqa: PLC0415

    from gateway import admin  # noqa: PLC0415

    try:
        path = _admin_socket(args)
    except ConfigError as err:
        return _config_failure(err, as_json=args.json)
    op, extra = args.command, {}
    if args.command == "alarms" and args.action in ("ack", "silence"):
        if not args.alarm_id:
            return _fail("give the alarm id (see `iomt-gateway alarms`)", as_json=args.json, code=EXIT_CONFIG)
        op, extra = ("ack_alarm" if args.action == "ack" else "silence_alarm"), {"id": args.alarm_id}
    elif args.command == "sync":
        op = "sync_now"
    elif args.command == "logs":
        extra = {"level": args.level, "grep": args.grep, "limit": args.limit}
    elif args.command == "diag":
        op = "diag"
    try:
        response = asyncio.run(admin.request(path, op, **extra))
    except (FileNotFoundError, ConnectionRefusedError):
        return _fail(
            f"no gateway listening at {path}; is the service running? (systemctl status iomt-gateway; "
            f"a demo prints its socket: set {SOCKET_ENV} or pass --socket)",
            as_json=args.json,
        )
    except PermissionError:
        return _fail(f"not allowed to use {path}; ask to be added to the technicians' group", as_json=args.json)
    if not response.get("ok"):
        hint = response.get("hint", "")
        return _fail(f"{response.get('error')}" + (f"; {hint}" if hint else ""), as_json=args.json)
    result = response["result"]
    if args.command == "logs":
        result = [_log_record(line) for line in result]
    if args.command == "diag":
        return _write_bundle(result, args.output, as_json=args.json)
    if args.json:
        print_json(result)
        return EXIT_OK
    _print_table(args.command, result)
    return EXIT_OK


def _log_record(line: Any) -> dict[str, Any]:
    """A log record as an object (gateways before 0.2 answered `logs` with lines of JSON text)."""
    if isinstance(line, dict):
        return line
    try:
        record = json.loads(line)
    except (TypeError, json.JSONDecodeError):
        return {"event": str(line)}
    return record if isinstance(record, dict) else {"event": str(line)}


def _print_table(command: str, result: Any) -> None:
    from rich.text import Text  # noqa: PLC0415

    out = console()
    if command == "status":
        sync = result["sync"]
        out.print(
            Text.assemble(
                (result["gateway_id"], "bold"),
                f" {result['version']}  health: {result['health']}  up {result['uptime_s']:.0f} s  "
                f"sync: {sync['state']}"
                + (f" ({sync['last_error']})" if sync["last_error"] else "")
                + f"  alarms: {result['active_alarms']}  backlog: {result['pipeline_backlog']}",
            )
        )
        drivers = table("driver", "running", "restarts", "last error", ids=("driver",))
        for name, task in result["drivers"].items():
            drivers.add_row(*row(name, "yes" if task["running"] else "no", task["restarts"], task["last_error"] or ""))
        out.print(drivers)
        lanes = table("lane", "rows", "items", "bytes", "oldest (s)", ids=("lane",))
        for lane, stats in result["buffer"].items():
            lanes.add_row(*row(lane, stats["rows"], stats["items"], stats["bytes"], stats["oldest_age_s"]))
        out.print(lanes)
    elif command == "devices":
        devices = table(
            "device", "profile", "state", "battery %", "last seen (s)", "RSSI", "received", "delivered", ids=("device",)
        )
        for d in result:
            devices.add_row(
                *row(
                    d["device"],
                    d["profile"],
                    d["state"],
                    d["battery_pct"],
                    d["last_seen_s"],
                    d["rssi_dbm"],
                    d["received"],
                    d["delivered"],
                )
            )
        out.print(devices)
    elif command == "alarms" and isinstance(result, dict):  # ack or silence: the alarm, by the id it keeps
        out.print(Text(f"alarm {result['id']}: {result['state']}"))
    elif command == "alarms":
        alarms = table("id", "device", "condition", "priority", "state", "since (s)", ids=("id", "device"))
        for a in result:
            alarms.add_row(
                *row(
                    a["id"],
                    a.get("device", ""),
                    a.get("condition", ""),
                    a.get("priority", ""),
                    a["state"],
                    a.get("since_s"),
                )
            )
        out.print(alarms if result else Text("no active alarms"))
    elif command == "logs":
        for record in result:
            out.print(Text(json.dumps(record)), soft_wrap=True)
    elif command == "sync":
        out.print(Text(f"sync: {result['state']}; the uplink was woken to send what is buffered now"))
    else:
        out.print(Text(json.dumps(result)))


def _write_bundle(result: dict[str, Any], output: Path | None, *, as_json: bool) -> int:
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415
    import time  # noqa: PLC0415

    path = output or Path(f"iomt-diag-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
    files = {
        "config.json": json.dumps(result["config"], indent=2),
        "versions.json": json.dumps(result["versions"], indent=2),
        "status.json": json.dumps(result["status"], indent=2),
        "devices.json": json.dumps(result["devices"], indent=2),
        "logs.jsonl": "".join(json.dumps(_log_record(line)) + "\n" for line in result["logs"]),
        "metrics.txt": result["metrics"],
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"iomt-diag/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            archive.addfile(info, io.BytesIO(data))
    path.chmod(0o600)
    if as_json:
        print_json({"bundle": str(path), "files": sorted(files)})
    else:
        print(
            f"{path}: support bundle written (configuration without secrets or patient ids, versions, status, "
            "devices, recent logs, metrics)"
        )
    return EXIT_OK


def cmd_replay(path: Path, *, as_json: bool) -> int:
    import asyncio  # noqa: PLC0415

    from edge_ml.wfdb import WfdbError  # noqa: PLC0415
    from gateway.core.logs import configure_logging  # noqa: PLC0415
    from gateway.replay import replay  # noqa: PLC0415

    configure_logging("warning", "auto")
    try:
        result = asyncio.run(replay(path))
    except WfdbError as err:
        return _fail(f"{err.message} ({path}); give the record path without extension", as_json=as_json)
    if as_json:
        print_json(result)
    else:
        print(
            f"{result['record']}: {result.get('duration_s')} s, signals "
            + ", ".join(s["name"] for s in result.get("signals", []))
        )
        for alarm in result.get("alarms", []):
            print(
                f"  {alarm['t_s']:>8.1f} s  {alarm['state']:<8} {alarm['priority']:<6} {alarm['kind']:<13} "
                f"{alarm['condition']}"
            )
    return EXIT_OK if "error" not in result else EXIT_FAILURE


EXIT_INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the shell's code for a writer whose reader closed the pipe (128 + SIGPIPE)


def main(argv: list[str] | None = None) -> int:
    """The command line; Ctrl-C before a command has taken charge of it (e.g. while loading) ends quietly."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("iomt-gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): what it wanted it has; end quietly, as `cat` does (128 + SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as err:
        # Python wraps an interrupt that lands in some import machinery (a class body's __set_name__ raises
        # RuntimeError from it): still the user's Ctrl-C, not a crash.
        if not _caused_by_interrupt(err):
            raise
        print("iomt-gateway: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _caused_by_interrupt(err: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    requested = _requested(words)
    # A built-in command loads no plugin; a plugin's name loads that one; anything else (help, a typo) lists all.
    plugins = {} if requested in BUILT_IN else plugin_commands(only=requested)
    if requested not in BUILT_IN and not plugins:
        plugins = plugin_commands()
    args = _parser(plugins).parse_args(words)
    plugin = plugins.get(args.command)
    if plugin is not None:
        return plugin.run(args)
    if args.command == "run":
        return cmd_run(args.config, args.initial_config, args.safety_file)
    if args.command == "config":
        return cmd_config_validate(args.path, check_secrets=not args.no_secrets, as_json=args.json)
    if args.command == "keys":
        return cmd_keys(args.keys_command, args.path, getattr(args, "config", None), as_json=args.json)
    if args.command == "buffer":
        return cmd_buffer_stats(args.config, args.db, as_json=args.json)
    if args.command == "replay":
        return cmd_replay(args.path, as_json=args.json)
    if args.command == "audit":
        return cmd_audit_verify(args.config, as_json=args.json, expect_head=args.expect_head)
    if args.command == "devices" and args.action == "scan":
        return cmd_devices_scan(args.duration, virtual=args.virtual, health_only=not args.all, as_json=args.json)
    if args.command == "devices" and args.action == "add":
        return cmd_devices_add(args)
    if args.command in ("status", "devices", "alarms", "sync", "logs", "diag"):
        return cmd_admin(args)
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
