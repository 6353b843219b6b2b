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
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import sqlglot
from psycopg import sql

from headwater.core import jsonio
from headwater.store.errors import UnsupportedColumn

_COPY_CHUNK = 1 << 20


def pg_type(arrow: pa.DataType, *, json: bool = False, arrays: bool = False) -> str:
    """The PostgreSQL column type for an Arrow type (``json``: text that holds JSON, kept
    as written, as the embedded store keeps it). A list of scalars is an array of their
    type with ``arrays`` (the store's tables, as BigQuery's ``ARRAY<T>``), else ``jsonb``
    as every other nested value (a sink's tables, made so before arrays were).

    >>> pg_type(pa.timestamp("us", "UTC")), pg_type(pa.int32()), pg_type(pa.string())
    ('timestamptz', 'integer', 'text')
    >>> pg_type(pa.list_(pa.string()), arrays=True), pg_type(pa.list_(pa.string()))
    ('text[]', 'jsonb')
    """
    if json:
        return "json"
    if arrays and _scalar_list(arrow):
        return pg_type(arrow.value_type) + "[]"
    if arrays and untyped(arrow):
        return "text"  # given its type by the first rows that have one (the store's)
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


def _scalar_list(arrow: pa.DataType) -> bool:
    """A list whose items are not nested (what a PostgreSQL array holds as BigQuery does)."""
    return (
        (pa.types.is_list(arrow) or pa.types.is_large_list(arrow))
        and not pa.types.is_nested(arrow.value_type)
        and not pa.types.is_null(arrow.value_type)
    )


def untyped(arrow: pa.DataType) -> bool:
    """Arrow's null type, or a list of it: what an empty column built from Python lists
    is, whose type its first values will tell."""
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return bool(pa.types.is_null(arrow.value_type))
    return bool(pa.types.is_null(arrow))


def columns_ddl(
    schema: pa.Schema, json_columns: frozenset[str] = frozenset(), *, arrays: bool = False
) -> sql.Composed:
    """``"a" bigint, "b" text NOT NULL, …`` for a CREATE TABLE (``arrays``: see
    :func:`pg_type`)."""
    parts = []
    for field in schema:
        kind = sql.SQL(pg_type(field.type, json=field.name in json_columns, arrays=arrays))
        null = sql.SQL("") if field.nullable else sql.SQL(" NOT NULL")
        parts.append(sql.SQL("{} {}{}").format(sql.Identifier(field.name), kind, null))
    return sql.SQL(", ").join(parts)


def names(columns: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def flat(table: pa.Table, arrays: frozenset[str] = frozenset()) -> pa.Table:
    """Nested columns as text, as CSV holds only flat values: the columns named in
    ``arrays`` as PostgreSQL array literals (``{"a","b",NULL}``), the others as JSON."""
    for index, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            write = _array_literal if field.name in arrays else _json_text
            text = [None if v is None else write(v) for v in table[index].to_pylist()]
            table = table.set_column(
                index, pa.field(field.name, pa.string()), pa.array(text, pa.string())
            )
    return table


def _json_text(value: object) -> str:
    return jsonio.dumps(value).decode()


def _array_literal(items: Sequence[object]) -> str:
    r"""A one-dimensional PostgreSQL array literal, every item quoted (each then read by the
    column's own type), NULL for None.

    >>> _array_literal(["a", 'say "hi"', None, "back\\slash", ""])
    '{"a","say \\"hi\\"",NULL,"back\\\\slash",""}'
    >>> _array_literal([1.5, float("inf"), True])
    '{"1.5","inf","true"}'
    """
    out = []
    for item in items:
        if item is None:
            out.append("NULL")
            continue
        if isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, datetime | date):
            text = item.isoformat()
        else:
            text = str(item)
        out.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(out) + "}"


def csv_chunks(table: pa.Table, arrays: frozenset[str] = frozenset()) -> Iterator[bytes]:
    """``table`` as headerless CSV for ``COPY … FROM STDIN (FORMAT csv)``, in chunks
    (``arrays``: see :func:`flat`)."""
    out = io.BytesIO()
    pa.csv.write_csv(flat(table, arrays), out, pa.csv.WriteOptions(include_header=False))
    data = out.getbuffer()
    for offset in range(0, len(data), _COPY_CHUNK):
        yield bytes(data[offset : offset + _COPY_CHUNK])


#: A JSON escape of NUL not itself escaped (``\\u0000`` is a backslash, then text).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_NUL_REPLACED = "\\ufffd"


def without_nul(table: pa.Table, columns: frozenset[str]) -> pa.Table:
    r"""``table`` with each ``\u0000`` in the JSON text of ``columns`` written as
    ``\ufffd`` (U+FFFD, the replacement character): PostgreSQL's text cannot hold NUL, so
    its JSON functions refuse a document holding one, whichever key is asked for.

    >>> t = pa.table({"properties": ['{"a": "x\\u0000y", "b": 1}', '{"c": "\\\\u0000"}']})
    >>> without_nul(t, frozenset({"properties"})).column(0).to_pylist()
    ['{"a": "x\\ufffdy", "b": 1}', '{"c": "\\\\u0000"}']
    """
    for name in columns & set(table.column_names):
        column = table.column(name)
        if not pa.types.is_string(column.type):
            continue
        if not pc.any(pc.match_substring(column, "\\u0000")).as_py():
            continue
        fixed = [
            None if v is None else _NUL_ESCAPE.sub(lambda m: m.group(1) + _NUL_REPLACED, v)
            for v in column.to_pylist()
        ]
        index = table.column_names.index(name)
        table = table.set_column(index, table.field(index), pa.array(fixed, column.type))
    return table


def copy_in(
    con: Any, target: sql.Composable, table: pa.Table, arrays: frozenset[str] = frozenset()
) -> None:
    """``COPY`` ``table``'s rows into ``target`` (its columns by name), inside the caller's
    transaction; ``arrays``: the columns that are PostgreSQL arrays there."""
    if table.num_rows == 0:
        return
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, names(table.column_names)
    )
    with con.cursor().copy(statement) as copy:
        for chunk in csv_chunks(table, arrays):
            copy.write(chunk)


#: PostgreSQL type OIDs to Arrow, for the types Headwater creates. Every integer is INT64,
#: as in BigQuery and as DuckDB gives the same SQL's results (PostgreSQL's LENGTH, STRPOS
#: and ARRAY_LENGTH are ``integer``): the same pipeline has the same column types, in
#: Parquet files and the read API too, whichever engine ran it.
_OIDS: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int64(),
    23: pa.int64(),
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

#: Array type OIDs to their items' OIDs: an array comes back as an Arrow list of them.
_ARRAYS: dict[int, int] = {
    1000: 16, 1005: 21, 1007: 23, 1016: 20, 1021: 700, 1022: 701, 1009: 25, 1015: 1043,
    1182: 1082, 1115: 1114, 1185: 1184, 1231: 1700,
}  # fmt: skip


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
        elif d.type_code in _ARRAYS:
            item = _ARRAYS[d.type_code]
            if item == _NUMERIC:
                values = [v for items in columns_in[index] if items for v in items]
                types[index] = pa.list_(_decimal(values))
            else:
                types[index] = pa.list_(_OIDS[item])
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
