"""Rewrites more than one engine needs to give BigQuery's answer: strings, arrays,
aggregates (each engine's module lists the ones it uses in its ``FIXES``).

Each takes one node of a BigQuery pipeline's tree and returns what the engine
needs; a construct an engine cannot answer as BigQuery does is refused with
:func:`refuse`, which names it and the line it is on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NoReturn, cast

import sqlglot
from sqlglot import exp

from headwater.process.errors import Untranslatable


def refuse(construct: str, node: exp.Expression, reason: str, hint: str) -> NoReturn:
    """Refuse ``node``: the pipeline does not load on this engine."""
    raise Untranslatable(construct, node, reason, hint)


def func(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def literal_int(node: exp.Expression | None) -> int | None:
    """The value of an integer literal (``-3`` included), else ``None``."""
    if isinstance(node, exp.Neg):
        inner = literal_int(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal) and node.is_int:
        return int(node.this)
    return None


def substr_from_bigquery_position(node: exp.Expression) -> exp.Expression:
    """SUBSTR's position: 0 is 1, and a negative one counts from the end, starting at 1
    when it reaches past the start (SUBSTR('apple', -10, 3) is 'app'); engines give ''."""
    if not isinstance(node, exp.Substring) or node.meta.get("hw_position"):
        return node
    start = node.args.get("start")
    value = literal_int(start)
    if start is None or (value is not None and value > 0):
        return node
    length = exp.Length(this=node.this.copy())
    from_end = exp.Greatest(
        this=exp.Add(
            this=exp.Add(this=length, expression=start.copy()), expression=exp.Literal.number(1)
        ),
        expressions=[exp.Literal.number(1)],
    )
    if value is not None:
        position: exp.Expression = exp.Literal.number(1) if value == 0 else from_end
    else:
        position = exp.Case(
            ifs=[
                exp.If(
                    this=exp.GT(this=start.copy(), expression=exp.Literal.number(0)),
                    true=start.copy(),
                ),
                exp.If(
                    this=exp.EQ(this=start.copy(), expression=exp.Literal.number(0)),
                    true=exp.Literal.number(1),
                ),
            ],
            default=from_end,
        )
    node.set("start", position)
    node.meta["hw_position"] = True
    return node


def count_if_counts(node: exp.Expression) -> exp.Expression:
    """COUNTIF is a count: 0 (an INT64) over no rows, or only the NULL side of a LEFT JOIN,
    where a SUM of 1s or DuckDB's COUNT_IF gives NULL."""
    if not isinstance(node, exp.CountIf):
        return node
    one = exp.Case(ifs=[exp.If(this=node.this.copy(), true=exp.Literal.number(1))])
    return exp.Count(this=one)


def greatest_least_null(node: exp.Expression) -> exp.Expression:
    """GREATEST and LEAST are NULL when any argument is; PostgreSQL's and Spark's skip
    NULLs (GREATEST(1, NULL) is 1 there)."""
    if not isinstance(node, exp.Greatest | exp.Least) or node.args.get("ignore_nulls"):
        return node
    values = [node.this, *node.expressions]
    if len(values) < 2:
        return node
    kept = node.copy()
    kept.set("ignore_nulls", True)  # the generator adds no NULL check of its own
    any_null = exp.or_(*(exp.Is(this=v.copy(), expression=exp.Null()) for v in values))
    return exp.Case(ifs=[exp.If(this=any_null, true=exp.Null())], default=kept)


#: The meta key of a table function made from ``UNNEST ... WITH OFFSET AS name``: its
#: ordinality column is ``name``, counted from 1, which :func:`offset_from_zero` shifts.
ORDINAL_OFFSET = "hw_offset"


