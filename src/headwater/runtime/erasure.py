"""Erasing a person: every place their rows went, with a receipt, resumable after a crash.

An erasure is planned first, while the person's rows are still there: the event times
that say which intervals of the aggregates counted them, the tables (``events`` and
``failed_events`` on the store and on the warehouse, each pipeline output that declares
``person`` columns), the aggregates to compute again, and each sink of a person pipeline.
The plan is recorded with the ids' suppression in one transaction, then the places are
done in order, each marked done as it finishes. Every step is idempotent (a delete finds
nothing the second time, a recomputation gives the same rows, a notice carries the same
idempotency key), so an erasure killed at any point is finished by running it again or by
the server's next pass over owed erasures. A sink that is down keeps its place owed,
retried with the sink's backoff like a delivery.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from headwater.collect.suppress import KINDS, id_hash, strings
from headwater.core.clock import parse_utc, utc_now
from headwater.core.errors import ConfigError, HeadwaterError, TransientError
from headwater.deliver.settings import FilesSink, PostgresSink, WebhookSink
from headwater.process.retention import Floors
from headwater.process.schedule import interval_at
from headwater.state.erasures import Ids, Place, Planned
from headwater.state.errors import LeaseHeld
from headwater.state.leases import Lease
from headwater.store.engine import Engine

if TYPE_CHECKING:
    from headwater.runtime.workspace import Workspace

log = logging.getLogger(__name__)

#: Ids bound per query: engines cap a statement's parameters.
_CHUNK = 500
#: Backoff of a place that is not a sink (the store or the warehouse was down).
_RETRY_SECONDS = 5.0
_MAX_RETRY_SECONDS = 300.0
#: The columns of ``events`` that hold its person, and the kind of id each is matched with
#: (``*``: any erased id). An alias's ``previous_id`` is the id the person had before,
#: a user id or an anonymous id.
_EVENT_COLUMNS = {"user_id": "user_id", "anonymous_id": "anonymous_id", "previous_id": "*"}

Report = Callable[[dict[str, Any]], None]


def hashes_of(ids: Ids) -> Ids:
    """Each id's hash (:func:`~headwater.collect.suppress.id_hash`), sorted: the same ids
    give the same value, which finds an erasure of them still unfinished."""
    return {kind: sorted({id_hash(kind, v) for v in ids.get(kind, [])}) for kind in KINDS}


def erase(workspace: Workspace, ids: Ids, by: str, report: Report | None = None) -> dict[str, Any]:
    """Erase ``ids`` (by kind) everywhere; an unfinished erasure of the same ids is resumed
    rather than planned again. Returns the receipt."""
    ids = {kind: sorted({v for v in ids.get(kind, []) if v}) for kind in KINDS}
    if not any(ids.values()):
        raise ConfigError(
            "an erasure needs at least one id",
            hint="give --user-id U or --anonymous-id A (or --file ids.txt)",
        )
    log_ = workspace.state.erasures
    hashes = hashes_of(ids)
    erasure_id = log_.open_with(hashes)
    if erasure_id is None:
        erasure_id = log_.create(by, ids, hashes, plan(workspace, ids))
    work(workspace, erasure_id, report=report)
    return receipt(workspace, erasure_id)


def resume(
    workspace: Workspace, *, due_only: bool, should_stop: Callable[[], bool] = bool
) -> list[dict[str, Any]]:
    """Work through every unfinished erasure (``due_only``: the places whose retry is due):
    the server's deliverer does this every pass, ``headwater erase --resume`` at once."""
    found = workspace.state.erasures.unfinished(utc_now() if due_only else None)
    done = []
    for erasure_id in found:
        if should_stop():
            break
        work(workspace, erasure_id, due_only=due_only)
        done.append(receipt(workspace, erasure_id))
    return done


def receipt(workspace: Workspace, erasure_id: int) -> dict[str, Any]:
    """What was deleted, where, how many rows and when, and what is still owed."""
    erasure = workspace.state.erasures.get(erasure_id)
    if erasure is None:
        raise ConfigError(
            f"there is no erasure {erasure_id}", hint="use the id its receipt printed first"
        )
    places = workspace.state.erasures.places(erasure_id)
    return {
        "id": erasure.id,
        "requested_by": erasure.requested_by,
        "requested_at": erasure.requested_at,
        "status": erasure.status,
        "finished_at": erasure.finished_at,
        "ids": {kind: len(values) for kind, values in erasure.hashes.items()},
        "hashes": erasure.hashes,
        "places": [
            {
                "place": p.place,
                "kind": p.kind,
                "status": p.status,
                "rows": p.rows,
                "done_at": p.done_at,
                "attempts": p.attempts,
                "last_error": p.last_error,
                "next_attempt_at": None if p.status == "done" else p.next_attempt_at,
                **({"files": p.detail["files"]} if "files" in p.detail else {}),
            }
            for p in places
        ],
        "pending": [p.place for p in places if p.status != "done"],
    }


