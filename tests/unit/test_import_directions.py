"""The layers import in one direction only, and no module imports itself back through others.

    gateway.core            the model, errors, nomenclature, logs, wire format, counters: imports nothing else
    drivers, edge_ml,       stand on the core only; what they need from above (health, clocks, storage) they
    cloud_sync              are given as callables or Protocols
    gateway (the rest)      the daemon: assembles the layers below it
    hil                     rigs (simulators, demo, benchmarks) import the product, never the reverse

Every import counts, lazy ones and those under TYPE_CHECKING included: a cycle hidden from the interpreter is
still a cycle for the reader.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "drivers", "edge_ml", "cloud_sync", "hil")

# Which layers each layer may import (its own layer always).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "drivers": frozenset({"core"}),
    "edge_ml": frozenset({"core"}),
    "cloud_sync": frozenset({"core"}),
    "gateway": frozenset({"core", "drivers", "edge_ml", "cloud_sync"}),
    "hil": frozenset({"core", "drivers", "edge_ml", "cloud_sync", "gateway"}),
}


def layer(module: str) -> str:
    if module == "gateway.core" or module.startswith("gateway.core."):
        return "core"
    return module.split(".", maxsplit=1)[0]


def product_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project modules a file imports, resolved to modules (`from pkg import mod` names pkg.mod)."""
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield sub if sub in known else node.module


def graph() -> dict[str, set[str]]:
    known = product_modules()
    return {name: {m for m in imports_of(path, known) if m in known} for name, path in known.items()}


def test_layers_import_only_downwards() -> None:
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if layer(target) != layer(source) and layer(target) not in ALLOWED[layer(source)]
    )
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_rules_see_the_whole_product() -> None:
    modules = product_modules()
    assert {layer(m) for m in modules} == set(ALLOWED)
    assert "gateway.daemon" in modules
    assert "drivers.ble" in graph()["hil.ble_sim"] or any(m.startswith("drivers.") for m in graph()["hil.ble_sim"])


def test_the_daemon_imports_only_what_its_configuration_uses() -> None:
    """A gateway without waveform devices, metrics or rigs loads none of their libraries (bench footprint)."""
    heavy = ("numpy", "scipy", "ai_edge_litert", "pydicom", "pynetdicom", "prometheus_client", "bumble", "amqtt", "hil")
    code = (
        "import sys, gateway.cli, gateway.runner, gateway.daemon; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
