"""The pipelines and deliveries pages in Chromium, against a real ``headwater up``.

The project has two hourly pipelines over six past hours of events: ``hourly``, and
``crm_events``, delivered to a webhook receiver on loopback that refuses every
batch at first (each becomes a dead letter). The scheduler makes one pass at start
(``tick_seconds`` is an hour) and runs two intervals of each (``max_catchup = 2``),
so the others stay missing until the page runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pytest
from playwright.sync_api import Dialog, Page, expect

from headwater.cli.scaffold import add_admin, init_project
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import Project, Server, run_cli, wait_for
from tests.dashboard.conftest import CheckPage, Dash
from tests.deliver.receiver import Receiver, Reply

SECRET = "whsec_dashboard_7c2e"
HOUR = timedelta(hours=1)

HOURLY = """\
/* headwater
description = "Events per hour of arrival."
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour
"""

CRM = """\
/* headwater
description = "Every event, for the CRM."
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
key = ["message_id"]
sinks = ["crm"]
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, message_id, event, user_id
FROM events
WHERE received_at >= @start AND received_at < @end
"""

#: Fails at every interval: a column events does not have (a terminal error, not retried).
BROKEN = HOURLY.replace("COUNT(*) AS events", "COUNT(no_such_column) AS events")

ROLLUP = """\
/* headwater
schedule = "@daily"
kind = "full"
*/
SELECT COUNT(*) AS hours, SUM(events) AS events FROM hourly
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        running.rule = lambda _: Reply(400, body='{"error": "unknown field plan"}')
        yield running


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Dash]:
    """The foundation's server, with the pipelines, the sink and six hours of events."""
    root = tmp_path_factory.mktemp("flow") / "project"
    key = init_project(root)
    project = Project(root=root, key=key)
    for old in (root / "pipelines").iterdir():
        old.unlink()
    files = {"hourly": HOURLY, "crm_events": CRM, "rollup": ROLLUP, "broken_hourly": BROKEN}
    for name, text in files.items():
        (root / "pipelines" / f"{name}.sql").write_text(text)
    config = root / "headwater.toml"
    text = config.read_text()
    assert text.count("tick_seconds = 10 ") == 1
    text = text.replace("tick_seconds = 10 ", "max_catchup = 2\ntick_seconds = 3600 ", 1)
    config.write_text(text)
    sink = {"type": "webhook", "url": receiver.url("/hook"), "secret": "${CRM_SECRET}",
            "batch_rows": 100, "timeout_seconds": 5, "max_attempts": 1}  # fmt: skip
    project.configure(
        '[delivery]\nallow_hosts = ["localhost"]\npoll_seconds = 0.1\n\n[sinks.crm]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sink.items())
    )
    _ingest(project, hours=6)
    token = add_admin(config, "alice")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRM_SECRET", SECRET)
        server = Server(project).start()
        try:
            yield Dash(server, project, token)
        finally:
            server.stop()


def _ingest(project: Project, hours: int) -> None:
    """Three events in each of the ``hours`` whole hours before this one."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = [
        {
            "message_id": f"m-{h}-{i}",
            "source": "web",
            "type": "track",
            "event": "Signed Up",
            "user_id": f"u{i}",
            "timestamp": at,
            "received_at": at,
        }
        for h in range(hours)
        for i in range(3)
        for at in [now - (hours - h) * HOUR + timedelta(minutes=10 + i)]
    ]
    project.data_dir.mkdir(mode=0o700, exist_ok=True)
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        table = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        engine.ingest(IngestBatch(table, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _cli_json(dash: Dash, *args: str) -> Any:
    """What the command line says (through the running server), as the operation's JSON."""
    from headwater.runtime.client import find_server

    client = find_server(dash.project.data_dir)
    assert client is not None
    try:
        return client.call(args[0], json.loads(args[1]) if len(args) > 1 else {})
    finally:
        client.close()


def _first_pass_done(dash: Dash) -> None:
    def done() -> bool:
        grid = _cli_json(dash, "intervals", '{"name": "hourly"}')
        return bool(grid["counts"]["done"] >= 2)

    wait_for("the scheduler's first pass", done, timeout=60, detail=dash.server.log.read_text)


def _table(text: str, title: str | None = None) -> list[dict[str, str]]:
    """The rows of a rich table that the command line printed (after ``title``)."""
    lines = text.splitlines()
    if title is not None:
        lines = lines[next(i for i, line in enumerate(lines) if title in line) :]
    header = next(line for line in lines if line.startswith("┃"))
    names = [cell.strip() for cell in header.strip().strip("┃").split("┃")]
    rows = []
    for line in lines[lines.index(header) :]:
        if line.startswith("│"):
            rows.append(dict(zip(names, [c.strip() for c in line.strip("│").split("│")],
                                 strict=True)))  # fmt: skip
        elif line.startswith("└"):
            break
    return rows