def offset_from_zero(node: exp.Expression) -> exp.Expression:
    """UNNEST ... WITH OFFSET counts from 0; the engines' WITH ORDINALITY from 1. The
    offset's name, wherever the query uses it, becomes the ordinal minus 1."""
    if not isinstance(node, exp.Select):
        return node
    names = {
        unnest.args["offset"].name
        for unnest in node.find_all(exp.Unnest)
        if isinstance(unnest.args.get("offset"), exp.Identifier) and unnest.parent_select is node
    }
    # An UNNEST an engine's rewrite made a function of rows WITH ORDINALITY.
    names |= {
        table.meta[ORDINAL_OFFSET]
        for table in node.find_all(exp.Table)
        if ORDINAL_OFFSET in table.meta and table.parent_select is node
    }
    if not names:
        return node
    for column in list(node.find_all(exp.Column)):
        if column.table or column.name not in names or column.parent_select is not node:
            continue
        if column.find_ancestor(exp.Unnest) is not None:
            continue
        shifted = exp.Paren(this=exp.Sub(this=column.copy(), expression=exp.Literal.number(1)))
        if column.parent is node:
            column.replace(exp.alias_(shifted, column.name))
        else:
            column.replace(shifted)
    return node


def array_concat_null(node: exp.Expression) -> exp.Expression:
    """ARRAY_CONCAT of a NULL array is NULL; DuckDB and PostgreSQL skip it."""
    if not isinstance(node, exp.ArrayConcat) or node.meta.get("hw_null"):
        return node
    arrays = [node.this, *node.expressions]
    node.meta["hw_null"] = True
    nulls = [exp.Is(this=a.copy(), expression=exp.Null()) for a in arrays if a is not None]
    if not nulls:
        return node
    return exp.Case(ifs=[exp.If(this=exp.or_(*nulls), true=exp.Null())], default=node)


def refuse_array_agg_limit(node: exp.Expression) -> exp.Expression:
    """ARRAY_AGG(... LIMIT n): the engine has no limit inside an aggregate."""
    if isinstance(node, exp.ArrayAgg) and node.find(exp.Limit) is not None:
        refuse(
            "ARRAY_AGG(... LIMIT n)",
            node,
            "this engine cannot limit the elements inside an aggregate",
            "aggregate a subquery that keeps the first n rows per group (ROW_NUMBER() ... <= n)",
        )
    return node


def refusing(
    kind: type[exp.Expression], construct: str, reason: str, hint: str
) -> Callable[[exp.Expression], exp.Expression]:
    """A rewrite that refuses every ``kind`` node: the engine has no way to give BigQuery's
    answer for it."""

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, kind):
            refuse(construct, node, reason, hint)
        return node

    fix.__name__ = f"refuse_{construct.lower()}"
    return fix


#: The engine has no aggregate that returns the quantiles' array.
refuse_approx_quantiles = refusing(
    exp.ApproxQuantiles,
    "APPROX_QUANTILES",
    "this engine has no aggregate that returns an array of quantiles",
    "take the value at each quantile's rank: ROW_NUMBER() OVER (ORDER BY x) against "
    "CEIL(q * COUNT(*) OVER ()), or run the pipeline where DuckDB or BigQuery is the engine",
)
#: The engine's word boundaries are not BigQuery's (PostgreSQL's are every character that
#: is not a letter or digit, so o'brien is O'Brien; Spark's only spaces).
refuse_initcap = refusing(
    exp.Initcap,
    "INITCAP",
    "this engine starts words at other characters than BigQuery does",
    "capitalise with UPPER(SUBSTR(s, 1, 1)) || LOWER(SUBSTR(s, 2)) (one word), or format "
    "the text where it is shown",
)


def refuse_regexp_position(node: exp.Expression) -> exp.Expression:
    """REGEXP_EXTRACT's position and occurrence arguments."""
    if isinstance(node, exp.RegexpExtract) and (
        node.args.get("position") is not None or node.args.get("occurrence") is not None
    ):
        refuse(
            "REGEXP_EXTRACT(value, regexp, position, occurrence)",
            node,
            "this engine has no position or occurrence for a regular expression's match",
            "use REGEXP_EXTRACT_ALL(value, regexp)[SAFE_OFFSET(n)] for the n-th match",
        )
    return node


#: No engine here tells an array of scalars from a nested one.
refuse_json_value_array = refusing(
    exp.JSONValueArray,
    "JSON_VALUE_ARRAY",
    "this engine cannot give NULL for an array holding objects or arrays",
    "use ARRAY(SELECT JSON_VALUE(x, '$') FROM UNNEST(JSON_EXTRACT_ARRAY(...)) AS x)",
)


