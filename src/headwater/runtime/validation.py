"""``headwater validate``: a project's pipelines checked for its environment's engine.

Only ``headwater.toml`` and the pipeline files are read: no store, run state or
server is opened, so an environment on PostgreSQL or BigQuery is checked
without its credentials, in CI or an editor.
"""

from __future__ import annotations

from headwater.config.project import Project
from headwater.deliver.settings import PostgresSink
from headwater.process.validate import Report, validate


def validate_project(project: Project) -> Report:
    """Every problem of ``project``'s pipelines, written in its dialect, for the engine of
    its environment (an engine's name is its sqlglot dialect)."""
    settings = project.settings
    # A sink declared for any environment may be named (this one skips it); one that is a
    # PostgreSQL table anywhere needs the pipeline's key.
    sinks = {
        name: any(isinstance(sink, PostgresSink) for sink in declared)
        for name, declared in project.sink_declarations().items()
    }
    # Pipelines every PostgreSQL declaration of a sink keys by its own `latest` columns.
    keyed = {
        name: frozenset.intersection(
            *(frozenset(s.latest) for s in declared if isinstance(s, PostgresSink))
        )
        for name, declared in project.sink_declarations().items()
        if sinks[name]
    }
    return validate(
        project.pipelines_dir,
        settings.project.dialect,
        project.pipelines_store.engine,
        sinks,
        models=settings.models,
        keyed_by_sink=keyed,
    )
