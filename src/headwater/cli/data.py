"""The store's data: read-only queries, and moving events between environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from headwater.cli.context import operation, options
from headwater.cli.output import Format, console, print_table


def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="One SELECT (or WITH … SELECT) statement in the project's dialect: "
            'BigQuery\'s, unless headwater.toml sets dialect = "duckdb".'
        ),
    ],
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="table, json (an array), jsonl or csv.")
    ] = "table",
) -> None:
    """Run a read-only SQL query over the store's tables, in the project's dialect.

    Translated to the engine's SQL as pipelines are: BigQuery SQL runs on DuckDB. With a
    warehouse, it reads the warehouse, where the pipelines' tables are.

    Example: headwater query "SELECT DATE(received_at) AS day, COUNT(*) FROM events GROUP BY 1"
    """
    from headwater.process.adhoc import to_engine
    from headwater.runtime.client import find_server
    from headwater.runtime.workspace import engine_for, has_warehouse, warehouse_for

    project = options.project()
    sql = to_engine(sql, project.settings.project.dialect, project.pipelines_store.engine)
    client = find_server(project.data_dir)
    if client is not None:
        try:
            result = client.query(sql)
        finally:
            client.close()
    else:
        if has_warehouse(project):
            engine = warehouse_for(project, read_only=True)
        else:
            engine = engine_for(project, read_only=True)
        try:
            result = engine.query(sql)
        finally:
            engine.close()
    if (
        project.settings.project.dialect == "bigquery"
        and project.pipelines_store.engine == "duckdb"
    ):
        from headwater.store.duckdb import int64_sums

        # DuckDB's SUM of integers is a HUGEINT (DECIMAL(38, 0)); BigQuery's is INT64, as
        # pipelines get it. BigQuery SQL makes no other such column.
        result = int64_sums(result)
    print_table(result, fmt)


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
    days = operation("export", args, progress=True)
    _print_transfer("Exported", days, folder)


def import_(
    folder: Annotated[Path, typer.Argument(help="A folder made by `headwater export`.")],
) -> None:
    """Import an export into this environment's store, deduped, resumable, checked by counts.

    Example: headwater --env prod import ./export
    """
    days = operation("import", {"folder": str(folder.resolve())}, progress=True)
    _print_transfer("Imported", days, folder)


def _print_transfer(verb: str, days: list[dict[str, Any]], folder: Path) -> None:
    for table in ("events", "failed_events"):
        mine = [d for d in days if d["table"] == table]
        rows = sum(d["rows"] for d in mine if not d["skipped"])
        skipped = sum(1 for d in mine if d["skipped"])
        note = f" ({skipped} days done before)" if skipped else ""
        console.print(f"{verb} {table}: {len(mine) - skipped} days, {rows} rows{note}.")
    console.print(f"[dim]{folder}[/dim]")


def traffic(
    until: Annotated[
        str | None, typer.Option("--until", help="The minute to end at (UTC; default now).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Events accepted and refused over the last hour and day, by source, event name and
    refusal code, and the store's size: the dashboard's overview, as text.

    Example: headwater traffic --until 2026-12-01T12:00
    """
    import sys

    from rich.table import Table

    from headwater.core import jsonio

    report = operation("traffic", {"until": until})
    if as_json:
        sys.stdout.write(jsonio.dumps_str(report) + "\n")
        return
    view = Table(header_style="bold", title=f"Events up to {report['until'][:16]} UTC")
    for column in ("window", "by", "name", "events"):
        view.add_column(column, overflow="fold")
    for window in ("hour", "day"):
        counts = report[window]
        view.add_row(f"last {window}", "", "accepted", f"{counts['accepted']:,}")
        view.add_row(f"last {window}", "", "refused", f"{counts['refused']:,}")
        for by, key in (
            ("source", "by_source"),
            ("event", "by_event"),
            ("code", "refused_by_code"),
        ):
            for name, minutes in counts[key].items():
                view.add_row(f"last {window}", by, name, f"{sum(minutes):,}")
    console.print(view)
    store = report["store"]
    size = f", {store['bytes']:,} bytes" if store["bytes"] is not None else ""
    console.print(
        f"Store ({store['engine']}): {store['events']:,} events, "
        f"{store['failed_events']:,} failed events{size}.",
        highlight=False,
    )
