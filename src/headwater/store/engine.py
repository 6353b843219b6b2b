"""The interface every engine implements.

A handful of methods cover what the stages need: the collector appends deduped
event batches; pipelines read Arrow, replace one interval of a table atomically
and upsert by key; the CLI runs read-only queries. Arrow is the one interchange
format, so an engine never sees Python rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import pyarrow as pa

from headwater.core.types import Interval
from headwater.store.errors import QueryError

#: A collector not heard from for this long is taken for dead: its floor no longer counts.
FLOOR_STALE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class IngestBatch:
    """What the collector's writer commits in one transaction.

    ``events`` has :data:`headwater.store.schema.EVENTS` and no two rows with the
    same ``(source, message_id)``; ``failed`` has ``FAILED_EVENTS``. ``keys``, when
    given, are the rows' dedupe keys (:func:`headwater.store.schema.message_keys`),
    already computed by the caller; an engine that uses them need not hash again.
    ``replayed`` (:data:`~headwater.store.schema.REPLAYED`) are failed events whose
    replay ``events`` hold: their ``replayed_at`` is set in the same transaction (where
    it is still NULL), so a replay is stored and marked together or not at all.
    """

    events: pa.Table
    failed: pa.Table
    keys: tuple[pa.Array, pa.Array] | None = None
    replayed: pa.Table | None = None


def refuse_replayed(engine: str, batch: IngestBatch) -> None:
    """A warehouse keeps ``failed_events`` as loaded files or partitions, with no update in
    the transaction of an ingest: failed events are replayed on the store collectors
    write."""
    if batch.replayed is not None and batch.replayed.num_rows:
        raise QueryError(
            f"failed events are replayed on the store collectors write, not on {engine}",
            hint="run `headwater failed replay` in the environment whose [store] is DuckDB "
            "or PostgreSQL",
        )


@dataclass(frozen=True, slots=True)
class Selected:
    """A pipeline query's result, and how many stored rows the engine read for it."""

    table: pa.Table
    rows_scanned: int | None


@dataclass(frozen=True, slots=True)
class Fence:
    """A writer's claim to publish under ``name`` (a pipeline's lease and its token).

    An engine keeps, per name, the largest token it has accepted, and refuses a
    fenced write with a smaller one, in the same transaction as the write
    (:class:`~headwater.store.errors.Fenced`): a writer that stalled past its
    lease cannot publish over the one that took the lease over.
    """

    name: str
    token: int


@dataclass(frozen=True, slots=True)
class Cost:
    """What a query would read, when the engine can tell before running it."""

    bytes_scanned: int | None = None
    rows_scanned: int | None = None


def map_in_process(
    table: pa.Table | Iterable[pa.RecordBatch],
    fn: Callable[[pa.RecordBatch], pa.RecordBatch],
    schema: pa.Schema,
) -> pa.Table:
    """``fn`` over each batch of ``table`` here, its output taken by name and cast to
    ``schema``: :meth:`Engine.map_batches` for an engine that computes in-process.

    >>> double = lambda b: pa.record_batch({"x": pa.compute.multiply(b["x"], 2)})
    >>> map_in_process(pa.table({"x": [1, 2]}), double, pa.schema({"x": pa.int32()})).to_pylist()
    [{'x': 2}, {'x': 4}]
    """
    batches = []
    # A stream of batches (pages of a result) is read one at a time: only the output is kept.
    for batch in table.to_batches() if isinstance(table, pa.Table) else table:
        out = fn(batch)
        missing = [f.name for f in schema if f.name not in out.schema.names]
        if missing:
            raise ValueError(
                f"map_batches: fn returned the columns {', '.join(out.schema.names) or 'none'}; "
                f"the schema given declares {', '.join(missing)}, which it lacks"
            )
        batches.append(
            pa.RecordBatch.from_arrays(
                [out.column(f.name).cast(f.type) for f in schema], schema=schema
            )
        )
    return pa.Table.from_batches(batches, schema=schema)


class Floors(Protocol):
    """Arrival floors of the collectors writing a store shared by several processes.

    Each collector says every second that every event it received before its
    floor is committed; a pipeline run in any process takes the lowest floor of
    the live collectors as the time below which intervals by arrival are whole.
    """

    def publish(self, collector: str, floor_us: int) -> None:
        """Record ``collector``'s floor (µs); its commits are fenced from then on (a
        collector silent for too long fails its own commits, see the PostgreSQL store)."""
        ...

    def retire(self, collector: str) -> None:
        """``collector`` stopped with nothing in flight: forget its floor."""
        ...

    def lowest(self, stale_after_seconds: float) -> int | None:
        """The lowest floor of the collectors heard from within ``stale_after_seconds``
        (µs); ``None`` when there are none."""
        ...


