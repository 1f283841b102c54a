"""Configuration documents for tests: a small TOML writer for the shapes the gateway's config uses."""

from __future__ import annotations

from typing import Any


def to_toml(data: dict[str, Any]) -> str:
    """A tiny TOML writer for the shapes our config uses (tables, arrays of tables, scalars)."""
    lines: list[str] = []

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return repr(value)

    def table(prefix: str, body: dict[str, Any], array: bool = False) -> None:
        lines.append(f"[[{prefix}]]" if array else f"[{prefix}]")
        nested: list[tuple[str, Any, bool]] = []
        for key, value in body.items():
            if isinstance(value, dict):
                nested.append((key, value, False))
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                nested.append((key, value, True))
            else:
                lines.append(f"{key} = {scalar(value)}")
        for key, value, is_array in nested:
            if is_array:
                for item in value:
                    table(f"{prefix}.{key}", item, array=True)
            else:
                table(f"{prefix}.{key}", value)

    for key, value in data.items():
        if isinstance(value, list):
            for item in value:
                table(key, item, array=True)
        else:
            table(key, value)
    return "\n".join(lines) + "\n"
