"""An open live-tail stream ends when its session does, not only when the page closes."""

from __future__ import annotations

import time

import httpx

from tests.conftest import run_cli
from tests.dashboard.conftest import Dash


def test_an_open_stream_ends_when_every_session_is_ended(dash: Dash) -> None:
    client, _ = dash.signed_in()
    try:
        _ends_with_its_session(client, dash)
    finally:
        client.close()


def _ends_with_its_session(client: httpx.Client, dash: Dash) -> None:
    seen: list[str] = []
    with client.stream("GET", "/live/stream") as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        for line in lines:
            seen.append(line)
            if line == "event: ready":
                break
        ended = time.monotonic()
        run_cli(dash.project, "admins", "end-sessions")
        for line in lines:  # the server closes the stream after its last event
            seen.append(line)
            if line == "event: signed_out":
                break
        # Seen at the stream's next look (every 5 s), once the new secret is read.
        assert "event: signed_out" in seen, seen
        assert time.monotonic() - ended < 25
    # And a new stream is refused: the session is gone.
    assert client.get("/live/stream").status_code == 401
