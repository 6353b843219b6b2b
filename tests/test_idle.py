"""A due pass that found nothing is remembered only while nothing it read has changed."""

from __future__ import annotations

import os
import re
from datetime import timedelta

from headwater.config.project import load_project
from headwater.core import jsonio
from headwater.core.clock import utc_now
from headwater.runtime import idle
from headwater.store.duckdb import DuckDBEngine
from tests.conftest import Project

NOTHING = "Nothing is due"
ARGS = {"deliver": True}


def test_the_next_pass_gives_the_same_answer(project: Project) -> None:
    first = project.cli("run", "--due")
    assert NOTHING in first.stdout
    assert (project.data_dir / idle.FILENAME).exists()
    again = project.cli("run", "--due")
    assert (_said(again.stdout), again.stderr) == (_said(first.stdout), first.stderr)


def _said(out: str) -> str:
    """What a command printed, the progress bar's elapsed time left out."""
    return re.sub(r"\d+:\d\d:\d\d", "H:MM:SS", out)


def test_a_pipeline_that_stops_loading_is_reported_at_once(project: Project) -> None:
    project.cli("run", "--due")
    (project.root / "pipelines" / "broken.sql").write_text("SELECT FROM WHERE")
    result = project.cli("run", "--due", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken" in result.stdout + result.stderr


def test_a_new_pipeline_that_is_due_runs_at_once(project: Project) -> None:
    project.cli("run", "--due")
    (project.root / "pipelines" / "constant.sql").write_text(
        '/* headwater\nschedule = "@daily"\nkind = "full"\n*/\nSELECT 1 AS one\n'
    )
    result = project.cli("run", "--due")
    assert "Ran 1 interval" in result.stdout, result.stdout


def test_it_ends_when_its_time_comes_or_a_file_changes(project: Project) -> None:
    project.cli("run", "--due")  # makes the data folder and its files
    loaded = load_project(project.root)
    answer = {"runs": [], "failures": [], "deliveries": [], "skipped": [], "broken": []}
    idle.remember(loaded, ARGS, answer, utc_now() + timedelta(hours=1))
    assert idle.recall(loaded, ARGS) == answer
    assert idle.recall(loaded, {"deliver": False}) is None  # asked otherwise

    path = project.data_dir / idle.FILENAME
    memo = jsonio.loads(path.read_bytes())
    memo["until"] = (utc_now() - timedelta(seconds=1)).isoformat()
    path.write_bytes(jsonio.dumps(memo))
    assert idle.recall(loaded, ARGS) is None  # its moment has passed

    idle.remember(loaded, ARGS, answer, utc_now() + timedelta(hours=1))
    metadata = project.data_dir / "metadata.sqlite"
    info = metadata.stat()
    os.utime(metadata, ns=(info.st_atime_ns, info.st_mtime_ns + 1))
    assert idle.recall(loaded, ARGS) is None  # the metadata was written since


def test_a_store_another_process_has_open_is_said_as_before(project: Project) -> None:
    first = project.cli("run", "--due")
    assert NOTHING in first.stdout
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        result = project.cli("run", "--due", check=False)
    finally:
        engine.close()
    assert result.returncode != 0
    assert NOTHING not in result.stdout
