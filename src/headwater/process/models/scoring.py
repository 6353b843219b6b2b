"""Scoring: a model's outputs appended to the rows of its features, one Arrow batch at a
time, each prediction row tagged with ``model``, ``model_version``, ``shadow`` and
``scored_at``.

A :class:`Model` is one declared model resolved to its artifacts (the live version and
the shadow one, if any). :meth:`Model.scorer` gives the function that
``Engine.map_batches`` runs over a query's batches: on Spark it travels to the
executors with the artifacts' bytes, and each executor loads the model once per
version. A shadow version scores the same rows, appended after the live ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from headwater.process.models.artifact import Artifact
from headwater.process.models.errors import ModelError
from headwater.process.models.predictors import Predictor, WrongAnswer, predictor
from headwater.process.models.settings import TAG_COLUMNS

SCORED_AT = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Model:
    """A declared model and the artifacts it scores with."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    live: Artifact
    shadow: Artifact | None = None
    batch_rows: int = 262_144
    description: str = field(default="", compare=False)

    @property
    def version(self) -> str:
        """The live version: a hash of the artifact's bytes."""
        return self.live.version

    @property
    def fingerprint(self) -> str:
        """What a pipeline that scores with this model folds into its own version: a new
        artifact (live or shadow), or other features or outputs, is a new pipeline version."""
        shadow = self.shadow.version if self.shadow is not None else "-"
        return f"{self.name}:{self.live.version}:{shadow}:{self.inputs}:{self.outputs}"

    def artifacts(self) -> Iterator[tuple[Artifact, bool]]:
        """Each version scored, and whether it is the shadow."""
        yield self.live, False
        if self.shadow is not None:
            yield self.shadow, True

    def load(self) -> None:
        """Load every version, so one that does not load or fit its inputs fails now."""
        for artifact, _ in self.artifacts():
            predictor(artifact, self.inputs, self.outputs)

    def schema(self, columns: pa.Schema) -> pa.Schema:
        """The scored rows' columns: ``columns`` (the features query's), the outputs, the tags."""
        missing = [name for name in self.inputs if name not in columns.names]
        if missing:
            raise ModelError(
                self.name,
                f"the query does not give feature{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}",
                version=self.version,
                hint=f"select every input of [models.{self.name}]: {', '.join(self.inputs)}",
            )
        for name in self.inputs:
            kind = columns.field(name).type
            if not _numeric(kind):
                raise ModelError(
                    self.name,
                    f"feature {name} is {kind}; a model takes numbers",
                    version=self.version,
                    hint=f"cast {name} to a number in the query (CAST(... AS FLOAT64))",
                )
        taken = [name for name in (*self.outputs, *TAG_COLUMNS) if name in columns.names]
        if taken:
            raise ModelError(
                self.name,
                f"the query already has column{'s' if len(taken) > 1 else ''} "
                f"{', '.join(taken)}, which scoring appends",
                version=self.version,
                hint=f"rename them in the query, or the outputs in [models.{self.name}]",
            )
        features = pa.schema([columns.field(name) for name in self.inputs])
        return pa.schema([*columns, *self.appended(features)])

    def appended(self, features: pa.Schema | None = None) -> pa.Schema:
        """The columns scoring appends: the outputs (of the types the model gives for
        ``features``; default FLOAT64 features), then the tags."""
        if features is None:
            features = pa.schema([(name, pa.float64()) for name in self.inputs])
        if self.live.kind == "onnx":  # always FLOAT64 (_Onnx): known without loading it
            types = [pa.float64()] * len(self.outputs)
        else:
            loaded = predictor(self.live, self.inputs, self.outputs)
            try:
                types = loaded.output_types(features)
            except Exception as exc:  # a callable's own code may raise anything
                raise ModelError(
                    self.name, f"the model {_said(exc)}", version=self.live.version
                ) from None
        outputs = [pa.field(name, kind) for name, kind in zip(self.outputs, types, strict=True)]
        tags = [
            pa.field("model", pa.string()),
            pa.field("model_version", pa.string()),
            pa.field("shadow", pa.bool_()),
            pa.field("scored_at", SCORED_AT),
        ]
        return pa.schema([*outputs, *tags])

    def scorer(self, columns: pa.Schema, scored_at: datetime) -> Scorer:
        """The function that scores batches of a query with ``columns``. Every version is
        loaded here, where the run is, so one that does not load fails before any batch
        (on Spark, before the executors get it)."""
        self.load()
        return Scorer(self, self.schema(columns), scored_at)

    def score(self, rows: pa.Table | pa.RecordBatch, scored_at: datetime) -> pa.Table:
        """``rows`` scored here, in batches of ``batch_rows``: each row once per version."""
        table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
        return self.scorer(table.schema, scored_at).table(table)


