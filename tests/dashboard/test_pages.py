"""The first pages in the browser: the live tail, the overview's numbers, datasets; and
every page and action refused without a session or a CSRF token."""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

import httpx
import pytest
import segment.analytics.client as segment
from playwright.sync_api import Page, expect

from tests.conftest import run_cli
from tests.dashboard.conftest import CheckPage, Dash

#: Every page, and a JSON or stream endpoint of each, as an anonymous visitor sees them.
PAGES = ["/", "/live", "/datasets", "/governance"]
DATA = ["/overview.json", "/overview/figures", "/live/stream", "/datasets/events/preview"]
ACTIONS = ["/signout"]


def _send(dash: Dash, **call: Any) -> None:
    errors: list[Exception] = []
    client = segment.Client(
        write_key=dash.project.key,
        host=dash.url,
        sync_mode=True,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    client.track(**call)
    client.flush()
    assert errors == []


def test_an_event_shows_in_the_live_tail_within_a_second(
    page: Page, dash: Dash, check_page: CheckPage
) -> None:
    page.goto(dash.url + "/live")
    tail = page.locator("#tail")
    expect(tail).to_have_attribute("data-connected", "true")
    # Sent by Segment's Python library; it returns once the collector answered, which is
    # after the commit: the row must be on the page a second after that.
    _send(dash, user_id="live-u1", event="Order Completed", properties={"total": 42})
    answered = time.monotonic()
    row = tail.locator("li", has_text="Order Completed")
    row.wait_for(timeout=1_000)
    assert time.monotonic() - answered < 1.0
    expect(row).to_contain_text("live-u1")
    row.locator("summary").click()
    stored = json.loads(row.locator("pre").inner_text())
    assert stored["event"] == "Order Completed"
    assert stored["properties"] == {"total": 42}
    assert stored["source"] == "web"
    assert stored["type"] == "track"
    check_page(page, "live", "Live events")


def test_the_live_tail_filters(page: Page, dash: Dash) -> None:
    page.goto(dash.url + "/live?event=Wanted")
    tail = page.locator("#tail")
    expect(tail).to_have_attribute("data-connected", "true")
    _send(dash, user_id="filter-u", event="Unwanted")
    _send(dash, user_id="filter-u", event="Wanted")
    expect(tail.locator("li")).to_have_count(1)
    expect(tail.locator("li")).to_contain_text("Wanted")
    # The other was committed first, so it would have been shown before this one.
    expect(tail.locator("li", has_text="Unwanted")).to_have_count(0)
    # Paused, the list holds still and counts what it did not show.
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_have_attribute("aria-pressed", "true")
    _send(dash, user_id="filter-u", event="Wanted")
    expect(page.get_by_role("status")).to_have_text("Paused: 1 new events not shown.")
    expect(tail.locator("li")).to_have_count(1)


def _figures(page: Page) -> dict[str, str]:
    found: dict[str, str] = page.eval_on_selector_all(
        "[data-figure]",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.figure, n.textContent.trim()]))",
    )
    return found


def test_overview_numbers_are_the_clis(page: Page, dash: Dash, check_page: CheckPage) -> None:
    for n in range(3):
        _send(dash, user_id=f"ov-{n}", event="Overview Seen")
    bad = httpx.post(dash.url + "/v1/track", json={"event": "No user"}, auth=(dash.project.key, ""))
    assert bad.status_code == 400
    until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime())
    page.goto(f"{dash.url}/?until={until}")
    cli = json.loads(run_cli(dash.project, "traffic", "--until", until, "--json").stdout)
    shown = _figures(page)
    assert shown["hour-accepted"] == f"{cli['hour']['accepted']:,}"
    assert shown["hour-refused"] == f"{cli['hour']['refused']:,}"
    assert shown["day-accepted"] == f"{cli['day']['accepted']:,}"
    assert shown["store-events"] == f"{cli['store']['events']:,}"
    assert cli["hour"]["accepted"] >= 3
    assert cli["hour"]["refused"] >= 1
    assert sum(cli["hour"]["by_event"]["Overview Seen"]) == 3
    text = run_cli(dash.project, "traffic", "--until", until).stdout
    assert re.search(rf"last hour\s*│\s*│ accepted\s*│ {cli['hour']['accepted']:,}", text), text
    assert re.search(r"last hour\s*│ event\s*│ Overview Seen\s*│ 3 ", text), text
    # The collector's counters are its /metrics.
    metrics = httpx.get(dash.url + "/metrics").text
    accepted = sum(
        float(v)
        for v in re.findall(r"^headwater_events_accepted_total\{[^}]*\} (\S+)$", metrics, re.M)
    )
    assert shown["collector-accepted"] == f"{int(accepted):,}"
    answered = re.search(r"^headwater_ack_seconds_count (\S+)$", metrics, re.M)
    assert answered is not None
    assert float(answered.group(1)) >= 4  # the three events and the refused one, at least
    assert shown["ack-p50"].startswith("≤ ")
    # The JSON behind the charts says the same, and the charts are drawn from it.
    with httpx.Client(base_url=dash.url, cookies=_cookies(page)) as client:
        summary = client.get("/overview.json", params={"until": until}).json()
        figures = client.get("/overview/figures")
    assert summary["traffic"] == cli
    assert summary["pinned"] is True
    assert summary["collector"]["acknowledged"] == int(float(answered.group(1)))
    # The fragment htmx swaps in every 30 seconds: the same tiles, no layout around them.
    assert figures.status_code == 200
    assert 'data-figure="hour-accepted"' in figures.text
    assert "<nav" not in figures.text
    expect(page.locator(".chart[data-drawn=true]")).to_have_count(6)
    check_page(page, "overview-with-events", "Overview")


