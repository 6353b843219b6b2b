"""Signing in, sessions, CSRF, the guard headers, and the overview page."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.dashboard.conftest import CheckPage, Dash, sign_in


def test_sign_in_and_out(browser: object, dash: Dash) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    context = browser.new_context()
    page = context.new_page()
    page.goto(dash.url + "/")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2F$"))
    page.get_by_label("Admin token").fill("hw_at_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not an admin token")
    sign_in(page, dash)
    cookie = next(c for c in context.cookies() if c["name"] == "headwater_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    expect(page.locator(".who")).to_have_text("alice")
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
