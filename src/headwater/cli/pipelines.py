"""Pipelines: run them, fill their history, see what they did."""

from __future__ import annotations

import dataclasses
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from headwater.cli.context import operation, options, session
from headwater.cli.options import End, Start
from headwater.cli.output import console, print_error
from headwater.core import jsonio
from headwater.core.errors import ConfigError
from headwater.core.logs import fields

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from headwater.process.validate import Problem


def run(
    name: Annotated[str | None, typer.Argument(help="Pipeline to run.")] = None,
    start: Start = None,
    end: End = None,
    due: Annotated[bool, typer.Option("--due", help="Run every pipeline's due intervals.")] = False,
    now: Annotated[
        bool, typer.Option("--now", help="Refresh a full pipeline even if its run is done.")
    ] = False,
    upstream: Annotated[
        bool, typer.Option("--upstream", help="First run what the pipeline reads.")
    ] = False,
) -> None:
    """Run a pipeline's intervals, or with --due, everything that is due (for cron).

    Without --start/--end, runs what the pipeline lacks (failed intervals included).
    Exits 1, naming them, when an interval failed to run or to be delivered.

    Example: headwater run daily_active_users --start 2026-11-01 --end 2026-11-02
    """
    if due and (now or upstream):
        raise ConfigError(
            "--now and --upstream are for one pipeline", hint="headwater run NAME --now"
        )
    if due == (name is not None):
        raise ConfigError(
            "name one pipeline, or pass --due", hint="headwater run NAME | headwater run --due"
        )
    if due:
        answer = operation("due", {"deliver": True}, progress=True)
    else:
        args = {"name": name, "start": start, "end": end, "deliver": True, "now": now,
                "upstream": upstream}  # fmt: skip
        answer = operation("run", args, progress=True)
    results = answer["runs"]
    rows = sum(r["rows_written"] for r in results)
    _print_offloaded(answer.get("offload"))
    _print_retained(answer.get("retention"))
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
    _print_skipped(answer.get("skipped", []), {r["pipeline"] for r in results})
    _print_broken(answer.get("broken") or [])
    _exit_on_failures(answer)


def _print_offloaded(result: dict[str, Any] | None) -> None:
    """What a due pass moved from the hot store into the warehouse."""
    if not result:
        return
    loaded = [s for s in result["offloaded"] if s["events"] or s["failed_events"]]
    if loaded:
        events = sum(s["events"] for s in loaded)
        failed = sum(s["failed_events"] for s in loaded)
        first, last = loaded[0]["interval"]["start"], loaded[-1]["interval"]["end"]
        # To the minute, or to the second where an interval is shorter than a minute.
        width = 16 if first[16:19] == last[16:19] == ":00" else 19
        console.print(
            f"Offloaded {len(loaded)} interval{'s' if len(loaded) != 1 else ''} of arrival "
            f"({first[:width]} to {last[:width]}): {events} events, {failed} failed events.",
            highlight=False,
        )
    if result["deleted"]:
        console.print(f"Retention deleted {result['deleted']} offloaded rows from the hot store.")


def _print_retained(result: dict[str, Any] | None) -> None:
    """What a due pass dropped by retention."""
    if not result:
        return
    for d in result["dropped"]:
        if d["rows"]:
            more = "" if d["caught_up"] else "; more next pass"
            console.print(
                f"Retention dropped {d['rows']:,} rows of {d['table']} older than "
                f"{d['horizon'][:16]}{more}.",
                highlight=False,
            )
    for error in result["errors"]:
        console.print(f"Retention failed for {error}", highlight=False)


