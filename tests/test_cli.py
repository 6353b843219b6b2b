"""The command line as a person meets it: mistakes are usage errors that name the fix."""

from __future__ import annotations

import dataclasses
import sys

import msgspec
import pytest

from headwater.config.project import load_project
from headwater.core.extras import MissingExtra
from headwater.runtime.workspace import engine_for
from headwater.store.settings import StoreSettings
from tests.conftest import Project


@pytest.mark.parametrize(
    ("args", "error", "fix"),
    [
        (["stauts"], "No such command 'stauts'", "did you mean `headwater status`?"),
        (["zzz"], "No such command 'zzz'", "one of: init, up, serve, query"),
        (["sources", "ad", "x"], "No such command 'ad'", "`headwater sources add`"),
        (["run", "--du"], "No such option: --du", "did you mean --due?"),
        (["status", "--bogus"], "No such option: --bogus", "`headwater status --help`"),
    ],
)
def test_a_mistyped_command_or_option_is_a_usage_error_with_the_nearest(
    project: Project, args: list[str], error: str, fix: str
) -> None:
    result = project.cli(*args, check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0] == f"Error: {error}", lines[0]
    assert lines[1].startswith("Fix: ")
    assert fix in lines[1], lines[1]
    assert "unexpected" not in result.stderr
    assert "Traceback" not in result.stderr


def test_an_engine_whose_extra_is_missing_names_the_extra(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyspark is installed here; hide it as on a machine without the extra.
    for name in [m for m in sys.modules if m == "pyspark" or m.startswith("pyspark.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in [m for m in sys.modules if m.startswith("headwater.store.spark")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyspark", None)
    loaded = load_project(project.root)
    settings = msgspec.structs.replace(loaded.settings, store=StoreSettings(engine="spark"))
    spark_project = dataclasses.replace(loaded, settings=settings)
    with pytest.raises(MissingExtra) as caught:
        engine_for(spark_project)
    assert caught.value.hint == "pip install 'headwater[spark]'"
    assert str(caught.value) == 'engine = "spark" needs pyspark, which is not installed'
