"""``headwater migrate`` and protected environments with the metadata in a schema of the
PostgreSQL store's own database (``tests/test_migrate.py`` has the SQLite cases)."""

from __future__ import annotations

import psycopg
import pytest

from headwater.state.database import SCHEMA_REVISION, MetadataDatabase
from tests.conftest import Project
from tests.test_migrate import migrate_to

SCHEMA = "headwater_metadata"  # [store] schema "headwater", and its metadata beside it


def revision(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as con:
        found = con.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.alembic_version",)
        ).fetchone()
        if not found or not found[0]:
            return None
        row = con.execute(f"SELECT version_num FROM {SCHEMA}.alembic_version").fetchone()
        return str(row[0]) if row else None


def has_schema(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (SCHEMA,)
        ).fetchone()
        return bool(row and row[0])


@pytest.fixture
def prod(project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``[environments.prod]``, protected, on the PostgreSQL store at ``pg_url``."""
    monkeypatch.setenv("HEADWATER_TEST_PROD_URL", pg_url)
    project.configure(
        "[environments.prod]\nprotected = true\n\n"
        '[environments.prod.store]\nengine = "postgres"\nurl = "${HEADWATER_TEST_PROD_URL}"\n'
    )
    return pg_url


def test_protected_postgres_metadata_is_migrated_only_when_told(
    project: Project, prod: str
) -> None:
    # A new schema is refused and not made.
    refused = project.cli("--env", "prod", "status", check=False)
    assert refused.returncode != 0
    assert "is new (no revision yet)" in refused.stderr, refused.stderr
    assert "headwater --env prod migrate" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    assert not has_schema(prod)

    # An older version's schema, at 0003.
    with psycopg.connect(prod, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {SCHEMA}")
    metadata = MetadataDatabase.beside_postgres(prod, SCHEMA)
    try:
        migrate_to(metadata.engine, "0003")
    finally:
        metadata.close()
    assert revision(prod) == "0003"

    refused = project.cli("--env", "prod", "status", check=False)
    assert refused.returncode != 0
    assert "at revision 0003" in refused.stderr, refused.stderr
    assert f"needs {SCHEMA_REVISION}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr

    shown = project.cli("--env", "prod", "migrate", "--sql")
    assert "CREATE TABLE offloads" in shown.stdout, shown.stdout
    assert "TIMESTAMP WITH TIME ZONE" in shown.stdout, shown.stdout  # PostgreSQL's dialect
    assert revision(prod) == "0003"

    migrated = project.cli("--env", "prod", "migrate")
    assert f"from 0003 to {SCHEMA_REVISION}" in migrated.stdout, migrated.stdout
    assert revision(prod) == SCHEMA_REVISION
    project.cli("--env", "prod", "status")
    again = project.cli("--env", "prod", "migrate")
    assert f"already at {SCHEMA_REVISION}" in again.stdout, again.stdout