def _is_bytes(node: exp.Expression) -> bool:
    """Whether ``node`` is BYTES by its form (a bytes literal, a cast to BYTES, a digest)."""
    if isinstance(node, exp.ByteString | exp.SHA2Digest | exp.MD5Digest | exp.Unhex):
        return True
    if isinstance(node, exp.FromBase64):
        return True
    return isinstance(node, exp.Cast) and node.to.is_type(
        exp.DataType.Type.BINARY, exp.DataType.Type.VARBINARY
    )


def _text(node: exp.Expression) -> exp.Expression:
    """A string literal typed as text (PostgreSQL cannot choose a function for 'unknown')."""
    return exp.cast(node.copy(), exp.DataType.Type.TEXT) if node.is_string else node.copy()


def template(sql: str, dialect: str, **parts: exp.Expression) -> exp.Expression:
    """``sql`` parsed in ``dialect`` with each column ``_hw_<name>`` replaced by ``parts[name]``."""
    tree = cast(exp.Expression, sqlglot.parse_one(sql, read=dialect))
    for column in list(tree.find_all(exp.Column)):
        name = column.name
        if name.startswith("_hw_") and name[4:] in parts:
            column.replace(parts[name[4:]].copy())
    return tree


def _star_refused(node: exp.Expression, engine: str, kinds: tuple[str, ...]) -> None:
    star = node.this if isinstance(node, exp.Column) and isinstance(node.this, exp.Star) else node
    if not isinstance(star, exp.Star):
        return
    for kind in kinds:
        if star.args.get(kind):
            written = "EXCEPT" if kind == "except_" else kind.upper()
            refuse(
                f"SELECT * {written} (...)",
                node,
                f"{engine} has no * {written} and the columns behind * are not known when "
                "the pipeline loads",
                "name the columns to keep (SELECT a, b, ...)",
            )


# -- DuckDB ------------------------------------------------------------------------------


def duckdb_byte_length(node: exp.Expression) -> exp.Expression:
    """BYTE_LENGTH: UTF-8 bytes of a string (DuckDB's OCTET_LENGTH takes only BLOBs)."""
    if not isinstance(node, exp.ByteLength):
        return node
    return template(
        "CASE TYPEOF(_hw_x) WHEN 'BLOB' THEN OCTET_LENGTH(CAST(_hw_x AS BLOB)) "
        "ELSE STRLEN(CAST(_hw_x AS TEXT)) END",
        "duckdb",
        x=node.this,
    )


def duckdb_bytes_casts(node: exp.Expression) -> exp.Expression:
    """CAST(string AS BYTES) is its UTF-8 bytes and CAST(bytes AS STRING) their text;
    DuckDB's casts take and give escapes (\\xED) for anything not ASCII."""
    if not isinstance(node, exp.Cast):
        return node
    if node.to.is_type(exp.DataType.Type.BINARY, exp.DataType.Type.VARBINARY):
        if _is_bytes(node.this):
            return node
        return template(
            "CASE TYPEOF(_hw_x) WHEN 'BLOB' THEN CAST(_hw_x AS BLOB) "
            "ELSE ENCODE(CAST(_hw_x AS TEXT)) END",
            "duckdb",
            x=node.this,
        )
    if node.to.is_type(*exp.DataType.TEXT_TYPES) and _is_bytes(node.this):
        return func("DECODE", node.this.copy().transform(duckdb_bytes_casts))
    return node


def duckdb_format(node: exp.Expression) -> exp.Expression:
    """FORMAT('%d', ...) is printf-style; DuckDB's FORMAT is another syntax ({})."""
    if isinstance(node, exp.Format):
        return func("PRINTF", node.this.copy(), *[e.copy() for e in node.expressions])
    return node


def duckdb_json_array(node: exp.Expression) -> exp.Expression:
    """JSON_EXTRACT_ARRAY of anything but an array is NULL; DuckDB's cast fails."""
    if not isinstance(node, exp.JSONExtractArray) or node.meta.get("hw_array"):
        return node
    node.meta["hw_array"] = True
    if node.expression is None:
        return node
    kind = func("JSON_TYPE", node.this.copy(), node.expression.copy())
    is_array = exp.EQ(this=kind, expression=exp.Literal.string("ARRAY"))
    return exp.Case(ifs=[exp.If(this=is_array, true=node)])


