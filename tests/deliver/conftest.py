"""Fixtures of the delivery tests: a real PostgreSQL server for the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.pg import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (started in well under a second)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh, empty database of the session's server: its URL (with the password)."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
