"""Pipelines: run them, fill their history, see what they did."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from headwater.cli.context import operation, options
from headwater.cli.options import End, Start
from headwater.cli.output import console, print_error
from headwater.core.errors import ConfigError
from headwater.core.logs import fields

log = logging.getLogger(__name__)


def run(
    name: Annotated[str | None, typer.Argument(help="Pipeline to run.")] = None,
    start: Start = None,
    end: End = None,
    due: Annotated[bool, typer.Option("--due", help="Run every pipeline's due intervals.")] = False,
) -> None:
    """Run a pipeline's intervals, or with --due, everything that is due (for cron).

    Exits 1, naming them, when an interval failed to run or to be delivered.

    Example: headwater run daily_active_users --start 2026-11-01 --end 2026-11-02
    """
    if due == (name is not None):
        raise ConfigError(
            "name one pipeline, or pass --due", hint="headwater run NAME | headwater run --due"
        )
    if due:
        answer = operation("due", {"deliver": True}, progress=True)
    else:
        args = {"name": name, "start": start, "end": end, "deliver": True}
        answer = operation("run", args, progress=True)
    results = answer["runs"]
    rows = sum(r["rows_written"] for r in results)
    if not results and not answer["failures"]:
        console.print("Nothing is due; `headwater status` shows each pipeline's next run.")
    else:
        console.print(
            f"Ran {len(results)} interval{'s' if len(results) != 1 else ''}; {rows} rows written."
        )
    for r in results:
        if not r.get("recorded", True):
            console.print(
                f"{r['pipeline']} {r['interval']['start'][:16]}: the interval has not ended, so "
                "this was a preview: published, but not recorded done or delivered; it runs "
                "again once it is whole.",
                highlight=False,
            )
    _print_deliveries(answer["deliveries"])
    _exit_on_failures(answer)


def _print_deliveries(deliveries: list[dict[str, Any]]) -> None:
    """One line per sink: intervals and rows delivered, and what failed or became a dead
    letter. Rows of an interval written in part (a dead batch, a stop) count too."""
    done: dict[tuple[str, str], list[int]] = {}
    for d in deliveries:
        if d["status"] == "delivered" or d["rows"]:
            tally = done.setdefault((d["pipeline"], d["sink"]), [0, 0, 0])
            tally[0 if d["status"] == "delivered" else 2] += 1
            tally[1] += d["rows"]
    for (pipeline, sink), (count, rows, partly) in done.items():
        plural = "s" if count != 1 else ""
        more = f" (and {partly} in part)" if partly else ""
        console.print(
            f"Delivered {pipeline} to {sink}: {count} interval{plural}, {rows} rows.{more}"
        )
    for d in deliveries:
        label = f"{d['pipeline']} {d['interval']['start'][:16]} to {d['sink']}"
        if d["status"] == "failed":
            when = (d["next_attempt_at"] or "")[:19]
            console.print(
                f"[yellow]Delivery of {label} failed[/yellow]: {escape(d['error'] or '')}; "
                f"tried again from {when} by `headwater up` or `headwater run --due`.",
                highlight=False,
            )
        elif d["status"] == "dead":
            console.print(
                f"[red]Dead letter[/red] for {label}: {escape(d['error'] or '')}; "
                "fix it, then `headwater replay`.",
                highlight=False,
            )


def _exit_on_failures(answer: dict[str, Any]) -> None:
    """Exit 1, naming each interval that failed to run or to be delivered, when any did:
    cron and CI see a failure by the exit code."""
    problems = [
        (
            f"run of {f['pipeline']} {f['interval']['start'][:16]} failed: {f['error']}",
            f.get("hint"),
            {"pipeline": f["pipeline"], "interval_start": f["interval"]["start"]},
        )
        for f in answer["failures"]
    ]
    problems += [
        (
            f"delivery of {d['pipeline']} {d['interval']['start'][:16]} to {d['sink']} "
            f"{'became a dead letter' if d['status'] == 'dead' else 'failed'}: {d['error']}",
            "fix it, then `headwater replay`" if d["status"] == "dead" else None,
            {
                "pipeline": d["pipeline"],
                "sink": d["sink"],
                "interval_start": d["interval"]["start"],
            },
        )
        for d in answer["deliveries"]
        if d["status"] in ("failed", "dead")
    ]
    if not problems:
        return
    for message, hint, where in problems:
        _failure(message, hint, where)
    runs, sent = len(answer["failures"]), len(problems) - len(answer["failures"])
    parts = [f"{runs} run{'s' if runs != 1 else ''}"] if runs else []
    parts += [f"{sent} deliver{'ies' if sent != 1 else 'y'}"] if sent else []
    _failure(f"{' and '.join(parts)} failed", None, {"failed_runs": runs,
                   "failed_deliveries": sent})  # fmt: skip
    raise typer.Exit(1)


def _failure(message: str, hint: str | None, where: dict[str, object]) -> None:
    """A failure the command went on past, on stderr: a log record with its fields when logs
    are JSON lines (so a collector keeps it), otherwise as errors read on a terminal."""
    if options.log_format == "json":
        text = f"{message} (fix: {hint})" if hint else message
        log.error(text, extra=fields(**where, **({"hint": hint} if hint else {})))
    else:
        print_error(message, hint)


def backfill(
    name: Annotated[str, typer.Argument(help="Pipeline to fill (and what it reads).")],
    start: Annotated[str, typer.Option(help="Start of the history to fill (UTC).")],
    end: Annotated[str, typer.Option(help="End of the history to fill (exclusive).")],
) -> None:
    """Fill history for a pipeline and its inputs, in dependency order; resumable.

    Exits 1, naming them, when an interval failed to run or to be delivered.

    Example: headwater backfill daily_active_users --start 2026-10-01 --end 2026-11-01
    """
    args = {"name": name, "start": start, "end": end, "deliver": True}
    answer = operation("backfill", args, progress=True)
    rows = sum(r["rows_written"] for r in answer["runs"])
    console.print(f"Backfilled {len(answer['runs'])} intervals; {rows} rows written.")
    _print_deliveries(answer["deliveries"])
    _exit_on_failures(answer)


def status() -> None:
    """Every pipeline: schedule, last run, intervals done and missing, next run, last error."""
    report = operation("status", {})
    view = Table(header_style="bold")
    for column in (
        "pipeline",
        "kind",
        "schedule",
        "last run",
        "done",
        "missing",
        "stale",
        "next run",
        "last error",
    ):
        view.add_column(column, overflow="fold")
    for row in report:
        kind = row["kind"] + (f" ({row['time']})" if row["time"] else "")
        last = f"{(row['last_run'] or '')[:19]} {row['last_status'] or 'never'}".strip()
        stale = str(row["intervals_stale"])
        if row["intervals_changed"]:
            stale += f" + {row['intervals_changed']} changed"
        view.add_row(
            row["name"], kind, row["schedule"], last, str(row["intervals_done"]),
            str(row["intervals_missing"]), stale, (row["next_run"] or "")[:16],
            Text(row["last_error"] or ""),
        )  # fmt: skip
    console.print(view)
    for row in report:
        if row.get("bytes_per_run") is not None:
            console.print(f"{row['name']}: one interval bills about {row['bytes_per_run']:,} "
                          "bytes (dry run)")  # fmt: skip
    for row in report:
        if row["intervals_changed"]:
            console.print(
                f"{row['name']}: {row['intervals_changed']} intervals were made by an older "
                f"version; `headwater run {row['name']} --start … --end …` rebuilds them."
            )
    deliveries = operation("deliveries", {})
    if deliveries:
        view = Table(header_style="bold", title="Deliveries (intervals)")
        for column in ("pipeline", "sink", "delivered", "pending", "failed", "dead letters",
                       "last error"):  # fmt: skip
            view.add_column(column, overflow="fold")
        for d in deliveries:
            view.add_row(
                d["pipeline"], d["sink"], str(d["delivered"]), str(d["pending"]),
                str(d["failed"]), str(d["dead_letters"]), Text(d["last_error"] or ""),
            )  # fmt: skip
        console.print(view)
        if any(d["dead_letters"] for d in deliveries):
            console.print("Dead letters: `headwater replay --list` shows them; `headwater replay` "
                          "sends them again.")  # fmt: skip


def pipelines() -> None:
    """List pipelines: kind, schedule, time and dependencies."""
    report = operation("list", {})
    view = Table(header_style="bold")
    for column in ("pipeline", "language", "kind", "schedule", "time", "reads"):
        view.add_column(column, overflow="fold")
    for row in report:
        view.add_row(
            row["name"], row["language"], row["kind"], row["schedule"], row["time"] or "",
            ", ".join(row["inputs"]),
        )  # fmt: skip
    console.print(view)


def render(
    name: Annotated[str, typer.Argument(help="Pipeline to render.")],
    start: Annotated[str | None, typer.Option(help="Interval start (default: the first).")] = None,
    end: Annotated[str | None, typer.Option(help="Interval end.")] = None,
) -> None:
    """Print the exact SQL this engine runs for a pipeline, with its parameters.

    Example: headwater render hourly_event_counts --start 2026-11-01T10:00
    """
    result = operation("render", {"name": name, "start": start, "end": end})
    sys.stdout.write(result["sql"] + "\n")
    for key, value in result["params"].items():
        sys.stdout.write(f"-- ${key} = {value}\n")
    cost = result.get("cost") or {}
    if cost.get("bytes_scanned") is not None:
        sys.stdout.write(f"-- would bill {cost['bytes_scanned']:,} bytes (dry run)\n")
    elif cost.get("rows_scanned") is not None:
        sys.stdout.write(f"-- would scan about {cost['rows_scanned']:,} rows (plan estimate)\n")