def _accept(page: Page) -> list[str]:
    """Accept the next confirmation the page asks for; returns the messages it showed."""
    shown: list[str] = []

    def answer(dialog: Dialog) -> None:
        shown.append(dialog.message)
        dialog.accept()

    page.once("dialog", answer)
    return shown


# -- pipelines ---------------------------------------------------------------------------


def test_pipelines_page_shows_the_graph_and_status_the_command_line_prints(
    page: Page, dash: Dash, check_page: CheckPage
) -> None:
    _first_pass_done(dash)
    page.goto(dash.url + "/pipelines")
    graph = page.get_by_role("group", name="Dependency graph of the pipelines")
    expect(graph).to_be_visible()
    nodes = graph.locator("a.dag-node")
    expect(nodes).to_have_count(4)
    expect(graph.locator("a.dag-node[aria-label='broken_hourly: failed']")).to_have_count(1)
    # rollup reads hourly: it is drawn a layer to the right, with an edge between them.
    boxes = {
        name: page.locator(f"a.dag-node[aria-label^='{name}:'] rect").bounding_box()
        for name in ("hourly", "rollup")
    }
    assert boxes["hourly"] is not None
    assert boxes["rollup"] is not None
    assert boxes["rollup"]["x"] > boxes["hourly"]["x"]
    # From events to each of three, and from hourly to rollup.
    expect(graph.locator("path.dag-edge")).to_have_count(4)

    printed = {r["pipeline"]: r for r in _table(run_cli(dash.project, "status").stdout)}
    for name in ("hourly", "crm_events"):
        row = page.locator(f"tr[data-pipeline='{name}']")
        for column, key in (("done", "done"), ("missing", "missing"), ("stale", "stale")):
            expect(row.locator(f"[data-count='{key}']")).to_have_text(printed[name][column])
    check_page(page, "pipelines", "Pipelines")

    # A node is a link reached with the keyboard.
    page.locator("a.dag-node[aria-label^='hourly:']").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(dash.url + "/pipelines/hourly")


def test_run_an_interval_from_the_grid_and_see_its_cell_turn_done(
    page: Page, dash: Dash, check_page: CheckPage
) -> None:
    _first_pass_done(dash)
    # The same span for the page and the command (an hour may end between the two).
    until = datetime.now(UTC).strftime("%Y-%m-%dT%H:00")
    page.goto(dash.url + f"/pipelines/hourly?end={until}")
    expect(page.get_by_role("link", name="Latest intervals")).to_have_attribute(
        "href", "/pipelines/hourly"
    )
    cells = page.locator("#grid button.cell")
    expect(cells.first).to_be_visible()
    states = cells.evaluate_all("cells => cells.map(c => c.dataset.state)")
    assert states[:2] == ["done", "done"], states
    assert "missing" in states[2:], states

    # The grid says what `headwater status hourly` says, cell by cell and in total.
    printed = run_cli(dash.project, "status", "hourly", "--end", until).stdout
    assert [r["state"] for r in _table(printed)] == states
    done = re.search(r"hourly: (\d+) done, (\d+) missing", printed)
    assert done is not None
    expect(page.locator("[data-total=done]")).to_have_text(f"{done[1]} done")
    expect(page.locator("[data-total=missing]")).to_have_text(f"{done[2]} missing")

    # Each cell is labelled; choosing one (keyboard) shows its runs.
    first = cells.nth(0)
    label = first.get_attribute("aria-label") or ""
    assert re.search(r"UTC, done, run \d+, 1 row, [\d.]+ s$", label), label
    # One Tab stop: the latest interval; arrow keys, Home and End move between cells.
    assert cells.evaluate_all("cells => cells.filter(c => c.tabIndex === 0).length") == 1
    assert cells.last.get_attribute("tabindex") == "0"
    cells.last.focus()
    page.keyboard.press("Home")
    expect(first).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(cells.nth(1)).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(first).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#detail [data-detail-state]")).to_have_text("done")
    expect(page.locator("#detail table.runs tbody tr")).to_have_count(1)
    check_page(page, "pipeline", "hourly")

    missing = page.locator("#grid button.cell[data-state=missing]").first
    start = missing.get_attribute("data-start")
    missing.click()
    expect(page.locator("#detail [data-detail-state]")).to_have_text("missing")
    run = page.get_by_role("button", name="Run this interval")

    # Declining the confirmation sends nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    run.click()
    page.wait_for_timeout(300)
    cell = page.locator(f"#grid button.cell[data-start='{start}']")
    expect(cell).to_have_attribute("data-state", "missing")

    shown = _accept(page)
    run.click()
    expect(page.locator("#outcome")).to_contain_text("Ran 1 interval; 1 row written.")
    expect(cell).to_have_attribute("data-state", "done")
    assert [m[:16] for m in shown] == ["Run hourly for 2"]
    grid = _cli_json(dash, "intervals", '{"name": "hourly"}')
    assert [c["state"] for c in grid["cells"] if c["interval"]["start"] == start] == ["done"]
    assert _last_action(dash) == ("alice", "run", "ok")


