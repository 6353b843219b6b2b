"""The Spark store's own file writes in a Cloud Storage bucket, against an emulator.

The warehouse is ``gs://BUCKET/warehouse`` on ``gcp-storage-emulator`` (``tests.gcs``);
the store writes it through gcsfs. What landed in the bucket is listed and downloaded
with the emulator's JSON API and read back with pyarrow, not through the code under
test. Spark itself cannot read ``gs://`` here: that needs the Hadoop GCS connector,
which PySpark does not ship: a query fails with ``ClassNotFoundException: Class
org.apache.hadoop.fs.gs.GoogleHadoopFileSystem not found`` (the last test pins that).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.engine import IngestBatch
from headwater.store.errors import QueryError
from headwater.store.spark import SparkEngine
from tests.gcs import GcsEmulator, gcs, point_at  # noqa: F401 (gcs: a fixture)

T0 = datetime(2026, 3, 1, 22, tzinfo=UTC)
PART = re.compile(
    r"warehouse/(events|failed_events)/received_day=(\d{4}-\d\d-\d\d)/part-\w+\.parquet"
)


@pytest.fixture(scope="module")
def emulator(gcs: GcsEmulator) -> Iterator[GcsEmulator]:  # noqa: F811
    """The session's emulator, used by this whole module (one Spark context for it)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        point_at(gcs, monkeypatch)
        yield gcs
        SparkSession.builder.getOrCreate().stop()


def _open(bucket: str) -> SparkEngine:
    return SparkEngine.open(f"gs://{bucket}/warehouse", "local[1]", {})


def _events(ids: range, start: datetime) -> pa.Table:
    """Events received ``start`` + 1 hour per id: four ids cross midnight."""
    rows = [
        {
            "message_id": f"m-{i}",
            "source": "web",
            "type": "track",
            "event": "Page Viewed",
            "user_id": f"user-{i % 3}",
            "timestamp": start + timedelta(hours=i),
            "received_at": start + timedelta(hours=i, microseconds=i),
            "properties": f'{{"i": {i}}}',
        }
        for i in ids
    ]
    return pa.Table.from_pylist(rows, schema=schema.EVENTS)


def _failed(at: datetime) -> pa.Table:
    row = {"id": "f-1", "source": "web", "received_at": at, "code": "bad", "message": "no type"}
    return pa.Table.from_pylist([row], schema=schema.FAILED_EVENTS)


def _parts(emulator: GcsEmulator, bucket: str) -> dict[tuple[str, str], list[str]]:
    """The Parquet objects of the event tables, by (table, day)."""
    found: dict[tuple[str, str], list[str]] = {}
    for name in emulator.objects(bucket):
        match = PART.fullmatch(name)
        if match:
            found.setdefault((match[1], match[2]), []).append(name)
    return found


def test_open_marks_the_event_folders_in_the_bucket(emulator: GcsEmulator) -> None:
    bucket = emulator.create_bucket()
    engine = _open(bucket)
    try:
        assert emulator.objects(bucket) == {"warehouse/events/": 0, "warehouse/failed_events/": 0}
        assert engine.list_tables() == ["events", "failed_events"]
    finally:
        engine.close()
    # Opened again, it finds them and writes nothing more.
    _open(bucket).close()
    assert emulator.objects(bucket) == {"warehouse/events/": 0, "warehouse/failed_events/": 0}


def test_ingest_writes_one_parquet_object_per_day_and_dedupes_from_the_bucket(
    emulator: GcsEmulator,
) -> None:
    bucket = emulator.create_bucket()
    events = _events(range(6), T0)  # 22:00 .. 03:00: two days
    engine = _open(bucket)
    try:
        new = engine.ingest(IngestBatch(events, _failed(T0 + timedelta(hours=3))))
    finally:
        engine.close()
    assert new.to_pylist() == [True] * 6

    names = emulator.objects(bucket)
    assert not [n for n in names if "/." in n], f"hidden objects left: {sorted(names)}"
    parts = _parts(emulator, bucket)
    assert {key: len(found) for key, found in parts.items()} == {
        ("events", "2026-03-01"): 1,
        ("events", "2026-03-02"): 1,
        ("failed_events", "2026-03-02"): 1,
    }
    days = {"2026-03-01": events.slice(0, 2), "2026-03-02": events.slice(2)}
    for day, expected in days.items():
        [name] = parts["events", day]
        stored = pq.read_table(io.BytesIO(emulator.read(bucket, name)))
        assert stored.equals(expected), day
    [failed] = parts["failed_events", "2026-03-02"]
    assert pq.read_table(io.BytesIO(emulator.read(bucket, failed))).equals(
        _failed(T0 + timedelta(hours=3))
    )

    # A new engine over the same bucket reads the stored ids back: the repeats are
    # refused, only the new event is written, in one more object for its day.
    again = _open(bucket)
    try:
        new = again.ingest(
            IngestBatch(_events(range(4, 7), T0), schema.FAILED_EVENTS.empty_table())
        )
    finally:
        again.close()
    assert new.to_pylist() == [False, False, True]
    after = _parts(emulator, bucket)
    assert len(after["events", "2026-03-02"]) == 2
    [added] = set(after["events", "2026-03-02"]) - set(parts["events", "2026-03-02"])
    stored = pq.read_table(io.BytesIO(emulator.read(bucket, added)))
    assert stored.equals(_events(range(6, 7), T0))
    assert after["events", "2026-03-01"] == parts["events", "2026-03-01"]


def test_an_offload_is_one_object_per_interval_replaced_when_loaded_again(
    emulator: GcsEmulator, tmp_path: Path
) -> None:
    """A hot store's interval of arrival lands as one object in its day's folder; loading
    the interval again (an offload repeated after a crash) replaces that object."""
    bucket = emulator.create_bucket()
    hour = Interval(T0, T0 + timedelta(hours=1))
    rows = _events(range(1), T0)
    path = tmp_path / "events.parquet"
    pq.write_table(rows, path)
    engine = _open(bucket)
    try:
        engine.load_arrivals("events", hour, str(path))
        engine.load_arrivals("events", hour, str(path))
    finally:
        engine.close()
    name = "warehouse/events/received_day=2026-03-01/offload-20260301T220000.parquet"
    names = emulator.objects(bucket)
    assert [n for n in names if n.endswith(".parquet")] == [name]
    assert not [n for n in names if "/." in n], f"hidden objects left: {sorted(names)}"
    assert pq.read_table(io.BytesIO(emulator.read(bucket, name))).equals(rows)


def test_a_spark_query_over_the_bucket_needs_the_gcs_connector(emulator: GcsEmulator) -> None:
    bucket = emulator.create_bucket()
    engine = _open(bucket)
    try:
        engine.ingest(IngestBatch(_events(range(2), T0), schema.FAILED_EVENTS.empty_table()))
        with pytest.raises(QueryError, match=r"GoogleHadoopFileSystem not found"):
            engine.query("SELECT COUNT(*) AS n FROM events")
    finally:
        engine.close()
