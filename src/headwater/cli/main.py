"""``headwater``: init, up, query, sources.

Errors print as one sentence and the fix; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from headwater import __version__
from headwater.cli import scaffold
from headwater.cli.output import Format, console, print_error, print_table
from headwater.config.project import SOURCE_NAME, Project, load_project
from headwater.core.errors import ConfigError, HeadwaterError
from headwater.core.secrets import stored_form

app = typer.Typer(
    name="headwater",
    help="Collect, store, process and deliver your services' event data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sources_app = typer.Typer(help="Producers of events and their write keys.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
consumers_app = typer.Typer(
    help="Services that read datasets through the API.", no_args_is_help=True
)
app.add_typer(consumers_app, name="consumers")
DATASET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _State:
    project_dir: Path | None = None
    environment: str | None = None
    debug: bool = False

    def project(self) -> Project:
        return load_project(self.project_dir, self.environment)


state = _State()


def _version(value: bool) -> None:
    if value:
        console.print(f"headwater {__version__}")
        raise typer.Exit


@app.callback()
def _main(
    project: Annotated[
        Path | None,
        typer.Option(
            "--project", "-p", help="Project folder (default: the nearest with headwater.toml)."
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            envvar="HEADWATER_ENV",
            help="Environment from [environments.NAME] (default: the top-level settings).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.project_dir = project
    state.environment = environment
    state.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the project in.")] = Path("."),
    source: Annotated[str, typer.Option(help="Name of the first source.")] = "web",
) -> None:
    """Create a project with one source, ready for `headwater up`.

    Example: headwater init analytics && cd analytics && headwater up
    """
    _check_source_name(source)
    key = scaffold.init_project(directory, source=source)
    examples = sorted(name.removesuffix(".sql") for name in scaffold.EXAMPLE_PIPELINES)
    token = scaffold.add_consumer(directory / "headwater.toml", "example", examples)
    console.print(f"Created a Headwater project in [bold]{directory.resolve()}[/bold]")
    console.print(f"Source [bold]{source}[/bold] write key: [bold green]{key}[/bold green]")
    console.print(f"Read API consumer [bold]example[/bold] token: [bold green]{token}[/bold green]")
    console.print("[dim]Only their hashes are stored; keep them now.[/dim]")
    console.print(f"Next: cd {directory} && headwater up")


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from headwater.toml).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default from headwater.toml; 0 picks one).")
    ] = None,
) -> None:
    """Start everything in one process: collector, read API, scheduler and deliveries.

    Example: headwater up --port 8787
    """
    from headwater.runtime.server import serve

    project = state.project()
    serve(project, host=host, port=port, on_ready=_ready(project, "collector, read API, pipelines"))
    console.print("Headwater stopped; every acknowledged event is committed.")


def _ready(project: Project, doing: str) -> Callable[[Any], None]:
    def ready(where: Any) -> None:
        console.print(f"[bold green]Headwater is up[/bold green] at [bold]{where.url}[/bold]")
        console.print(f"  runs    {doing}")
        store = project.settings.store
        if store.engine == "duckdb":
            console.print(f"  store   {project.store_path}")
        else:
            console.print(f"  store   {store.engine}, schema {store.schema}")
        for name in project.settings.sources:
            console.print(f"  source  [bold]{name}[/bold]  (write key stored hashed)")
        if project.environment:
            own = project.settings.environments[project.environment].sinks
            shared = sorted(set(project.settings.sinks) - set(own))
            if shared:
                table = escape(f"[environments.{project.environment}.sinks]")
                console.print(
                    f"  [yellow]sinks   {', '.join(shared)}: the same as the default "
                    f"environment's[/yellow] (redeclare them under {table} to keep them apart)",
                    highlight=False,
                )
        console.print(
            "  send    curl -u $WRITE_KEY: -H 'Content-Type: application/json' "
            f'-d \'{{"userId":"u1","event":"Signed Up"}}\' {where.url}/v1/track'
        )
        console.print('  query   headwater query "SELECT * FROM events"')
        console.print("[dim]Ctrl-C to stop; in-flight events are committed first.[/dim]")
        console.file.flush()  # a log file is block-buffered: the lines must be there now

    return ready


ROLE_NAMES = {"collector": "collect", "api": "api"}


@app.command(name="serve")
def serve_stage(
    stage: Annotated[str, typer.Argument(help="collector or api.", metavar="collector|api")],
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from headwater.toml).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default from headwater.toml; 0 picks one).")
    ] = None,
) -> None:
    """Run one stage as its own process (for containers): the collector or the read API.

    Pipelines and deliveries run from `headwater run --due` (e.g. under cron).
    Several collectors may share a PostgreSQL store, behind a load balancer.

    Example: headwater --env prod serve collector --port 8080
    """
    from headwater.runtime.server import serve

    if stage not in ROLE_NAMES:
        raise ConfigError(
            f"there is no stage {stage!r}",
            hint="headwater serve collector | headwater serve api (headwater up runs all)",
        )
    project = state.project()
    doing = "collector" if stage == "collector" else "read API"
    roles = frozenset({ROLE_NAMES[stage]})
    serve(project, host=host, port=port, on_ready=_ready(project, doing), roles=roles)
    console.print("Headwater stopped; every acknowledged event is committed.")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One SELECT statement.")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
) -> None:
    """Run a read-only SQL query on the store.

    Example: headwater query "SELECT event, count(*) FROM events GROUP BY 1"
    """
    from headwater.runtime.client import find_server
    from headwater.store.open import open_engine

    project = state.project()
    client = find_server(project.data_dir)
    if client is not None:
        try:
            result = client.query(sql)
        finally:
            client.close()
    else:
        engine = open_engine(project, read_only=True)
        try:
            result = engine.query(sql)
        finally:
            engine.close()
    print_table(result, fmt)


def _operation(op: str, args: dict[str, Any], *, progress: bool = False) -> Any:
    """Run a pipeline operation in the server when one runs, else here."""
    from headwater.process.metadata import MetadataStore
    from headwater.process.service import PipelineService
    from headwater.runtime import operations
    from headwater.runtime.client import find_server
    from headwater.store.open import open_engine

    project = state.project()
    with _progress_bar(progress) as report:
        client = find_server(project.data_dir)
        if client is not None:
            try:
                return client.pipelines(op, args, report)
            finally:
                client.close()
        engine = open_engine(project)
        metadata = MetadataStore.for_project(project)
        try:
            return operations.call(PipelineService(project, engine, metadata), op, args, report)
        finally:
            metadata.close()
            engine.close()


@contextlib.contextmanager
def _progress_bar(show: bool) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:  # fmt: skip
        task = bar.add_task("starting", total=None)

        def report(step: dict[str, Any]) -> None:
            interval = step["interval"]
            label = f"{step['pipeline']} {interval['start'][:16]}"
            if step.get("error"):
                console.print(
                    f"[red]failed[/red] {label}: {escape(step['error'])}", highlight=False
                )
            bar.update(task, description=label, completed=step["done"], total=step["total"])

        yield report


@app.command()
def run(
    name: Annotated[str | None, typer.Argument(help="Pipeline to run.")] = None,
    start: Annotated[
        str | None, typer.Option(help="First interval (ISO date or time, UTC).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="End of the last interval (exclusive).")] = None,
    due: Annotated[bool, typer.Option("--due", help="Run every pipeline's due intervals.")] = False,
) -> None:
    """Run a pipeline's intervals, or with --due, everything that is due (for cron).

    Example: headwater run daily_active_users --start 2026-11-01 --end 2026-11-02
    """
    if due == (name is not None):
        raise ConfigError(
            "name one pipeline, or pass --due", hint="headwater run NAME | headwater run --due"
        )
    if due:
        answer = _operation("due", {"deliver": True}, progress=True)
    else:
        args = {"name": name, "start": start, "end": end, "deliver": True}
        answer = _operation("run", args, progress=True)
    results = answer["runs"]
    rows = sum(r["rows_written"] for r in results)
    if not results:
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


def _print_deliveries(deliveries: list[dict[str, Any]]) -> None:
    """One line per sink: rows delivered, and what failed or became a dead letter."""
    done: dict[tuple[str, str], list[int]] = {}
    for d in deliveries:
        if d["status"] == "delivered":
            tally = done.setdefault((d["pipeline"], d["sink"]), [0, 0])
            tally[0] += 1
            tally[1] += d["rows"]
    for (pipeline, sink), (count, rows) in done.items():
        plural = "s" if count != 1 else ""
        console.print(f"Delivered {pipeline} to {sink}: {count} interval{plural}, {rows} rows.")
    for d in deliveries:
        label = f"{d['pipeline']} {d['interval']['start'][:16]} to {d['sink']}"
        if d["status"] == "failed":
            when = (d["next_attempt_at"] or "")[:19]
            console.print(
                f"[yellow]Delivery of {label} failed[/yellow]: {escape(d['error'])}; "
                f"tried again from {when} by `headwater up` or `headwater run --due`.",
                highlight=False,
            )
        elif d["status"] == "dead":
            console.print(
                f"[red]Dead letter[/red] for {label}: {escape(d['error'] or '')}; "
                "fix it, then `headwater replay`.",
                highlight=False,
            )


@app.command()
def backfill(
    name: Annotated[str, typer.Argument(help="Pipeline to fill (and what it reads).")],
    start: Annotated[str, typer.Option(help="Start of the history to fill (UTC).")],
    end: Annotated[str, typer.Option(help="End of the history to fill (exclusive).")],
) -> None:
    """Fill history for a pipeline and its inputs, in dependency order; resumable.

    Example: headwater backfill daily_active_users --start 2026-10-01 --end 2026-11-01
    """
    args = {"name": name, "start": start, "end": end, "deliver": True}
    answer = _operation("backfill", args, progress=True)
    rows = sum(r["rows_written"] for r in answer["runs"])
    console.print(f"Backfilled {len(answer['runs'])} intervals; {rows} rows written.")
    _print_deliveries(answer["deliveries"])


@app.command()
def status() -> None:
    """Every pipeline: schedule, last run, intervals done and missing, next run, last error."""
    report = _operation("status", {})
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
    deliveries = _operation("deliveries", {})
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


@app.command()
def export(
    folder: Annotated[Path, typer.Argument(help="Folder to write the Parquet files into.")],
    start: Annotated[str | None, typer.Option(help="First day (UTC) to export.")] = None,
    end: Annotated[str | None, typer.Option(help="End of the export (exclusive).")] = None,
) -> None:
    """Export events and failed events as Parquet, one file per table and day; resumable.

    The files load as they are into another environment (`headwater --env prod import
    FOLDER`), BigQuery (bq load), Spark or DuckDB.
    """
    args = {"folder": str(folder.resolve()), "start": start, "end": end}
    days = _operation("export", args, progress=True)
    _print_transfer("Exported", days, folder)


@app.command(name="import")
def import_(
    folder: Annotated[Path, typer.Argument(help="A folder made by `headwater export`.")],
) -> None:
    """Import an export into this environment's store, deduped, resumable, checked by counts.

    Example: headwater --env prod import ./export
    """
    days = _operation("import", {"folder": str(folder.resolve())}, progress=True)
    _print_transfer("Imported", days, folder)


def _print_transfer(verb: str, days: list[dict[str, Any]], folder: Path) -> None:
    for table in ("events", "failed_events"):
        mine = [d for d in days if d["table"] == table]
        rows = sum(d["rows"] for d in mine if not d["skipped"])
        skipped = sum(1 for d in mine if d["skipped"])
        note = f" ({skipped} days done before)" if skipped else ""
        console.print(f"{verb} {table}: {len(mine) - skipped} days, {rows} rows{note}.")
    console.print(f"[dim]{folder}[/dim]")


@app.command()
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
        letters = _operation("dead_letters", args)
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
    results = _operation("replay", args)
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


@app.command()
def pipelines() -> None:
    """List pipelines: kind, schedule, time and dependencies."""
    report = _operation("list", {})
    view = Table(header_style="bold")
    for column in ("pipeline", "language", "kind", "schedule", "time", "reads"):
        view.add_column(column, overflow="fold")
    for row in report:
        view.add_row(
            row["name"], row["language"], row["kind"], row["schedule"], row["time"] or "",
            ", ".join(row["inputs"]),
        )  # fmt: skip
    console.print(view)


@app.command()
def render(
    name: Annotated[str, typer.Argument(help="Pipeline to render.")],
    start: Annotated[str | None, typer.Option(help="Interval start (default: the first).")] = None,
    end: Annotated[str | None, typer.Option(help="Interval end.")] = None,
) -> None:
    """Print the exact SQL this engine runs for a pipeline, with its parameters.

    Example: headwater render hourly_event_counts --start 2026-11-01T10:00
    """
    result = _operation("render", {"name": name, "start": start, "end": end})
    sys.stdout.write(result["sql"] + "\n")
    for key, value in result["params"].items():
        sys.stdout.write(f"-- ${key} = {value}\n")
    cost = result.get("cost") or {}
    if cost.get("bytes_scanned") is not None:
        sys.stdout.write(f"-- would bill {cost['bytes_scanned']:,} bytes (dry run)\n")
    elif cost.get("rows_scanned") is not None:
        sys.stdout.write(f"-- would scan about {cost['rows_scanned']:,} rows (plan estimate)\n")


@sources_app.command("add")
def sources_add(name: Annotated[str, typer.Argument(help="Name of the new source.")]) -> None:
    """Create a source and print its new write key once.

    Example: headwater sources add backend
    """
    _check_source_name(name)
    project = state.project()
    if name in project.settings.sources:
        raise ConfigError(
            f"source {name!r} already exists", hint="choose another name for the new source"
        )
    key = scaffold.add_source(project.file, name)
    load_project(project.root)  # the file must still load; fail loudly now if not
    console.print(f"Source [bold]{name}[/bold] write key: [bold green]{key}[/bold green]")
    console.print(
        "[dim]Only its hash is stored; keep the key now. A running server accepts it at once.[/dim]"
    )


@sources_app.command("list")
def sources_list() -> None:
    """List sources and how each key is stored."""
    project = state.project()
    for name, source in project.settings.sources.items():
        form = stored_form(source.write_key)
        kind = "key in an environment variable" if form == "environment" else "key stored hashed"
        console.print(f"{name}\t{kind}")


@consumers_app.command("add")
def consumers_add(
    name: Annotated[str, typer.Argument(help="Name of the consuming service.")],
    datasets: Annotated[str, typer.Option(help="Comma-separated datasets it may read.")],
) -> None:
    """Create a consumer of the read API and print its token once.

    Example: headwater consumers add recommender --datasets daily_active_users
    """
    _check_source_name(name, what="consumer")
    project = state.project()
    if name in project.settings.consumers:
        raise ConfigError(f"consumer {name!r} already exists", hint="choose another name")
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    bad = [d for d in names if not DATASET_NAME.match(d)]
    if not names or bad:
        raise ConfigError(
            f"dataset names must be table names, got {bad or datasets!r}",
            hint="e.g. --datasets daily_active_users,hourly_event_counts",
        )
    token = scaffold.add_consumer(project.file, name, names)
    load_project(project.root)
    console.print(f"Consumer [bold]{name}[/bold] token: [bold green]{token}[/bold green]")
    console.print(
        "[dim]Only its hash is stored; keep the token now. Send it as "
        "`Authorization: Bearer <token>` to /api/v1/.[/dim]"
    )


@consumers_app.command("list")
def consumers_list() -> None:
    """List consumers and the datasets each may read."""
    project = state.project()
    for name, consumer in project.settings.consumers.items():
        console.print(f"{name}\t{', '.join(consumer.datasets)}")


def _check_source_name(name: str, what: str = "source") -> None:
    if not SOURCE_NAME.match(name):
        raise ConfigError(
            f"{what} name {name!r} is not allowed",
            hint="use lower-case letters, digits, '-' and '_', starting with a letter",
        )


def main() -> None:
    """Entry point of the ``headwater`` console script."""
    try:
        app(standalone_mode=False)
    except HeadwaterError as exc:
        if state.debug:
            raise
        print_error(exc.message, exc.hint)
        _exit(1)
    except typer.Exit as exc:
        _exit(exc.exit_code)
    except typer.Abort:
        print_error("aborted", None)
        _exit(130)
    except Exception as exc:  # the last line of defence: one sentence, not a traceback
        if state.debug or os.environ.get("HEADWATER_DEBUG"):
            raise
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            _exit(exc.exit_code)
        print_error(f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for details")
        _exit(2)
    _exit(0)


def _exit(code: int) -> None:
    """Exit without tearing the interpreter down.

    Every command closes its store and joins its threads before it returns, so
    what is left is module garbage collection, which costs a short command a
    tenth of a second.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
