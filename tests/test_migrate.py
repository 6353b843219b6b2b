"""Migrating the metadata database: on open, except in a protected environment, where
only ``headwater migrate`` does it (``--sql`` first shows what it would run).

Real SQLite databases in the test's folder and real ``headwater`` child processes; the
PostgreSQL case is in ``tests/engines/test_migrate_postgres.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from headwater.state.database import _MIGRATIONS, SCHEMA_REVISION
from tests.conftest import Project


def migrate_to(engine: sa.Engine, revision: str) -> None:
    """Bring ``engine``'s database to ``revision`` with Alembic, as an older version did."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def revision_of(path: Path) -> str | None:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as db:
            if not sa.inspect(db).has_table("alembic_version"):
                return None
            return db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def tables_of(path: Path) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def with_prod(project: Project, *, protected: bool) -> Path:
    """Declare ``[environments.prod]`` (its own DuckDB store and SQLite metadata in
    ``.headwater/prod``); the path of its metadata database."""
    project.configure(
        f"[environments.prod]\nprotected = {'true' if protected else 'false'}\n\n"
        '[environments.prod.store]\nengine = "duckdb"\n'
    )
    folder = project.data_dir / "prod"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "metadata.sqlite"


def behind(path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        migrate_to(engine, "0003")
    finally:
        engine.dispose()
    assert revision_of(path) == "0003"


def assert_refused(result: subprocess.CompletedProcess[str], found: str) -> None:
    assert result.returncode != 0, result.stdout
    err = result.stderr
    assert found in err, err
    assert f"needs {SCHEMA_REVISION}" in err, err
    assert "protected" in err, err
    assert "headwater --env prod migrate" in err, err
    assert "--sql" in err, err
    assert "Traceback" not in err, err


def test_protected_environment_is_migrated_only_when_told(project: Project) -> None:
    metadata = with_prod(project, protected=True)
    behind(metadata)

    # Opening it (status) refuses, naming both revisions and the fix, and changes nothing.
    refused = project.cli("--env", "prod", "status", check=False)
    assert_refused(refused, "at revision 0003")
    assert revision_of(metadata) == "0003"

    # --sql shows the upgrade and leaves the database as it was.
    shown = project.cli("--env", "prod", "migrate", "--sql")
    assert "CREATE TABLE offloads" in shown.stdout, shown.stdout
    assert f"from 0003 to {SCHEMA_REVISION}" in shown.stdout, shown.stdout
    assert "CREATE TABLE leases" not in shown.stdout, shown.stdout  # from 0003, not the start
    assert revision_of(metadata) == "0003"
    assert "offloads" not in tables_of(metadata)

    migrated = project.cli("--env", "prod", "migrate")
    assert f"from 0003 to {SCHEMA_REVISION}" in migrated.stdout, migrated.stdout
    assert revision_of(metadata) == SCHEMA_REVISION
    assert "offloads" in tables_of(metadata)

    project.cli("--env", "prod", "status")
    again = project.cli("--env", "prod", "migrate")
    assert f"already at {SCHEMA_REVISION}" in again.stdout, again.stdout
    sql_again = project.cli("--env", "prod", "migrate", "--sql")
    assert f"already at {SCHEMA_REVISION}" in sql_again.stdout, sql_again.stdout
    assert "CREATE TABLE" not in sql_again.stdout


def test_protected_environment_refuses_a_new_metadata_database(project: Project) -> None:
    metadata = with_prod(project, protected=True)

    refused = project.cli("--env", "prod", "status", check=False)
    assert_refused(refused, "is new (no revision yet)")
    assert revision_of(metadata) is None

    shown = project.cli("--env", "prod", "migrate", "--sql")
    assert "CREATE TABLE runs" in shown.stdout, shown.stdout
    assert "CREATE TABLE offloads" in shown.stdout, shown.stdout
    assert revision_of(metadata) is None

    migrated = project.cli("--env", "prod", "migrate")
    assert f"from nothing (a new database) to {SCHEMA_REVISION}" in migrated.stdout, migrated.stdout
    assert revision_of(metadata) == SCHEMA_REVISION
    project.cli("--env", "prod", "status")


@pytest.mark.parametrize("declared", [False, None], ids=["protected-false", "default"])
def test_unprotected_environment_migrates_on_open(project: Project, declared: bool | None) -> None:
    if declared is None:
        project.configure('[environments.prod.store]\nengine = "duckdb"\n')
        folder = project.data_dir / "prod"
        folder.mkdir(parents=True, exist_ok=True)
        metadata = folder / "metadata.sqlite"
    else:
        metadata = with_prod(project, protected=declared)
    behind(metadata)

    project.cli("--env", "prod", "status")
    assert revision_of(metadata) == SCHEMA_REVISION
    assert "offloads" in tables_of(metadata)


def test_the_default_environment_is_not_protected_by_another(project: Project) -> None:
    """``protected`` is prod's: the top-level settings still migrate as they open."""
    with_prod(project, protected=True)
    project.data_dir.mkdir(parents=True, exist_ok=True)
    default = project.data_dir / "metadata.sqlite"
    behind(default)

    project.cli("status")
    assert revision_of(default) == SCHEMA_REVISION
