"""An erasure at a PostgreSQL sink (a real server, tests/pg.py): the person's rows are
deleted by each person column; a column the table lacks is refused, nothing deleted."""

from __future__ import annotations

import psycopg
import pytest

from headwater.deliver.erasure import erase_postgres
from headwater.deliver.errors import SinkRefused
from headwater.deliver.postgres import PostgresTarget
from headwater.deliver.settings import PostgresSink


def _users(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as con:
        return sorted(str(r[0]) for r in con.execute("SELECT user_id FROM per_user"))


def test_deletes_by_person_column_and_refuses_a_column_the_table_lacks(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SINK_URL", pg_url)
    target = PostgresTarget("pg", PostgresSink(url="${SINK_URL}"))
    # Not made yet: nothing to delete.
    assert erase_postgres(target, "per_user", ["user_id"], ["gone"]) == 0
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE per_user (user_id text, n int)")
        con.execute("INSERT INTO per_user VALUES ('gone', 1), ('u2', 2), ('gone', 3)")

    with pytest.raises(SinkRefused, match=r"no column user_idd .*\(their columns: n, user_id\)"):
        erase_postgres(target, "per_user", ["user_id", "user_idd"], ["gone"])
    assert _users(pg_url) == ["gone", "gone", "u2"]  # refused before any delete
    assert erase_postgres(target, "per_user", ["user_id"], ["gone"]) == 2
    assert _users(pg_url) == ["u2"]
