"""Unmodified Segment and RudderStack clients, pointed at Headwater by host alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rudderstack.analytics.client as rudder
import segment.analytics.client as segment

from tests.conftest import Project, Server

CLIENTS: dict[str, Callable[..., Any]] = {"segment": segment.Client, "rudder": rudder.Client}


def _send_every_type(client: Any, tag: str) -> None:
    client.track(f"{tag}-u", "Order Completed", {"total": 42.5, "items": [1, 2]})
    client.identify(f"{tag}-u", {"email": "ada@example.com", "plan": "pro"})
    client.page(f"{tag}-u", "Docs", "Pricing", {"path": "/pricing"})
    client.screen(f"{tag}-u", "Onboarding", "Welcome", {"step": 1})
    client.group(f"{tag}-u", f"{tag}-g", {"name": "Acme"})
    client.alias(f"{tag}-old", f"{tag}-u")


@pytest.mark.parametrize("library", sorted(CLIENTS))
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("mode", ["single", "batch"])
def test_every_call_type_lands_with_its_columns(
    shared_server: Server, shared_project: Project, library: str, gzip: bool, mode: str
) -> None:
    errors: list[Exception] = []
    client = CLIENTS[library](
        write_key=shared_project.key,
        host=shared_server.url,
        gzip=gzip,
        sync_mode=mode == "single",
        upload_size=100,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    tag = f"{library}-{mode}-{'gz' if gzip else 'plain'}"
    before = datetime.now(UTC)
    _send_every_type(client, tag)
    client.flush()
    if mode == "batch":
        client.join()
    assert errors == []

    rows = shared_project.query("SELECT * FROM events WHERE user_id = ?", f"{tag}-u").to_pylist()
    by_type = {row["type"]: row for row in rows}
    assert sorted(by_type) == ["alias", "group", "identify", "page", "screen", "track"]
    assert len(rows) == 6

    track = by_type["track"]
    assert track["event"] == "Order Completed"
    assert json.loads(track["properties"]) == {"total": 42.5, "items": [1, 2]}
    assert track["source"] == "web"
    assert by_type["identify"]["traits"] is not None or library == "rudder"
    traits = json.loads(by_type["identify"]["traits"] or by_type["identify"]["context"])
    assert "ada@example.com" in json.dumps(traits)
    assert by_type["page"]["name"] == "Pricing"
    assert json.loads(by_type["page"]["properties"])["path"] == "/pricing"
    assert by_type["screen"]["name"] == "Welcome"
    assert by_type["group"]["group_id"] == f"{tag}-g"
    assert by_type["alias"]["previous_id"] == f"{tag}-old"

    for row in rows:
        assert len(row["message_id"]) >= 16
        context = json.loads(row["context"])
        assert context["library"]["name"] in {"analytics-python", "analytics-python-rudder"} or (
            "rudder" in context["library"]["name"]
        )
        # Clock skew is corrected against the server's clock: close to now.
        assert before - timedelta(seconds=5) <= row["timestamp"] <= datetime.now(UTC)
        assert before - timedelta(seconds=5) <= row["received_at"] <= datetime.now(UTC)
        assert row["original_timestamp"] is not None
        assert row["sent_at"] is not None


@pytest.mark.parametrize("library", sorted(CLIENTS))
def test_a_refused_request_is_an_api_error_the_client_does_not_retry(
    shared_server: Server, library: str
) -> None:
    # Both SDKs read `code` and `message` at the top of a 4xx body; without them the
    # RudderStack SDK took the answer for a network failure and retried it for minutes.
    errors: list[Exception] = []
    client = CLIENTS[library](
        write_key="not-a-key",
        host=shared_server.url,
        max_retries=3,
        on_error=lambda error, _batch: errors.append(error),
    )
    client.track("u", "Refused")
    client.flush()
    client.join()
    assert len(errors) == 1
    error = errors[0]
    assert (getattr(error, "status", None), getattr(error, "code", None)) == (
        401,
        "unknown_write_key",
    )
    assert "write key" in str(getattr(error, "message", "")).lower()