def test_datasets_page(page: Page, dash: Dash, check_page: CheckPage) -> None:
    _send(dash, user_id="ds-u", event="Dataset Row")
    page.goto(dash.url + "/datasets")
    events = page.locator(
        "section.dataset", has=page.get_by_role("heading", name=re.compile("^events"))
    )
    expect(events).to_contain_text("source, message_id")
    events.get_by_role("button", name="Preview rows of events").click()
    expect(events.locator("table").last).to_contain_text("Dataset Row")
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    check_page(page, "datasets", "Datasets")


def test_governance_page_says_what_status_says(
    page: Page, dash: Dash, check_page: CheckPage
) -> None:
    _send(dash, user_id="gov-u", event="Governed")
    run_cli(dash.project, "erase", "--user-id", "gov-u")
    text = run_cli(dash.project, "status").stdout
    said = re.search(r"Suppressed: (\d+) erased id\(s\); (\d+) new event", text)
    assert said is not None, text
    assert int(said.group(1)) >= 1
    page.goto(dash.url + "/governance")
    expect(page.locator('[data-figure="suppressed-ids"]')).to_have_text(said.group(1))
    expect(page.locator('[data-figure="suppressed-events"]')).to_have_text(said.group(2))
    # Finished at once (no sink owes it), as status says by listing nothing owed.
    assert "still owes" not in text
    expect(page.locator('[data-figure="erasures-owed"]')).to_be_visible()
    # The project keeps everything: status has no retention table, the page says so.
    assert "Retention" not in text
    expect(page.locator('[data-figure="retention-none"]')).to_be_visible()
    check_page(page, "governance", "Governance")


def _cookies(page: Page) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_strangers_to_sign_in(dash: Dash, path: str) -> None:
    answer = httpx.get(dash.url + path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/signin?next=")


@pytest.mark.parametrize("path", DATA)
def test_data_refuses_strangers(dash: Dash, path: str) -> None:
    assert httpx.get(dash.url + path).status_code == 401
    # A forged cookie is no session.
    forged = {"headwater_session": "eyJhIjoiYWxpY2UifQ.0000"}
    assert httpx.get(dash.url + path, cookies=forged).status_code == 401


@pytest.mark.parametrize("path", ACTIONS)
def test_actions_refuse_strangers_and_forged_forms(dash: Dash, path: str) -> None:
    assert httpx.post(dash.url + path, data={"csrf": "x"}).status_code == 401
    client, token = dash.signed_in()
    with contextlib.closing(client):
        # Signed in, but the form lacks the token, or carries another's.
        assert client.post(path, data={}).status_code == 403
        assert client.post(path, data={"csrf": "0" * 64}).status_code == 403
        # From another origin, even with the right token.
        other = client.post(path, data={"csrf": token}, headers={"Origin": "http://evil.test"})
        assert other.status_code == 403
        # Still signed in: none of them went through.
        assert client.get("/", follow_redirects=False).status_code == 200


def test_a_duplicate_is_not_shown_twice(page: Page, dash: Dash) -> None:
    page.goto(dash.url + "/live?type=track")
    tail = page.locator("#tail")
    expect(tail).to_have_attribute("data-connected", "true")
    event = {"userId": "dup-u", "event": "Dup Check", "messageId": "dup-check-1"}
    for _ in range(2):
        answer = httpx.post(dash.url + "/v1/track", json=event, auth=(dash.project.key, ""))
        assert answer.status_code == 200
    _send(dash, user_id="dup-u", event="After Dup")
    expect(tail.locator("li", has_text="After Dup")).to_have_count(1)
    expect(tail.locator("li", has_text="Dup Check")).to_have_count(1)