def test_a_failed_interval_shows_its_error(page: Page, dash: Dash) -> None:
    _first_pass_done(dash)
    page.goto(dash.url + "/pipelines/broken_hourly")
    failed = page.locator("#grid button.cell[data-state=failed]")
    expect(failed).to_have_count(2)  # the scheduler's first pass: two intervals, both failed
    label = failed.first.get_attribute("aria-label") or ""
    assert ", failed, run " in label, label
    assert "no_such_column" in label, label
    failed.first.click()
    expect(page.locator("#detail [data-detail-state]")).to_have_text("failed")
    expect(page.locator("#detail pre.error")).to_contain_text("no_such_column")
    expect(page.locator("#detail table.runs tbody tr")).to_have_count(1)


def test_running_a_failing_interval_again_says_why_and_logs_it_failed(
    page: Page, dash: Dash
) -> None:
    _first_pass_done(dash)
    page.goto(dash.url + "/pipelines/broken_hourly")
    failed = page.locator("#grid button.cell[data-state=failed]").first
    start = failed.get_attribute("data-start")
    failed.click()
    _accept(page)
    page.get_by_role("button", name="Run this interval").click()
    outcome = page.locator("#outcome")
    expect(outcome).to_contain_text("Ran 0 intervals")
    expect(outcome.locator("p.error")).to_contain_text(f"{(start or '')[:16]} failed:")
    expect(outcome.locator("p.error")).to_contain_text("no_such_column")
    admin, action, how = _last_action(dash)
    assert (admin, action, how) == ("alice", "run", "failed")
    assert "no_such_column" in (dash.admin_actions()[0].detail or "")


def test_backfill_a_range_from_the_page(page: Page, dash: Dash) -> None:
    _first_pass_done(dash)
    page.goto(dash.url + "/pipelines/hourly")
    shown = _accept(page)
    page.get_by_role("button", name="Backfill").click()
    expect(page.locator("#outcome")).to_contain_text("Backfilled")
    assert shown == ["Backfill hourly and what it reads over this range?"]
    expect(page.locator("#grid button.cell[data-state=missing]")).to_have_count(0)
    grid = _cli_json(dash, "intervals", '{"name": "hourly"}')
    assert grid["totals"]["missing"] == 0
    assert _last_action(dash) == ("alice", "backfill", "ok")


# -- deliveries --------------------------------------------------------------------------


def test_replay_a_dead_letter_and_see_it_delivered(
    page: Page, dash: Dash, receiver: Receiver, check_page: CheckPage
) -> None:
    _first_pass_done(dash)
    wait_for("two dead letters", lambda: len(_cli_json(dash, "dead_letters", "{}")) >= 2,
             timeout=30, detail=dash.server.log.read_text)  # fmt: skip
    page.goto(dash.url + "/deliveries")
    row = page.locator("tr[data-pipeline=crm_events][data-sink=crm]")
    printed = _table(run_cli(dash.project, "status").stdout, "Deliveries (intervals)")
    crm = next(r for r in printed if r["sink"] == "crm")
    for column, key in (("delivered", "delivered"), ("pending", "pending"),
                        ("failed", "failed"), ("dead letters", "dead_letters")):  # fmt: skip
        expect(row.locator(f"[data-count='{key}']")).to_have_text(crm[column])
    letters = page.locator("tr[data-letter]")
    listed = _table(run_cli(dash.project, "replay", "--list").stdout)
    expect(letters).to_have_count(len(listed))
    first = listed[0]
    letter = page.locator(f"tr[data-letter='{first['id']}']")
    expect(letter).to_contain_text("answered 400")
    check_page(page, "deliveries", "Deliveries")

    receiver.rule = None  # the receiver is fixed
    before = len(receiver.rows())
    shown = _accept(page)
    letter.get_by_role("button", name=f"Replay dead letter {first['id']}").click()
    expect(page.locator("#outcome")).to_have_text("Replayed: 1 delivered")
    assert shown == [f"Replay dead letter {first['id']} to crm?"]
    expect(page.locator(f"tr[data-letter='{first['id']}']")).to_have_count(0)
    assert len(receiver.rows()) == before + int(first["rows"])
    assert [d["id"] for d in _cli_json(dash, "dead_letters", "{}")].count(int(first["id"])) == 0
    assert _last_action(dash) == ("alice", "replay", "ok")

    # The rest of the pipeline and sink's, from its row of counts.
    left = len(listed) - 1
    shown = _accept(page)
    row.get_by_role("button", name="Replay the dead letters of crm_events to crm").click()
    expect(page.locator("#outcome")).to_have_text(f"Replayed: {left} delivered")
    assert shown == [f"Replay the {left} dead letters of crm_events to crm?"]
    expect(page.locator("tr[data-letter]")).to_have_count(0)
    expect(row.locator("[data-count=dead_letters]")).to_have_text("0")
    assert _cli_json(dash, "dead_letters", "{}") == []
    assert len(receiver.rows()) == before + sum(int(d["rows"]) for d in listed)