def delete_in_batches(
    delete: Callable[[int], int],
    batch: int,
    should_stop: Callable[[], bool] = bool,
    max_batches: int | None = None,
) -> tuple[int, bool]:
    """Call ``delete(batch)`` until it deletes fewer than ``batch`` rows (nothing is left),
    ``should_stop`` says so, or ``max_batches`` calls were made; return the rows deleted and
    whether nothing is left. Each call is its own short transaction, so deleting much never
    holds the store long.

    >>> left = [5]
    >>> def delete(n):
    ...     done = min(n, left[0]); left[0] -= done; return done
    >>> delete_in_batches(delete, 2, max_batches=2), delete_in_batches(delete, 2)
    ((4, False), (1, True))
    """
    deleted = 0
    calls = 0
    while not should_stop() and (max_batches is None or calls < max_batches):
        count = delete(batch)
        calls += 1
        deleted += count
        if count < batch:
            return deleted, True
    return deleted, False


def collectors_floor(engine: Engine, now: datetime) -> datetime:
    """Everything that arrived in ``engine`` before this is committed, as far as this
    process knows without a collector of its own: the lowest floor of the live collectors
    on a store several processes write, else ``now`` (nobody else writes it)."""
    if engine.floors is None:
        return now
    lowest = engine.floors.lowest(FLOOR_STALE_SECONDS)
    if lowest is None:
        return now
    return min(now, datetime.fromtimestamp(0, UTC) + timedelta(microseconds=lowest))


class Staged(Protocol):
    """A query's result computed into the engine (a temporary table named :attr:`table`)
    inside the transaction that will publish it: checked there, then published, and
    visible to nobody before the transaction commits."""

    #: The temporary table that holds the rows.
    table: str
    #: Its columns, as the engine would hand them over in Arrow.
    schema: pa.Schema
    rows: int
    #: Stored rows the engine read to compute it; ``None`` when it does not say.
    rows_scanned: int | None

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> pa.Table:
        """Run a check over :attr:`table` (the engine's SQL, named parameters)."""
        ...

    def row(self, sql: str, params: Mapping[str, object] | None = None) -> dict[str, object]:
        """The first row of a check over :attr:`table` by column name (the counts of the
        audits: one row), without the trip through Arrow."""
        ...

    def replace_interval(
        self, table: str, column: str, interval: Interval, fence: Fence | None = None
    ) -> None:
        """Replace the rows of ``table`` whose ``column`` lies in ``interval`` by the staged
        rows (``table`` made with their columns when missing); fenced as
        :meth:`Engine.replace_interval`."""
        ...

    def replace_table(self, table: str, fence: Fence | None = None) -> None:
        """Replace the whole of ``table`` by the staged rows; fenced as
        :meth:`Engine.replace_table`."""
        ...


@runtime_checkable
class Probes(Protocol):
    """An engine that tells a query's columns without running it (BigQuery's dry run is
    free, where ``LIMIT 0`` is a billed query of its own)."""

    def result_schema(self, sql: str, params: Mapping[str, object]) -> pa.Schema:
        """The columns ``sql`` gives, as Arrow types."""
        ...


@runtime_checkable
class Stages(Protocol):
    """An engine that computes a pipeline's output into itself (DuckDB, PostgreSQL): no
    round trip of the rows through this process."""

    #: The sqlglot dialect of the SQL it is given.
    dialect: str

    def stage(self, sql: str, params: Mapping[str, object]) -> AbstractContextManager[Staged]:
        """Open a transaction, compute ``sql`` into a temporary table, and yield it; the
        transaction commits when the block ends (what the block published becomes
        visible) and rolls back if it raises."""
        ...