def _print_retention(rows: list[dict[str, Any]]) -> None:
    """Per table: how long it keeps, the horizon (rows before it are dropped), the last
    pass and what it dropped."""
    if not rows:
        return
    view = Table(header_style="bold", title="Retention")
    for column in ("table", "keeps", "horizon", "last pass", "dropped (last)", "dropped (all)"):
        view.add_column(column, overflow="fold")
    for row in rows:
        last = row["last_pass_at"]
        behind = "" if row["caught_up"] in (None, True) else " (more to drop)"
        view.add_row(
            row["table"],
            f"{row['keep']} by {row['column']}",
            row["horizon"][:16],
            (last or "never")[:16] + behind,
            "" if row["last_dropped"] is None else f"{row['last_dropped']:,}",
            f"{row['dropped_total']:,}",
        )
    console.print(view)


def _print_skipped(skipped: list[dict[str, Any]], ran: set[str]) -> None:
    """Sinks the pipelines that ran name but this environment lacks: not delivered to."""
    for d in skipped:
        if d["pipeline"] in ran:
            console.print(
                f"Not delivered {d['pipeline']} to {d['sink']}: {_elsewhere(d)}.", highlight=False
            )


def _elsewhere(d: dict[str, Any]) -> str:
    where = " and ".join(d.get("elsewhere") or ["another environment"])
    return f"not in this environment (declared for {where})"


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
    broken = [b for b in answer.get("broken") or [] if not b.get("blocked_by")]
    problems += [
        (
            f"pipeline {b['name']} does not load: {b['problem']}",
            b.get("hint"),
            {"pipeline": b["name"], "where": b.get("where")},
        )
        for b in broken
    ]
    if not problems:
        return
    for message, hint, where in problems:
        _failure(message, hint, where)
    if len(problems) == 1:
        raise typer.Exit(1)  # said whole above: no count of one
    runs = len(answer["failures"])
    sent = len(problems) - runs - len(broken)
    parts = [f"{runs} run{'s' if runs != 1 else ''}"] if runs else []
    parts += [f"{sent} deliver{'ies' if sent != 1 else 'y'}"] if sent else []
    parts += [f"{len(broken)} pipeline file{'s' if len(broken) != 1 else ''}"] if broken else []
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
        # A pipeline's traceback was printed whole by the progress lines as it failed.
        first, _, rest = message.partition("\n")
        print_error(f"{first} (shown above)" if rest else message, hint)


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
    _print_skipped(answer.get("skipped", []), {r["pipeline"] for r in answer["runs"]})
    _exit_on_failures(answer)


def _print_applies(applies: dict[str, Any]) -> None:
    """The environment's last apply, and the pipelines its scheduler leaves alone because
    their files are not what was applied."""
    last = applies["last"]
    if last is not None:
        commit = (last["commit"][:12] if last["commit"] else "no git commit") + (
            " with changes" if last["dirty"] else ""
        )
        console.print(
            f"Last apply: {last['id']}, {last['status']}, {last['started_at'][:19]} by "
            f"{escape(last['applied_by'])} from {escape(commit)}.",
            highlight=False,
        )
    for name, why in applies["held"].items():
        console.print(
            f"{escape(name)} is not run here: {escape(why)}; `headwater plan` shows the change, "
            "`headwater apply` makes it.",
            highlight=False,
        )


