"""The failed events page in Chromium: events Segment's own Node.js library sent that the
collector refused, grouped as ``headwater failed`` groups them, fixed and replayed from
the page after a preview."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Dialog, Page, expect

from tests.conftest import wait_for
from tests.dashboard.conftest import CheckPage, Dash
from tests.test_sdk_clients import _run_node

#: userId with a NUL character, which no store keeps in text (code invalid_text).
INVALID = "refused-\u0000-user"
#: What the page's fix field gets: the NUL's JSON escape removed from the payload (the
#: project's dialect is BigQuery's, whose string literals escape a backslash).
FIX = r"REPLACE(payload, '\\u0000', '')"


def _send(dash: Dash) -> None:
    """A good event, two with an invalid userId, and an alias whose previousId the caller
    misnamed (the library drops ``previous_id``, so the server finds none)."""
    calls = [
        ["track", {"userId": "fine-user", "event": "Signed Up"}],
        ["track", {"userId": INVALID, "event": "Signed Up", "properties": {"n": 1}}],
        ["track", {"userId": INVALID, "event": "Plan Chosen", "properties": {"n": 2}}],
        ["alias", {"userId": "fine-user", "previous_id": "anon-7"}],
    ]
    report = _run_node("segment-calls.js", {"host": dash.url, "writeKey": dash.project.key,
                                            "calls": calls})  # fmt: skip
    assert report["errors"] == [], report
    assert [e["status"] for e in report["exchanges"]] == [200], report


def _groups(dash: Dash) -> list[dict[str, Any]]:
    """What ``headwater failed --json`` says (through the running server)."""
    found: list[dict[str, Any]] = json.loads(dash.project.cli("failed", "--json").stdout)
    return found


def _events(dash: Dash) -> list[str]:
    rows = dash.project.query("SELECT user_id FROM events WHERE user_id LIKE 'refused-%'")
    return sorted(str(u) for u in rows.column("user_id").to_pylist())


def test_a_refused_event_is_fixed_previewed_and_replayed_from_the_page(
    page: Page, dash: Dash, check_page: CheckPage, node_modules: Path
) -> None:
    _send(dash)
    groups = wait_for("the refused events", lambda: _groups(dash), timeout=30)
    by_key = {(g["code"], g["field"]): g for g in groups}
    assert by_key[("invalid_text", "userId")]["events"] == 2
    assert by_key[("missing_field", "previousId")]["events"] == 1

    page.goto(dash.url + "/failed")
    rows = page.locator("table.groups tbody tr")
    expect(rows).to_have_count(len(groups))
    for group in groups:  # the numbers `headwater failed` prints
        row = page.locator(f"tr[data-code='{group['code']}'][data-field='{group['field']}']")
        expect(row.locator("[data-count=events]")).to_have_text(str(group["events"]))
        expect(row.locator("[data-count=replayed]")).to_have_text(str(group["replayed"]))
    invalid = page.locator("tr[data-code=invalid_text]")
    expect(invalid).to_contain_text("NUL character")
    invalid.get_by_text("Sample payload").click()
    expect(invalid.locator("pre.sample")).to_contain_text("refused-")
    check_page(page, "failed", "Failed events")

    # "Fix…" chooses the group; a fix that is not one expression is refused as the CLI does.
    invalid.get_by_role("link", name="Fix the invalid_text events of userId").click()
    expect(page.get_by_label("Code", exact=True)).to_have_value("invalid_text")
    page.get_by_label("Fix", exact=True).fill("DROP TABLE events")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview [role=alert]")).to_contain_text("--fix")

    # The preview says what would pass and writes nothing.
    page.get_by_label("Fix", exact=True).fill(FIX)
    page.get_by_role("button", name="Preview").click()
    report = page.locator("#failed-report[data-dry-run=true]")
    expect(report.locator("[data-report=selected]")).to_have_text("2")
    expect(report.locator("[data-report=passed]")).to_have_text("2")
    expect(report.locator("table.passing")).to_contain_text("refused--user")
    assert _events(dash) == []

    shown: list[str] = []

    def accept(dialog: Dialog) -> None:
        shown.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Replay", exact=True).click()
    done = page.locator("#failed-report[data-dry-run=false]")
    expect(done.locator("[data-report=stored]")).to_have_text("2")
    assert shown == [
        "Replay the chosen failed events with this fix? What passes is stored as events."
    ]
    assert _events(dash) == ["refused--user", "refused--user"]
    # The groups are swapped in again: two of them replayed, as `headwater failed` says.
    after = {(g["code"], g["field"]): g for g in _groups(dash)}
    assert after[("invalid_text", "userId")]["replayed"] == 2
    expect(invalid.locator("[data-count=replayed]")).to_have_text("2")
    expect(page.locator("tr[data-code=missing_field] [data-count=replayed]")).to_have_text("0")
    last = dash.admin_actions()[0]
    assert (last.admin, last.action, last.outcome) == ("alice", "failed_replay", "ok")
    assert last.arguments == {"code": "invalid_text", "where": "field = 'userId'", "fix": FIX}


def test_without_a_session_or_its_csrf_token_the_page_and_its_actions_are_refused(
    dash: Dash,
) -> None:
    with httpx.Client(base_url=dash.url) as client:
        answer = client.get("/failed")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/signin?next=%2Ffailed"
        for path in ("/failed/preview", "/failed/replay"):
            assert client.post(path, data={"fix": FIX}).status_code == 401, path
    client, token = dash.signed_in()
    try:
        assert client.get("/failed").status_code == 200
        for path in ("/failed/preview", "/failed/replay"):
            forged = client.post(path, data={"fix": FIX})
            assert forged.status_code == 403, path
            assert "CSRF" in forged.json()["error"]
            wrong = client.post(path, data={"fix": FIX, "csrf": token[::-1]})
            assert wrong.status_code == 403, path
        # With its token, a preview answers (and writes nothing).
        preview = client.post("/failed/preview", data={"fix": FIX, "csrf": token})
        assert preview.status_code == 200
        assert 'data-dry-run="true"' in preview.text
    finally:
        client.close()
