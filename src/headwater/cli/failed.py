"""``headwater failed``: refused events grouped by why; fixed and replayed."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from headwater.cli.context import operation
from headwater.cli.output import console
from headwater.core import jsonio


def failed(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
) -> None:
    """List failed events by code, field and source: how many, first and last arrival, the
    message, a sample payload, and how many were replayed.

    Example: headwater failed
    """
    if ctx.invoked_subcommand is not None:
        return
    groups = operation("failed", {})
    if as_json:
        sys.stdout.write(jsonio.dumps_str(groups) + "\n")
        return
    if not groups:
        console.print("No failed events.")
        return
    view = Table(header_style="bold")
    for column in ("code", "field", "source", "events", "replayed", "first", "last", "message",
                   "sample"):  # fmt: skip
        view.add_column(column, overflow="fold")
    for g in groups:
        view.add_row(
            g["code"], _text(g["field"]), _text(g["source"]), str(g["events"]),
            str(g["replayed"]), _when(g["first_received_at"]), _when(g["last_received_at"]),
            Text(g["message"]), _text(g["sample"]),
        )  # fmt: skip
    console.print(view)


def replay(
    code: Annotated[str | None, typer.Option(help="Only failed events of this code.")] = None,
    where: Annotated[
        str | None,
        typer.Option(help="Only those for which this SQL predicate over their row is true."),
    ] = None,
    fix: Annotated[
        str | None,
        typer.Option(help="A SQL expression over the row that gives the payload to replay."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would pass and what not; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Validate failed events again, each payload rewritten by --fix, and store those that
    pass (once: a replayed event is marked, and replaying it again adds nothing).

    Example: headwater failed replay --code missing_identity
    --fix "REPLACE(payload, '\\"user_id\\"', '\\"userId\\"')"
    """
    args: dict[str, Any] = {"code": code, "where": where, "fix": fix, "dry_run": dry_run}
    outcome = operation("failed_replay", args)
    if as_json:
        sys.stdout.write(jsonio.dumps_str(outcome) + "\n")
    else:
        _print(outcome)
    if outcome["still_failing"] and not dry_run:
        raise typer.Exit(1)


def _print(outcome: dict[str, Any]) -> None:
    selected, passed = outcome["selected"], outcome["passed"]
    if not selected:
        console.print("No failed events to replay (none chosen, or all replayed already).")
        return
    if outcome["dry_run"]:
        console.print(f"Would replay {passed} of {selected} failed events "
                      f"({outcome['events']} events); nothing written.")  # fmt: skip
    else:
        console.print(f"Replayed {passed} of {selected} failed events: {outcome['stored']} "
                      f"events stored, {outcome['duplicates']} already stored.")  # fmt: skip
    if outcome["suppressed"]:
        console.print(f"{outcome['suppressed']} events of erased ids not stored "
                      "(suppressed, as at ingest).")  # fmt: skip
    failing = outcome["still_failing"]
    if not failing:
        return
    view = Table(title="Still failing", header_style="bold")
    for column in ("code", "field", "source", "events", "message", "sample", "ids"):
        view.add_column(column, overflow="fold")
    for g in failing:
        view.add_row(g["code"], _text(g["field"]), _text(g["source"]), str(g["events"]),
                     Text(g["message"]), _text(g["sample"]),
                     Text(", ".join(g.get("ids") or [])))  # fmt: skip
    console.print(view)


def _text(value: str | None) -> Text:
    return Text("NULL", style="dim") if value is None else Text(value)


def _when(value: str | None) -> str:
    return "" if value is None else str(value)[:19].replace("T", " ")
