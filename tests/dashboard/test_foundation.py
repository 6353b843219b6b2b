"""Signing in, sessions, CSRF, the guard headers, and the overview page."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Page, expect

from headwater.cli.scaffold import add_admin, init_project
from tests.conftest import HEADWATER, Project, Server, run_cli, wait_for
from tests.dashboard.conftest import CheckPage, Dash, sign_in


def test_sign_in_and_out(
    browser: Browser, dash: Dash, check_page: CheckPage, node_modules: Path
) -> None:
    context = browser.new_context()
    context.add_init_script(path=node_modules / "axe-core" / "axe.min.js")
    page = context.new_page()
    page.goto(dash.url + "/")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2F$"))
    check_page(page, "signin", "Sign in", signed_in=False)
    page.get_by_label("Admin token").fill("hw_at_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not an admin token")
    check_page(page, "signin-refused", "Sign in", signed_in=False)
    sign_in(page, dash)
    cookie = next(c for c in context.cookies() if c["name"] == "headwater_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    expect(page.locator(".who")).to_have_text("alice")
    signed_in = [a for a in dash.admin_actions() if a.action == "sign_in"]
    assert signed_in
    assert signed_in[0].admin == "alice"
    assert signed_in[0].outcome == "ok"
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.goto(dash.url + "/")
    expect(page).to_have_url(re.compile(r"/signin"))
    context.close()


def test_overview_page(page: Page, check_page: CheckPage) -> None:
    expect(page.locator("[data-figure=hour-accepted]")).to_be_visible()
    check_page(page, "overview", "Overview")


def test_security_headers(dash: Dash) -> None:
    answer = httpx.get(dash.url + "/signin")
    assert answer.status_code == 200
    csp = answer.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert 'name="htmx-config"' in answer.text
    assert '"includeIndicatorStyles": false' in answer.text
    # The collector and the process's own routes are not the dashboard's.
    assert httpx.get(dash.url + "/healthz").json() == {"status": "alive"}
    assert "content-security-policy" not in httpx.get(dash.url + "/metrics").headers


def test_served_by_the_read_api_stage(tmp_path: Path) -> None:
    """``headwater serve api`` has the dashboard too; its live page says no events arrive
    there, since that process runs no collector."""
    root = tmp_path / "project"
    init_project(root)
    token = add_admin(root / "headwater.toml", "alice")
    runtime = root / ".headwater" / "server.json"
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*HEADWATER, "--project", str(root), "serve", "api", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("serve api to start", runtime.exists, 30, detail=log.read_text)
        url = json.loads(runtime.read_text())["url"]
        with httpx.Client(base_url=url, follow_redirects=True) as client:
            assert client.get("/", follow_redirects=False).status_code == 303
            signed = client.post("/signin", data={"token": token, "next": "/"})
            assert signed.status_code == 200  # followed to the overview
            assert "<h1>Overview</h1>" in signed.text
            assert "This collector since it started" not in signed.text
            assert "runs no collector" in client.get("/live").text
            assert client.get("/live/stream").status_code == 409
            assert client.get("/datasets").status_code == 200
            assert client.post("/v1/track", json={}).status_code == 404
            assert client.get("/api/v1/datasets").status_code == 401
            # Everyone signed out, from the command line, through the running server.
            ended = run_cli(root, "admins", "end-sessions")
            assert "Every dashboard session has ended" in ended.stdout
            wait_for(
                "the session to end",
                lambda: client.get("/overview.json").status_code == 401,
                detail=log.read_text,
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_keyboard_reaches_everything_with_a_visible_focus(page: Page) -> None:
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    reached: list[str] = []
    while "Sign out" not in reached and len(reached) < 20:  # every page's link, then this
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => {
                const el = document.activeElement;
                const style = getComputedStyle(el);
                return {text: el.textContent.trim(), outline: style.outlineStyle,
                        width: parseFloat(style.outlineWidth)};
            }"""
        )
        assert focused["outline"] != "none"
        assert focused["width"] >= 2
        reached.append(focused["text"])
    assert reached[:3] == ["Overview", "Live events", "Datasets"]
    assert reached[-1] == "Sign out"
    # The skip link moves focus past the navigation.
    page.goto(page.url)
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def test_the_overview_shows_the_offload_into_a_warehouse(project: Project) -> None:
    project.configure('[warehouse]\nengine = "duckdb"\npath = "warehouse.duckdb"\n')
    token = add_admin(project.root / "headwater.toml", "alice")
    server = Server(project).start()
    try:
        with httpx.Client(base_url=server.url, follow_redirects=True) as client:
            client.post("/signin", data={"token": token, "next": "/"})
            overview = client.get("/")
            summary = client.get("/overview.json").json()
        assert summary["offload"]["store"] == "duckdb"
        assert summary["offload"]["warehouse"] == "duckdb"
        assert "Offload lag" in overview.text
        assert 'data-figure="offload-lag"' in overview.text
    finally:
        server.stop()
