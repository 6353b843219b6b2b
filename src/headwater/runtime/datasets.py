"""The datasets as an admin sees them: columns, key, who may read them, and a few rows.

The event tables and every pipeline's output, whether computed yet or not; the
consumers listed are those ``headwater.toml`` grants the dataset to (what the read
API enforces). Shown by the dashboard's Datasets page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp

from headwater.core.errors import ConfigError, HeadwaterError
from headwater.store.schema import type_name

if TYPE_CHECKING:
    from headwater.runtime.workspace import Workspace

#: Rows a preview shows at most.
PREVIEW_MAX = 100
_BUILT_IN = {
    "events": ("the events collected", ["source", "message_id"], "received_at"),
    "failed_events": ("refused events and bodies, with why", ["id"], "received_at"),
}


def catalog(workspace: Workspace) -> dict[str, Any]:
    """The datasets, and each consumer with the datasets it may read."""
    consumers = workspace.project.settings.consumers
    return {
        "datasets": datasets(workspace),
        "consumers": {name: sorted(c.datasets) for name, c in sorted(consumers.items())},
    }


def datasets(workspace: Workspace) -> list[dict[str, Any]]:
    """Each dataset: its name, what it is, key, columns (when computed) and consumers."""
    engine = workspace.engine
    tables = set(engine.list_tables())
    grants = {
        name: sorted(consumer.datasets)
        for name, consumer in workspace.project.settings.consumers.items()
    }
    found: list[dict[str, Any]] = []
    for name, (what, key, _) in _BUILT_IN.items():
        found.append(_entry(workspace, name, what, key, "events", name in tables, grants))
    try:
        outputs = workspace.graph().outputs()
    except HeadwaterError:
        outputs = {}
    for pipeline in sorted(outputs.values(), key=lambda p: p.name):
        header = pipeline.header
        entry = _entry(
            workspace,
            pipeline.name,
            header.description or "",
            list(header.key),
            header.kind,
            pipeline.name in tables,
            grants,
        )
        entry["sinks"] = list(header.sinks)
        found.append(entry)
    return found


def _entry(
    workspace: Workspace,
    name: str,
    what: str,
    key: list[str],
    kind: str,
    computed: bool,
    grants: dict[str, list[str]],
) -> dict[str, Any]:
    columns: list[dict[str, str]] = []
    if computed:
        empty = exp.select("*").from_(exp.table_(name, quoted=True)).limit(0)
        found = workspace.engine.query(empty.sql(workspace.engine.dialect)).schema
        columns = [{"name": f.name, "type": type_name(f.type)} for f in found]
    return {
        "name": name,
        "description": what,
        "kind": kind,
        "key": key,
        "computed": computed,
        "columns": columns,
        "consumers": sorted(c for c, granted in grants.items() if name in granted),
        "sinks": [],
    }


def preview(workspace: Workspace, name: str, limit: int) -> dict[str, Any]:
    """Up to ``limit`` rows of dataset ``name`` (the newest events first)."""
    known = {d["name"]: d for d in datasets(workspace)}
    if name not in known:
        raise ConfigError(
            f"there is no dataset {name!r}", hint=f"one of {', '.join(sorted(known)) or '(none)'}"
        )
    if not known[name]["computed"]:
        return {"name": name, "columns": [], "rows": []}
    limit = max(1, min(limit, PREVIEW_MAX))
    query = exp.select("*").from_(exp.table_(name, quoted=True)).limit(limit)
    if name in _BUILT_IN:
        query = query.order_by(exp.column(_BUILT_IN[name][2]).desc())
    table = workspace.engine.query(query.sql(workspace.engine.dialect))
    return {"name": name, "columns": table.schema.names, "rows": table.to_pylist()}
