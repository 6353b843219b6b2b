"""``headwater plan``: what applying the working tree to an environment would change.

The plan compares the pipelines, sources, consumers and sinks of the working tree with
what the environment applied last (its ``applied`` records; before its first apply, the
versions its intervals were made by and the columns of its tables). For each pipeline it
says whether the change is breaking (:mod:`headwater.process.changes`), which tables are
computed again and what that reads (bytes billed from dry runs on BigQuery, rows
elsewhere), and which consumers and sinks a breaking change reaches. Nothing is changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlglot import exp

from headwater.core.errors import ConfigError, HeadwaterError
from headwater.process import sql
from headwater.process.changes import Change, Spec, compare, specs
from headwater.process.definition import Pipeline
from headwater.process.graph import Graph
from headwater.process.schedule import intervals, latest_tick
from headwater.runtime.workspace import Workspace
from headwater.state.applies import Applied, Kind
from headwater.store import costs
from headwater.store.schema import BUILD_PREFIX

log = logging.getLogger(__name__)

#: The metadata revision that holds what an environment applied.
APPLIES_REVISION = "0005"


@dataclass(frozen=True)
class Recompute:
    """A table computed again by the apply: built beside the live one, then swapped in."""

    pipeline: str
    #: ``added``, ``changed``, or ``reads NAME`` (an input of it is computed again).
    because: str
    intervals: int
    start: datetime | None
    end: datetime | None
    #: Rows the runs read: from the runs that made the live table, else the engine's plan.
    rows: int | None = None
    #: BigQuery: bytes a dry run of the whole range says it reads, and what the runs bill.
    bytes: int | None = None
    dollars: float | None = None


@dataclass(frozen=True)
class Affected:
    """A consumer or sink that a breaking change reaches."""

    who: str  # "consumer NAME" or "sink NAME"
    dataset: str
    why: str


@dataclass(frozen=True)
class ObjectChange:
    kind: Kind
    name: str
    change: Literal["added", "removed", "changed"]
    detail: str = ""


@dataclass
class Plan:
    environment: str | None
    engine: str
    #: No apply was recorded here: the baseline is what the environment has built.
    first_apply: bool
    changes: list[Change] = field(default_factory=list)
    recompute: list[Recompute] = field(default_factory=list)
    affected: list[Affected] = field(default_factory=list)
    objects: list[ObjectChange] = field(default_factory=list)
    migrations: list[str] = field(default_factory=list)
    #: What the apply records as applied: every pipeline, source, consumer and sink.
    applied: list[Applied] = field(default_factory=list)

    @property
    def breaking(self) -> bool:
        return any(change.breaking for change in self.changes)

    @property
    def empty(self) -> bool:
        return not (self.changes or self.objects or self.migrations)

    @property
    def removed(self) -> list[str]:
        return [c.name for c in self.changes if c.kind == "removed"]

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-able values (what ``plan --json`` prints, and what an apply
        records)."""
        return {
            "environment": self.environment,
            "engine": self.engine,
            "first_apply": self.first_apply,
            "breaking": self.breaking,
            "changes": [asdict(c) for c in self.changes],
            "recompute": [
                {**asdict(r), "start": _iso(r.start), "end": _iso(r.end)} for r in self.recompute
            ],
            "affected": [asdict(a) for a in self.affected],
            "objects": [asdict(o) for o in self.objects],
            "migrations": list(self.migrations),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def make_plan(ws: Workspace, migrations: list[str]) -> Plan:
    """The plan of applying the working tree to ``ws``'s environment, whose metadata
    database has ``migrations`` pending."""
    project = ws.project
    graph = ws.graph()
    if graph.broken:
        problems = "; ".join(
            f"{b.path.name}: {b.error.message}" for b in graph.broken.values() if not b.blocked_by
        )
        raise ConfigError(
            f"{len(graph.broken)} pipelines do not load ({problems}); a plan is of a tree that "
            "loads",
            hint="`headwater validate` lists every problem with its line",
        )
    dialect = project.settings.project.dialect
    new = specs(graph, dialect)
    # A new metadata database holds nothing yet; one behind may lack what apply records.
    new_database = bool(migrations) and migrations[0].startswith("0001")
    can_read_applied = not any(m.startswith(APPLIES_REVISION) for m in migrations)
    applied = ws.state.applies.applied() if can_read_applied else {}
    first = not applied
    published = {} if new_database else ws.state.runs.published()
    old = (
        {n: Spec.from_json(a.spec) for (k, n), a in applied.items() if k == "pipeline"}
        if not first
        else _built(ws, published)
    )
    plan = Plan(project.environment, ws.engine.name, first, migrations=list(migrations))
    for name in [*graph.order, *sorted(set(old) - set(new))]:
        change = compare(name, old.get(name), new.get(name), dialect)
        if change is not None:
            plan.changes.append(change)
    plan.recompute = _recompute(ws, graph, plan.changes, published)
    plan.affected = _affected(ws, plan.changes)
    objects = _objects(ws)
    if not first:
        plan.objects = _object_changes(applied, objects)
    plan.applied = [
        *(Applied("pipeline", n, s.version, s.to_json()) for n, s in new.items()),
        *objects.values(),
    ]
    return plan


def _built(ws: Workspace, published: Mapping[str, str]) -> dict[str, Spec]:
    """Before the first apply: each pipeline the environment has intervals of, with the
    version of its latest and, where the engine reads it cheaply, its table's columns."""
    found: dict[str, Spec] = {}
    for name, version in published.items():
        if name.startswith(BUILD_PREFIX):
            continue
        found[name] = Spec(version=version, columns=_table_columns(ws, name))
    return found


def _table_columns(ws: Workspace, name: str) -> dict[str, str] | None:
    """The live table's column names (types are not compared with the derived ones)."""
    if ws.engine.dialect == "bigquery":
        return None  # a query would bill; the recorded spec is there from the first apply
    query = exp.select("*").from_(exp.table_(name, quoted=True)).limit(0)
    try:
        table = ws.engine.query(query.sql(ws.engine.dialect))
    except HeadwaterError:
        return None
    return {column: "UNKNOWN" for column in table.column_names}


def rebuilt(graph: Graph, changes: list[Change]) -> dict[str, str]:
    """The pipelines an apply computes again, in run order, each with why."""
    why: dict[str, str] = {}
    for change in changes:
        if change.rebuild and change.name in graph.pipelines:
            why[change.name] = change.kind
    for change in changes:
        if change.rebuild and change.readers and change.name in graph.pipelines:
            for reader in graph.downstream(change.name):
                why.setdefault(reader, f"reads {change.name}")
    return {name: why[name] for name in graph.order if name in why}


def _recompute(
    ws: Workspace, graph: Graph, changes: list[Change], published: Mapping[str, str]
) -> list[Recompute]:
    planner, _ = ws.pipelines.tools(graph)
    until = ws.pipelines.until()
    found = []
    for name, because in rebuilt(graph, changes).items():
        pipeline = graph[name]
        if pipeline.incremental:
            start = planner.start(pipeline)
            spans = intervals(pipeline.header.schedule, start, until) if start else []
        else:
            spans = [latest_tick(pipeline.header.schedule, until)]
        first = spans[0].start if spans else None
        last = spans[-1].end if spans else None
        rows = ws.state.runs.rows_read(name) if name in published else None
        scanned, billed = _estimate(ws, pipeline, first, last, len(spans))
        found.append(
            Recompute(
                name,
                because,
                len(spans),
                first,
                last,
                rows=rows if rows is not None else scanned,
                bytes=billed,
                dollars=billed / costs.TIB * costs.USD_PER_TIB if billed is not None else None,
            )
        )
    return found


def _estimate(
    ws: Workspace, pipeline: Pipeline, start: datetime | None, end: datetime | None, runs: int
) -> tuple[int | None, int | None]:
    """Rows the engine's plan says the whole range reads, and on BigQuery the bytes its runs
    bill (a dry run of the whole range, at least BigQuery's minimum per table and run)."""
    if pipeline.query is None or start is None or end is None or not runs:
        return None, None
    params = {"start": start, "end": end}
    used = {k: v for k, v in params.items() if k in pipeline.query.parameters}
    try:
        cost = ws.engine.estimate_cost(sql.render(pipeline.query, ws.engine.dialect), used)
    except HeadwaterError as exc:  # an input that does not exist yet, for one
        log.info("%s: no estimate (%s)", pipeline.name, exc)
        return None, None
    billed = None
    if cost.bytes_scanned is not None and ws.engine.dialect == "bigquery":
        tables = max(1, len(pipeline.inputs))
        billed = max(cost.bytes_scanned, runs * tables * costs.MIN_BYTES_PER_TABLE)
    return cost.rows_scanned, billed


def _affected(ws: Workspace, changes: list[Change]) -> list[Affected]:
    """Consumers granted, and sinks fed, a dataset a breaking change reaches."""
    project = ws.project
    graph = ws.graph()
    found = []
    for change in changes:
        if not change.breaking:
            continue
        if change.kind == "removed":
            why = "the dataset is removed"
        elif change.columns_lost:
            why = f"loses or retypes {', '.join(change.columns_lost)}"
        else:
            why = "; ".join(change.reasons)
        for name, consumer in sorted(project.settings.consumers.items()):
            if change.name in consumer.datasets:
                found.append(Affected(f"consumer {name}", change.name, why))
        pipeline = graph.pipelines.get(change.name)
        for sink in pipeline.header.sinks if pipeline is not None else []:
            if sink in project.settings.sinks:
                found.append(Affected(f"sink {sink}", change.name, why))
    return found


def _objects(ws: Workspace) -> dict[tuple[Kind, str], Applied]:
    """The working tree's sources, consumers and sinks, as an apply records them (no
    secret: a source or consumer is its name; a consumer also its datasets; a sink its
    type)."""
    settings = ws.project.settings
    found: dict[tuple[Kind, str], Applied] = {}
    for name in settings.sources:
        found["source", name] = Applied("source", name, None, {})
    for name, consumer in settings.consumers.items():
        spec = {"datasets": sorted(consumer.datasets)}
        found["consumer", name] = Applied("consumer", name, None, spec)
    for name, sink in settings.sinks.items():
        kind = type(sink).__name__.removesuffix("Sink").lower()
        found["sink", name] = Applied("sink", name, None, {"type": kind})
    return found


def _object_changes(
    applied: Mapping[tuple[Kind, str], Applied], objects: Mapping[tuple[Kind, str], Applied]
) -> list[ObjectChange]:
    found = []
    for key in sorted(set(applied) | set(objects)):
        kind, name = key
        if kind == "pipeline":
            continue
        before, after = applied.get(key), objects.get(key)
        if before is None:
            found.append(ObjectChange(kind, name, "added"))
        elif after is None:
            found.append(ObjectChange(kind, name, "removed"))
        elif before.spec != after.spec:
            detail = ", ".join(
                f"{k}: {before.spec.get(k)} -> {after.spec.get(k)}"
                for k in sorted(set(before.spec) | set(after.spec))
                if before.spec.get(k) != after.spec.get(k)
            )
            found.append(ObjectChange(kind, name, "changed", detail))
    return found
