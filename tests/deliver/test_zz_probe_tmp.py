import os, subprocess, time
from datetime import UTC, datetime, timedelta
import pytest
from tests.conftest import HEADWATER, Project

from tests.deliver.test_postgres_sink import _only_pipelines, _configure_sink, _today, _ingest, _event, _cli, _iso, _pg, BIG_DAYS, DAY, HOUR

def test_probe(project, pg_url, monkeypatch):
    monkeypatch.setenv("RECS_URL", pg_url)
    _only_pipelines(project, {"big_days.py": BIG_DAYS})
    _configure_sink(project)
    today = _today()
    small, big = today - 3 * DAY, today - 2 * DAY
    received = datetime.now(UTC) - HOUR
    _ingest(project, [_event(f"s{i}", "u", small + i * HOUR, received) for i in range(2)]
        + [_event(f"b{i}", "u", big + timedelta(seconds=i), received) for i in range(300)])
    _cli(project, "run", "big_days", "--start", _iso(small), "--end", _iso(big))
    t0 = time.monotonic()
    p = subprocess.Popen([*HEADWATER, "--project", str(project.root), "run", "--due"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = []
    with _pg(pg_url) as w:
        while p.poll() is None:
            r = w.execute("SELECT a.state, left(a.query, 40), p.tuples_processed FROM pg_stat_activity a LEFT JOIN pg_stat_progress_copy p ON p.pid=a.pid WHERE a.datname=current_database() AND a.pid<>pg_backend_pid()").fetchall()
            seen.append((round(time.monotonic()-t0, 3), r))
            time.sleep(0.01)
    last = None
    for t, r in seen:
        key = str([(x[0], x[1]) for x in r])
        if key != last:
            print(t, r)
            last = key
    print("end", time.monotonic()-t0)
