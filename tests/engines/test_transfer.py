"""``headwater export`` / ``import`` between two real stores: resumable, counted, and
adding only what the target lacks (even once the target forgot its dedupe ids)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute

from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from headwater.store.transfer import export_events, import_events

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def _events(tag: str, count: int, day: int) -> pa.Table:
    rows = [
        {
            "message_id": f"{tag}-{i}",
            "source": "web",
            "type": "track",
            "event": "Signed Up",
            "user_id": f"u{i % 5}",
            "timestamp": DAY + timedelta(days=day, minutes=i),
            "received_at": DAY + timedelta(days=day, minutes=i),
            "properties": json.dumps({"i": i}),
        }
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=schema.EVENTS)


def _failed(tag: str, count: int, day: int) -> pa.Table:
    rows = [
        {
            "id": f"{tag}-f{i}",
            "source": "web",
            "received_at": DAY + timedelta(days=day, hours=1, minutes=i),
            "code": "missing_identity",
            "message": "the event has neither userId nor anonymousId",
            "payload": "{}",
        }
        for i in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=schema.FAILED_EVENTS)


def _ingest(engine: DuckDBEngine, events: pa.Table, failed: pa.Table | None = None) -> None:
    engine.ingest(IngestBatch(events, failed or schema.FAILED_EVENTS.empty_table()))


def _ids(engine: DuckDBEngine, table: str, column: str) -> list[str]:
    return sorted(engine.query(f"SELECT {column} FROM {table}")[column].to_pylist())


def test_one_export_imports_into_each_store_it_is_given(tmp_path: Path) -> None:
    # The record of days done is the store's it went into: a second project's store, or
    # this one's made again, gets every row, not "nothing to do".
    source = DuckDBEngine.open(tmp_path / "a.duckdb")
    folder = tmp_path / "export"
    try:
        for day in range(2):
            _ingest(source, _events(f"d{day}", 30, day), _failed(f"d{day}", 2, day))
        export_events(source, folder)
        expected = _ids(source, "events", "message_id")
    finally:
        source.close()
    for name, target in (("b", "project-b"), ("c", "project-c"), ("c-again", "project-c")):
        store = DuckDBEngine.open(tmp_path / f"{name}.duckdb")
        try:
            done = import_events(store, folder, "default", target=target)
            assert sum(d.rows for d in done) == 64, name
            assert _ids(store, "events", "message_id") == expected
            again = import_events(store, folder, "default", target=target)
            assert all(d.skipped for d in again)
            assert sum(d.rows for d in again) == 64
        finally:
            store.close()


def test_an_erased_person_is_not_imported_again(tmp_path: Path) -> None:
    # The caller's `keep` drops an erased person's rows (the workspace passes the erasure
    # list); erased from the store after an import, they do not come back with the next.
    source = DuckDBEngine.open(tmp_path / "a.duckdb")
    folder = tmp_path / "export"
    try:
        _ingest(source, _events("d0", 30, 0))
        export_events(source, folder)
    finally:
        source.close()

    def keep(table: str, rows: pa.Table) -> pa.Table:
        if table != "events":
            return rows
        return rows.filter(pa.compute.not_equal(rows["user_id"], "u1"))

    store = DuckDBEngine.open(tmp_path / "b.duckdb")
    try:
        import_events(store, folder, "default", target="b", keep=keep)
        users = store.query("SELECT DISTINCT user_id FROM events ORDER BY 1")["user_id"]
        assert users.to_pylist() == ["u0", "u2", "u3", "u4"]
        store.delete_matching("events", "user_id", ["u2"])  # as an erasure does
        again = import_events(store, folder, "default", target="b", keep=keep)
        assert all(d.skipped for d in again)
        assert (
            store.query("SELECT count(*) AS n FROM events WHERE user_id = 'u2'")["n"][0].as_py()
            == 0
        )
    finally:
        store.close()


def test_export_then_import_copies_each_row_once_and_resumes(tmp_path: Path) -> None:
    source = DuckDBEngine.open(tmp_path / "a.duckdb")
    target = DuckDBEngine.open(tmp_path / "b.duckdb")
    folder = tmp_path / "export"
    try:
        for day in range(3):
            _ingest(source, _events(f"d{day}", 40, day), _failed(f"d{day}", 3, day))
        exported = export_events(source, folder)
        assert {(d.table, d.day, d.rows) for d in exported} == {
            *(("events", f"2026-03-0{d + 1}", 40) for d in range(3)),
            *(("failed_events", f"2026-03-0{d + 1}", 3) for d in range(3)),
        }
        first = import_events(target, folder, "qa")
        assert sum(d.rows for d in first) == 129
        assert _ids(target, "events", "message_id") == _ids(source, "events", "message_id")
        assert _ids(target, "failed_events", "id") == _ids(source, "failed_events", "id")

        # A crash lost the record of what was done: the import adds nothing twice.
        (folder / "imported-qa.json").unlink()
        again = import_events(target, folder, "qa")
        assert [d.rows for d in again] == [0] * 6
        assert len(_ids(target, "failed_events", "id")) == 9  # no dedupe of their own

        # The target forgot its dedupe ids (its window passed): still nothing twice.
        target.prune_dedupe(10**18)
        (folder / "imported-qa.json").unlink()
        assert sum(d.rows for d in import_events(target, folder, "qa")) == 0
        assert len(_ids(target, "events", "message_id")) == 120

        # A day that gained events is exported again, and imported again for the new ones.
        _ingest(source, _events("late", 7, 1))
        second = export_events(source, folder)
        assert [(d.day, d.rows) for d in second if not d.skipped] == [("2026-03-02", 47)]
        resumed = import_events(target, folder, "qa")
        assert [(d.table, d.day, d.rows) for d in resumed if not d.skipped] == [
            ("events", "2026-03-02", 7)
        ]
        assert _ids(target, "events", "message_id") == _ids(source, "events", "message_id")
    finally:
        source.close()
        target.close()