def status(
    name: Annotated[
        str | None, typer.Argument(help="One pipeline: its intervals, one a line.")
    ] = None,
    start: Start = None,
    end: End = None,
    limit: Annotated[int, typer.Option(help="At most this many (the latest).")] = 168,
) -> None:
    """Every pipeline: schedule, last run, intervals done and missing, next run, last error.

    With a pipeline's name: each of its intervals, done, stale, failed, running or
    missing, with the run that made or last tried it.

    Example: headwater status daily_active_users --start 2026-11-01
    """
    if name is not None:
        _print_intervals(operation("intervals", {"name": name, "start": start, "end": end,
                                                 "limit": limit}))  # fmt: skip
        return
    if start is not None or end is not None:
        raise ConfigError("--start and --end are for one pipeline", hint="headwater status NAME")
    with session() as call:
        report = call("status", {})
        applies = call("applies", {})
        offload = call("offload", {})
        retention = call("retention", {})
        erasures = call("erasures", {})
        deliveries = call("deliveries", {})
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
        if row.get("problem"):
            last_error = Text("does not load" if not row.get("blocked_by") else
                              f"waits for {row['blocked_by']}", style="bold red")  # fmt: skip
            view.add_row(row["name"], row["kind"], row["schedule"], "", str(row["intervals_done"]),
                         "", str(row["intervals_stale"]), "", last_error)  # fmt: skip
            continue
        kind = row["kind"] + (f" ({row['time']})" if row["time"] else "")
        last = f"{(row['last_run'] or '')[:19]} {row['last_status'] or 'never'}".strip()
        stale = str(row["intervals_stale"])
        if row["intervals_changed"]:
            stale += f" + {row['intervals_changed']} changed"
        view.add_row(
            row["name"], kind, row["schedule"], last, str(row["intervals_done"]),
            str(row["intervals_missing"]), stale, (row["next_run"] or "")[:16],
            Text((row["last_error"] or "").split("\n", 1)[0]),
        )  # fmt: skip
    console.print(view)
    _print_broken(report)
    for row in report:
        if "\n" in (row["last_error"] or ""):
            # A Python pipeline's traceback: whole, below the table, where lines stay lines.
            console.print(Text(f"{row['name']}: {row['last_error']}"), highlight=False)
    for row in report:
        if row.get("retired_before"):
            console.print(
                f"{row['name']}: intervals before {row['retired_before'][:16]} are retired by "
                f"retention ({row['retired_why']}): not run again.",
                highlight=False,
            )
    for row in report:
        if row.get("bytes_per_run") is not None:
            console.print(f"{row['name']}: one interval bills about {row['bytes_per_run']:,} "
                          "bytes (dry run)")  # fmt: skip
    for row in report:
        if row["intervals_changed"] and row["name"] not in applies["held"]:
            console.print(_changed(row), highlight=False)
    _print_applies(applies)
    _print_offload(offload, report)
    _print_retention(retention)
    from headwater.cli import governance

    governance.print_status(erasures)
    if deliveries:
        view = Table(header_style="bold", title="Deliveries (intervals)")
        for column in ("pipeline", "sink", "delivered", "pending", "failed", "dead letters",
                       "last error"):  # fmt: skip
            view.add_column(column, overflow="fold")
        for d in deliveries:
            note = _elsewhere(d) if "elsewhere" in d else d["last_error"] or ""
            view.add_row(
                d["pipeline"], d["sink"], str(d["delivered"]), str(d["pending"]),
                str(d["failed"]), str(d["dead_letters"]), Text(note),
            )  # fmt: skip
        console.print(view)
        if any(d["dead_letters"] for d in deliveries):
            console.print("Dead letters: `headwater replay --list` shows them; `headwater replay` "
                          "sends them again.")  # fmt: skip


def _changed(row: dict[str, Any]) -> str:
    """What made a pipeline's changed intervals old, and how to rebuild them: for a scoring
    pipeline, each model version that scored them and the one that would now."""
    name, rerun = row["name"], f"`headwater run {row['name']} --start … --end …`"
    changes = row.get("model_changes") or []
    if not changes:
        return (f"{name}: {row['intervals_changed']} intervals were made by an older version; "
                f"{rerun} rebuilds them.")  # fmt: skip
    said = "; ".join(
        f"{c['intervals']} interval{'s' if c['intervals'] != 1 else ''} scored by model "
        f"{c['model']}{' (shadow)' if c['shadow'] else ''} {c['old_version']} -> "
        f"{c['new_version']}"
        for c in changes
    )
    return f"{name}: {said}; {rerun} scores them again."


def _spanned(run: dict[str, str], interval: dict[str, str]) -> str:
    """What a batch's rows stand for, shown on each of its intervals: the whole run's."""
    whole = datetime.fromisoformat(run["end"]) - datetime.fromisoformat(run["start"])
    one = datetime.fromisoformat(interval["end"]) - datetime.fromisoformat(interval["start"])
    return f"the run's, {whole // one} intervals" if one else "the run's"


