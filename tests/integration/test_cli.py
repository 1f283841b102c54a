"""The command line as a technician and a script meet it, without a running gateway: every command that prints
data has --json and prints JSON objects (failures included), piped tables never cut an identifier, tables on a
terminal fit its width, and IOMT_GATEWAY_SOCKET reaches every admin command."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from gateway.cli import SOCKET_ENV, _parser, main, plugin_commands
from gateway.terminal import row, table
from tests.conftest import config_dict
from tests.support.configs import to_toml

ADMIN_COMMANDS = (["status"], ["devices"], ["alarms"], ["alarms", "ack", "0" * 32], ["sync", "now"], ["logs"])


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # argparse has no public walk
    if not subs:
        return [(path, parser)]
    return [leaf for name, child in subs[0].choices.items() for leaf in _leaves(child, (*path, name))]


DAEMONS = {("run",), ("bridge",)}  # long-running workers: their output is the log, JSON lines off a TTY


def test_every_command_that_prints_data_has_json() -> None:
    missing = [
        " ".join(path)
        for path, parser in _leaves(_parser(plugin_commands()))
        if path not in DAEMONS and not any("--json" in a.option_strings for a in parser._actions)
    ]
    assert missing == []


def _json_objects(out: str) -> Any:
    """The one JSON document printed: an object or a list of objects, no string holding JSON, no repr."""
    document = json.loads(out)
    items = document if isinstance(document, list) else [document]
    assert all(isinstance(item, dict) for item in items), document

    def walk(value: Any) -> None:
        if isinstance(value, str):
            assert not value.lstrip().startswith(("{", "[")), f"a string of JSON: {value[:80]}"
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(document)
    return document


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, _json_objects(out), err


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    data = config_dict(tmp_path / "state", 1883)
    data["admin"] = {"socket": str(tmp_path / "absent.sock")}
    path = tmp_path / "gateway.toml"
    path.write_text(to_toml(data))
    return path


def test_json_everywhere_without_a_gateway(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, config_path: Path
) -> None:
    code, doc, _ = _run(capsys, "config", "validate", str(config_path), "--json")
    assert code == 0 and doc["valid"] is True
    code, doc, err = _run(capsys, "config", "validate", str(tmp_path / "nope.toml"), "--json")
    assert code == 2 and "error" in doc and err

    key = tmp_path / "k"
    assert _run(capsys, "keys", "generate", str(key), "--json")[1]["generated"] is True
    assert _run(capsys, "keys", "generate", str(key), "--json")[:2] == (
        1,
        {"error": f"{key} exists; refusing to overwrite a key"},
    )
    added = _run(capsys, "keys", "rotate", str(key), "--json")[1]["added"]
    assert isinstance(added, str) and added

    code, doc, _ = _run(capsys, "buffer", "stats", "--db", str(tmp_path / "none.db"), "--json")
    assert code == 1 and "error" in doc
    code, doc, _ = _run(capsys, "audit", "verify", "--config", str(config_path), "--json")
    assert code == 1 and "no command store" in doc["error"]
    code, doc, _ = _run(
        capsys, "devices", "add", "--id", "ox-9", "--address", "C0:00:00:00:00:09", "--profile", "pulse_oximeter",
        "--config", str(config_path), "--json",
    )  # fmt: skip
    assert code == 0 and doc["added"] == "ox-9"
    for command in ADMIN_COMMANDS:  # no gateway: the failure is JSON too, and names the socket it tried
        code, doc, err = _run(capsys, *command, "--config", str(config_path), "--json")
        assert code == 1 and "absent.sock" in doc["error"] and "absent.sock" in err, command


def test_the_socket_variable_reaches_every_admin_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SOCKET_ENV, str(tmp_path / "from-env.sock"))
    for command in ADMIN_COMMANDS:
        code, doc, _ = _run(capsys, *command, "--json")
        assert code == 1 and "from-env.sock" in doc["error"], command
        # An explicit --socket or --config still wins over the variable.
        code, doc, _ = _run(capsys, *command, "--socket", str(tmp_path / "flag.sock"), "--json")
        assert "flag.sock" in doc["error"], command


def test_piped_scan_prints_every_address_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "30")  # a narrow terminal size must not cut what is piped
    code, found, _ = _run(capsys, "devices", "scan", "--virtual", "--duration", "0.6", "--json")
    assert code == 0 and found and all(isinstance(f["address"], str) for f in found)
    assert main(["devices", "scan", "--virtual", "--duration", "0.6"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for entry in found:
        assert entry["address"] in lines, out
        assert (entry["profile"] or "-") in lines[entry["address"]].split(), out
    assert "…" not in out


def test_tables_on_a_terminal_fit_its_width_and_keep_identifiers_whole() -> None:
    alarm_id = "0190a1b2c3d4e5f60718293a4b5c6d7e"
    alarms = table("id", "device", "condition", "priority", "state", "since (s)", ids=("id", "device"))
    alarms.add_row(*row(alarm_id, "bedside-monitor-1", "MDC_PRESS_BLD_ART_ABP_SYS.high", "medium", "acknowledged", 2))
    alarms.add_row(*row("[bold]x[/]", "ins-1", "device.occlusion", "high", "active", None))
    for width in (80, 60):
        terminal = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
        terminal.print(alarms)
        text = terminal.file.getvalue()  # type: ignore[attr-defined]
        assert all(len(line) <= width for line in text.splitlines()), text
        assert alarm_id in text and "bedside-monitor-1" in text and "…" not in text
        assert "[bold]x[/]" in text, "dynamic text is never read as markup"


def test_a_bench_whose_folder_is_missing_or_full_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A technician's bench on a box whose state disk is full (or $IOMT_BENCH_DIR mistyped) got a traceback: an
    OSError while the bench sets up is one line naming the place, and exit 1."""
    monkeypatch.setenv("IOMT_BENCH_DIR", str(tmp_path / "no-such-folder"))
    assert main(["bench", "pipeline", "--json"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("iomt-gateway: bench pipeline: ") and "no-such-folder" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
