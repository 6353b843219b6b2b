"""The admin-action helper, in the dashboard app itself (no browser): every action is kept
in the metadata with its outcome, and only with a session and its CSRF token."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from headwater.cli.scaffold import init_project
from headwater.config.project import load_project
from headwater.core.errors import ConfigError, HeadwaterError
from headwater.core.secrets import KeyHash, digest
from headwater.dashboard.app import dashboard_app
from headwater.dashboard.web import Admin, action, admin_action, operation_action
from headwater.runtime.operations import call
from headwater.runtime.workspace import Workspace
from headwater.serve.auth import AdminTokens
from headwater.state.database import StateStore
from headwater.state.models import SeenVersion

TOKEN = "hw_at_test-token"


async def _do(request: Request, admin: Admin) -> Response:
    form = await request.form()
    what = str(form.get("what"))

    def work() -> str:
        if what == "bad":
            raise ConfigError("no such thing", hint="choose another")
        if what == "broken":
            raise HeadwaterError("the store is down")
        return "done"

    try:
        result = await admin_action(request, admin, "do", {"what": what}, work)
    except HeadwaterError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse({"result": result})


async def _op(request: Request, admin: Admin) -> Response:
    form = await request.form()
    args = {"name": str(form.get("name", "")), "limit": 1}
    try:
        return JSONResponse(await operation_action(request, admin, "preview", args))
    except HeadwaterError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A real project's workspace: its store, run state and operations."""
    root = tmp_path / "project"
    init_project(root)
    opened = Workspace.open(load_project(root, None))
    yield opened
    opened.close()


@pytest.fixture
def state(workspace: Workspace) -> StateStore:
    return workspace.state


@pytest.fixture
def client(tmp_path: Path, workspace: Workspace) -> Iterator[httpx.Client]:
    """The dashboard app, with two test actions, served by uvicorn on loopback."""
    from headwater.dashboard import pages

    admins: AdminTokens = {"alice": KeyHash(digest(TOKEN))}

    def tokens(*, fresh: bool = False) -> AdminTokens:
        return admins

    def operations(name: str, args: dict[str, Any]) -> Any:
        return call(workspace, name, args)

    state = workspace.state
    app = dashboard_app(
        operations, state.admin_actions, tokens, _registry(), None, frozenset(),
        state.session_secret.get,
    )  # fmt: skip
    inner = app.app  # type: ignore[attr-defined]
    inner.router.routes.append(Route("/test/do", action(_do), methods=["POST"]))
    inner.router.routes.append(Route("/test/op", action(_op), methods=["POST"]))
    assert pages  # the pages are registered besides these
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as http:
        yield http
    server.should_exit = True
    thread.join(10)


def _registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def _sign_in(client: httpx.Client) -> str:
    answer = client.post("/signin", data={"token": TOKEN, "next": "/datasets"},
                         follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303
    assert answer.headers["location"] == "/datasets"
    page = client.get("/signin?next=/", follow_redirects=False)
    assert page.status_code == 303  # signed in: the form sends you on
    html = client.get("/live").text
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found is not None
    return found.group(1)


def test_actions_are_logged_with_their_outcome(client: httpx.Client, state: StateStore) -> None:
    csrf = _sign_in(client)
    assert client.post("/test/do", data={"what": "fine", "csrf": csrf}).json() == {"result": "done"}
    assert client.post("/test/do", data={"what": "bad", "csrf": csrf}).status_code == 400
    assert client.post("/test/do", data={"what": "broken", "csrf": csrf}).status_code == 400
    # The token may come as a header (htmx sends it so); an operation of the CLI's table.
    answer = client.post("/test/op", data={"name": "events"}, headers={"X-CSRF-Token": csrf})
    assert answer.json()["rows"] == []
    assert "message_id" in answer.json()["columns"]
    unknown = client.post("/test/op", data={"name": "nope"}, headers={"X-CSRF-Token": csrf})
    assert "there is no dataset 'nope'" in unknown.json()["error"]
    # Without the token: refused, and nothing done or logged.
    assert client.post("/test/do", data={"what": "forged"}).status_code == 403
    recent = state.admin_actions.recent()
    logged = [(a.admin, a.action, a.arguments, a.outcome) for a in reversed(recent)]
    assert logged == [
        ("alice", "sign_in", {}, "ok"),
        ("alice", "do", {"what": "fine"}, "ok"),
        ("alice", "do", {"what": "bad"}, "refused"),
        ("alice", "do", {"what": "broken"}, "failed"),
        ("alice", "preview", {"limit": 1, "name": "events"}, "ok"),
        ("alice", "preview", {"limit": 1, "name": "nope"}, "refused"),
    ]
    assert recent[2].detail == "the store is down"


def test_a_damaged_cookie_is_no_session(client: httpx.Client) -> None:
    _sign_in(client)
    assert client.get("/overview.json").status_code != 401
    # A cookie whose signature does not match is no session.
    cookie = client.cookies["headwater_session"]
    client.cookies["headwater_session"] = cookie[:-4] + "0000"
    assert client.get("/overview.json").status_code == 401
    client.cookies["headwater_session"] = cookie
    assert client.get("/overview.json").status_code != 401


def test_the_datasets_page_shows_model_versions_and_consumers(
    client: httpx.Client, workspace: Workspace
) -> None:
    seen = SeenVersion("churn", "a1b2c3d4", "ab" * 32, 2048, "models/churn.joblib", False)
    workspace.state.models.used("scores", "v1", [seen])
    _sign_in(client)
    page = client.get("/datasets")
    assert page.status_code == 200
    html = page.text
    assert "<td>churn</td><td><code>a1b2c3d4</code></td>" in html
    assert "2.0 kB" in html
    assert "No consumers yet" in html
    assert 'hx-get="/datasets/events/preview"' in html


def test_a_refused_operation_says_why_as_the_asker_can_show_it(client: httpx.Client) -> None:
    _sign_in(client)
    path = "/datasets/nope/preview"
    fragment = client.get(path, headers={"HX-Request": "true"})
    assert fragment.status_code == 400
    assert '<div class="problem" role="alert">' in fragment.text
    assert "there is no dataset &#39;nope&#39;" in fragment.text
    assert "<nav" not in fragment.text  # swapped into its target, no layout
    page = client.get(path)
    assert page.status_code == 400
    assert "<h1>Could not be done</h1>" in page.text
    assert "<nav" in page.text
    answer = client.get(path, headers={"Accept": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "there is no dataset 'nope'"
    assert "events" in answer.json()["hint"]
