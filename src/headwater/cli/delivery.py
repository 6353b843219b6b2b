"""Deliveries: dead letters sent again."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from headwater.cli.context import operation
from headwater.cli.output import console


def replay(
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's.")] = None,
    sink: Annotated[str | None, typer.Option(help="Only this sink's.")] = None,
    id: Annotated[list[int] | None, typer.Option("--id", help="Only these dead letters.")] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List them; send nothing.")] = False,
) -> None:
    """Send dead letters again, once what made them fail is fixed.

    A webhook batch goes again as it was, with its idempotency key; a file or
    PostgreSQL delivery is made again from the pipeline's output.
    """
    args: dict[str, Any] = {"pipeline": pipeline, "sink": sink, "ids": id or []}
    if list_only:
        letters = operation("dead_letters", args)
        view = Table(header_style="bold")
        for column in ("id", "pipeline", "sink", "interval", "batch", "rows", "attempts",
                       "reason"):  # fmt: skip
            view.add_column(column, overflow="fold")
        for d in letters:
            view.add_row(
                str(d["id"]), d["pipeline"], d["sink"], d["interval"]["start"][:16],
                "all" if d["batch"] is None else str(d["batch"]), str(d["rows"]),
                str(d["attempts"]), Text(d["reason"]),
            )  # fmt: skip
        console.print(view)
        return
    results = operation("replay", args)
    if not results:
        console.print("No dead letters to replay.")
        return
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        if r["status"] in ("failed", "dead"):
            console.print(f"[red]Dead letter {r['id']} failed again[/red]: {escape(r['error'])}",
                          highlight=False)  # fmt: skip
    console.print("Replayed: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if counts.get("failed") or counts.get("dead"):
        raise typer.Exit(1)
