"""Configuration: every kind of bad config is a one-line error naming the key, exit code 2, nothing started."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import DEFAULT_CONFIG_PATH, load_config, parse_config
from gateway.core.errors import ConfigError
from hil.demo import DEMO_CONFIG
from tests.conftest import config_dict
from tests.support.configs import to_toml


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(to_toml(data))
    return path


def test_toml_writer_round_trips(tmp_path: Path) -> None:
    data = config_dict(tmp_path / "state", 1883)
    assert tomllib.loads(to_toml(data)) == data


def test_shipped_configs_are_valid() -> None:
    load_config(DEFAULT_CONFIG_PATH, check_secrets=False)
    load_config(DEMO_CONFIG, check_secrets=False)


def test_valid_config_validates_with_exit_0(tmp_path: Path) -> None:
    path = _write(tmp_path, config_dict(tmp_path / "state", 1883))
    result = _run("config", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def _loose_key(tmp_path: Path, data: dict[str, Any]) -> None:
    loose = tmp_path / "loose.key"
    loose.write_bytes((tmp_path / "state" / "buffer.key").read_bytes())
    loose.chmod(0o644)
    data["buffer"]["key_file"] = str(loose)


def _garbage_tls(tmp_path: Path, data: dict[str, Any]) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    data["mqtt"]["host"] = "broker.example.org"
    data["mqtt"].pop("allow_plaintext_loopback")
    data["mqtt"]["tls"] = {
        "ca_file": str(tmp_path / "ca.pem"),
        "cert_file": str(tmp_path / "cert.pem"),
        "key_file": str(tmp_path / "key.pem"),
    }


def _mutations(tmp_path: Path) -> dict[str, tuple[dict[str, Any], str]]:
    base = config_dict(tmp_path / "state", 1883)

    def changed(fn: Any) -> dict[str, Any]:
        data = config_dict(tmp_path / "state", 1883)
        fn(data)
        return data

    return {
        "missing key": (changed(lambda d: d["gateway"].pop("id")), "gateway.id: missing required key"),
        "wrong type": (changed(lambda d: d["mqtt"].__setitem__("port", "1883")), "mqtt.port: got a string"),
        "out of range": (changed(lambda d: d["mqtt"].__setitem__("port", 70000)), "mqtt.port: got int 70000"),
        "unknown key": (
            changed(lambda d: d["buffer"].__setitem__("flush_intervall_ms", 5)),
            "buffer.flush_intervall_ms: unknown key",
        ),
        "unknown section": (changed(lambda d: d.__setitem__("cloud", {"url": "x"})), "cloud: unknown key"),
        "missing secret file": (
            changed(lambda d: d["buffer"].__setitem__("key_file", str(tmp_path / "nope.key"))),
            "buffer.key_file: secret file not found",
        ),
        "bad device entry": (
            changed(lambda d: d["devices"][1].__setitem__("profile", "toaster")),
            "devices[1].profile: got a string of length 7",
        ),
        "plaintext to a remote broker": (
            changed(lambda d: d["mqtt"].__setitem__("host", "broker.example.org")),
            "mqtt: allow_plaintext_loopback only permits a loopback host",
        ),
        "unknown quantity in an alarm limit": (
            changed(lambda d: d["alarms"]["limits"][0].__setitem__("quantity", "SPO2")),
            "alarms.limits[0].quantity",
        ),
        "key file readable by others": (
            changed(lambda d: _loose_key(tmp_path, d)),
            "buffer.key_file: buffer key file is accessible to group or others",
        ),
        "TLS material that does not load": (
            changed(lambda d: _garbage_tls(tmp_path, d)),
            "mqtt.tls: cannot load the CA, certificate or key",
        ),
        "_base_is_valid": (base, ""),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "missing key",
        "wrong type",
        "out of range",
        "unknown key",
        "unknown section",
        "missing secret file",
        "bad device entry",
        "plaintext to a remote broker",
        "unknown quantity in an alarm limit",
        "key file readable by others",
        "TLS material that does not load",
    ],
)
def test_bad_config_is_one_line_naming_the_key_exit_2_and_nothing_started(tmp_path: Path, kind: str) -> None:
    data, expected = _mutations(tmp_path)[kind]
    path = _write(tmp_path, data)
    for command in (["config", "validate", str(path)], ["run", "--config", str(path)]):
        result = _run(*command)
        assert result.returncode == 2, (kind, command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("iomt-gateway: config error: ")
        assert expected in lines[0], (kind, lines[0])
        assert result.stdout == ""
    # No daemon started: it never created its buffer.
    assert not (tmp_path / "state" / "buffer.sqlite3").exists()


def test_error_never_echoes_a_string_value(tmp_path: Path) -> None:
    data = config_dict(tmp_path / "state", 1883)
    data["devices"][0]["patient"] = "Jane Doe 1970-01-01"  # not a pseudonym: spaces are refused
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "Jane" not in err.value.message
    assert "devices[0].patient" in err.value.message


def test_credential_reference_resolves_in_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = config_dict(tmp_path / "state", 1883)
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "buffer-key").write_bytes((tmp_path / "state" / "buffer.key").read_bytes())
    data["buffer"]["key_file"] = "credential:buffer-key"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    config = parse_config(data)
    assert config.secret_path(config.buffer.key_file) == credentials / "buffer-key"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
        parse_config(data)


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[gateway\nid = 1\n")
    result = _run("config", "validate", str(path))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    result = _run("config", "validate", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr
