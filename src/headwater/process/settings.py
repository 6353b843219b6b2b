"""Settings of pipelines: the header of each pipeline, and the ``[pipelines]`` table."""

from __future__ import annotations

from typing import Literal

import msgspec


class AcceptedValues(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    column: str
    values: list[str | int | float | bool]


class RowCount(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    min: int | None = None
    max: int | None = None


class Audit(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One check of a pipeline's output, run before it is published. Set exactly one field."""

    not_null: list[str] | None = None
    """These columns hold no NULL."""

    unique: list[str] | None = None
    """No two rows share these columns' values."""

    accepted_values: AcceptedValues | None = None
    """The column holds only these values (NULL allowed)."""

    row_count: RowCount | None = None
    """The output has between ``min`` and ``max`` rows."""

    sql: str | None = None
    """A query over ``output`` that returns the offending rows; none returned means it passes."""


class PipelineHeader(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """What a pipeline's header may say."""

    schedule: str = "@daily"
    """A cron expression (``"0 * * * *"``) or ``@hourly``/``@daily``/``@weekly``/``@monthly``.
    Consecutive run times are also the interval boundaries of an incremental pipeline."""

    kind: Literal["full", "incremental"] = "full"
    """``full`` recomputes the whole output each run; ``incremental`` one interval at a time."""

    time: Literal["received_at", "timestamp"] = "received_at"
    """Incremental pipelines: intervals by arrival (``received_at``, exact and cheap) or by event
    time (``timestamp``: late events re-open the intervals they belong to)."""

    time_column: str | None = None
    """Incremental pipelines: the output column that holds each row's time; every row of a run
    must fall inside its interval."""

    start: str | None = None
    """First interval (ISO date or time, UTC). Default: the interval of the earliest event."""

    audits: list[Audit] = msgspec.field(default_factory=list)
    """Checks that must pass before an interval is published."""

    retries: int = 3
    """Attempts after a transient failure, with exponential backoff."""

    batch_size: int | None = None
    """Incremental pipelines: how many consecutive intervals a backfill (or a catch-up) runs
    as one query, with ``@start``/``@end`` spanning them, published as one replace of the
    span and recorded as each interval done. The output is the same as interval by
    interval. Default: one interval per run."""

    retain: str | None = None
    """Incremental pipelines: how long the output keeps its rows (``"90d"``), by its
    ``time_column``: whole intervals older than that are dropped, and retired (never
    recomputed). Metadata: changing it changes neither the version nor the output's
    recent rows. Default: kept for good."""

    key: list[str] = msgspec.field(default_factory=list)
    """The output's key columns: how the read API looks a row up and orders pages."""

    sinks: list[str] = msgspec.field(default_factory=list)
    """Where each published interval is also delivered: names of ``[sinks.NAME]`` tables in
    ``headwater.toml``. The engine's own table is always written."""

    reads: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Incremental pipelines: the range of an input read for an interval, where the SQL does
    not show it (a Python pipeline, or bounds the SQL computes): ``{ daily = ["-6d", "0d"] }``
    reads ``[start - 6 days, end)`` of ``daily``. Derived from the SQL otherwise."""

    model: str | None = None
    """SQL pipelines: score the query's rows with ``[models.NAME]`` of ``headwater.toml``.
    The SELECT gives the features (and whatever else the output keeps, such as keys); the
    model's outputs and ``model``, ``model_version``, ``shadow``, ``scored_at`` are
    appended."""

    description: str = ""
    """Shown by ``headwater pipelines``."""

    person: list[str] = msgspec.field(default_factory=list)
    """The output's columns that hold a person's id (``["user_id"]``): ``headwater erase``
    deletes the rows whose person column holds an erased id, here and in every sink.
    Metadata: it is not part of the pipeline's version."""


HEADER_KEYS = tuple(PipelineHeader.__struct_fields__)
AUDIT_KEYS = tuple(Audit.__struct_fields__)


class PipelinesSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``[pipelines]`` table of ``headwater.toml``."""

    folder: str = "pipelines"
    """Where pipeline files live, relative to ``headwater.toml``."""

    metadata_url: str | None = None
    """SQLAlchemy URL of the metadata database; default: SQLite in the data folder."""

    tick_seconds: float = 10.0
    """How often the scheduler inside ``headwater up`` looks for due work."""

    max_catchup: int = 100
    """Most intervals of one pipeline run in one scheduler pass after downtime (oldest first)."""

    retry_backoff_seconds: float = 2.0
    """First retry delay after a transient failure; doubles each attempt."""

    lease_seconds: float = 60.0
    """How long a run's (or a delivery's) claim on its pipeline lasts without renewal; it is
    renewed every third of it. A process that stalls for longer loses the claim to another,
    and what it then computes is not published."""
