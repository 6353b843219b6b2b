"""``headwater models``: every model version seen, and the intervals each scored."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from headwater.cli.context import operation
from headwater.cli.output import console, print_error
from headwater.core import jsonio


def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the registry as JSON.")] = False,
) -> None:
    """List the models of headwater.toml and every version seen: its hash, size, where it
    came from, when it was first used, and the intervals it scored, by pipeline.

    Example: headwater models
    """
    report = operation("models", {})
    if as_json:
        sys.stdout.write(jsonio.dumps_str(report) + "\n")
        return
    declared: dict[str, dict[str, Any]] = report["declared"]
    view = Table(header_style="bold")
    for column in ("model", "version", "now", "size", "first used", "scored", "source"):
        view.add_column(column, overflow="fold")
    seen: set[tuple[str, str]] = set()
    for row in report["versions"]:
        seen.add((row["model"], row["version"]))
        view.add_row(
            row["model"],
            row["version"],
            _role(declared.get(row["model"]), row["version"]),
            f"{row['size']:,} B",
            str(row["first_used"])[:19].replace("T", " "),
            _scored(row["scored"]),
            row["source"],
        )
    for name, state in sorted(declared.items()):
        for role in ("live", "shadow"):
            version = state[role]
            if version is not None and (name, version) not in seen:
                view.add_row(name, version, role, "", "not used yet", "", "")
    console.print(view)
    for name, state in sorted(declared.items()):
        if state["error"]:
            print_error(f"model {name} does not load: {state['error']}", state["hint"])


def _role(state: dict[str, Any] | None, version: str) -> str:
    """Whether ``version`` is the model's live or shadow version now, or neither."""
    if state is None:
        return "not declared"
    if state["live"] == version:
        return "live"
    if state["shadow"] == version:
        return "shadow"
    return "replaced"


def _scored(scored: list[dict[str, Any]]) -> str:
    """``pipeline: N intervals (first .. last)`` for each pipeline, shadow ones marked."""
    if not scored:
        return "0 intervals"
    parts = []
    for use in scored:
        span = f"{str(use['first'])[:10]} .. {str(use['last'])[:10]}" if use["first"] else ""
        tag = " (shadow)" if use["shadow"] else ""
        parts.append(f"{use['pipeline']}{tag}: {use['intervals']} intervals {span}".rstrip())
    return "\n".join(parts)