def to_json_string_null(node: exp.Expression) -> exp.Expression:
    """TO_JSON_STRING(NULL) is the text 'null'."""
    if isinstance(node, exp.JSONFormat) and not node.meta.get("hw_null"):
        node.meta["hw_null"] = True
        return exp.Coalesce(this=node, expressions=[exp.Literal.string("null")])
    return node


DUCKDB = (
    substr_from_bigquery_position,
    count_if_counts,
    offset_from_zero,
    array_concat_null,
    refuse_json_value_array,
    duckdb_byte_length,
    duckdb_bytes_casts,
    duckdb_format,
    duckdb_json_array,
    to_json_string_null,
)


# -- PostgreSQL ---------------------------------------------------------------------------

_FORMAT_SPEC = re.compile(r"%(.)")


def postgres_strings(node: exp.Expression) -> exp.Expression:
    """String and bytes functions PostgreSQL names or types differently."""
    if isinstance(node, exp.ByteLength):
        return func("OCTET_LENGTH", _text(node.this))
    if isinstance(node, exp.EndsWith):
        suffix = _text(node.expression)
        return exp.EQ(
            this=func("RIGHT", _text(node.this), exp.Length(this=suffix.copy())), expression=suffix
        )
    if isinstance(node, exp.Split):
        return template(
            "CASE WHEN _hw_s = '' THEN ARRAY[''] ELSE STRING_TO_ARRAY(_hw_s, _hw_d) END",
            "postgres",
            s=_text(node.this),
            d=_text(node.expression),
        )
    if isinstance(node, exp.Format):
        pattern = node.this
        specs = _FORMAT_SPEC.findall(pattern.name) if pattern.is_string else None
        if specs is None or any(spec not in "sd%" for spec in specs):
            refuse(
                "FORMAT",
                node,
                "PostgreSQL's format() has only %s (no widths, precisions or %f)",
                "use CAST(x AS STRING), ROUND and LPAD, or only %s and %d",
            )
        text = exp.Literal.string(pattern.name.replace("%d", "%s"))
        return func("FORMAT", text, *[e.copy() for e in node.expressions])
    if isinstance(node, exp.LowerHex):
        if isinstance(node.this, exp.MD5Digest):
            return func("MD5", _text(node.this.this))
        return func("ENCODE", node.this.copy(), exp.Literal.string("hex"))
    if isinstance(node, exp.Unhex):
        return func("DECODE", _text(node.this), exp.Literal.string("hex"))
    if isinstance(node, exp.ToBase64):
        encoded = func("ENCODE", node.this.copy(), exp.Literal.string("base64"))
        return func("REPLACE", encoded, func("CHR", exp.Literal.number(10)), exp.Literal.string(""))
    if isinstance(node, exp.FromBase64):
        return func("DECODE", _text(node.this), exp.Literal.string("base64"))
    if isinstance(node, exp.SHA2Digest):
        data = node.this if _is_bytes(node.this) else _utf8(node.this)
        return func("SHA256", data)
    if isinstance(node, exp.MD5Digest):
        return func("DECODE", func("MD5", _text(node.this)), exp.Literal.string("hex"))
    if isinstance(node, exp.Cast):
        if node.to.is_type(exp.DataType.Type.BINARY, exp.DataType.Type.VARBINARY):
            return node if _is_bytes(node.this) else _utf8(node.this)
        if node.to.is_type(*exp.DataType.TEXT_TYPES) and _is_bytes(node.this):
            inner = node.this.copy().transform(postgres_strings)
            return func("CONVERT_FROM", inner, exp.Literal.string("UTF8"))
    return node


def _utf8(node: exp.Expression) -> exp.Expression:
    return func("CONVERT_TO", _text(node), exp.Literal.string("UTF8"))


def postgres_subscripts(node: exp.Expression) -> exp.Expression:
    """A subscript of a function's result needs parentheses: (f(x))[1]."""
    if isinstance(node, exp.Bracket) and isinstance(node.this, exp.Func):
        node.set("this", exp.Paren(this=node.this.copy()))
    return node


