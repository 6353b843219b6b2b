"""What changed in a pipeline between what an environment applied and the working tree, and
whether the change breaks what reads it.

A pipeline is described by a :class:`Spec`: its version, the header fields that shape its
output, and its output's columns with their types (derived from the SQL with sqlglot, in
dependency order, as ``headwater validate`` does; a Python pipeline's from its ``schema=``).
:func:`compare` says what a new spec does to an old one:

- *breaking*: a column removed (a rename is a removal and an addition), a column's type
  changed, the key, kind, time, time column or schedule changed, the pipeline removed; or
  the columns cannot be told (a Python pipeline without ``schema=``), taken as breaking;
- *not breaking*: columns added to a query otherwise the same (its readers read what they
  read before, so only the pipeline itself is computed again), or the query changed with the
  same columns (its values may change, so its readers are computed again too);
- *metadata*: the description, the sinks or ``retain``, with the same version: nothing is
  computed (retention drops old intervals of the output; what it keeps stays).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlglot import exp, parse_one
from sqlglot.errors import SqlglotError

from headwater.process import columns as column_checks
from headwater.process.graph import Graph

UNKNOWN = "UNKNOWN"
ChangeKind = Literal["added", "removed", "changed", "metadata"]


@dataclass(frozen=True)
class Spec:
    """What an environment knows of a pipeline's output; ``None`` where it is not known
    (a pipeline built before its environment's first apply has only a version and the
    columns of its table)."""

    version: str
    columns: dict[str, str] | None
    kind: str | None = None
    time: str | None = None
    time_column: str | None = None
    key: list[str] | None = None
    schedule: str | None = None
    description: str | None = None
    sinks: list[str] | None = None
    #: How long the output keeps its rows (metadata: not in the version).
    retain: str | None = None
    #: The query in the project's dialect (``None`` for a Python pipeline).
    sql: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Spec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in value.items() if k in known})


@dataclass(frozen=True)
class Change:
    """One pipeline's change."""

    name: str
    kind: ChangeKind
    breaking: bool
    #: What changed, one phrase each ("column plan removed", "key changed from ...").
    reasons: list[str]
    #: Columns the output loses or whose type changes: what consumers and sinks notice.
    columns_lost: list[str] = field(default_factory=list)
    #: Whether its table is computed again (built beside the live one and swapped in).
    rebuild: bool = False
    #: Whether what reads it is computed again too (values it had may change).
    readers: bool = False


def specs(graph: Graph, dialect: str) -> dict[str, Spec]:
    """Each pipeline of ``graph`` as a :class:`Spec`, columns derived in dependency order."""
    schema = column_checks.event_tables()
    found: dict[str, Spec] = {}
    for pipeline in graph:
        output: dict[str, exp.DataType] | None = None
        text = None
        if pipeline.query is not None:
            _, output = column_checks.check(pipeline.query, schema, dialect)
            text = pipeline.query.expression.sql(dialect=dialect)
            if pipeline.header.model is not None and output is not None:
                # A model appends its outputs and tags to the query's columns.
                model = pipeline.models.get(pipeline.header.model)
                appended = column_checks.sql_types(model.appended()) if model else None
                output = {**output, **appended} if appended is not None else None
        elif pipeline.function is not None and pipeline.function.schema is not None:
            output = column_checks.sql_types(pipeline.function.schema)
        if output is not None:
            schema.add_table(
                exp.Table(this=exp.to_identifier(pipeline.name)), output, dialect=dialect
            )
        header = pipeline.header
        found[pipeline.name] = Spec(
            version=pipeline.version,
            columns=None if output is None else {n: _type(t, dialect) for n, t in output.items()},
            kind=header.kind,
            time=header.time,
            time_column=header.time_column,
            key=list(header.key),
            schedule=header.schedule,
            description=header.description,
            sinks=list(header.sinks),
            retain=header.retain,
            sql=text,
        )
    return found


def _type(kind: exp.DataType, dialect: str) -> str:
    return UNKNOWN if kind.is_type(exp.DataType.Type.UNKNOWN) else kind.sql(dialect).upper()


def compare(name: str, old: Spec | None, new: Spec | None, dialect: str) -> Change | None:
    """What going from ``old`` to ``new`` does; ``None`` when nothing changed."""
    if old is None and new is None:
        return None
    if old is None:
        assert new is not None
        return Change(name, "added", False, ["new pipeline"], rebuild=True, readers=True)
    if new is None:
        return Change(
            name,
            "removed",
            True,
            ["pipeline removed: its table is dropped"],
            sorted(old.columns or {}),
        )
    reasons: list[str] = []
    breaking = False
    for label, before, after in (
        ("kind", old.kind, new.kind),
        ("time", old.time, new.time),
        ("time_column", old.time_column, new.time_column),
        ("key", old.key, new.key),
        ("schedule", old.schedule, new.schedule),
    ):
        if before is not None and before != after:
            reasons.append(f"{label} changed from {_show(before)} to {_show(after)}")
            breaking = True
    lost: list[str] = []
    added: list[str] = []
    if old.columns is not None and new.columns is not None:
        removed = [c for c in old.columns if c not in new.columns]
        added = [c for c in new.columns if c not in old.columns]
        retyped = [
            c
            for c in old.columns
            if c in new.columns
            and UNKNOWN not in (old.columns[c], new.columns[c])
            and old.columns[c] != new.columns[c]
        ]
        for column in removed:
            reasons.append(f"column {column} removed")
        if removed and added:
            reasons.append(f"(a rename? {', '.join(removed)} -> {', '.join(added)})")
        for column in retyped:
            reasons.append(
                f"column {column} changed type from {old.columns[column]} to {new.columns[column]}"
            )
        for column in added:
            reasons.append(f"column {column} added")
        lost = [*removed, *retyped]
        breaking = breaking or bool(lost)
    elif old.version != new.version:
        reasons.append(
            "its columns cannot be told before it runs (a Python pipeline without schema=, or "
            "a * over a source of unknown columns): taken as breaking"
        )
        breaking = True
    if old.version != new.version or lost or added:
        # (Same version, other columns: an input's columns changed under it.)
        additive = not breaking and bool(added) and _only_added(old.sql, new.sql, added, dialect)
        if old.version != new.version and not breaking and not added:
            reasons.append("the query changed (same columns)")
        elif old.version != new.version and not breaking and not additive:
            reasons.append("the query changed beyond the columns added")
        return Change(name, "changed", breaking, reasons, lost, rebuild=True, readers=not additive)
    for label, before, after in (
        ("description", old.description, new.description),
        ("sinks", old.sinks, new.sinks),
        ("retain", old.retain, new.retain),
    ):
        # (A spec applied before retain existed says none: it was kept for good.)
        if before != after and (before is not None or label == "retain"):
            reasons.append(f"{label} changed from {_show(before)} to {_show(after)}")
    if reasons:
        return Change(name, "changed" if breaking else "metadata", breaking, reasons)
    return None


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value) if value is not None else "none"


def _only_added(old: str | None, new: str | None, added: list[str], dialect: str) -> bool:
    """Whether ``new`` is ``old`` with the projections ``added`` and nothing else changed:
    then every column ``old`` had keeps its values, and its readers need not run again."""
    if old is None or new is None:
        return False
    try:
        before = parse_one(old, read=dialect)
        after = parse_one(new, read=dialect)
    except SqlglotError:
        return False
    if not isinstance(after, exp.Select) or not isinstance(before, exp.Select):
        return False
    kept = [e for e in after.expressions if e.alias_or_name not in added]
    after.set("expressions", kept)
    return bool(after.sql(dialect=dialect) == before.sql(dialect=dialect))
