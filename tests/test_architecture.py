"""The import graph of ``src/headwater`` keeps the stages' order, as docs/architecture.md
draws it: a module imports only from its own layer or the layers below.

Every ``import`` counts, inside functions and under ``TYPE_CHECKING`` too: a lazy or
type-only import is still an edge a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import headwater

PACKAGE = Path(headwater.__file__).parent

#: Lowest first. A module may import from its own layer and those before it.
LAYERS = (
    "core",  # errors, time, JSON, secrets, names, the shared shapes
    "store",  # the Engine interface, the event tables, the engines
    "collect",  # the tracking API
    "state",  # runs, intervals, watermarks, leases, deliveries
    "process",  # pipelines
    "deliver",  # sinks and the deliverer
    "serve",  # the read API
    "config",  # headwater.toml, composed of each stage's settings
    "dashboard",  # the admin pages: given the runtime's operations, never importing it
    "runtime",  # builds the parts from the project and runs them
    "cli",  # the headwater command
)

#: Narrower rules than the layers: (importer prefix, imported prefix) pairs that must not
#: exist even though the imported module is lower.
FORBIDDEN = (
    # A stage takes its engine as an Engine: only the store's own modules, the runtime
    # (which opens it) and the PostgreSQL sink (which shares the PostgreSQL adapters)
    # name a concrete engine.
    *(
        (stage, engine)
        for stage in (
            "headwater.collect",
            "headwater.state",
            "headwater.process",
            "headwater.serve",
        )
        for engine in (
            "headwater.store.duckdb",
            "headwater.store.postgres",
            "headwater.store.spark",
            "headwater.store.bigquery",
        )
    ),
    # Delivery knows outputs (core.types.Output), not pipelines.
    ("headwater.deliver", "headwater.process"),
    # The read API reads through its own Reader protocol; who serves what is the runtime's.
    ("headwater.serve", "headwater.deliver"),
    ("headwater.serve", "headwater.process"),
)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] not in (*LAYERS, "__main__"):
        return 0  # the package itself, and what it defines (its version)
    if parts[1] == "__main__":
        return len(LAYERS)
    return LAYERS.index(parts[1])


def _module(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every ``headwater`` module ``path`` imports, with the line."""
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((base, node.lineno))
            # ``from headwater.process import render`` imports the module render.
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return [(name, line) for name, line in found if name.split(".")[0] == "headwater"]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_later_stage(path: Path) -> None:
    module = _module(path)
    mine = _layer(module)
    upward = [
        f"line {line}: {name} ({LAYERS[_layer(name)]} comes after {LAYERS[mine]})"
        for name, line in _imports(path, module)
        if _layer(name) > mine
    ]
    assert not upward, f"{module} imports a later stage:\n" + "\n".join(upward)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_takes_a_forbidden_shortcut(path: Path) -> None:
    module = _module(path)
    found = [
        f"line {line}: {name}"
        for name, line in _imports(path, module)
        for importer, imported in FORBIDDEN
        if _within(module, importer) and _within(name, imported)
    ]
    assert not found, f"{module} imports what its stage must not:\n" + "\n".join(found)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_lint_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself: an upward import in a module is found, lazy or not."""
    fake = PACKAGE / "process" / "service.py"
    source = "def f():\n    from headwater.runtime.workspace import Workspace\n"
    written = tmp_path / "service.py"
    written.write_text(source)
    names = [name for name, _ in _imports(written, _module(fake))]
    assert "headwater.runtime.workspace" in names
    assert _layer("headwater.runtime.workspace") > _layer(_module(fake))
