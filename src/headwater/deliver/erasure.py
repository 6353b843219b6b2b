"""What an erasure does at each kind of sink.

- files: every file already delivered for the pipeline is read, and written again
  without the person's rows (under a hidden name, then renamed over the old one, as a
  delivery writes it); a file without such rows is left alone;
- PostgreSQL: one transaction deleting the rows whose person columns hold an erased id;
- webhook: a signed deletion notice (:func:`notice`), with an idempotency key that is the
  same at every attempt, so the receiver deletes on its side once.

Each is idempotent: done again, it finds nothing more to delete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq
from psycopg import sql

from headwater.core import jsonio
from headwater.deliver.errors import SinkRefused, SinkUnavailable
from headwater.deliver.files import EXTENSIONS, FilesTarget, _encode
from headwater.deliver.postgres import PostgresTarget
from headwater.deliver.webhook import Outcome, WebhookTarget
from headwater.store.errors import first_line
from headwater.store.postgres.errors import transient


def erase_files(
    target: FilesTarget,
    pipeline: str,
    columns: Sequence[str],
    ids: Sequence[str],
    rewritten: list[str] | None = None,
) -> int:
    """Rewrite ``pipeline``'s delivered files without the rows whose ``columns`` hold one of
    ``ids``; return how many rows were removed (each file rewritten is added to
    ``rewritten``)."""
    fmt = target.settings.format
    folder = target.path(pipeline, None).rpartition("/")[0]
    wanted = pa.array(list(ids), pa.string())
    removed = 0
    # A file written before a column was added lacks it; no file having it is a typo.
    seen: set[str] = set()
    try:
        if not target.fs.exists(folder):
            return 0
        paths = sorted(
            p for p in target.fs.ls(folder, detail=False)
            if p.endswith(f".{EXTENSIONS[fmt]}") and not p.rpartition("/")[2].startswith(".")
        )  # fmt: skip
        for path in paths:
            with target.fs.open(path, "rb") as source:
                table = _decode(fmt, source)
            seen.update(table.column_names)
            present = [c for c in columns if c in table.column_names]
            if not present:
                continue
            hit = pa.array([False] * table.num_rows, pa.bool_())
            for column in present:
                found = pc.is_in(table[column].cast(pa.string()), value_set=wanted)
                hit = pc.or_(hit, pc.fill_null(found, False))
            count = int(pc.sum(hit).as_py() or 0)
            if not count:
                continue
            with target._open(path) as out:
                _encode(fmt, table.filter(pc.invert(hit)), out)
            removed += count
            if rewritten is not None:
                rewritten.append(path)
    except OSError as exc:
        raise SinkUnavailable(f"rewriting files under {folder} failed: {exc}",
                              sink=target.name, pipeline=pipeline) from None  # fmt: skip
    if seen:
        _refuse_missing(target.name, pipeline, columns, seen)
    return removed


def _refuse_missing(sink: str, pipeline: str, columns: Sequence[str], present: set[str]) -> None:
    """Refuse an erasure by a column the delivered rows lack: it would say done while every
    row of the person is still there."""
    missing = [c for c in columns if c not in present]
    if missing:
        raise SinkRefused(
            f"{pipeline}'s delivered rows have no column {', '.join(missing)} to erase by "
            f"(their columns: {', '.join(sorted(present))})",
            sink=sink,
            pipeline=pipeline,
            hint=f"fix `person = [...]` in {pipeline}'s header to name its person columns",
        )


def _decode(fmt: str, source: IO[bytes]) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(source)
    if fmt == "csv":
        # Every column as text: the file is written again as it was, values unchanged.
        names = pa.csv.open_csv(source).schema.names  # the header line's names only
        source.seek(0)
        strings = {name: pa.string() for name in names}
        return pa.csv.read_csv(source, convert_options=pa.csv.ConvertOptions(column_types=strings))
    rows = [jsonio.loads(line) for line in source.read().splitlines() if line.strip()]
    return pa.Table.from_pylist(rows)


def erase_postgres(
    target: PostgresTarget, pipeline: str, columns: Sequence[str], ids: Sequence[str]
) -> int:
    """Delete the rows of the pipeline's table whose ``columns`` hold one of ``ids``, in one
    transaction; a table not made yet has none."""
    table_name = target.table_name(pipeline)
    table = sql.Identifier(target.settings.schema, table_name)
    try:
        with (
            psycopg.connect(target.url, connect_timeout=10, options="-c TimeZone=UTC") as con,
            con.transaction(),
        ):
            present = {
                str(r[0])
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = %s AND table_name = %s",
                    [target.settings.schema, table_name],
                ).fetchall()
            }
            if not present:
                return 0  # not made yet
            _refuse_missing(target.name, pipeline, columns, present)
            deleted = 0
            for column in columns:
                result = con.execute(
                    sql.SQL("DELETE FROM {} WHERE {}::text = ANY(%s)").format(
                        table, sql.Identifier(column)
                    ),
                    [list(ids)],
                )
                deleted += int(result.rowcount or 0)
            return deleted
    except psycopg.Error as exc:
        if transient(exc) or isinstance(exc, psycopg.OperationalError):
            raise SinkUnavailable(first_line(exc), sink=target.name, pipeline=pipeline) from None
        raise SinkRefused(
            f"the delete was refused: {first_line(exc)}",
            sink=target.name,
            pipeline=pipeline,
            hint="grant the sink's user DELETE on the table",
        ) from None


def notice(
    erasure_id: int, pipeline: str, sink: str, columns: Sequence[str], ids: Sequence[str],
    requested_at: datetime,
) -> bytes:  # fmt: skip
    """The body of a deletion notice (see docs/delivery.md)."""
    payload: dict[str, Any] = {
        "type": "erasure",
        "erasure": erasure_id,
        "pipeline": pipeline,
        "sink": sink,
        "requested_at": requested_at,
        "ids": {column: sorted(ids) for column in columns},
    }
    return jsonio.dumps(payload)


def notice_key(erasure_id: int, pipeline: str, sink: str, scope: str = "") -> str:
    """The notice's idempotency key: the same at every attempt."""
    text = f"erasure\x00{erasure_id}\x00{pipeline}\x00{sink}\x00{scope}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def send_notice(target: WebhookTarget, body: bytes, key: str) -> Outcome:
    """POST the notice, signed as every delivery is."""
    return target.send(body, key)
