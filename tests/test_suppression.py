"""The collector's suppression filter on both shapes the writer takes: rows validated here
(tuples) and a table validated in a worker process, whose dedupe keys must stay aligned
with the rows kept; refused rows whose payload holds a listed id; and a collector that
must not start without its list."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from headwater.collect.suppress import Suppression, id_hash
from headwater.collect.writer import FailedRow
from headwater.store import schema
from tests.conftest import Project, Server, run_cli

T = datetime(2026, 12, 1, tzinfo=UTC)


def _rows() -> list[dict[str, object]]:
    people = [("u1", None), ("gone", None), (None, "anon-gone"), ("u2", "a2"), ("u3", "gone")]
    return [
        {"message_id": f"m{i}", "source": "web", "type": "track", "event": "E",
         "user_id": user, "anonymous_id": anonymous, "timestamp": T, "received_at": T}
        for i, (user, anonymous) in enumerate(people)
    ]  # fmt: skip


def test_drops_the_events_of_suppressed_ids_from_a_table_and_its_keys() -> None:
    registry = CollectorRegistry()
    suppression = Suppression(registry)
    suppression.replace([id_hash("user_id", "gone"), id_hash("anonymous_id", "anon-gone")])
    table = pa.Table.from_pylist(_rows(), schema=schema.EVENTS)
    keys = (np.arange(5, dtype=np.uint64), np.arange(10, 15, dtype=np.uint64))

    kept, kept_keys, dropped = suppression.filter(table, keys)

    assert dropped == 2
    assert isinstance(kept, pa.Table)
    # "gone" as an anonymous id is not the user id "gone": the kinds are apart.
    assert kept.column("message_id").to_pylist() == ["m0", "m3", "m4"]
    assert kept_keys is not None
    assert kept_keys[0].tolist() == [0, 3, 4]
    assert kept_keys[1].tolist() == [10, 13, 14]
    assert registry.get_sample_value("headwater_events_suppressed_total") == 2
    assert suppression.take_dropped() == {
        id_hash("user_id", "gone"): 1,
        id_hash("anonymous_id", "anon-gone"): 1,
    }
    assert suppression.take_dropped() == {}


def test_drops_rows_and_passes_everything_through_when_the_list_is_empty() -> None:
    suppression = Suppression()
    names = schema.EVENTS.names
    rows = [tuple(row.get(n) for n in names) for row in _rows()]
    assert suppression.filter(rows, None) == (rows, None, 0)
    suppression.replace([id_hash("user_id", "u2")])
    kept, keys, dropped = suppression.filter(rows, None)
    assert dropped == 1
    assert keys is None
    assert [r[0] for r in kept] == ["m0", "m1", "m2", "m4"]


def test_an_alias_naming_a_suppressed_id_as_its_previous_id_is_dropped() -> None:
    """An erasure deletes an alias whose previousId is any erased id, user or anonymous:
    ingest drops it likewise, on both shapes, rather than store it again."""
    aliases = [("m5", "new-1", "gone"), ("m6", "new-2", "anon-gone"), ("m7", "new-3", "kept")]
    rows = _rows() + [
        {"message_id": m, "source": "web", "type": "alias", "user_id": user,
         "previous_id": previous, "timestamp": T, "received_at": T}
        for m, user, previous in aliases
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema.EVENTS)
    tuples = [tuple(row.get(n) for n in schema.EVENTS.names) for row in rows]
    for events in (table, tuples):
        suppression = Suppression()
        suppression.replace([id_hash("user_id", "gone"), id_hash("anonymous_id", "anon-gone")])
        kept, _, dropped = suppression.filter(events, None)
        ids = (
            kept.column("message_id").to_pylist()
            if isinstance(kept, pa.Table)
            else [r[0] for r in kept]
        )
        assert ids == ["m0", "m3", "m4", "m7"]
        assert dropped == 4
        assert suppression.take_dropped() == {
            id_hash("user_id", "gone"): 2,
            id_hash("anonymous_id", "anon-gone"): 2,
        }


def _failed(payload: str | None) -> FailedRow:
    return ("id", "web", 0, "invalid", "event", "refused", payload, None)


def test_drops_refused_rows_whose_payload_holds_a_suppressed_id_and_counts_them() -> None:
    registry = CollectorRegistry()
    suppression = Suppression(registry)
    rows = [
        _failed('{"userId": "u1", "event": 5}'),
        _failed('{"context": {"traits": ["gone"]}}'),  # anywhere, as any string value
        _failed('{"anonymousId": "anon-gone"}'),
        _failed(json.dumps('{"userId": "gone", not json')),  # kept as its text
        _failed('{"userId": "gone-not"}'),
        _failed(None),
    ]
    # An empty list passes everything through without looking at a payload.
    assert suppression.failed(rows) == (rows, 0)
    suppression.replace([id_hash("user_id", "gone"), id_hash("anonymous_id", "anon-gone")])

    kept, dropped = suppression.failed(rows)

    assert dropped == 3
    assert kept == [rows[0], rows[4], rows[5]]
    assert registry.get_sample_value("headwater_events_suppressed_total") == 3
    assert suppression.take_dropped() == {
        id_hash("user_id", "gone"): 2,
        id_hash("anonymous_id", "anon-gone"): 1,
    }


def test_a_collector_that_cannot_read_the_list_does_not_start(project: Project) -> None:
    """Started with an empty list, it would store erased people's events until it could."""
    run_cli(project, "status")  # the metadata database, migrated
    path = project.data_dir / "metadata.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE suppressions RENAME TO suppressions_away")
        db.commit()
    server = Server(project)
    try:
        with pytest.raises(RuntimeError, match="exited early") as failed:
            server.start()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
    assert "cannot read the suppression list" in str(failed.value), failed.value
    assert "headwater migrate" in str(failed.value), failed.value