def postgres_regexp(node: exp.Expression) -> exp.Expression:
    """REGEXP_EXTRACT is substring(value, regexp) (the first group, else the match);
    REGEXP_EXTRACT_ALL every match; \\0 in a replacement is PostgreSQL's \\&."""
    if isinstance(node, exp.RegexpExtract):
        return func("SUBSTRING", _text(node.this), _text(node.expression))
    if isinstance(node, exp.RegexpExtractAll):
        return template(
            "ARRAY(SELECT _hw_m[1] FROM REGEXP_MATCHES(_hw_s, _hw_p, 'g') AS _hw_r(_hw_m))",
            "postgres",
            s=_text(node.this),
            p=_text(node.expression),
        )
    if isinstance(node, exp.RegexpReplace):
        replacement = node.args.get("replacement")
        if isinstance(replacement, exp.Literal | exp.RawString) and "\\0" in replacement.name:
            node.set("replacement", exp.Literal.string(replacement.name.replace("\\0", "\\&")))
    return node


def postgres_arrays(node: exp.Expression) -> exp.Expression:
    """ARRAY_LENGTH of [] is 0, GENERATE_ARRAY and ARRAY_REVERSE are arrays, and
    ARRAY_AGG(x IGNORE NULLS) filters the NULLs."""
    if isinstance(node, exp.ArraySize):
        return func("CARDINALITY", node.this.copy())
    if isinstance(node, exp.GenerateSeries) and node.find_ancestor(exp.Unnest, exp.From) is None:
        series = func(
            "GENERATE_SERIES",
            node.args["start"].copy(),
            node.args["end"].copy(),
            *([node.args["step"].copy()] if node.args.get("step") else []),
        )
        return template("ARRAY(SELECT _hw_f)", "postgres", f=series)
    if isinstance(node, exp.ArrayReverse):
        return template(
            "ARRAY(SELECT _hw_v FROM UNNEST(_hw_a) WITH ORDINALITY AS _hw_r(_hw_v, _hw_n) "
            "ORDER BY _hw_n DESC)",
            "postgres",
            a=node.this,
        )
    if isinstance(node, exp.IgnoreNulls):
        inner = node.this
        if isinstance(inner, exp.ArrayAgg):
            value = inner.this.this if isinstance(inner.this, exp.Order) else inner.this
            condition = exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))
            return exp.Filter(this=inner.copy(), expression=exp.Where(this=condition))
        refuse(
            f"{inner.sql('bigquery').split('(', 1)[0]}(... IGNORE NULLS)",
            node,
            "PostgreSQL has no IGNORE NULLS",
            "filter the NULLs in a subquery, or use a frame and COALESCE",
        )
    return node


def postgres_json_and_rest(node: exp.Expression) -> exp.Expression:
    """TO_JSON_STRING is to_json(x) as text; JSON_QUERY's objects and arrays and
    STRUCT, PERCENTILE_CONT OVER, * EXCEPT / REPLACE are refused."""
    if isinstance(node, exp.JSONFormat):
        struct = node.find(exp.Struct)
        if struct is not None:
            postgres_json_and_rest(struct)  # refused
        json = exp.cast(func("TO_JSON", _text(node.this)), exp.DataType.Type.TEXT)
        return exp.Coalesce(this=json, expressions=[exp.Literal.string("null")])
    if isinstance(node, exp.JSONExtract):
        refuse(
            "JSON_QUERY",
            node,
            "PostgreSQL keeps the JSON text as written (spaces included) where BigQuery "
            "writes it compactly",
            "use JSON_VALUE for a scalar, or JSON_EXTRACT_ARRAY inside UNNEST",
        )
    if isinstance(node, exp.JSONExtractArray) and not isinstance(node.parent, exp.Unnest):
        refuse(
            "JSON_EXTRACT_ARRAY",
            node,
            "PostgreSQL has no array of JSON texts except as rows",
            "use it inside UNNEST(JSON_EXTRACT_ARRAY(...))",
        )
    if isinstance(node, exp.Struct):
        refuse(
            "STRUCT",
            node,
            "PostgreSQL has no anonymous STRUCT values",
            "select the fields as columns",
        )
    if isinstance(node, exp.AnyValue):
        agg = exp.ArrayAgg(this=node.this.copy())
        condition = exp.Not(this=exp.Is(this=node.this.copy(), expression=exp.Null()))
        filtered = exp.Filter(this=agg, expression=exp.Where(this=condition))
        return exp.Bracket(
            this=exp.Paren(this=filtered), expressions=[exp.Literal.number(1)], offset=1
        )
    if isinstance(node, exp.Window) and isinstance(node.this, exp.PercentileCont):
        refuse(
            "PERCENTILE_CONT(...) OVER",
            node,
            "PostgreSQL's PERCENTILE_CONT is an aggregate, not a window function",
            "compute it per group in a subquery (GROUP BY) and join it back",
        )
    _star_refused(node, "PostgreSQL", ("except_", "replace"))
    return node


