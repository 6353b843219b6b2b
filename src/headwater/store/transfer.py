"""Move a project's events between engines: ``headwater export`` and ``headwater import``.

An export is a folder of Parquet files, one per table and day of arrival,
``<folder>/<table>/<YYYY-MM-DD>.parquet``, and a ``manifest.json`` with each
file's row count. The format is what BigQuery's load jobs, Spark and DuckDB
read as they are. Each file is written under a temporary name and renamed, and
the manifest is rewritten after each day, so an export that stops resumes
after its last whole day; days already exported are skipped when their file
and the store still hold the manifest's count (a day that gained events since
is exported again).

An import ingests, day by day, the rows the store does not hold yet (by
``(source, message_id)``, or ``id`` for failed events) through the same
``ingest`` as the collector, and records each day it finished, with its
count, in ``<folder>/imported-<env>.json`` with the store it went into. A stopped
import resumes with the first day not recorded (a day half done adds only what is
missing); a day exported again with more rows is imported again, and so is a day the
store holds no row of (another project's store, or this one's made again). An erased
person's rows are never imported (the caller's ``keep``), whatever the export holds.
After each day it checks that the store gained exactly the rows it lacked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlglot import exp

from headwater.core.errors import TerminalError
from headwater.store import schema
from headwater.store.engine import Engine, IngestBatch

TABLES: dict[str, pa.Schema] = {"events": schema.EVENTS, "failed_events": schema.FAILED_EVENTS}
MANIFEST = "manifest.json"
_INGEST_ROWS = 10_000
_DAY = timedelta(days=1)

Report = Callable[[dict[str, Any]], None]


class TransferError(TerminalError):
    """An export folder that cannot be imported as it is; ``file`` is the one at fault."""

    def __init__(self, message: str, *, file: str, hint: str) -> None:
        self.file = file
        super().__init__(message, hint=hint)


@dataclass(frozen=True)
class DayCount:
    table: str
    day: str
    rows: int
    skipped: bool = False


def export_events(
    engine: Engine,
    folder: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    report: Report | None = None,
) -> list[DayCount]:
    """Write each table's rows, per day of ``received_at``, under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read(folder / MANIFEST)
    files: dict[str, int] = manifest.setdefault("files", {})
    done: list[DayCount] = []
    days = {table: _days(engine, table, start, end) for table in TABLES}
    total = sum(len(d) for d in days.values())
    for table, table_days in days.items():
        for day in table_days:
            name = f"{table}/{day:%Y-%m-%d}.parquet"
            path = folder / name
            exported = name in files and path.exists()
            if exported and pq.read_metadata(path).num_rows == files[name] == _count(
                engine, table, f"{day:%Y-%m-%d}"
            ):
                done.append(DayCount(table, f"{day:%Y-%m-%d}", files[name], skipped=True))
            else:
                rows = arrivals(engine, table, day, day + _DAY)
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_name(f".{path.name}.tmp")
                pq.write_table(rows, temporary, compression="zstd")
                os.replace(temporary, path)
                files[name] = rows.num_rows
                manifest["tables"] = {t: str(s) for t, s in TABLES.items()}
                _write(folder / MANIFEST, manifest)
                done.append(DayCount(table, f"{day:%Y-%m-%d}", rows.num_rows))
            _progress(report, done[-1], len(done), total)
    return done


def import_events(
    engine: Engine,
    folder: Path,
    environment: str,
    report: Report | None = None,
    *,
    target: str = "",
    keep: Callable[[str, pa.Table], pa.Table] | None = None,
) -> list[DayCount]:
    """Ingest an export's files into ``engine``, day by day, resumably, checking counts.

    ``target`` names the store imported into (its project and environment): the record of
    the days done is another target's when it names another, and is not believed. A day
    recorded as done is imported again when the store holds none of its rows (a store
    deleted and made again). ``keep`` takes a table's rows to import and returns those
    that may be stored (not an erased person's)."""
    manifest = _read(folder / MANIFEST)
    files: dict[str, int] = manifest.get("files", {})
    if not files:
        raise TransferError(
            f"{folder} holds no export ({MANIFEST} is missing or empty)",
            file=str(folder / MANIFEST),
            hint="make one with `headwater export FOLDER`",
        )
    state_path = folder / f"imported-{environment}.json"
    state = _read(state_path)
    if state.get("target", "") != target:
        state = {"target": target}
    imported: dict[str, int] = state.setdefault("files", {})
    done: list[DayCount] = []
    for name in sorted(files, key=lambda n: (n.split("/")[1], n)):
        table, _, filename = name.partition("/")
        day = filename.removesuffix(".parquet")
        if imported.get(name) == files[name] and (
            files[name] == 0 or _count(engine, table, day) > 0
        ):
            done.append(DayCount(table, day, imported[name], skipped=True))
            _progress(report, done[-1], len(done), len(files))
            continue
        data = _conformed(pq.read_table(folder / name), TABLES[table])
        if data.num_rows != files[name]:
            raise TransferError(
                f"{name} holds {data.num_rows} rows, the manifest says {files[name]}",
                file=str(folder / name),
                hint="export that day again",
            )
        # Only rows the store does not hold yet: a day imported in part before a crash,
        # or re-exported with more rows, adds just what is missing, and the dedupe does
        # not depend on the target's window (its message ids may be pruned by now).
        fresh = _missing(engine, table, day, data)
        if keep is not None:
            fresh = keep(table, fresh)
        before = _count(engine, table, day)
        for batch in fresh.to_batches(_INGEST_ROWS):
            rows = pa.Table.from_batches([batch], schema=TABLES[table])
            if table == "events":
                engine.ingest(IngestBatch(rows, schema.FAILED_EVENTS.empty_table()))
            else:
                engine.ingest(IngestBatch(schema.EVENTS.empty_table(), rows))
        after = _count(engine, table, day)
        if after - before != fresh.num_rows:
            raise TransferError(
                f"importing {name} added {after - before} rows to that day, not the "
                f"{fresh.num_rows} the store lacked",
                hint="something else writes that day of this environment's store; "
                "import again when it is quiet, or compare the day's ids",
                file=str(folder / name),
            )
        imported[name] = data.num_rows
        _write(state_path, state)
        done.append(DayCount(table, day, fresh.num_rows))
        _progress(report, done[-1], len(done), len(files))
    return done


