"""A SQL scoring pipeline's run: its query's rows scored through ``Engine.map_batches``.

The columns of the query are found first by running it with ``LIMIT 0`` (the engine
plans it and reads nothing; on BigQuery a dry run, which is free), so the scored rows'
schema is known before any batch is scored, as Spark's ``mapInArrow`` needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import pyarrow as pa

from headwater.core.clock import utc_now
from headwater.process.models.errors import ModelError
from headwater.process.models.scoring import Model
from headwater.state.models import SeenVersion
from headwater.store.engine import Engine, Probes

if TYPE_CHECKING:
    from headwater.process.definition import Pipeline


def columns(engine: Engine, sql: str, params: Mapping[str, object]) -> pa.Schema:
    """The columns ``sql`` gives, without reading its rows: an engine's own probe where it
    has one (BigQuery's free dry run), else the query with ``LIMIT 0``."""
    if isinstance(engine, Probes):
        return engine.result_schema(sql, params)
    # The pipeline's own query, wrapped whole: no value is pasted into it.
    probe = f"SELECT * FROM ({sql}) AS _hw_features LIMIT 0"  # noqa: S608
    return engine.select(probe, params).table.schema


def score_query(
    engine: Engine, sql: str, params: Mapping[str, object], pipeline: Pipeline
) -> pa.Table:
    """The rows of ``sql`` (``pipeline``'s query in the engine's SQL), scored by the model
    its header names; an error of the model names the pipeline too."""
    name = pipeline.header.model or ""
    model = pipeline.models.get(name)
    if model is None:
        raise ModelError(
            name,
            "was not loaded with the pipeline",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            hint="load pipelines with the project's [models] (the workspace does)",
        )
    try:
        scorer = model.scorer(columns(engine, sql, params), utc_now())
        return engine.map_batches(sql, params, scorer, scorer.schema)
    except ModelError as exc:
        raise exc.at(pipeline=pipeline.name, path=str(pipeline.path)) from None


def seen(models: Iterable[Model]) -> list[SeenVersion]:
    """What the registry keeps of each version ``models`` score with."""
    return [
        SeenVersion(m.name, a.version, a.sha256, a.size, a.source, shadow)
        for m in models
        for a, shadow in m.artifacts()
    ]