def _last_action(dash: Dash) -> tuple[str, str, str]:
    """Who did what from the dashboard last, and how it went, as the metadata logged it."""
    last = dash.admin_actions()[0]
    return last.admin, last.action, last.outcome


# -- what is refused ------------------------------------------------------------------------


PAGES = ["/pipelines", "/pipelines/hourly", "/deliveries"]
PARTIALS = ["/pipelines/hourly/interval?at=2026-01-01T00:00"]
ACTIONS = ["/pipelines/hourly/run", "/pipelines/hourly/backfill", "/deliveries/replay"]


def test_without_a_session_pages_and_actions_are_refused(dash: Dash) -> None:
    with httpx.Client(base_url=dash.url) as client:
        for path in PAGES:
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/signin?next=")
        for path in PARTIALS:
            assert client.get(path).status_code == 401, path
        for path in ACTIONS:
            assert client.post(path, data={"start": "2026-01-01"}).status_code == 401, path


def test_an_action_without_its_csrf_token_is_refused(dash: Dash) -> None:
    _first_pass_done(dash)
    asked = json.dumps({"name": "hourly", "at": _an_hour()})
    runs = len(_cli_json(dash, "interval", asked)["runs"])
    client, token = dash.signed_in()
    try:
        assert client.get("/pipelines").status_code == 200
        unknown = client.get("/pipelines/nope")
        assert unknown.status_code == 404
        assert "no pipeline named &#39;nope&#39;" in unknown.text
        bad = client.get("/pipelines/hourly/interval", params={"at": "yesterday"})
        assert "is not a date or time" in bad.text
        # A full pipeline's grid: its latest tick only, in the state the command line gives
        # (missing, or done once the scheduler ran it: that depends on the hour of the day).
        full = client.get("/pipelines/rollup")
        assert full.status_code == 200
        shown = re.findall(r'<button type="button" class="cell" data-state="(\w+)"', full.text)
        said = _cli_json(dash, "intervals", '{"name": "rollup"}')
        assert len(said["cells"]) == 1
        assert shown == [said["cells"][0]["state"]]
        form = {"start": _an_hour(), "end": _an_hour(1)}
        for path, data in (("/pipelines/hourly/run", form), ("/deliveries/replay", {})):
            forged = client.post(path, data=data)
            assert forged.status_code == 403, path
            assert "CSRF" in forged.json()["error"]
            wrong = client.post(path, data={**data, "csrf": token[::-1]})
            assert wrong.status_code == 403, path
    finally:
        client.close()
    assert len(_cli_json(dash, "interval", asked)["runs"]) == runs  # nothing ran


def _an_hour(later: int = 0) -> str:
    """The start of the second hour of events (and ``later`` hours on)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return (now - 5 * HOUR + later * HOUR).isoformat()


def test_running_the_hour_under_way_says_it_was_a_preview(dash: Dash) -> None:
    _first_pass_done(dash)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    client, token = dash.signed_in()
    try:
        form = {
            "start": now.strftime("%Y-%m-%dT%H:00"),
            "end": (now + HOUR).strftime("%Y-%m-%dT%H:00"),
            "csrf": token,
        }
        answer = client.post("/pipelines/hourly/run", data=form, headers={"HX-Request": "true"})
    finally:
        client.close()
    assert answer.status_code == 200, answer.text
    assert "Ran 1 interval" in answer.text, answer.text
    assert "1 interval had not ended: a preview, published but not recorded done" in answer.text
