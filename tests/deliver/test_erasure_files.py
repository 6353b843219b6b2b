"""An erasure at a files sink, in each format: the delivered files are written again
without the person's rows, the other rows as they were, nothing half-written left."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from headwater.core.types import Interval
from headwater.deliver.erasure import erase_files
from headwater.deliver.errors import SinkRefused
from headwater.deliver.files import FilesTarget
from headwater.deliver.settings import FilesSink

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _interval(day: int) -> Interval:
    return Interval(T0 + timedelta(days=day), T0 + timedelta(days=day + 1))


def _read(fmt: str, path: str) -> list[dict[str, object]]:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "csv":
        return pa.csv.read_csv(path).to_pylist()
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_rewrites_the_files_that_hold_the_person_only(fmt: str, tmp_path: Path) -> None:
    target = FilesTarget("lake", FilesSink(url="exports", format=fmt), tmp_path)
    first = pa.table({"user_id": ["gone", "u2", "u4"], "friend": ["u2", "gone", "u3"],
                      "n": [1, 2, 3]})  # fmt: skip
    second = pa.table({"user_id": ["u2", "u3"], "friend": ["u3", "u2"], "n": [4, 5]})
    hit = target.write("per_user", _interval(0), first)
    untouched = target.write("per_user", _interval(1), second)
    before = Path(untouched).stat().st_mtime_ns

    rewritten: list[str] = []
    assert erase_files(target, "per_user", ["user_id", "friend"], ["gone"], rewritten) == 2
    assert rewritten == [hit]
    assert Path(untouched).stat().st_mtime_ns == before
    assert _read(fmt, hit) == [{"user_id": "u4", "friend": "u3", "n": 3}]
    assert _read(fmt, untouched) == second.to_pylist()
    assert sorted(p.name for p in (tmp_path / "exports" / "per_user").iterdir()) == sorted(
        [Path(hit).name, Path(untouched).name]
    )  # no temporary file left behind
    # Again: nothing more to remove, nothing rewritten.
    assert erase_files(target, "per_user", ["user_id"], ["gone"]) == 0
    assert erase_files(target, "never_delivered", ["user_id"], ["gone"]) == 0


def test_a_person_column_no_file_has_is_refused(tmp_path: Path) -> None:
    """A misspelt ``person`` column would remove nothing and report done: it is refused,
    naming the columns the files have; a column only older files lack is not."""
    target = FilesTarget("lake", FilesSink(url="exports", format="parquet"), tmp_path)
    older = target.write("per_user", _interval(0), pa.table({"user_id": ["gone"], "n": [1]}))
    target.write("per_user", _interval(1), pa.table({"user_id": ["u2"], "friend": ["gone"]}))
    with pytest.raises(SinkRefused, match=r"no column user_idd .*friend, n, user_id") as refused:
        erase_files(target, "per_user", ["user_idd"], ["gone"])
    assert refused.value.hint is not None
    assert "person = [...]" in refused.value.hint
    assert pq.read_table(older).num_rows == 1
    assert erase_files(target, "per_user", ["user_id", "friend"], ["gone"]) == 2
