"""The erasure log on a real SQLite metadata database: what stays in its files."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from headwater.state import StateStore

RAW = "u-raw-id-4f1e"


def _files(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("metadata.sqlite*"))]


def test_a_finished_erasure_leaves_no_raw_id_in_the_files(tmp_path: Path) -> None:
    store = StateStore.in_folder(tmp_path)
    try:
        log = store.erasures
        erasure = log.create("alice", {"user_id": [RAW]}, {"user_id": ["h" * 64]}, [])
        assert any(RAW.encode() in f for f in _files(tmp_path))
        assert log.finish(erasure)
        assert not [f for f in _files(tmp_path) if RAW.encode() in f]
    finally:
        store.close()


def test_a_reader_holding_the_log_delays_a_finish_by_a_moment_not_the_busy_timeout(
    tmp_path: Path,
) -> None:
    """A checkpoint waits for readers and writers wait for it: a reader mid-transaction
    (another process's status) must not stall every metadata write for 30 s."""
    store = StateStore.in_folder(tmp_path)
    try:
        log = store.erasures
        erasure = log.create("alice", {"user_id": [RAW]}, {"user_id": ["h" * 64]}, [])
        with closing(sqlite3.connect(tmp_path / "metadata.sqlite")) as reader:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM erasures").fetchall()
            started = time.monotonic()
            assert log.finish(erasure)
            assert time.monotonic() - started < 5.0
            reader.execute("COMMIT")
        assert log.get(erasure).ids is None  # type: ignore[union-attr]
    finally:
        store.close()