POSTGRES = (
    refuse_approx_quantiles,
    refuse_initcap,
    greatest_least_null,
    substr_from_bigquery_position,
    count_if_counts,
    offset_from_zero,
    array_concat_null,
    refuse_array_agg_limit,
    refuse_regexp_position,
    refuse_json_value_array,
    postgres_json_and_rest,
    postgres_strings,
    postgres_regexp,
    postgres_arrays,
    to_json_string_null,
    postgres_subscripts,
)


# -- Spark ---------------------------------------------------------------------------------

_GROUP = re.compile(r"(?<!\\)\((?!\?)")


def spark_strings(node: exp.Expression) -> exp.Expression:
    """BYTE_LENGTH is OCTET_LENGTH; SHA256 and MD5 are BYTES (Spark's are hex text)."""
    if isinstance(node, exp.ByteLength):
        return func("OCTET_LENGTH", node.this.copy())
    if isinstance(node, exp.SHA2Digest):
        return exp.Unhex(this=func("SHA2", node.this.copy(), exp.Literal.number(256)))
    if isinstance(node, exp.MD5Digest):
        return exp.Unhex(this=func("MD5", node.this.copy()))
    return node


def spark_regexp(node: exp.Expression) -> exp.Expression:
    """REGEXP_EXTRACT: the whole match when there is no group, NULL when nothing matches
    (Spark gives ''); a replacement's \\1 is Spark's $1."""
    if isinstance(node, exp.RegexpExtract) and not node.meta.get("hw_group"):
        node.meta["hw_group"] = True
        pattern = node.expression
        written = isinstance(pattern, exp.RawString) or pattern.is_string
        group = 0 if written and not _GROUP.search(pattern.name) else 1
        extract = func("REGEXP_EXTRACT", node.this.copy(), pattern.copy())
        extract.append("expressions", exp.Literal.number(group))
        matches = exp.RegexpLike(this=node.this.copy(), expression=pattern.copy())
        return exp.Case(ifs=[exp.If(this=matches, true=extract)])
    if isinstance(node, exp.RegexpReplace):
        replacement = node.args.get("replacement")
        if not isinstance(replacement, exp.Literal | exp.RawString):
            refuse(
                "REGEXP_REPLACE",
                node,
                "Spark writes a replacement's groups as $1, so it must be a literal to translate",
                "write the replacement as a string literal",
            )
        text = replacement.name.replace("$", "\\$")
        text = re.sub(r"\\([0-9])", r"$\1", text)
        node.set("replacement", exp.Literal.string(text))
    return node


def spark_arrays(node: exp.Expression) -> exp.Expression:
    """Out-of-range SAFE_OFFSET is NULL, GENERATE_ARRAY never counts backwards, ARRAY_AGG
    keeps its ORDER BY (sqlglot drops it for COLLECT_LIST), ARRAY(subquery) is refused."""
    if isinstance(node, exp.Bracket) and node.args.get("safe") and not node.meta.get("hw"):
        node.meta["hw"] = True
        index = node.expressions[0]
        lowest = exp.Literal.number(node.args.get("offset") or 0)
        inside = exp.GTE(this=index.copy(), expression=lowest)
        node.set("expressions", [exp.Case(ifs=[exp.If(this=inside, true=index.copy())])])
        return node
    if isinstance(node, exp.GenerateSeries) and not node.meta.get("hw"):
        node.meta["hw"] = True
        start, end, step = node.args["start"], node.args["end"], node.args.get("step")
        value = 1 if step is None else literal_int(step)
        if value is None:
            refuse(
                "GENERATE_ARRAY",
                node,
                "Spark's SEQUENCE counts backwards where BigQuery gives []; the step must be "
                "a literal to tell",
                "write the step as an integer literal",
            )
        wrong = (exp.LT if value > 0 else exp.GT)(this=end.copy(), expression=start.copy())
        empty = func("ARRAY_REMOVE", exp.Array(expressions=[start.copy()]), start.copy())
        return exp.Case(ifs=[exp.If(this=wrong, true=empty)], default=node)
    if isinstance(node, exp.ArrayReverse):
        return func("REVERSE", node.this.copy())
    if isinstance(node, exp.Array) and node.find(exp.Select) is not None:
        refuse(
            "ARRAY(SELECT ...)",
            node,
            "Spark has no array subquery",
            "use ARRAY_AGG in a subquery joined back",
        )
    if isinstance(node, exp.IgnoreNulls | exp.ArrayAgg) and not node.meta.get("hw"):
        return _spark_array_agg(node)
    return node


