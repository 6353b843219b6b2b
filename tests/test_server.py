"""The `headwater up` process: its banner, the control socket, queries and shutdown."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import Project, Server


def _track(server: Server, key: str, user: str) -> httpx.Response:
    return server.post("/v1/track", auth=(key, ""), json={"userId": user, "event": "Signed Up"})


def test_up_prints_where_it_listens_and_query_reads_through_the_server(
    project: Project, server: Server
) -> None:
    assert re.search(r"Headwater is up at http://127\.0\.0\.1:\d+", server.log.read_text())
    assert _track(server, project.key, "u-live").status_code == 200
    # The server owns the DuckDB file, so the CLI's query must go through it.
    # json is one array, as bq and DuckDB's CLI print it; jsonl one object per line.
    result = project.cli("query", "SELECT user_id FROM events", "--format", "json")
    assert json.loads(result.stdout) == [{"user_id": "u-live"}]
    lines = project.cli("query", "SELECT user_id FROM events", "--format", "jsonl").stdout
    assert [json.loads(line) for line in lines.splitlines()] == [{"user_id": "u-live"}]
    empty = project.cli("query", "SELECT user_id FROM events WHERE false", "--format", "json")
    assert json.loads(empty.stdout) == []
    csv = project.cli("query", "SELECT user_id, type FROM events", "--format", "csv").stdout
    assert csv.splitlines() == ['"user_id","type"', '"u-live","track"']


def test_query_opens_the_file_when_no_server_runs(project: Project) -> None:
    server = Server(project).start()
    assert _track(server, project.key, "u-then").status_code == 200
    assert server.stop() == 0
    assert not (project.data_dir / "server.json").exists()
    result = project.cli("query", "SELECT count(*) AS n FROM events", "--format", "json")
    assert json.loads(result.stdout) == [{"n": 1}]


def test_a_stale_runtime_file_is_ignored(project: Project) -> None:
    server = Server(project).start()
    assert _track(server, project.key, "u-stale").status_code == 200
    server.kill()
    assert (project.data_dir / "server.json").exists()  # SIGKILL leaves it behind
    result = project.cli("query", "SELECT count(*) AS n FROM events", "--format", "json")
    assert json.loads(result.stdout) == [{"n": 1}]
    # And the next server starts over it.
    again = Server(project).start()
    try:
        assert _track(again, project.key, "u-again").status_code == 200
    finally:
        again.stop()


def test_a_source_added_while_running_is_accepted_without_restart(
    project: Project, server: Server
) -> None:
    added = project.cli("sources", "add", "backend").stdout
    key = re.search(r"hw_wk_[A-Za-z0-9_-]+", added)
    assert key is not None
    assert key.group(0) not in (project.root / "headwater.toml").read_text()
    response = _track(server, key.group(0), "u-backend")
    assert response.status_code == 200, response.text
    rows = project.query("SELECT source FROM events WHERE user_id = ?", "u-backend").to_pylist()
    assert rows == [{"source": "backend"}]


def test_sigint_stops_cleanly(project: Project) -> None:
    server = Server(project).start()
    assert _track(server, project.key, "u-int").status_code == 200
    assert server.stop(signal.SIGINT) == 0
    assert "every acknowledged event is committed" in server.log.read_text()


def test_health_and_readiness(server: Server) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.get("/v1/track").status_code == 405


def test_a_write_key_in_a_refused_body_is_not_kept(project: Project, server: Server) -> None:
    # failed_events may be granted to consumers: the key must not be in it.
    single = server.post(
        "/v1/track", json={"writeKey": project.key, "event": "No One", "messageId": "wk-1"}
    )
    assert single.status_code == 400
    empty = server.post("/v1/batch", json={"writeKey": project.key, "batch": []})
    assert empty.status_code == 400
    payloads = project.query("SELECT payload::VARCHAR AS p FROM failed_events")["p"].to_pylist()
    assert len(payloads) == 2
    assert all(project.key not in p and "<removed>" in p for p in payloads)


def test_the_control_socket_is_private_and_browsers_get_cors(server: Server) -> None:
    info = json.loads((server.project.data_dir / "server.json").read_text())
    assert Path(info["socket"]).stat().st_mode & 0o077 == 0  # the owner alone
    with server.client() as client:
        preflight = client.options("/v1/batch", headers={"Origin": "https://shop.example"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        answer = client.post("/v1/track", json={})
        assert answer.headers["access-control-allow-origin"] == "*"


def test_a_removed_source_key_stops_working_without_restart(
    project: Project, server: Server
) -> None:
    assert _track(server, project.key, "u-before").status_code == 200
    config = project.root / "headwater.toml"
    text = config.read_text()
    start = text.index("[sources.web]")
    end = text.index("\n\n", start) if "\n\n" in text[start:] else len(text)
    config.write_text(text[:start] + text[end:])
    deadline = time.monotonic() + 10
    status = 200
    while time.monotonic() < deadline and status == 200:
        time.sleep(0.3)
        status = _track(server, project.key, "u-after").status_code
    assert status == 401


def test_a_busy_port_is_one_clear_sentence(project: Project, server: Server) -> None:
    port = server.url.rsplit(":", 1)[1]
    result = project.cli("up", "--port", port, check=False)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.stderr
