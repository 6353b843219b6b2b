"""The in-memory dedupe index (``store/dedupe.py``) and the DuckDB store that keeps it.

The index is checked against a Python set of the same keys, through any sequence of
adds and prunes, with keys chosen to share their upper halves (the slow path); the
store is checked for what the index must never do: disagree with ``message_ids``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.store import schema
from headwater.store.dedupe import KeyIndex, _Run
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch

# Few distinct upper halves, so that many keys share one and only the lower half differs.
_KEYS = st.tuples(st.integers(0, 3), st.integers(0, 2**64 - 1))
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(_KEYS, max_size=40), st.integers(0, 100)),
        st.tuples(st.just("prune"), st.just([]), st.integers(0, 100)),
    ),
    max_size=30,
)


def _arrays(keys: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    hi = np.array([k[0] for k in keys], dtype=np.uint64)
    lo = np.array([k[1] for k in keys], dtype=np.uint64)
    return hi, lo


@settings(max_examples=200, deadline=None)
@given(steps=_STEPS, probe=st.lists(_KEYS, max_size=40))
def test_the_index_answers_as_a_set_of_its_keys(
    steps: list[tuple[str, list[tuple[int, int]], int]], probe: list[tuple[int, int]]
) -> None:
    index = KeyIndex()
    model: dict[tuple[int, int], int] = {}
    for op, keys, at in steps:
        if op == "add":
            new = [k for k in dict.fromkeys(keys) if k not in model]
            hi, lo = _arrays(new)
            index.add(hi, lo, np.full(len(new), at, dtype=np.int64))
            model.update(dict.fromkeys(new, at))
        else:
            removed = index.prune(at)
            expected = [k for k, t in model.items() if t < at]
            assert removed == len(expected)
            for k in expected:
                del model[k]
        assert len(index) == len(model)
    everything = probe + list(model)
    hi, lo = _arrays(everything)
    assert index.contains(hi, lo).tolist() == [k in model for k in everything]
    assert index.nbytes == 24 * len(model)


def _events(ids: list[str], received_us: int = 1_700_000_000_000_000) -> pa.Table:
    n = len(ids)
    columns: dict[str, pa.Array] = {
        "message_id": pa.array(ids),
        "source": pa.array(["web"] * n),
        "type": pa.array(["track"] * n),
        "timestamp": pa.array([received_us] * n, pa.int64()).cast(schema.TIMESTAMP),
        "received_at": pa.array([received_us] * n, pa.int64()).cast(schema.TIMESTAMP),
        "properties": pa.array(['{"a":1}'] * n),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema.EVENTS]
    return pa.Table.from_arrays(arrays, schema=schema.EVENTS)


def _ingest(
    engine: DuckDBEngine, ids: list[str], received_us: int = 1_700_000_000_000_000
) -> list[bool]:
    batch = IngestBatch(_events(ids, received_us), schema.FAILED_EVENTS.empty_table())
    return [bool(v) for v in engine.ingest(batch).to_pylist()]


def test_a_restart_loads_the_window_and_a_prune_forgets_in_both(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    engine = DuckDBEngine.open(path)
    assert _ingest(engine, ["a", "b"], received_us=10) == [True, True]
    assert _ingest(engine, ["c"], received_us=20) == [True]
    engine.close()

    engine = DuckDBEngine.open(path)
    try:
        assert _ingest(engine, ["a", "c", "d"], received_us=30) == [False, False, True]
        assert engine.dedupe_keys() == 4
        assert engine.prune_dedupe(15) == 2
        assert engine.dedupe_keys() == 2
        # Forgotten by the table and the index alike: "a" is new again, "c" still known.
        assert _ingest(engine, ["a", "c"], received_us=40) == [True, False]
        stored = engine.query("SELECT message_id FROM events ORDER BY 1").column(0).to_pylist()
        assert stored == ["a", "a", "b", "c", "d"]
    finally:
        engine.close()


def test_a_failed_commit_leaves_no_key_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = DuckDBEngine.open(tmp_path / "events.duckdb")
    try:
        assert _ingest(engine, ["kept"]) == [True]
        original = DuckDBEngine._insert_new

        def fail_after_insert(
            self: DuckDBEngine, con: duckdb.DuckDBPyConnection, *args: object
        ) -> None:
            original(self, con, *args)  # type: ignore[arg-type]
            raise duckdb.TransactionException("injected: the commit did not happen")

        monkeypatch.setattr(DuckDBEngine, "_insert_new", fail_after_insert)
        with pytest.raises(Exception, match="injected"):
            _ingest(engine, ["lost", "kept"])
        monkeypatch.undo()
        # The retry of the same request: "lost" was rolled back, so it is new.
        assert _ingest(engine, ["lost", "kept"]) == [True, False]
        stored = engine.query("SELECT message_id FROM events ORDER BY 1").column(0).to_pylist()
        assert stored == ["kept", "lost"]
    finally:
        engine.close()


def test_a_store_with_the_old_primary_key_is_copied_without_it(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE message_ids (key_hi UBIGINT NOT NULL, key_lo UBIGINT NOT NULL, "
        "source VARCHAR NOT NULL, message_id VARCHAR NOT NULL, "
        "received_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (key_hi, key_lo))"
    )
    hi, lo = schema.message_keys(["web"], ["old"])
    con.execute(
        "INSERT INTO message_ids VALUES (?, ?, 'web', 'old', make_timestamptz(?::BIGINT))",
        [hi[0].as_py(), lo[0].as_py(), 1_700_000_000_000_000],
    )
    con.close()

    engine = DuckDBEngine.open(path)
    try:
        assert _ingest(engine, ["old", "new"]) == [False, True]
    finally:
        engine.close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        keys = con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'message_ids' "
            "AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()
        ids = con.execute("SELECT message_id FROM message_ids ORDER BY 1").fetchall()
    finally:
        con.close()
    assert keys == [(0,)]
    assert ids == [("new",), ("old",)]


def test_a_failed_statement_keeps_the_index_and_a_failed_commit_reloads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = DuckDBEngine.open(tmp_path / "events.duckdb")
    loads: list[int] = []
    original = DuckDBEngine._load_keys

    def counted(self: DuckDBEngine, con: duckdb.DuckDBPyConnection) -> KeyIndex:
        loads.append(1)
        return original(self, con)

    monkeypatch.setattr(DuckDBEngine, "_load_keys", counted)
    try:
        assert _ingest(engine, ["a"]) == [True]
        assert len(loads) == 1
        insert = DuckDBEngine._insert_new

        def fail(self: DuckDBEngine, con: duckdb.DuckDBPyConnection, *args: object) -> None:
            insert(self, con, *args)  # type: ignore[arg-type]
            raise duckdb.ConstraintException("injected: a statement failed")

        with monkeypatch.context() as patched:
            patched.setattr(DuckDBEngine, "_insert_new", fail)
            with pytest.raises(Exception, match="injected"):
                _ingest(engine, ["b"])
        # Rolled back: the table is as the index says, so the index is not loaded again.
        assert _ingest(engine, ["a", "b"]) == [False, True]
        assert len(loads) == 1
    finally:
        engine.close()


def test_a_merge_that_runs_out_of_memory_loses_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    index = KeyIndex()
    hi, lo = _arrays([(1, 1), (1, 2)])
    index.add(hi, lo, np.array([1, 1], dtype=np.int64))

    def no_memory(*_: object, **__: object) -> np.ndarray:
        raise MemoryError

    more_hi, more_lo = _arrays([(2, 3)])
    with monkeypatch.context() as patched:
        patched.setattr(np, "empty", no_memory)
        with pytest.raises(MemoryError):
            index.add(more_hi, more_lo, np.array([2], dtype=np.int64))
    known_hi, known_lo = _arrays([(1, 1), (1, 2), (2, 3)])
    assert index.contains(known_hi, known_lo).tolist() == [True, True, True]


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), max_size=60),
    after=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), max_size=60),
)
def test_two_runs_merge_as_a_stable_sort_of_both_would_order_them(
    before: list[tuple[int, int]], after: list[tuple[int, int]]
) -> None:
    # Many keys share a key_hi: before's come first among them, each run in its own order.
    def run(keys: list[tuple[int, int]], at: int) -> _Run:
        hi, lo = _arrays(keys)
        return _Run(hi, lo, np.arange(at, at + len(keys), dtype=np.int64))

    first, second = run(before, 0), run(after, 1000)
    merged = _Run.merged(first, second)
    both = _Run(
        np.concatenate([first.hi, second.hi]),
        np.concatenate([first.lo, second.lo]),
        np.concatenate([first.at, second.at]),
    )
    assert merged.hi.tolist() == both.hi.tolist()
    assert merged.lo.tolist() == both.lo.tolist()
    assert merged.at.tolist() == both.at.tolist()
    assert (merged.hi.dtype, merged.lo.dtype, merged.at.dtype) == (np.uint64, np.uint64, np.int64)
