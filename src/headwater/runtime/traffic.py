"""What came in: events and refusals per minute, by source and by event name, from the store.

The dashboard's overview and ``headwater traffic`` both show this, so their
numbers agree for the same ``until``. The counts are of what the store holds
(accepted events are those stored; refused ones are rows of ``failed_events``),
so they are the same in every process that reads the store.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from headwater.core.clock import utc_now

if TYPE_CHECKING:
    from headwater.runtime.workspace import Workspace

#: Event names drawn one by one; the rest are summed as "(other)".
TOP_NAMES = 8
WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}

# Plain SQL that DuckDB and PostgreSQL (the stores collectors write) both run; the bounds
# are bound parameters.
_BY_MINUTE = (
    "SELECT {key} AS k, date_trunc('minute', received_at) AS minute, count(*) AS n "
    "FROM {table} WHERE received_at >= ? AND received_at < ? GROUP BY 1, 2"
)
_TOTAL = "SELECT count(*) AS n FROM {table}"


def traffic(workspace: Workspace, until: datetime | None = None) -> dict[str, Any]:
    """Per window (the last hour, the last day before ``until``): accepted and refused
    events, per minute by source and by event name; and the store's size."""
    until = (until or utc_now()).replace(second=0, microsecond=0) + timedelta(minutes=1)
    store = workspace.store
    answer: dict[str, Any] = {"until": until.isoformat()}
    for window, span in WINDOWS.items():
        since = until - span
        minutes = int(span / timedelta(minutes=1))
        by_source = _per_minute(workspace, "source", "events", since, until, minutes)
        by_event = _per_minute(
            workspace, "coalesce(event, name, type)", "events", since, until, minutes
        )
        refused = _per_minute(workspace, "code", "failed_events", since, until, minutes)
        answer[window] = {
            "since": since.isoformat(),
            "minutes": [int((since + timedelta(minutes=i)).timestamp()) for i in range(minutes)],
            "by_source": by_source,
            "by_event": _top(by_event),
            "refused_by_code": refused,
            "accepted": sum(sum(v) for v in by_source.values()),
            "refused": sum(sum(v) for v in refused.values()),
        }
    answer["store"] = {
        "engine": store.name,
        "events": _count(workspace, "events"),
        "failed_events": _count(workspace, "failed_events"),
        "bytes": _bytes(workspace),
    }
    return answer


def _per_minute(
    workspace: Workspace, key: str, table: str, since: datetime, until: datetime, minutes: int
) -> dict[str, list[int]]:
    rows = workspace.store.query(_BY_MINUTE.format(key=key, table=table), [since, until])
    series: dict[str, list[int]] = {}
    for row in rows.to_pylist():
        slot = int((row["minute"] - since) / timedelta(minutes=1))
        if 0 <= slot < minutes:
            series.setdefault(str(row["k"]), [0] * minutes)[slot] += int(row["n"])
    return dict(sorted(series.items()))


def _top(series: dict[str, list[int]]) -> dict[str, list[int]]:
    """The :data:`TOP_NAMES` busiest series, and the others summed."""
    ranked = sorted(series, key=lambda k: (-sum(series[k]), k))
    kept = {k: series[k] for k in sorted(ranked[:TOP_NAMES])}
    rest = ranked[TOP_NAMES:]
    if rest:
        kept["(other)"] = [sum(values) for values in zip(*(series[k] for k in rest), strict=True)]
    return kept


def _count(workspace: Workspace, table: str) -> int:
    return int(workspace.store.query(_TOTAL.format(table=table)).column(0)[0].as_py())


def _bytes(workspace: Workspace) -> int | None:
    """The embedded store's files on disk; ``None`` for a database elsewhere."""
    if workspace.store.name != "duckdb":
        return None
    path = workspace.project.store_path
    files = [path, path.with_name(path.name + ".wal")]
    return sum(f.stat().st_size for f in files if f.exists())
