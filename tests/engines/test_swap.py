"""``Engine.swap_tables``: a build put in the place of its live table, tables dropped, and
a swap made twice changing nothing the second time, on every engine (DuckDB, PostgreSQL,
Spark in local mode); BigQuery against its recording client (no BigQuery here)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from headwater.store.bigquery import BigQueryEngine
from headwater.store.engine import Engine, Fence
from headwater.store.errors import Fenced
from headwater.store.schema import build_table
from tests.bigquery_fake import FakeClient

OLD = pa.table({"k": ["a", "b"], "v": [1, 2]})
NEW = pa.table({"k": ["a", "b", "c"], "v": [10, 20, 30], "extra": ["x", "y", "z"]})


def _rows(engine: Engine, table: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = engine.query(f"SELECT * FROM {table} ORDER BY k").to_pylist()
    return rows


def test_a_build_takes_the_live_tables_place_whole(engine: Engine) -> None:
    built = build_table("t")
    engine.replace_table("t", OLD)
    engine.replace_table("gone", OLD)
    engine.replace_table(built, NEW)
    assert built not in engine.list_tables()  # a build is not a dataset
    engine.swap_tables({"t": built}, drop=["gone"])
    assert _rows(engine, "t") == NEW.to_pylist()
    assert "gone" not in engine.list_tables()
    # Made again (an apply resumed after the swap), it changes nothing.
    engine.swap_tables({"t": built}, drop=["gone"])
    assert _rows(engine, "t") == NEW.to_pylist()
    assert sorted(engine.list_tables()) == sorted({"events", "failed_events", "t"})


def test_a_swap_with_a_stale_fence_is_refused_and_changes_nothing(engine: Engine) -> None:
    built = build_table("t")
    engine.replace_table("t", OLD, Fence("t", 5))
    engine.replace_table(built, NEW)
    with pytest.raises(Fenced):
        engine.swap_tables({"t": built}, fences=[Fence("t", 4)])
    assert _rows(engine, "t") == OLD.to_pylist()
    engine.swap_tables({"t": built}, fences=[Fence("t", 6)])
    assert _rows(engine, "t") == NEW.to_pylist()


def test_build_names_stay_within_every_engines_identifier_limit() -> None:
    long = "a" * 80
    assert len(build_table(long)) <= 63
    assert build_table(long) != build_table("a" * 79)


@pytest.fixture
def bq() -> tuple[BigQueryEngine, FakeClient]:
    fake = FakeClient()
    engine = BigQueryEngine.open(None, "analytics", None, 10**12, client=fake)
    del fake.calls[:]
    return engine, fake


def test_bigquery_swaps_by_a_copy_job_that_truncates_then_deletes_the_build(
    bq: tuple[BigQueryEngine, FakeClient],
) -> None:
    engine, fake = bq
    dataset = f"{fake.project}.analytics"
    engine.replace_table("t", OLD)
    engine.replace_table(build_table("t"), NEW)
    del fake.calls[:]
    engine.swap_tables({"t": build_table("t")}, drop=["gone"])
    copies = fake.table_calls("copy_table")
    assert [(c.name, c.options["source"]) for c in copies] == [
        (f"{dataset}.t", f"{dataset}._hw_next_t")
    ]
    assert copies[0].obj.write_disposition == "WRITE_TRUNCATE"
    deleted = [c.name for c in fake.table_calls("delete_table")]
    assert deleted == [f"{dataset}._hw_next_t", f"{dataset}.gone"]
    assert fake.real_queries == []  # a copy job bills nothing; no query was run
    del fake.calls[:]
    engine.swap_tables({"t": build_table("t")})
    assert fake.table_calls("copy_table") == []  # swapped already: nothing to do
