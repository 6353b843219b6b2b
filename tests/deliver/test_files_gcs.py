"""The files sink on ``gs://``, against a Cloud Storage emulator (``tests.gcs``).

As a user runs it: a project whose sinks write to ``gs://BUCKET/...`` (gcsfs, with
``storage_options = { token = "anon" }``), ``headwater run`` child processes pointed at
the emulator by ``STORAGE_EMULATOR_HOST``, and the pipelines' tables read with a plain
``duckdb`` connection. What landed in the bucket is listed and downloaded with the
emulator's JSON API, not through the code under test.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headwater.core.types import Interval
from headwater.deliver import files
from headwater.deliver.errors import SinkUnavailable
from headwater.deliver.files import FilesTarget
from headwater.deliver.settings import FilesSink
from tests.conftest import Project, run_cli
from tests.deliver.test_files_sink import (
    DAU,
    DAY,
    FORMATS,
    FORMATS_PIPELINE,
    HOUR,
    STAMP,
    _canon,
    _decode,
    _event,
    _hour,
    _ingest,
    _replace_in,
    _store,
    _table,
    _today,
)
from tests.gcs import GcsEmulator, gcs, use_emulator  # noqa: F401 (fixtures)

ANON = 'storage_options = { token = "anon" }'


def _hidden(names: dict[str, int]) -> list[str]:
    """Objects whose last part starts with a dot (the sink's temporary objects)."""
    return [name for name in names if name.rpartition("/")[2].startswith(".")]


@pytest.mark.timeout(180)
def test_run_delivers_one_object_per_interval_in_each_format_equal_to_the_table(
    project: Project,
    use_emulator: GcsEmulator,  # noqa: F811
) -> None:
    emulator = use_emulator
    bucket = emulator.create_bucket()
    root = project.root
    for example in ("hourly_event_counts.sql", "daily_active_users.sql"):
        (root / "pipelines" / example).unlink()
    (root / "pipelines" / "formats.sql").write_text(FORMATS_PIPELINE)
    project.configure(
        "\n".join(
            f'[sinks.as_{fmt}]\ntype = "files"\nurl = "gs://{bucket}/exports/{fmt}"\n'
            f'format = "{fmt}"\n{ANON}\n'
            for fmt in FORMATS
        )
    )
    this_hour = _hour(datetime.now(UTC))
    hours = [this_hour - 2 * HOUR, this_hour - HOUR]
    names = ("plain", 'comma, "quoted"', "ünïcødé\nline", None)
    rows = [
        _event(
            f"g{h}-{i}",
            received_at=hour + timedelta(minutes=2 * i, microseconds=i),
            event=names[(i + h) % len(names)],
            user_id=None if i % 5 == 0 else f"user-{i % 4}",
            properties={"price": i / 8},
        )
        for h, hour in enumerate(hours)
        for i in range(20)
    ]
    _ingest(root, rows)

    run_cli(root, "run", "--due")

    objects = emulator.objects(bucket)
    assert _hidden(objects) == [], sorted(objects)
    table = _store(root, "SELECT * FROM formats")
    assert table.num_rows >= 2 * len(names)
    stems: set[str] | None = None
    for fmt in FORMATS:
        pattern = re.compile(rf"exports/{fmt}/formats/(\d{{8}}T\d{{6}}Z)\.{fmt}")
        found = {m[1]: name for name in objects if (m := pattern.fullmatch(name))}
        assert len(found) == len([n for n in objects if n.startswith(f"exports/{fmt}/")])
        assert {f"{hour:{STAMP}}" for hour in hours} <= set(found), sorted(objects)
        stems = set(found) if stems is None else stems
        assert set(found) == stems  # the same intervals in every format
        total = 0
        for stem, name in found.items():
            start = datetime.strptime(stem, STAMP).replace(tzinfo=UTC)
            expected = _store(
                root, "SELECT * FROM formats WHERE hour >= ? AND hour < ?", [start, start + HOUR]
            )
            delivered = _decode(emulator.read(bucket, name), fmt, table.schema)
            assert _canon(delivered.to_pylist()) == _canon(expected.to_pylist()), name
            total += delivered.num_rows
        assert total == table.num_rows, fmt


@pytest.mark.timeout(180)
def test_a_reopened_interval_replaces_its_object_and_only_it(
    project: Project,
    use_emulator: GcsEmulator,  # noqa: F811
) -> None:
    emulator = use_emulator
    bucket = emulator.create_bucket()
    root = project.root
    _replace_in(root / "headwater.toml", 'url = "exports"', f'url = "gs://{bucket}/lake"\n{ANON}')
    dau = root / "pipelines" / f"{DAU}.sql"
    _replace_in(dau, 'key = ["day", "plan"]\n', 'key = ["day", "plan"]\nsinks = ["files"]\n')
    (root / "pipelines" / "hourly_event_counts.sql").unlink()
    days = [_today() - k * DAY for k in (3, 2, 1)]
    received = _hour(datetime.now(UTC)) - HOUR + timedelta(minutes=5)
    _ingest(
        root,
        [
            _event(
                f"d{d}-{i}",
                received_at=received + timedelta(seconds=i + 30 * d),
                timestamp=day + timedelta(hours=i),
                user_id=f"user-{i % 5}",
                properties={"plan": ("free", "pro")[i % 2]},
            )
            for d, day in enumerate(days)
            for i in range(12)
        ],
    )
    run_cli(root, "run", "--due")
    before = emulator.objects(bucket)
    wanted = {f"lake/{DAU}/{day:{STAMP}}.parquet" for day in days}
    assert wanted <= set(before), sorted(before)
    snapshot = {name: emulator.read(bucket, name) for name in before}
    reopened = f"lake/{DAU}/{days[1]:{STAMP}}.parquet"

    late = [
        _event(
            f"late-{i}",
            received_at=datetime.now(UTC),
            timestamp=days[1] + timedelta(hours=13, minutes=i),
            user_id=f"late-user-{i}",
            properties={"plan": "scale"},
        )
        for i in range(3)
    ]
    _ingest(root, late)
    run_cli(root, "run", "--due")

    after = emulator.objects(bucket)
    assert _hidden(after) == [], sorted(after)
    # The same objects (one more only if midnight passed meanwhile: a new, empty day).
    assert set(before) <= set(after)
    assert len(set(after) - set(before)) <= 1, sorted(after)
    day_rows = _store(
        root, f"SELECT * FROM {DAU} WHERE day >= ? AND day < ?", [days[1], days[1] + DAY]
    )
    assert "scale" in day_rows["plan"].to_pylist()
    replaced = emulator.read(bucket, reopened)
    assert replaced != snapshot[reopened]
    assert _canon(pq.read_table(io.BytesIO(replaced)).to_pylist()) == _canon(day_rows.to_pylist())
    for name, data in snapshot.items():
        if name != reopened:
            assert emulator.read(bucket, name) == data, f"{name} changed"


def test_a_failed_write_leaves_the_old_object_whole(
    tmp_path: Path,
    use_emulator: GcsEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = use_emulator
    bucket = emulator.create_bucket()
    target = FilesTarget(
        "lake",
        FilesSink(url=f"gs://{bucket}/exports", storage_options={"token": "anon"}),
        tmp_path,
    )
    hour = datetime(2026, 11, 25, 10, tzinfo=UTC)
    interval = Interval(hour, hour + HOUR)
    first = _table(2_000, 1)
    path = target.write("hourly", interval, first)
    name = "exports/hourly/20261125T100000Z.parquet"
    assert path == f"{bucket}/{name}"
    old = emulator.read(bucket, name)
    assert pq.read_table(io.BytesIO(old)).equals(first)

    def broken(fmt: str, table: pa.Table, out: IO[bytes]) -> None:
        out.write(b"PAR1 half of a file")
        raise OSError("disk on fire")

    monkeypatch.setattr(files, "_encode", broken)
    with pytest.raises(SinkUnavailable, match="disk on fire"):
        target.write("hourly", interval, _table(10, 2))

    assert emulator.objects(bucket) == {name: len(old)}  # no temporary object left
    assert emulator.read(bucket, name) == old