# -- planning --------------------------------------------------------------------


def _engines(workspace: Workspace) -> list[tuple[str, Engine]]:
    """Where events are kept: the store, and the warehouse fed from it when there is one
    (the store first: an offload after the warehouse's delete must find nothing to move)."""
    if workspace.engine is workspace.store:
        return [("store", workspace.store)]
    return [("store", workspace.store), ("warehouse", workspace.engine)]


def plan(workspace: Workspace, ids: Ids) -> list[Planned]:
    """Every place ``ids`` are to be erased from, in the order they are done."""
    times = sorted({t for _, engine in _engines(workspace) for t in event_times(engine, ids)})
    places: list[Planned] = []
    for role, _ in _engines(workspace):
        events: dict[str, object] = {"engine": role, "table": "events", "match": _EVENT_COLUMNS}
        places.append(Planned(f"events@{role}", "table", events))
        places.append(Planned(f"failed_events@{role}", "failed", {"engine": role}))
    graph = workspace.graph()
    pipelines_role = "store" if workspace.engine is workspace.store else "warehouse"
    tainted = {"events", "failed_events"}
    person = []
    for pipeline in graph:
        if not pipeline.inputs & tainted and not pipeline.header.person:
            continue
        tainted.add(pipeline.name)
        if pipeline.header.person:
            person.append(pipeline)
            match = {column: "*" for column in pipeline.header.person}
            places.append(Planned(f"output:{pipeline.name}", "table",
                                  {"engine": pipelines_role, "table": pipeline.name,
                                   "match": match}))  # fmt: skip
            continue
        intervals = _recompute(workspace, pipeline.name, times)
        if intervals:
            places.append(Planned(f"recompute:{pipeline.name}", "recompute",
                                  {"pipeline": pipeline.name, "intervals": intervals}))  # fmt: skip
    # A file that does not load now: its last good version says its person columns (its
    # output is still served); without one, the erasure cannot tell what its table holds.
    unknown = []
    for broken in graph.broken.values():
        good = broken.last_good
        if good is not None and good.header.person:
            person.append(good)
            match = {column: "*" for column in good.header.person}
            places.append(Planned(f"output:{good.name}", "table",
                                  {"engine": pipelines_role, "table": good.name,
                                   "match": match}))  # fmt: skip
        elif good is None and broken.name in workspace.engine.list_tables():
            unknown.append(broken.name)
    if unknown:
        raise ConfigError(
            f"{', '.join(sorted(unknown))} do not load, and an erasure must know whether "
            "their outputs hold person columns",
            hint="fix them (`headwater validate` shows why), then erase again",
        )
    sinks = workspace.project.settings.sinks
    for pipeline in person:
        for name in pipeline.header.sinks:
            sink = sinks.get(name)
            if isinstance(sink, FilesSink):
                kind = "files"
            elif isinstance(sink, PostgresSink):
                kind = "postgres"
            elif isinstance(sink, WebhookSink):
                kind = "webhook"
            else:
                continue
            places.append(Planned(f"sink:{name}:{pipeline.name}", kind,
                                  {"sink": name, "pipeline": pipeline.name,
                                   "columns": list(pipeline.header.person)}))  # fmt: skip
    return places


def _recompute(workspace: Workspace, name: str, times: Sequence[datetime]) -> list[list[str]]:
    """The recorded intervals of ``name`` that hold one of ``times`` (a full pipeline: its
    latest, when it has run), as ISO pairs; none that retention retired."""
    pipeline = workspace.graph()[name]
    recorded = workspace.state.runs.intervals(name)
    if not recorded or not times:
        return []
    if not pipeline.incremental:
        return [["full", "full"]]
    wanted = {interval_at(pipeline.header.schedule, t) for t in times}
    floor = _retired_before(workspace, name)
    chosen = sorted(
        (i for i in wanted if i.start in recorded and (floor is None or i.start >= floor)),
        key=lambda i: i.start,
    )
    return [[i.start.isoformat(), i.end.isoformat()] for i in chosen]


def _retired_before(workspace: Workspace, name: str) -> datetime | None:
    """Where ``name``'s intervals retired by retention end: their rows are dropped already,
    and a run of one is refused, so an erasure that planned it would never finish."""
    graph = workspace.graph()
    retired = Floors(graph, workspace.retention(), workspace.pipelines.clock()).of(graph[name])
    return None if retired is None else retired.before


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for offset in range(0, len(values), _CHUNK):
        yield values[offset : offset + _CHUNK]