@dataclass(frozen=True)
class Scorer:
    """Scores one batch: the rows with the outputs and tags appended, the live version's
    rows first, then the shadow's. Picklable: it carries its artifacts' bytes."""

    model: Model
    schema: pa.Schema
    scored_at: datetime
    #: The tag columns of a batch, by version and length: the same for every batch of a
    #: run, so made once (Arrow arrays are immutable; the batches share their buffers).
    _tags: dict[tuple[str, bool, int], list[pa.Array]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def batch_rows(self) -> int:
        """Rows scored at once: an engine that hands over batches of its own size (Spark)
        regroups them to this many."""
        return self.model.batch_rows

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """One batch scored, as one batch (what ``Engine.map_batches`` runs)."""
        scored = self.table(pa.Table.from_batches([batch]))
        batches = scored.combine_chunks().to_batches()
        return batches[0] if batches else _empty(self.schema)

    def table(self, rows: pa.Table) -> pa.Table:
        """``rows`` scored ``batch_rows`` at a time, whatever their chunks (the features
        are copied once, into the model's matrix; the other columns are kept as they are)."""
        model = self.model
        pieces = []
        for artifact, shadow in model.artifacts():
            loaded = predictor(artifact, model.inputs, model.outputs)
            for offset in range(0, rows.num_rows, model.batch_rows):
                part = rows.slice(offset, model.batch_rows)
                pieces.append(self._scored(part, artifact, loaded, shadow))
        return pa.concat_tables(pieces) if pieces else self.schema.empty_table()

    def _scored(
        self, rows: pa.Table, artifact: Artifact, loaded: Predictor, shadow: bool
    ) -> pa.Table:
        model = self.model
        features = rows.select(list(model.inputs))
        for name, column in zip(model.inputs, features.columns, strict=True):
            if column.null_count:
                first = pc.index(pc.is_null(column), True).as_py()
                raise ModelError(
                    model.name,
                    f"feature {name} is NULL",
                    version=artifact.version,
                    row=rows.slice(first, 1).to_pylist()[0],
                    hint=f"give {name} a value in the query (COALESCE), or filter those rows out",
                )
        try:
            outputs = loaded.predict(features)
        except Exception as exc:  # the model's own code may raise anything
            first = _first_failing(loaded, features)
            raise ModelError(
                model.name,
                f"the model {_said(exc)}",
                version=artifact.version,
                row=rows.slice(first, 1).to_pylist()[0] if first is not None else None,
            ) from None
        arrays = [*rows.columns, *outputs, *self._tag_columns(artifact, shadow, rows.num_rows)]
        cast = []
        for array, field_ in zip(arrays, self.schema, strict=True):
            try:
                cast.append(array if array.type == field_.type else pc.cast(array, field_.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ModelError(
                    model.name,
                    f"the model gave {field_.name} as {array.type}, not {field_.type} (the "
                    "type it gave before, which the output's column has)",
                    version=artifact.version,
                    hint="give each output one type, whatever the batch",
                ) from None
        return pa.Table.from_arrays(cast, schema=self.schema)

    def _tag_columns(self, artifact: Artifact, shadow: bool, count: int) -> list[pa.Array]:
        key = (artifact.version, shadow, count)
        found = self._tags.get(key)
        if found is None:
            found = [
                pa.repeat(pa.scalar(self.model.name, pa.string()), count),
                pa.repeat(pa.scalar(artifact.version, pa.string()), count),
                pa.repeat(pa.scalar(shadow, pa.bool_()), count),
                pa.repeat(pa.scalar(self.scored_at, SCORED_AT), count),
            ]
            if len(self._tags) > 8:  # a run's batches have one or two lengths
                self._tags.clear()
            self._tags[key] = found
        return found


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=schema)


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    )


def _first_failing(loaded: Predictor, features: pa.Table) -> int | None:
    """The first row the model fails on: the shortest failing prefix, by bisection (a few
    predictions, only once a batch has failed)."""

    def fails(count: int) -> bool:
        try:
            loaded.predict(features.slice(0, count))
        except Exception:  # the model's own code may raise anything
            return True
        return False

    low, high = 0, features.num_rows
    if high == 0 or not fails(high):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        if fails(middle):
            high = middle
        else:
            low = middle
    return int(high - 1)


def _said(exc: Exception) -> str:
    """What a model's failure says: a callable's wrong answer in Headwater's words (its
    columns or rows), anything else as the model raised it."""
    if isinstance(exc, WrongAnswer):
        return str(exc)
    return f"raised {type(exc).__name__}: {exc}"