class Engine(Protocol):
    """A store of tables that Headwater can write, read and replace atomically."""

    name: str
    #: The sqlglot dialect this engine runs.
    dialect: str
    #: Whether several processes may use the store at once.
    shared: bool

    @property
    def floors(self) -> Floors | None:
        """The collectors' arrival floors, on a store several collector processes write;
        ``None`` where one process writes events (its floor is known in-process)."""
        ...

    def ingest(self, batch: IngestBatch) -> pa.Array:
        """Commit ``batch`` in one transaction; return, per event row, whether it was new.

        Rows whose ``(source, message_id)`` is already inside the dedupe window are
        not stored and come back ``False``.
        """
        ...

    def prune_dedupe(self, before_us: int) -> int:
        """Forget message ids received before ``before_us``; return how many."""
        ...

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """Run one read-only statement and return its result."""
        ...

    def select(self, sql: str, params: Mapping[str, object]) -> Selected:
        """Run a pipeline's query (named parameters) and report the rows it scanned."""
        ...

    def map_batches(
        self,
        sql: str,
        params: Mapping[str, object],
        fn: Callable[[pa.RecordBatch], pa.RecordBatch],
        schema: pa.Schema,
    ) -> pa.Table:
        """Run ``fn`` over the rows of a pipeline's query, batch by batch, and return
        its output as ``schema``; an engine with executors runs ``fn`` on them."""
        ...

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        """Run one statement that may change data."""
        ...

    def append(self, table: str, data: pa.Table) -> None:
        """Append ``data`` to ``table`` (created from ``data``'s schema when missing)."""
        ...

    def replace_table(self, table: str, data: pa.Table, fence: Fence | None = None) -> None:
        """Atomically replace the whole of ``table`` with ``data``; with a ``fence``, only if
        no larger token was accepted for its name."""
        ...

    def replace_interval(
        self,
        table: str,
        column: str,
        interval: Interval,
        data: pa.Table,
        fence: Fence | None = None,
    ) -> None:
        """Atomically replace the rows of ``table`` whose ``column`` lies in ``interval``;
        with a ``fence``, only if no larger token was accepted for its name."""
        ...

    def swap_tables(
        self, swaps: Mapping[str, str], drop: Sequence[str] = (), fences: Sequence[Fence] = ()
    ) -> None:
        """Put each built table ``swaps[live]`` in the place of ``live`` (dropping the old one)
        and drop the tables in ``drop``. One transaction where the engine has transactional
        DDL (DuckDB, PostgreSQL): a reader sees every old table or every new one, never a
        mix. A built table that is gone while its live table is there was swapped already
        and is skipped, so a swap interrupted and made again completes. With ``fences``,
        refused when a larger token was accepted for any of their names."""
        ...

    def upsert(self, table: str, key: Sequence[str], data: pa.Table) -> None:
        """Insert ``data``, replacing rows with the same ``key``, in one transaction."""
        ...

    def load_arrivals(
        self, table: str, interval: Interval, path: str, fence: Fence | None = None
    ) -> None:
        """Replace the rows of the event table ``table`` that arrived in ``interval`` with
        the rows of the Parquet file ``path`` (a local file of ``table``'s columns, every
        row inside ``interval``), as one load: loading it again leaves the same rows, never
        twice. How a warehouse takes an offload from the hot store. With a ``fence``, a
        load made of a delete and an insert is refused when a larger token was accepted;
        one that replaces its interval whole (a load job, a file) needs none."""
        ...

    def delete_arrivals(self, table: str, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` rows of the event table ``table`` that arrived before
        ``before``; return how many. A hot store's retention; a warehouse refuses it."""
        ...

    def drop_before(self, table: str, column: str, before: datetime, limit: int) -> int:
        """Retention: drop rows of ``table`` whose ``column`` lies before ``before``; return
        how many. An engine that deletes rows deletes at most ``limit`` (one bounded
        statement: a store is never held long); one that keeps ``table`` in partitions of
        ``column`` drops whole partitions that end by ``before`` (the partition holding
        ``before`` stays until it is whole), oldest first, stopping once ``limit`` rows
        went. The event tables are partitioned by ``received_at``; outputs by their time
        column (Spark: by the interval each part was published for)."""
        ...

    def delete_matching(self, table: str, column: str, values: Sequence[str]) -> int:
        """Delete the rows of ``table`` whose ``column`` equals one of ``values`` (bound as
        parameters, never pasted into the SQL); return how many. A person's erasure: deleting
        again deletes nothing, and a table that does not exist has nothing to delete; one
        that lacks ``column`` raises :class:`~headwater.store.errors.MissingColumn`."""
        ...

    def estimate_cost(self, sql: str, params: Mapping[str, object] | None = None) -> Cost:
        """What running ``sql`` (named ``params`` bound) would read; ``None`` when unknown."""
        ...

    def list_tables(self) -> list[str]:
        """Names of the tables a pipeline can read."""
        ...

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the store now, while nobody waits on a commit."""
        ...

    def close(self) -> None:
        """Release the store; committed data stays."""
        ...