def _print_intervals(grid: dict[str, Any]) -> None:
    """A pipeline's intervals, one a line, then ``status``'s counts for it."""
    view = Table(header_style="bold")
    for column in ("interval", "state", "run", "trigger", "rows", "duration", "note"):
        view.add_column(column, overflow="fold")
    for cell in grid["cells"]:
        run = cell["run"] or {}
        duration = run.get("duration_seconds")
        note = cell["reason"] or (run.get("error") or "").split("\n", 1)[0]
        rows = "" if run.get("rows_written") is None else str(run["rows_written"])
        if rows and run.get("interval") not in (None, cell["interval"]):
            rows += f" ({_spanned(run['interval'], cell['interval'])})"
        view.add_row(
            cell["interval"]["start"][:16], cell["state"], str(run.get("id", "")),
            run.get("trigger", ""), rows, "" if duration is None else f"{duration:.1f}s",
            Text(note),
        )  # fmt: skip
    console.print(view)
    if grid["earlier"]:
        console.print("Earlier intervals exist: --end and --limit show them.")
    totals = grid["totals"]
    console.print(
        f"{grid['pipeline']}: {totals['done']} done, {totals['missing']} missing, "
        f"{totals['stale']} stale, {totals['changed']} made by an older version.",
        highlight=False,
    )
    failed = grid["counts"].get("failed", 0)
    if failed:
        console.print(
            f"{failed} of the intervals shown failed: fix what failed, then `headwater run "
            f"{grid['pipeline']} --start … --end …` runs them again (the scheduler retries "
            "only transient failures).",
            highlight=False,
        )


