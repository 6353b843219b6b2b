"""The engines every test in this folder runs against.

A test that takes ``engine`` runs once per name in :data:`ENGINES`, each time on
a fresh, empty store: a DuckDB file in the test's folder, a new database of
one PostgreSQL server started for the whole session (``tests.pg``), or a Spark
warehouse folder (local mode). Adding an
engine (Spark, ...) is one factory here: a function ``(request, folder) ->
Engine`` added to :data:`ENGINES`; every conformance test then runs on it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from headwater.store.engine import Engine
from tests.pg import PostgresServer, postgres_server

#: Makes a fresh, empty store. ``folder`` is the engine's own (empty) folder; ``request``
#: gives access to session resources (``request.getfixturevalue``), started on first use.
EngineFactory = Callable[[pytest.FixtureRequest, Path], Engine]

#: The schema the PostgreSQL engine keeps its tables in (``[store] schema``'s default).
PG_SCHEMA = "headwater"


def _duckdb(request: pytest.FixtureRequest, folder: Path) -> Engine:
    from headwater.store.duckdb import DuckDBEngine

    return DuckDBEngine.open(folder / "events.duckdb")


def _postgres(request: pytest.FixtureRequest, folder: Path) -> Engine:
    from headwater.store.postgres import PostgresEngine

    server: PostgresServer = request.getfixturevalue("pg_server")
    return PostgresEngine.open(new_database(server), PG_SCHEMA)


#: Every engine under test, by name; the first is the reference the others are compared with.
def _spark(request: pytest.FixtureRequest, folder: Path) -> Engine:
    from headwater.store.spark import SparkEngine

    # One Spark context per process (about 8 s to start); a new session per engine.
    return SparkEngine.open(str(folder / "warehouse"), "local[2]", {})


ENGINES: dict[str, EngineFactory] = {
    "duckdb": _duckdb,
    "postgres": _postgres,
    "spark": _spark,
}
ENGINE_NAMES = list(ENGINES)
REFERENCE = ENGINE_NAMES[0]


def open_engine(name: str, request: pytest.FixtureRequest, folder: Path) -> Engine:
    """A fresh store of engine ``name``, for fixtures of any scope."""
    folder.mkdir(parents=True, exist_ok=True)
    return ENGINES[name](request, folder)


def new_database(server: PostgresServer) -> str:
    """A new, empty database of ``server``: its URL, with the password."""
    return server.create_database(f"hw_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session, started on first use."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh database of the session's server."""
    return new_database(pg_server)


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty store of each engine in turn."""
    opened = open_engine(request.param, request, tmp_path / request.param)
    try:
        yield opened
    finally:
        opened.close()