_KEYS = {"events": ("source", "message_id"), "failed_events": ("id",)}


def _missing(engine: Engine, table: str, day: str, data: pa.Table) -> pa.Table:
    """The rows of ``data`` whose key the store does not hold for that day."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    columns = [exp.column(c, quoted=True) for c in _KEYS[table]]
    query = exp.select(*columns).from_(exp.table_(table, quoted=True))
    held = _select(engine, query, start, start + _DAY)
    if held.num_rows == 0:
        return data
    known = set(zip(*(held[c].to_pylist() for c in _KEYS[table]), strict=True))
    keys = zip(*(data[c].to_pylist() for c in _KEYS[table]), strict=True)
    return data.filter(pa.array([key not in known for key in keys], pa.bool_()))


def _days(
    engine: Engine, table: str, start: datetime | None, end: datetime | None
) -> list[datetime]:
    column = exp.column("received_at")
    bounds = exp.select(exp.func("MIN", column).as_("lo"), exp.func("MAX", column).as_("hi")).from_(
        exp.table_(table, quoted=True)
    )
    row = engine.select(bounds.sql(engine.dialect), {}).table.to_pylist()[0]
    if row["lo"] is None:
        return []
    first = max(row["lo"], start) if start else row["lo"]
    last = min(row["hi"], end - timedelta(microseconds=1)) if end else row["hi"]
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day <= last:
        days.append(day)
        day += _DAY
    return days


def first_arrival(engine: Engine, table: str, start: datetime, end: datetime) -> datetime | None:
    """When the first row of ``table`` arrived in ``[start, end)``; ``None``: none did."""
    column = exp.column("received_at", quoted=True)
    query = exp.select(exp.func("MIN", column).as_("first")).from_(exp.table_(table, quoted=True))
    found = _select(engine, query, start, end)["first"][0].as_py()
    return found if isinstance(found, datetime) else None


def _select(engine: Engine, query: exp.Select, start: datetime, end: datetime) -> pa.Table:
    column = exp.column("received_at", quoted=True)
    query = query.where(
        exp.and_(
            exp.GTE(this=column, expression=exp.Placeholder(this="start")),
            exp.LT(this=column, expression=exp.Placeholder(this="end")),
        )
    )
    return engine.select(query.sql(engine.dialect), {"start": start, "end": end}).table


def arrivals(engine: Engine, table: str, start: datetime, end: datetime) -> pa.Table:
    """The rows of event table ``table`` that arrived in ``[start, end)``, as its schema."""
    columns = [exp.column(name, quoted=True) for name in TABLES[table].names]
    query = exp.select(*columns).from_(exp.table_(table, quoted=True))
    return _select(engine, query, start, end).cast(TABLES[table])


def _conformed(data: pa.Table, arrow_schema: pa.Schema) -> pa.Table:
    """An exported file as ``arrow_schema``: one made before a column was added has none
    of it, NULL in every row."""
    for field in arrow_schema:
        if field.name not in data.column_names and field.nullable:
            data = data.append_column(field, pa.nulls(data.num_rows, field.type))
    return data.select(arrow_schema.names).cast(arrow_schema)


def _count(engine: Engine, table: str, day: str) -> int:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    query = exp.select(exp.func("COUNT", exp.Star()).as_("n")).from_(exp.table_(table, quoted=True))
    result = _select(engine, query, start, start + _DAY)
    return int(pc.sum(result["n"]).as_py() or 0)


def _progress(report: Report | None, step: DayCount, done: int, total: int) -> None:
    if report is not None:
        report({"pipeline": step.table, "interval": {"start": step.day}, "done": done,
                "total": total})  # fmt: skip


def _read(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return value if isinstance(value, dict) else {}


def _write(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(temporary, path)