def _print_offload(offload: dict[str, Any] | None, report: list[dict[str, Any]]) -> None:
    """The offload's lag and, on BigQuery, what a day at the last day's traffic bills."""
    if offload is None:
        return
    from headwater.store import costs

    lag = offload["lag_seconds"]
    progress = (offload["progress"] or "")[:16]
    behind = "nothing offloaded yet" if lag is None else f"{_duration(lag)} behind (at {progress})"
    day = offload["last_day"]
    console.print(
        f"Offload {offload['store']} -> {offload['warehouse']}: {behind}; the last day moved "
        f"{day['events']:,} events and {day['failed_events']:,} failed events in "
        f"{day['load_jobs']} load jobs ({day['bytes']:,} bytes of Parquet).",
        highlight=False,
    )
    if offload["warehouse"] != "bigquery":
        return
    per_day = int(86_400 // offload["every_seconds"])
    rows = [costs.offload(per_day)]
    rows += [
        costs.pipeline_runs(r["name"], r["runs_per_day"], r["bytes_per_run"])
        for r in report
        if r.get("bytes_per_run") is not None
    ]
    direct = costs.direct_path(day["events"], commits_per_day=86_400)
    view = Table(header_style="bold", title="BigQuery per day at the last day's traffic")
    for column in ("part", "queries", "load jobs", "bytes billed", "on-demand $"):
        view.add_column(column, justify="right" if column != "part" else "left")
    total = rows[0]
    for cost in rows[1:]:
        total = total + cost
    for cost in [*rows, dataclasses.replace(total, what="total"), direct]:
        label = cost.what if cost is not direct else "direct ingest instead (for comparison)"
        view.add_row(label, f"{cost.queries:,}", f"{cost.load_jobs:,}",
                     f"{cost.bytes_billed:,}", f"{cost.dollars:,.2f}")  # fmt: skip
    console.print(view)
    console.print("[dim]Queries are priced by their dry runs (at least 10 MB per table "
                  "referenced); load jobs cost nothing.[/dim]")  # fmt: skip


def _duration(seconds: float) -> str:
    """``2h 05m``, ``4m 10s``, ``12s``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _print_broken(report: list[dict[str, Any]]) -> None:
    """Each pipeline that does not load: the error, where, the line with a caret, the fix;
    then those that wait for one."""
    for row in report:
        if not row.get("problem") or row.get("blocked_by"):
            continue
        console.print(Text(f"{row['name']} does not load: {row['problem']}", style="bold red"))
        if row.get("where"):
            console.print(Text(f"  --> {row['where']}"))
        if row.get("excerpt"):
            console.print(Text(row["excerpt"]))
        if row.get("hint"):
            console.print(Text(f"hint: {row['hint']}"))
    for row in report:
        if row.get("problem") and row.get("blocked_by"):
            console.print(Text(f"{row['name']} does not run until {row['blocked_by']} loads"))
    broken = sum(1 for row in report if row.get("problem"))
    if broken:
        console.print(f"{broken} pipeline{'s' if broken != 1 else ''} cannot run; every other "
                      "pipeline runs and serves as before.")  # fmt: skip


def pipelines() -> None:
    """List pipelines: kind, schedule, time, dependencies and description."""
    report = operation("list", {})
    view = Table(header_style="bold")
    for column in ("pipeline", "language", "kind", "schedule", "time", "reads", "description"):
        view.add_column(column, overflow="fold")
    for row in report:
        view.add_row(
            row["name"], row["language"], row["kind"], row["schedule"], row["time"] or "",
            ", ".join(row["inputs"]), Text(row.get("description") or ""),
        )  # fmt: skip
    console.print(view)
    _print_broken(report)


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


def validate(
    environment: Annotated[
        str | None,
        typer.Option(
            "--env", "-e", help="Check for this environment's engine (as --env before the command)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the problems as a JSON array, for editors.")
    ] = False,
) -> None:
    """Check every pipeline without running anything: parse, resolve, translate, columns.

    Opens no store and needs no server or credentials; every problem is printed as
    path:line:column: message, and the exit code is 1 when there is any.

    Example (CI): headwater validate --env prod
    """
    from headwater.config.project import load_project
    from headwater.process.validate import Problem
    from headwater.runtime.validation import validate_project

    try:
        project = load_project(options.project_dir, environment or options.environment)
    except ConfigError as exc:
        if not as_json:
            raise
        # An editor gets the broken headwater.toml as one more problem.
        message = exc.message.removeprefix(f"{exc.path}: ") if exc.path else exc.message
        problem = Problem(exc.path or "headwater.toml", 1, 1, message, exc.hint)
        _print_problems([problem])
        raise typer.Exit(1) from None
    report = validate_project(project)
    settings = project.settings
    if as_json:
        _print_problems(report.problems)
    else:
        for p in report.problems:
            sys.stdout.write(f"{_shown(p.path)}:{p.line}:{p.column}: {p.message}\n")
            if p.hint:
                sys.stdout.write(f"    fix: {p.hint}\n")
        files = report.files
        what = f"{files} pipeline file{'s' if files != 1 else ''}"
        target = f"{settings.project.dialect} SQL for the {project.pipelines_store.engine} engine"
        count = len(report.problems)
        if count:
            sys.stdout.write(
                f"{count} problem{'s' if count != 1 else ''} in {report.broken} of {what} "
                f"({target}).\n"
            )
        else:
            sys.stdout.write(f"{what} checked, no problems ({target}).\n")
    if report.problems:
        raise typer.Exit(1)


def _print_problems(problems: list[Problem]) -> None:
    rows = [
        {"file": _shown(p.path), "line": p.line, "column": p.column, "message": p.message,
         "hint": p.hint, "pipeline": p.pipeline}
        for p in problems
    ]  # fmt: skip
    sys.stdout.write(jsonio.dumps_str(rows) + "\n")


def _shown(path: str) -> str:
    """A path as a person (or an editor, from the same folder) opens it: relative to the
    working folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path
