"""Erasure: a person's data deleted everywhere it went, with a receipt; suppression at ingest."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from headwater.cli.context import operation
from headwater.cli.output import console
from headwater.core.errors import ConfigError

#: A line of ``--file`` naming an anonymous id; any other line is a user id.
ANONYMOUS_PREFIX = "anonymous_id:"


def erase(
    user_id: Annotated[
        list[str] | None, typer.Option("--user-id", help="A userId to erase (repeatable).")
    ] = None,
    anonymous_id: Annotated[
        list[str] | None,
        typer.Option("--anonymous-id", help="An anonymousId to erase (repeatable)."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Ids, one per line: a user id, or `anonymous_id:ID`; blank lines and lines "
            "starting with # are skipped.",
        ),
    ] = None,
    lift: Annotated[
        bool, typer.Option("--lift", help="Stop dropping these ids' new events; erase nothing.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish every erasure still owed (a sink was down).")
    ] = False,
    receipt: Annotated[
        int | None, typer.Option("--receipt", help="Show the receipt of erasure ID.")
    ] = None,
) -> None:
    """Delete a person's rows everywhere: events, failed events, pipeline outputs with
    person columns, delivered files, PostgreSQL sinks; webhooks get a signed notice, and
    aggregates that counted them are computed again. Their new events are dropped at
    ingest until `--lift`."""
    if receipt is not None:
        _print_receipt(operation("erasure", {"id": receipt}))
        return
    users, anonymous = list(user_id or []), list(anonymous_id or [])
    if file is not None:
        more_users, more_anonymous = read_ids(file)
        users += more_users
        anonymous += more_anonymous
    args: dict[str, Any] = {"user_ids": users, "anonymous_ids": anonymous,
                            "by": getpass.getuser()}  # fmt: skip
    if lift:
        if not (users or anonymous):
            raise ConfigError("--lift needs the ids to lift", hint="e.g. --lift --user-id U")
        lifted = operation("lift", args)["lifted"]
        console.print(
            f"Lifted {lifted} suppressed id(s): their new events are stored again once each "
            "collector takes the list (it looks every 2 seconds)."
        )
        return
    if not (users or anonymous or resume):
        raise ConfigError(
            "name whom to erase", hint="--user-id U, --anonymous-id A or --file ids.txt"
        )
    receipts = operation("erase", {**args, "resume": resume}, progress=True)
    if not receipts:
        console.print("No erasure is owed.")
    for each in receipts:
        _print_receipt(each)
    if any(r["pending"] for r in receipts):
        raise typer.Exit(1)


def read_ids(path: Path) -> tuple[list[str], list[str]]:
    """User ids and anonymous ids of an ids file (see ``--file``)."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", hint="give a readable file"
        ) from None
    users: list[str] = []
    anonymous: list[str] = []
    for line in text.splitlines():
        value = line.strip()
        if not value or value.startswith("#"):
            continue
        if value.startswith(ANONYMOUS_PREFIX):
            anonymous.append(value.removeprefix(ANONYMOUS_PREFIX).strip())
        else:
            users.append(value)
    return users, anonymous


def _print_receipt(receipt: dict[str, Any]) -> None:
    ids = ", ".join(f"{n} {kind}" for kind, n in receipt["ids"].items() if n)
    console.print(
        f"Erasure {receipt['id']} of {ids}, asked by {escape(receipt['requested_by'])} at "
        f"{receipt['requested_at'][:19]}: {receipt['status']}", highlight=False,
    )  # fmt: skip
    view = Table(header_style="bold")
    for column in ("place", "rows", "status", "done at", "last error"):
        view.add_column(column, overflow="fold")
    for p in receipt["places"]:
        view.add_row(p["place"], "" if p["rows"] is None else str(p["rows"]), p["status"],
                     (p["done_at"] or "")[:19], Text(p["last_error"] or ""))  # fmt: skip
    console.print(view)
    for p in receipt["places"]:
        for path in p.get("files", []):
            console.print(f"{p['place']}: rewrote {escape(path)}", highlight=False)
    if receipt["pending"]:
        console.print(
            f"Still owed: {', '.join(receipt['pending'])}; retried with backoff by "
            "`headwater up`, or now by `headwater erase --resume`."
        )


def print_status(report: dict[str, Any]) -> None:
    """``headwater status``'s lines on erasures and suppression."""
    for erasure in report["pending"]:
        owed = ", ".join(p["place"] for p in erasure["owed"])
        console.print(f"[yellow]Erasure {erasure['id']} still owes[/yellow] {owed}",
                      highlight=False)  # fmt: skip
    if report["suppressed_ids"] or report["suppressed_events"]:
        console.print(
            f"Suppressed: {report['suppressed_ids']} erased id(s); "
            f"{report['suppressed_events']} new event(s) of them dropped at ingest"
        )
    for flag in report.get("undeclared", []):
        console.print(
            f"[yellow]{flag['pipeline']}[/yellow] reads person data and outputs "
            f"{', '.join(flag['columns'])} without declaring them: an erasure leaves its rows; "
            f'add person = {flag["suggested"]} to its header', highlight=False,
        )  # fmt: skip