def _placeholders(
    prefix: str, values: Sequence[str]
) -> tuple[list[exp.Expression], dict[str, object]]:
    names = [f"{prefix}{i}" for i in range(len(values))]
    return [exp.Placeholder(this=n) for n in names], dict(zip(names, values, strict=True))


def event_times(engine: Engine, ids: Ids) -> set[datetime]:
    """The ``timestamp`` and ``received_at`` of each stored event of ``ids``: the intervals
    that counted them, by event time or by arrival."""
    found: set[datetime] = set()
    everyone = sorted({v for values in ids.values() for v in values})
    for column, kind in _EVENT_COLUMNS.items():
        for chunk in _chunks(everyone if kind == "*" else ids.get(kind, [])):
            marks, params = _placeholders("p", chunk)
            query = (
                exp.select(
                    exp.column("timestamp", quoted=True), exp.column("received_at", quoted=True)
                )
                .from_(exp.table_("events"))
                .where(exp.column(column, quoted=True).isin(*marks))
            )
            table = engine.select(query.sql(engine.dialect), params).table
            for column in ("timestamp", "received_at"):
                found |= {t for t in table.column(column).to_pylist() if t is not None}
    return found


# -- doing -----------------------------------------------------------------------


def work(
    workspace: Workspace, erasure_id: int, *, due_only: bool = False, report: Report | None = None
) -> None:
    """Do the places of one erasure not done yet, in order, under its lease (a second
    process leaves it to the first; one that died is taken over at once)."""
    log_ = workspace.state.erasures
    erasure = log_.get(erasure_id)
    if erasure is None or erasure.status == "done":
        return
    ttl = timedelta(seconds=workspace.project.settings.pipelines.lease_seconds)
    try:
        with Lease(workspace.state.leases, f"erasure:{erasure_id}", ttl):
            _work(workspace, erasure_id, erasure.ids or {}, erasure.requested_at, due_only, report)
    except LeaseHeld:
        log.info("erasure %s is being done by another process", erasure_id)


def _work(
    workspace: Workspace, erasure_id: int, ids: Ids, requested_at: datetime, due_only: bool,
    report: Report | None,
) -> None:  # fmt: skip
    log_ = workspace.state.erasures
    places = [p for p in log_.places(erasure_id) if p.status != "done"]
    now = utc_now()
    recomputed = False
    for count, place in enumerate(places, start=1):
        sink_place = place.kind in ("files", "postgres", "webhook")
        if due_only and place.next_attempt_at > now:
            if not sink_place:
                break  # what follows reads what this place deletes
            continue
        rows: int | None = None
        found: dict[str, object] = {}
        error: str | None = None
        retry_after: float | None = None
        try:
            rows = _do(workspace, erasure_id, place, ids, requested_at, found)
        except HeadwaterError as exc:
            error, retry_after = str(exc), getattr(exc, "retry_after", None)
        if rows is not None:
            log_.done(erasure_id, place.place, rows, found)
            recomputed |= place.kind == "recompute"
        else:
            delay = _delay(workspace, place, retry_after)
            attempts = log_.failed(
                erasure_id, place.place, error or "", now + timedelta(seconds=delay)
            )
            log.warning("erasure %s: %s failed (attempt %s, again in %.0fs): %s",
                        erasure_id, place.place, attempts, delay, error)  # fmt: skip
        if report is not None:
            report({"erasure": erasure_id, "place": place.place, "done": count,
                    "total": len(places), "error": error})  # fmt: skip
        if rows is None and not sink_place:
            break  # later places read what this one was to delete: they wait for it
    if recomputed:
        # The aggregates' new rows owe deliveries: made now (the server's deliverer would
        # take them anyway), so files and tables downstream hold the recomputed counts.
        workspace.deliver()
    if log_.finish(erasure_id):
        log.info("erasure %s is done everywhere", erasure_id)
        for _, engine in _engines(workspace):
            try:
                # DuckDB keeps the deleted rows in its write-ahead log until a checkpoint.
                engine.checkpoint()
            except Exception:  # the next idle checkpoint folds it in
                log.exception("erasure %s: could not checkpoint %s", erasure_id, engine.name)


def _delay(workspace: Workspace, place: Place, retry_after: float | None) -> float:
    sink_name = place.detail.get("sink")
    sink = workspace.project.settings.sinks.get(str(sink_name)) if sink_name else None
    if sink is not None:
        return workspace.deliverer.backoff(sink, place.attempts + 1, retry_after)
    return min(_MAX_RETRY_SECONDS, _RETRY_SECONDS * 2.0**place.attempts)


