"""Where sqlglot's BigQuery → PostgreSQL translation runs but answers differently.

Each rewrite takes one node of a BigQuery pipeline's tree and returns what
PostgreSQL needs to give BigQuery's answer (the conformance tests run the
golden pipelines on both engines and compare with BigQuery's semantics).
"""

from __future__ import annotations

from sqlglot import exp

from headwater.process import bigquery_sql

_SCALAR_KINDS = ("string", "number", "boolean")
_SECONDS = {
    "DAY": 86400.0,
    "HOUR": 3600.0,
    "MINUTE": 60.0,
    "SECOND": 1.0,
    "MILLISECOND": 0.001,
    "MICROSECOND": 0.000001,
}
_INTEGER = r"^\s*[+-]?[0-9]{1,18}\s*$"
_FLOAT = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


def _path_keys(path: exp.Expression) -> list[exp.Expression] | None:
    """``$.a.b[0]`` as the arguments of ``json_extract_path`` ('a', 'b', '0'); ``None`` for
    paths it cannot express (wildcards, filters)."""
    if not isinstance(path, exp.JSONPath):
        return None
    keys: list[exp.Expression] = []
    for part in path.expressions:
        if isinstance(part, exp.JSONPathRoot):
            continue
        if isinstance(part, exp.JSONPathKey) and isinstance(part.this, str):
            keys.append(exp.Literal.string(part.this))
        elif isinstance(part, exp.JSONPathSubscript) and isinstance(part.this, int):
            keys.append(exp.Literal.string(str(part.this)))
        else:
            return None
    return keys


def _func(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def json_value_is_scalar(node: exp.Expression) -> exp.Expression:
    """JSON_VALUE gives NULL for an object or array; json_extract_path_text gives its text."""
    if not isinstance(node, exp.JSONExtractScalar):
        return node
    keys = _path_keys(node.expression)
    if keys is None:
        return node
    value = _func("JSON_EXTRACT_PATH", node.this.copy(), *[k.copy() for k in keys])
    text = _func("JSON_EXTRACT_PATH_TEXT", node.this.copy(), *keys)
    scalar = exp.In(
        this=_func("JSON_TYPEOF", value),
        expressions=[exp.Literal.string(kind) for kind in _SCALAR_KINDS],
    )
    return exp.Case(ifs=[exp.If(this=scalar, true=text)])


def approx_count_is_exact(node: exp.Expression) -> exp.Expression:
    """PostgreSQL has no approximate distinct count; the exact one is a valid answer."""
    if isinstance(node, exp.ApproxDistinct):
        return exp.Count(this=exp.Distinct(expressions=[node.this.copy()]))
    return node


def weeks_start_on_their_day(node: exp.Expression) -> exp.Expression:
    """BigQuery's WEEK starts on Sunday (or the named day); PostgreSQL's on Monday."""
    if not isinstance(node, exp.DateTrunc):
        return node
    unit = node.args.get("unit")
    day = "SUNDAY"
    if isinstance(unit, exp.WeekStart):
        day = unit.this.name.upper()
    elif not (isinstance(unit, exp.Var | exp.Literal) and unit.name.upper() == "WEEK"):
        return node
    days = ["SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY"]
    if day not in days:
        return node
    date = exp.cast(node.this.copy(), exp.DataType.Type.DATE)
    dow = exp.cast(exp.Extract(this=exp.var("DOW"), expression=date.copy()), "INT")
    # Days since the week's first day: (dow - first + 7) % 7.
    back = exp.Mod(
        this=exp.Paren(
            this=exp.Add(
                this=exp.Sub(this=dow, expression=exp.Literal.number(days.index(day))),
                expression=exp.Literal.number(7),
            )
        ),
        expression=exp.Literal.number(7),
    )
    return exp.Paren(this=exp.Sub(this=date, expression=exp.Paren(this=back)))


def diff_in_whole_units(node: exp.Expression) -> exp.Expression:
    """TIMESTAMP_DIFF(a, b, part): whole parts between them, truncated toward zero."""
    if not isinstance(node, exp.TimestampDiff):
        return node
    unit = (node.unit.name if node.unit else "DAY").upper()
    if unit not in _SECONDS:
        return node
    seconds = exp.Extract(
        this=exp.var("EPOCH"),
        expression=exp.Paren(
            this=exp.Sub(this=node.this.copy(), expression=node.expression.copy())
        ),
    )
    ratio = exp.Div(this=seconds, expression=exp.Literal.number(_SECONDS[unit]))
    return exp.cast(_func("TRUNC", ratio), exp.DataType.Type.BIGINT)


def safe_cast_returns_null(node: exp.Expression) -> exp.Expression:
    """SAFE_CAST of text to a number: NULL when the text is not one, where CAST fails."""
    if not isinstance(node, exp.TryCast):
        return node
    if node.to.is_type(*exp.DataType.INTEGER_TYPES):
        pattern = _INTEGER
    elif node.to.is_type(*exp.DataType.REAL_TYPES):
        pattern = _FLOAT
    else:
        return node
    text = exp.cast(node.this.copy(), exp.DataType.Type.TEXT)
    matches = exp.RegexpLike(this=text, expression=exp.Literal.string(pattern))
    cast = exp.cast(exp.Trim(this=text.copy()), node.to.copy())
    return exp.Case(ifs=[exp.If(this=matches, true=cast)])


def json_array_elements(node: exp.Expression) -> exp.Expression:
    """UNNEST(JSON_EXTRACT_ARRAY(x, path)): one row per element, none for a non-array."""
    if not isinstance(node, exp.Unnest) or len(node.expressions) != 1:
        return node
    inner = node.expressions[0]
    if not isinstance(inner, exp.JSONExtractArray):
        return node
    keys = _path_keys(inner.expression)
    if keys is None:
        return node
    value = _func("JSON_EXTRACT_PATH", inner.this.copy(), *keys)
    is_array = exp.EQ(
        this=_func("JSON_TYPEOF", value.copy()), expression=exp.Literal.string("array")
    )
    array = exp.Case(ifs=[exp.If(this=is_array, true=value)])
    alias = node.args.get("alias")
    return exp.Table(
        this=_func("JSON_ARRAY_ELEMENTS", array), alias=alias.copy() if alias else None
    )


def average_is_float(node: exp.Expression) -> exp.Expression:
    """AVG of integers is FLOAT64 in BigQuery; PostgreSQL's is numeric."""
    if isinstance(node, exp.Avg) and not isinstance(node.parent, exp.Cast):
        return exp.cast(node, exp.DataType.Type.DOUBLE)
    return node


#: In order; each sees the tree the one before left.
FIXES = (
    bigquery_sql.postgres_json_text,
    average_is_float,
    json_array_elements,
    json_value_is_scalar,
    approx_count_is_exact,
    weeks_start_on_their_day,
    diff_in_whole_units,
    safe_cast_returns_null,
    *bigquery_sql.POSTGRES,
)
