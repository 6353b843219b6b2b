"""The store the model tests score on: a DuckDB file holding the feature events, and a
metadata database of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headwater.state import StateStore
from headwater.store.duckdb import DuckDBEngine
from tests.models.support import feature_rows, ingest


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[DuckDBEngine, StateStore]]:
    engine = DuckDBEngine.open(tmp_path / "store" / "events.duckdb")
    metadata = StateStore.in_folder(tmp_path / "metadata")
    ingest(engine, feature_rows())
    try:
        yield engine, metadata
    finally:
        metadata.close()
        engine.close()