def _engine(workspace: Workspace, role: object) -> Engine:
    return workspace.store if role == "store" else workspace.engine


def _do(
    workspace: Workspace, erasure_id: int, place: Place, ids: Ids, requested_at: datetime,
    found: dict[str, object],
) -> int:  # fmt: skip
    """Do one place; return the rows it deleted (a notice: the ids it named), with what the
    receipt should say of it besides in ``found``."""
    detail = place.detail
    everyone = sorted({v for values in ids.values() for v in values})
    if place.kind == "table":
        engine = _engine(workspace, detail["engine"])
        match = detail["match"]
        assert isinstance(match, dict)
        if place.place.startswith("output:"):
            match = {c: "*" for c in _person(workspace, str(detail["table"]), list(match))}
        deleted = 0
        for column, kind in match.items():
            values = everyone if kind == "*" else ids.get(str(kind), [])
            for chunk in _chunks(values):
                deleted += engine.delete_matching(str(detail["table"]), column, chunk)
        return deleted
    if place.kind == "failed":
        engine = _engine(workspace, detail["engine"])
        matched = failed_rows(engine, everyone)
        deleted = 0
        for chunk in _chunks(matched):
            deleted += engine.delete_matching("failed_events", "id", chunk)
        return deleted
    if place.kind == "recompute":
        return _recompute_now(workspace, str(detail["pipeline"]), detail["intervals"])
    return _sink(workspace, erasure_id, place, everyone, requested_at, found)


def _recompute_now(workspace: Workspace, name: str, intervals: object) -> int:
    assert isinstance(intervals, list)
    service = workspace.pipelines
    count = 0
    for start, end in intervals:
        if start == "full":
            service.run(name, now=True)
        else:
            # Retention may have retired it since the plan (an erasure owed for days).
            floor = _retired_before(workspace, name)
            if floor is not None and parse_utc(start) < floor:
                continue
            service.run(name, parse_utc(start), parse_utc(end))
        count += 1
    return count


def _sink(
    workspace: Workspace, erasure_id: int, place: Place, ids: list[str], requested_at: datetime,
    found: dict[str, object],
) -> int:  # fmt: skip
    from headwater.deliver import erasure as at_sink

    detail = place.detail
    name, pipeline = str(detail["sink"]), str(detail["pipeline"])
    recorded = [str(c) for c in detail["columns"]]  # type: ignore[attr-defined]
    columns = _person(workspace, pipeline, recorded)
    sinks = workspace.sinks()
    sink = sinks.sinks.get(name)
    if sink is None:
        raise ConfigError(
            f"sink {name} is no longer in headwater.toml; the erasure owes it a delete",
            hint=f"declare [sinks.{name}] again, or delete {pipeline}'s rows there by hand",
        )
    target = workspace.deliverer.targets.get(name, sink, sinks)
    if place.kind == "files":
        rewritten: list[str] = []
        rows = at_sink.erase_files(target, pipeline, columns, ids, rewritten)  # type: ignore[arg-type]
        found["files"] = rewritten
        return rows
    if place.kind == "postgres":
        return at_sink.erase_postgres(target, pipeline, columns, ids)  # type: ignore[arg-type]
    body = at_sink.notice(erasure_id, pipeline, name, columns, ids, requested_at)
    key = at_sink.notice_key(erasure_id, pipeline, name, sinks.scope)
    outcome = at_sink.send_notice(target, body, key)  # type: ignore[arg-type]
    if outcome.delivered:
        return len(ids)
    raise _NotTaken(outcome.reason or "the notice was not taken", outcome.retry_after)


def _person(workspace: Workspace, name: str, recorded: list[str]) -> list[str]:
    """``name``'s person columns as its header says now (a misspelt one refused the place,
    and fixing the header is what lets it finish), else as they were planned."""
    graph = workspace.graph()
    pipeline = graph.pipelines.get(name)
    if pipeline is None and name in graph.broken:
        pipeline = graph.broken[name].last_good
    if pipeline is None or not pipeline.header.person:
        return recorded
    return list(pipeline.header.person)


