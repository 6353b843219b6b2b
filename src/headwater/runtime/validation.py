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
    sinks = {name: isinstance(sink, PostgresSink) for name, sink in settings.sinks.items()}
    return validate(project.pipelines_dir, settings.project.dialect, settings.store.engine, sinks)
