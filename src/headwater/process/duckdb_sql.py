"""Where sqlglot's BigQuery → DuckDB translation runs but answers differently.

Each rewrite takes one node of a BigQuery pipeline's tree and returns what
DuckDB needs to give BigQuery's answer and type (tests/conformance runs
BigQuery's documented answers on every engine). A construct DuckDB cannot
answer as BigQuery does raises :class:`~headwater.process.errors.Untranslatable`,
and the pipeline is refused at load.
"""

from __future__ import annotations

from sqlglot import exp


def safe_cast_text_to_integer(node: exp.Expression) -> exp.Expression:
    """BigQuery casts text to INT64 only when it is an integer literal ('2', '-0x1F');
    DuckDB's TRY_CAST also takes '2.5' (rounding it) and '1e3'."""
    if not (
        isinstance(node, exp.TryCast)
        and node.to.is_type(*exp.DataType.INTEGER_TYPES)
        and (isinstance(node.this, exp.JSONExtractScalar) or node.this.is_string)
    ):
        return node
    text = exp.Trim(this=node.this.copy())
    pattern = exp.Literal.string(r"[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)")
    integral = exp.Anonymous(this="REGEXP_FULL_MATCH", expressions=[text, pattern])
    return exp.Case(ifs=[exp.If(this=integral, true=exp.TryCast(this=text.copy(), to=node.to))])


def diff_in_whole_units(node: exp.Expression) -> exp.Expression:
    """TIMESTAMP_DIFF counts whole units; DuckDB's DATE_DIFF counts boundaries crossed,
    its DATE_SUB whole units. TIMESTAMP_DIFF(a, b, part) = DATE_SUB(part, b, a)."""
    if isinstance(node, exp.TimestampDiff):
        unit = exp.Literal.string(node.unit.name if node.unit else "DAY")
        return exp.Anonymous(this="DATE_SUB", expressions=[unit, node.expression, node.this])
    return node


def count_if_is_int64(node: exp.Expression) -> exp.Expression:
    """COUNTIF is INT64 in BigQuery; DuckDB's COUNT_IF is a HUGEINT."""
    if isinstance(node, exp.CountIf) and not isinstance(node.parent, exp.Cast):
        return exp.cast(node, exp.DataType.Type.BIGINT)
    return node


#: In order; each sees the tree the one before left.
FIXES = (
    diff_in_whole_units,
    count_if_is_int64,
    safe_cast_text_to_integer,
)