class _NotTaken(TransientError):
    """A webhook did not take an erasure notice: owed, and sent again after its backoff."""

    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def failed_rows(engine: Engine, ids: Sequence[str]) -> list[str]:
    """The ids of ``failed_events`` rows that hold one of ``ids``.

    A failed event is the payload as it was sent, often with the very field that was
    wrong, so its person is not in a known column: a row matches when any string value
    anywhere in its payload (JSON) equals an erased id, or, for a body that is not JSON,
    when the id appears in it as a quoted string. Candidates are found by the engine with
    a ``LIKE`` on the id (bound), then checked here exactly.
    """
    wanted = set(ids)
    matched: set[str] = set()
    for chunk in _chunks(list(ids)):
        # A pattern only finds candidates (a % or _ in an id widens them); each is checked
        # exactly below.
        marks, params = _placeholders("p", [_candidates(v) for v in chunk])
        # Text on every engine (the PostgreSQL store keeps payloads as JSON).
        payload = exp.cast(exp.column("payload", quoted=True), exp.DataType.Type.TEXT)
        query = (
            exp.select(exp.column("id", quoted=True), exp.alias_(payload, "payload"))
            .from_(exp.table_("failed_events"))
            .where(exp.or_(*[exp.Like(this=payload, expression=m) for m in marks]))
        )
        table = engine.select(query.sql(engine.dialect), params).table
        for row_id, text in zip(
            table.column("id").to_pylist(), table.column("payload").to_pylist(), strict=True
        ):
            if text is not None and _holds(text, wanted):
                matched.add(str(row_id))
    return sorted(matched)


#: Runs of an id that every JSON encoder writes as they are: printable ASCII, but for a
#: quote, a backslash and a slash (escaped by some: PHP writes ``\/``) and ``%``.
_VERBATIM = re.compile(r"[ !#$&-.0-\[\]-~]+")


def _candidates(value: str) -> str:
    r"""The ``LIKE`` pattern that finds every payload holding ``value``, however a client's
    JSON escaped it (``\u00fc`` for ``ü``, ``\/`` for ``/``): its verbatim runs in order.

    >>> _candidates("u-123"), _candidates("ünï"), _candidates("a/b\\c"), _candidates("%")
    ('%u-123%', '%n%', '%a%b%c%', '%')
    """
    return "%" + "%".join(_VERBATIM.findall(value)) + "%" if _VERBATIM.search(value) else "%"


def _holds(text: str, wanted: set[str]) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return _quoted_in(text, wanted)
    if isinstance(value, str):
        # A body that did not parse is kept as one JSON string of its text.
        return value in wanted or _quoted_in(value, wanted)
    return any(s in wanted for s in strings(value))


def _quoted_in(text: str, wanted: set[str]) -> bool:
    r"""Whether an id appears in ``text`` as a JSON string, escaped or as UTF-8.

    >>> _quoted_in('{not json "u-123" ', {"u-123"}), _quoted_in('{"u-1234"', {"u-123"})
    (True, False)
    >>> _quoted_in('{"id": "ünï"', {"ünï"}), _quoted_in('{"id": "\\u00fcn\\u00ef"', {"ünï"})
    (True, True)
    """
    return any(form in text for v in wanted for form in _quoted(v))


def _quoted(value: str) -> set[str]:
    r"""``value`` as JSON encoders write it: escaped to ASCII or not, with ``/`` or ``\/``."""
    forms = {json.dumps(value), json.dumps(value, ensure_ascii=False)}
    return forms | {f.replace("/", "\\/") for f in forms}


# -- what status flags -----------------------------------------------------------

#: Output columns that look like a person's id: ``user_id``, ``anonymous_id``, ``userId``,
#: ``buyer_user_id`` and the like.
_ID_LIKE = re.compile(r"(^|_)(user_?id|anonymous_?id)$", re.IGNORECASE)


def undeclared(workspace: Workspace) -> list[dict[str, Any]]:
    """Pipelines that read person data (the event tables, or an output with person
    columns, or one of these pipelines) and output id-like columns without declaring
    ``person``: an erasure would leave their rows (it recomputes them as aggregates, which
    keeps the person's rows of intervals it does not recompute). A pipeline reading person
    data whose output has no id-like column is an aggregate. A Python pipeline without
    ``schema=`` has columns that cannot be told, and is not flagged."""
    from headwater.process.changes import specs

    graph = workspace.graph()
    found = specs(graph, workspace.project.settings.project.dialect)
    tainted = {"events", "failed_events"}
    flags = []
    for pipeline in graph:
        if not pipeline.inputs & tainted and not pipeline.header.person:
            continue
        tainted.add(pipeline.name)
        if pipeline.header.person:
            continue
        spec = found.get(pipeline.name)
        columns = [c for c in (spec.columns or {}) if _ID_LIKE.search(c)] if spec else []
        if columns:
            flags.append({"pipeline": pipeline.name, "columns": columns, "suggested": columns})
    return flags