def _spark_array_agg(node: exp.Expression) -> exp.Expression:
    ignore = isinstance(node, exp.IgnoreNulls)
    agg = node.this if ignore else node
    if not isinstance(agg, exp.ArrayAgg) or not isinstance(agg.this, exp.Order):
        return node
    order = agg.this
    value = order.this
    keys = order.expressions
    directions = {bool(key.args.get("desc")) for key in keys}
    if isinstance(value, exp.Distinct) or len(directions) != 1:
        refuse(
            "ARRAY_AGG(... ORDER BY ...)",
            node,
            "Spark keeps an aggregated array's order only for ORDER BY keys all ascending or "
            "all descending, without DISTINCT",
            "order by keys in one direction, or drop DISTINCT",
        )
    fields = [exp.alias_(key.this.copy(), f"_k{i}") for i, key in enumerate(keys)]
    fields.append(exp.alias_(value.copy(), "_v"))
    collected: exp.Expression = func("COLLECT_LIST", exp.Struct(expressions=fields))
    if ignore:
        condition = exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))
        collected = exp.Filter(this=collected, expression=exp.Where(this=condition))
    ordered: exp.Expression = func("ARRAY_SORT", collected)
    if directions == {True}:
        ordered = func("REVERSE", ordered)
    item = exp.to_identifier("_hw_e")
    pick = exp.Dot(this=exp.column("_hw_e"), expression=exp.to_identifier("_v"))
    result = func("TRANSFORM", ordered, exp.Lambda(this=pick, expressions=[item]))
    result.meta["hw"] = True
    return result


def spark_rest(node: exp.Expression) -> exp.Expression:
    """TO_JSON_STRING of any value, ANY_VALUE ignoring NULLs, PERCENTILE_CONT OVER as
    Spark's exact PERCENTILE; * REPLACE is refused."""
    if isinstance(node, exp.JSONFormat):
        value = node.this
        if not isinstance(value, exp.Struct):
            value = exp.cast(value.copy(), "VARIANT")
        json = func("TO_JSON", value)
        return exp.Coalesce(this=json, expressions=[exp.Literal.string("null")])
    if isinstance(node, exp.AnyValue):
        return func("ANY_VALUE", node.this.copy(), exp.true())
    if isinstance(node, exp.PercentileCont) and isinstance(node.parent, exp.Window):
        return func("PERCENTILE", node.this.copy(), node.expression.copy())
    _star_refused(node, "Spark", ("replace",))
    return node


SPARK = (
    refuse_approx_quantiles,
    refuse_initcap,
    greatest_least_null,
    substr_from_bigquery_position,
    refuse_array_agg_limit,
    refuse_regexp_position,
    refuse_json_value_array,
    spark_strings,
    spark_regexp,
    spark_arrays,
    spark_rest,
)


def postgres_json_text(node: exp.Expression) -> exp.Expression:
    """JSON functions read JSON text as JSON (a STRING column holds it in BigQuery);
    runs before postgres_sql's JSON rewrites."""
    if (
        isinstance(node, exp.JSONExtractScalar | exp.JSONExtractArray | exp.JSONExtract)
        and not node.meta.get("hw_json")
        and not (isinstance(node.this, exp.Cast) and node.this.to.is_type("json"))
    ):
        node.meta["hw_json"] = True
        node.set("this", exp.cast(node.this.copy(), exp.DataType.Type.JSON))
    return node
