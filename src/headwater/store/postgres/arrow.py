"""Arrow in and out of PostgreSQL: column types, COPY data, and result sets.

Shared by the PostgreSQL store, its reader and the PostgreSQL sink. Rows go in with
``COPY … (FORMAT csv)`` written by Arrow's CSV writer, whose quoting keeps
NULL (an empty field) apart from empty text (``""``); nested values go in as
JSON text. Results come back typed by the columns' OIDs, so an empty result
still has its schema.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.csv
import sqlglot
from psycopg import sql

from headwater.core import jsonio
from headwater.store.errors import UnsupportedColumn

_COPY_CHUNK = 1 << 20


def pg_type(arrow: pa.DataType, *, json: bool = False) -> str:
    """The PostgreSQL column type for an Arrow type (``json``: text that holds JSON, kept
    as written, as the embedded store keeps it).

    >>> pg_type(pa.timestamp("us", "UTC")), pg_type(pa.int32()), pg_type(pa.string())
    ('timestamptz', 'integer', 'text')
    """
    if json:
        return "json"
    if pa.types.is_boolean(arrow):
        return "boolean"
    if pa.types.is_int8(arrow) or pa.types.is_int16(arrow) or pa.types.is_uint8(arrow):
        return "smallint"
    if pa.types.is_int32(arrow) or pa.types.is_uint16(arrow):
        return "integer"
    if pa.types.is_int64(arrow) or pa.types.is_uint32(arrow):
        return "bigint"
    if pa.types.is_uint64(arrow) or pa.types.is_decimal(arrow):
        return "numeric"
    if pa.types.is_floating(arrow):
        return "double precision"
    if pa.types.is_timestamp(arrow):
        return "timestamptz" if arrow.tz is not None else "timestamp"
    if pa.types.is_date(arrow):
        return "date"
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return "text"
    if pa.types.is_nested(arrow):
        return "jsonb"
    if pa.types.is_null(arrow):
        return "text"
    raise UnsupportedColumn(
        "PostgreSQL",
        str(arrow),
        hint="cast it in the pipeline's SELECT (to text, a number or a timestamp)",
    )


def columns_ddl(schema: pa.Schema, json_columns: frozenset[str] = frozenset()) -> sql.Composed:
    """``"a" bigint, "b" text NOT NULL, …`` for a CREATE TABLE."""
    parts = []
    for field in schema:
        kind = sql.SQL(pg_type(field.type, json=field.name in json_columns))
        null = sql.SQL("") if field.nullable else sql.SQL(" NOT NULL")
        parts.append(sql.SQL("{} {}{}").format(sql.Identifier(field.name), kind, null))
    return sql.SQL(", ").join(parts)


def names(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def flat(table: pa.Table) -> pa.Table:
    """Nested columns as JSON text: CSV holds only flat values."""
    for index, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            text = [
                None if v is None else jsonio.dumps(v).decode() for v in table[index].to_pylist()
            ]
            table = table.set_column(index, pa.field(field.name, pa.string()), pa.array(text))
    return table


def csv_chunks(table: pa.Table) -> Iterator[bytes]:
    """``table`` as headerless CSV for ``COPY … FROM STDIN (FORMAT csv)``, in chunks."""
    out = io.BytesIO()
    pa.csv.write_csv(flat(table), out, pa.csv.WriteOptions(include_header=False))
    data = out.getbuffer()
    for offset in range(0, len(data), _COPY_CHUNK):
        yield bytes(data[offset : offset + _COPY_CHUNK])


def copy_in(con: Any, target: sql.Composable, table: pa.Table) -> None:
    """``COPY`` ``table``'s rows into ``target`` (its columns by name), inside the caller's
    transaction."""
    if table.num_rows == 0:
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, names(table.column_names)
    )
    with con.cursor().copy(statement) as copy:
        for chunk in csv_chunks(table):
            copy.write(chunk)


#: PostgreSQL type OIDs to Arrow, for the types Headwater creates.
_OIDS: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    700: pa.float32(),
    701: pa.float64(),
    1043: pa.string(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", "UTC"),
    114: pa.string(),  # json: as text, as the DuckDB store gives it
    3802: pa.string(),  # jsonb
}


_NUMERIC = 1700


def json_as_text(con: Any) -> None:
    """Read ``json`` and ``jsonb`` as the text stored, as the embedded store gives it (not
    parsed and written out again, which changes escapes and number spellings)."""
    from psycopg.types.string import TextLoader

    con.adapters.register_loader("json", TextLoader)
    con.adapters.register_loader("jsonb", TextLoader)


def positional(text: str) -> str:
    """``?`` placeholders (the CLI's and the control API's) as psycopg's ``%s``.

    >>> positional("SELECT * FROM t WHERE a = ? AND b LIKE 'x%' AND c = '?'")
    "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%' AND c = '?'"
    """
    from sqlglot import TokenType

    tokens = sqlglot.tokenize(text, read="postgres")
    out, last = [], 0
    for token in tokens:
        start, end = token.start, token.end + 1
        piece = text[start:end]
        out.append(text[last:start].replace("%", "%%"))
        out.append("%s" if token.token_type == TokenType.PLACEHOLDER else piece.replace("%", "%%"))
        last = end
    out.append(text[last:].replace("%", "%%"))
    return "".join(out)


def escaped(text: str, params: Any) -> str:
    """``text`` for psycopg with named ``params``: every ``%`` doubled but the
    ``%(name)s`` placeholders of those params (``LIKE 'a%'``, a modulo).

    >>> escaped("SELECT x % 7 FROM t WHERE a LIKE 'b%' AND d >= %(start)s", {"start": 1})
    "SELECT x %% 7 FROM t WHERE a LIKE 'b%%' AND d >= %(start)s"
    """
    if not params:
        return text
    names = "|".join(re.escape(str(name)) for name in params)
    return re.sub(rf"%(?!\(({names})\)s)", "%%", text)


def to_arrow(description: Sequence[Any], rows: Sequence[Sequence[Any]]) -> pa.Table:
    """A result set as an Arrow table typed by the columns' OIDs.

    ``numeric`` becomes a decimal with the scale its values need (a SUM of
    integers: scale 0, as DuckDB's), never a float that would round it.
    """
    names = [d.name for d in description]
    types = [_OIDS.get(d.type_code) for d in description]
    columns_in = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    for index, d in enumerate(description):
        if d.type_code == _NUMERIC:
            types[index] = _decimal(columns_in[index])
    arrays = [_array(values, kind) for values, kind in zip(columns_in, types, strict=True)]
    return pa.Table.from_arrays(arrays, names=names)


def _decimal(values: Sequence[object]) -> pa.DataType:
    scale = 0
    for value in values:
        if isinstance(value, Decimal) and value.is_finite():
            exponent = value.as_tuple().exponent
            if isinstance(exponent, int):
                scale = max(scale, -exponent)
    return pa.decimal128(38, min(scale, 37))


def _array(values: Sequence[object], kind: pa.DataType | None) -> pa.Array:
    if kind is not None and pa.types.is_floating(kind):
        values = [float(v) if isinstance(v, Decimal) else v for v in values]
    elif kind is not None and pa.types.is_string(kind):
        values = [
            v if v is None or isinstance(v, str) else jsonio.dumps(v).decode() for v in values
        ]
    if kind is None:
        return pa.array(list(values))
    return pa.array(list(values), type=kind)
