"""The PostgreSQL sink: a table per pipeline in another service's database.

Each interval is delivered in one transaction: the rows are copied (``COPY``,
CSV written by Arrow) into a temporary table, upserted into the target by the
pipeline's key, and rows of that interval whose key is gone are deleted. So
the target holds exactly the engine's output, a reader never sees half an
interval, and delivering the same interval twice changes nothing.

The same database can serve the read API's lookups (``serve = true``): the
table's primary key is the pipeline's key, so a lookup is an index scan (the
reading is :class:`headwater.store.postgres.reader.PostgresReader`'s).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from headwater.core.secrets import environment_value
from headwater.core.types import Interval
from headwater.deliver.errors import SinkRefused, SinkUnavailable
from headwater.deliver.settings import PostgresSink
from headwater.store.errors import first_line
from headwater.store.postgres.arrow import copy_in, names, pg_type
from headwater.store.postgres.errors import transient

_MAX_NAME = 63


class PostgresTarget:
    """Upserts a pipeline's intervals into ``<schema>.<prefix><pipeline>``."""

    def __init__(self, name: str, settings: PostgresSink) -> None:
        self.name = name
        self.settings = settings
        self.url = environment_value(settings.url, where=f"[sinks.{name}] url")

    def table_name(self, pipeline: str) -> str:
        return f"{self.settings.table_prefix}{pipeline}"

    def write(
        self,
        pipeline: str,
        key: Sequence[str],
        interval: Interval | None,
        time_column: str | None,
        table: pa.Table,
    ) -> None:
        """Make the target's rows of ``interval`` (all rows when ``None``) equal ``table``."""
        refused = partial(SinkRefused, sink=self.name, pipeline=pipeline, interval=interval)
        columns = table.column_names
        latest = self.settings.latest.get(pipeline)
        order: list[str] = []
        if latest:
            key, order = latest, [c for c in (time_column, "scored_at") if c and c in columns]
            missing = [c for c in key if c not in columns]
            if missing or not order:
                raise refused(
                    f"latest.{pipeline} keys the table by {', '.join(key)}, and the rows have "
                    + (
                        f"no column {', '.join(missing)}"
                        if missing
                        else "no time column or scored_at to say which row is the latest"
                    ),
                    hint=f"name columns of {pipeline}'s output in [sinks.{self.name}] latest",
                )
        if not key:
            raise refused(
                "the pipeline has no key, and the PostgreSQL sink upserts by key",
                hint='declare the key in the pipeline\'s header: key = ["user_id"]',
            )
        target = sql.Identifier(self.settings.schema, self.table_name(pipeline))
        try:
            # In UTC, as the store: interval bounds compare with the target's dates and times.
            with (
                psycopg.connect(self.url, connect_timeout=10, options="-c TimeZone=UTC") as con,
                con.transaction(),
            ):
                self._ensure_table(con, target, self.table_name(pipeline), table.schema, key)
                con.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE headwater_stage ON COMMIT DROP AS "
                        "SELECT {} FROM {} WITH NO DATA"
                    ).format(names(columns), target)
                )
                copy_in(con, sql.Identifier("headwater_stage"), table)
                self._delete_gone(con, target, key, interval, time_column)
                self._upsert(con, target, columns, key, order)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise refused(
                first_line(exc),
                hint="grant the sink's user CREATE on the schema (or create the table for it) "
                "and INSERT, UPDATE, DELETE, SELECT on the table",
            ) from None
        except psycopg.Error as exc:
            if transient(exc):
                raise SinkUnavailable(
                    first_line(exc), sink=self.name, pipeline=pipeline, interval=interval
                ) from None
            raise refused(
                f"the rows were refused: {first_line(exc)}",
                hint="a changed output schema needs the target table altered or dropped",
            ) from None

    def _ensure_table(
        self, con: psycopg.Connection[Any], target: sql.Identifier, table_name: str,
        schema: pa.Schema, key: Sequence[str],
    ) -> None:  # fmt: skip
        # Only what is missing: CREATE … IF NOT EXISTS still needs the privilege to create,
        # which another service's database may rightly not grant.
        known = con.execute(
            "SELECT to_regnamespace(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            [sql.Identifier(self.settings.schema).as_string(con), target.as_string(con)],
        ).fetchone()
        schema_exists, table_exists = known if known is not None else (False, False)
        if not schema_exists:
            con.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.settings.schema)
                )
            )
        if len(table_name.encode()) > _MAX_NAME:
            raise SinkRefused(
                f"the table name {table_name!r} is longer than PostgreSQL's {_MAX_NAME} bytes",
                sink=self.name,
                hint="use a shorter table_prefix or pipeline name",
            )
        definitions = [
            sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(pg_type(f.type)))
            for f in schema
        ]
        if not table_exists:
            con.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
                    target, sql.SQL(", ").join(definitions), names(key)
                )
            )
        # Columns the pipeline gained since the table was made. ALTER TABLE locks readers
        # out until commit even when it changes nothing, so only for columns that are new.
        existing = {
            str(row[0])
            for row in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                [self.settings.schema, table_name],
            ).fetchall()
        }
        for field in schema:
            if field.name not in existing:
                con.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        target, sql.Identifier(field.name), sql.SQL(pg_type(field.type))
                    )
                )

    def _delete_gone(
        self, con: psycopg.Connection[Any], target: sql.Identifier, key: Sequence[str],
        interval: Interval | None, time_column: str | None,
    ) -> None:  # fmt: skip
        same = sql.SQL(" AND ").join(
            sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in key
        )
        statement = sql.SQL(
            "DELETE FROM {} AS t WHERE NOT EXISTS (SELECT 1 FROM headwater_stage AS s WHERE {})"
        ).format(target, same)
        params: list[object] = []
        if interval is not None and time_column is not None:
            statement += sql.SQL(" AND t.{0} >= %s AND t.{0} < %s").format(
                sql.Identifier(time_column)
            )
            params = [interval.start, interval.end]
        con.execute(statement, params)

    def _upsert(
        self, con: psycopg.Connection[Any], target: sql.Identifier, columns: Sequence[str],
        key: Sequence[str], latest: Sequence[str] = (),
    ) -> None:  # fmt: skip
        """Insert the staged rows, replacing those of the same key. With ``latest`` (the
        columns that order rows in time), one row per key: the staged rows' latest, and it
        replaces a row only as late or later, so an older interval delivered again (after
        a re-scoring, say) leaves a newer prediction in place."""
        others = [c for c in columns if c not in key]
        action = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others
                )
            )
            if others
            else sql.SQL("DO NOTHING")
        )
        rows = sql.SQL("SELECT {} FROM headwater_stage").format(names(columns))
        if latest:
            latest_rows = "SELECT DISTINCT ON ({}) {} FROM headwater_stage ORDER BY {}, {}"
            rows = sql.SQL(latest_rows).format(
                names(key),
                names(columns),
                names(key),
                sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in latest),
            )
            if others:
                action += sql.SQL(" WHERE ({}) <= ({})").format(
                    sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in latest),
                    sql.SQL(", ").join(
                        sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in latest
                    ),
                )
        con.execute(
            sql.SQL("INSERT INTO {} AS t ({}) {} ON CONFLICT ({}) {}").format(
                target, names(columns), rows, names(key), action
            )
        )
