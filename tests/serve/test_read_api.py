"""The read API end to end: a real ``headwater up`` on loopback, real HTTP, real datasets.

Events go in through the collector (Basic auth with the source's write key);
``user_scores`` is a small full-refresh pipeline declared here (key
``user_id``) and ``daily_active_users`` is the example pipeline of
``headwater init``, filled by ``headwater backfill``. Consumers are created with
``headwater consumers add`` while the server runs. Every answer is compared
with the same rows computed here in Python from the events that were sent.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random
import re
import time
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import cmp_to_key
from typing import Any, cast
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.ipc
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from headwater.serve.errors import ApiError
from headwater.serve.query import Dataset, Reader, parse_value
from headwater.store import schema as event_schema
from tests.conftest import Project, Server

Row = dict[str, Any]
Order = list[tuple[str, bool]]

USER_SCORES = "user_scores"
DAU = "daily_active_users"
SCORES_SQL = """\
/* headwater
description = "One row per user: events, greatest plan name, best score, first seen."
kind = "full"
key = ["user_id"]
*/
SELECT
  user_id,
  COUNT(*) AS events,
  MAX(JSON_VALUE(properties, '$.plan')) AS plan,
  MAX(SAFE_CAST(JSON_VALUE(properties, '$.score') AS INT64)) AS score,
  MIN(timestamp) AS first_seen
FROM events
WHERE user_id IS NOT NULL
GROUP BY user_id
"""
SCORES_COLUMNS = [
    ("user_id", "string"),
    ("events", "int64"),
    ("plan", "string"),
    ("score", "int64"),
    ("first_seen", "timestamp[us, tz=UTC]"),
]
DAU_COLUMNS = [
    ("day", "timestamp[us, tz=UTC]"),
    ("plan", "string"),
    ("active_users", "int64"),
    ("events", "int64"),
]
TIME_COLUMNS = frozenset({"first_seen", "day", "timestamp", "received_at"})
#: User ids a careless API would splice into SQL; they are ordinary data here.
ODD_USERS = ["o'brien; DROP TABLE events;--", 'say "hi"', "zoë", "a b", "tenant/42"]
TOKEN = re.compile(r"hw_ct_[A-Za-z0-9_-]+")
WAIT_SECONDS = 5.0


# -- the project, its data and what it should hold --------------------------------


@dataclass(frozen=True)
class Api:
    """The running server, its consumers' tokens and the rows it should serve."""

    project: Project
    server: Server
    reader: str
    """May read user_scores, daily_active_users, events, and two names that are no dataset."""
    other: str
    """May read failed_events only."""
    sent: list[Row]
    """The accepted events as stored: message_id, user_id, anonymous_id, timestamp, plan, score."""
    scores: list[Row]
    dau: list[Row]
    failed_id: str
    http: httpx.Client
    """One keep-alive connection for the many small reads."""

    def get(
        self, path: str, token: str | None = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.http.get(path, params=params, headers=headers)

    def rows(self, dataset: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self.get(f"/api/v1/datasets/{dataset}/rows", self.reader, params)

    def count(self, table: str) -> int:
        result = self.project.query(f'SELECT count(*) AS n FROM "{table}"').to_pylist()
        return int(result[0]["n"])


def _set_key(project: Project, table: str, key: str, value: object) -> None:
    """Replace ``key`` in ``[table]`` of headwater.toml (the table exists from init)."""
    path = project.root / "headwater.toml"
    text = path.read_text()
    pattern = re.compile(rf"(^\[{re.escape(table)}\]\n(?:(?!\[).*\n)*?){key} = [^\s#]+", re.M)
    replaced, count = pattern.subn(rf"\g<1>{key} = {json.dumps(value)}", text)
    assert count == 1, f"expected one {key} in [{table}] of:\n{text}"
    path.write_text(replaced)


def _add_consumer(project: Project, name: str, datasets: str) -> tuple[str, str]:
    """``headwater consumers add``: the token it printed, and everything it printed."""
    result = project.cli("consumers", "add", name, "--datasets", datasets)
    found = TOKEN.findall(result.stdout + result.stderr)
    assert len(found) == 1, result.stdout
    return found[0], result.stdout + result.stderr


def _make_events(today: datetime) -> list[Row]:
    """Events over three past days, with tied timestamps, missing plans and scores."""
    rng = random.Random(20261125)
    base = today - timedelta(days=4)
    users = [f"u{n:02d}" for n in range(20)] + ODD_USERS
    events: list[Row] = []
    for index, user in enumerate(users):
        plans = rng.choice([["free"], ["pro"], ["team"], ["free", "pro"], [None]])
        for _ in range(rng.randint(1, 4)):
            score = rng.choice([None, rng.randint(-9, 40)]) if index % 3 else None
            if user in ("u01", "u02"):  # best scores below zero
                score = rng.randint(-9, -1)
            events.append(
                {
                    "user_id": user,
                    "anonymous_id": None,
                    # Few distinct hours, so first_seen and timestamp have ties.
                    "timestamp": base + timedelta(hours=rng.randrange(0, 72, 6)),
                    "plan": rng.choice(plans),
                    "score": score,
                }
            )
    for n in range(5):
        events.append(
            {
                "user_id": None,
                "anonymous_id": f"anon-{n}",
                "timestamp": base + timedelta(hours=6 * n),
                "plan": None,
                "score": None,
            }
        )
    for n, event in enumerate(events):
        event["message_id"] = f"m-{n:03d}"
    return events


def _payload(event: Row) -> dict[str, Any]:
    properties = {name: event[name] for name in ("plan", "score") if event[name] is not None}
    body: dict[str, Any] = {
        "type": "track",
        "event": "Played",
        "messageId": event["message_id"],
        "timestamp": event["timestamp"].isoformat(),
        "properties": properties,
    }
    if event["user_id"] is not None:
        body["userId"] = event["user_id"]
    else:
        body["anonymousId"] = event["anonymous_id"]
    return body


def _expected_scores(events: list[Row]) -> list[Row]:
    by_user: dict[str, list[Row]] = defaultdict(list)
    for event in events:
        if event["user_id"] is not None:
            by_user[event["user_id"]].append(event)
    rows = []
    for user, mine in by_user.items():
        plans = [e["plan"] for e in mine if e["plan"] is not None]
        scores = [e["score"] for e in mine if e["score"] is not None]
        rows.append(
            {
                "user_id": user,
                "events": len(mine),
                "plan": max(plans) if plans else None,
                "score": max(scores) if scores else None,
                "first_seen": min(e["timestamp"] for e in mine),
            }
        )
    return sorted(rows, key=lambda r: r["user_id"])


def _expected_dau(events: list[Row]) -> list[Row]:
    groups: dict[tuple[datetime, str], list[Row]] = defaultdict(list)
    for event in events:
        day = event["timestamp"].replace(hour=0, minute=0, second=0, microsecond=0)
        groups[(day, event["plan"] or "unknown")].append(event)
    return [
        {
            "day": day,
            "plan": plan,
            "active_users": len({e["user_id"] or e["anonymous_id"] for e in group}),
            "events": len(group),
        }
        for (day, plan), group in groups.items()
    ]


@pytest.fixture(scope="module")
def api(shared_project: Project) -> Iterator[Api]:
    project = shared_project
    # One scheduler pass at start (on an empty store), then none while the tests read.
    _set_key(project, "pipelines", "tick_seconds", 3600)
    # daily_active_users stands for a dataset without a declared key here.
    dau_file = project.root / "pipelines" / f"{DAU}.sql"
    dau_file.write_text(
        "\n".join(
            line for line in dau_file.read_text().splitlines() if not line.startswith("key =")
        )
    )
    server = Server(project).start()
    http = server.client()
    try:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        sent = _make_events(today)
        batch = [_payload(e) for e in sent]
        invalid = {"type": "track", "event": "No One", "messageId": "bad-1"}  # no user id
        answer = server.post("/v1/batch", auth=(project.key, ""), json={"batch": [*batch, invalid]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == len(sent)
        assert len(answer.json()["rejected"]) == 1

        (project.root / "pipelines" / f"{USER_SCORES}.sql").write_text(SCORES_SQL)
        ran = project.cli("run", USER_SCORES)
        assert "Ran 1 interval" in ran.stdout, ran.stdout + ran.stderr
        start, end = (today - timedelta(days=6)).date(), today.date()
        project.cli("backfill", DAU, "--start", start.isoformat(), "--end", end.isoformat())

        reader, _ = _add_consumer(
            project, "reader", f"{USER_SCORES},{DAU},events,ghost,message_ids"
        )
        other, _ = _add_consumer(project, "other", "failed_events")
        failed = project.query("SELECT id FROM failed_events").to_pylist()
        assert len(failed) == 1
        api = Api(
            project=project,
            server=server,
            reader=reader,
            other=other,
            sent=sent,
            scores=_expected_scores(sent),
            dau=_expected_dau(sent),
            failed_id=failed[0]["id"],
            http=http,
        )
        for token in (reader, other):
            assert _wait_for_token(api, token).status_code == 200
        # What the ordering tests need: NULLs and ties in the columns they order by.
        for column in ("plan", "score"):
            assert any(r[column] is None for r in api.scores)
        for column in ("events", "first_seen", "plan"):
            values = [r[column] for r in api.scores]
            assert len(set(values)) < len(values)
        yield api
    finally:
        http.close()
        server.stop()


def _wait_for_token(api: Api, token: str) -> httpx.Response:
    """The server reads new consumers from headwater.toml at most once a second."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        response = api.get("/api/v1/datasets", token)
        if response.status_code != 401 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


# -- decoding answers and computing expected pages ---------------------------------


def _decode(row: Row) -> Row:
    """A JSON row with its timestamps as datetimes."""
    return {
        name: datetime.fromisoformat(value)
        if name in TIME_COLUMNS and isinstance(value, str)
        else value
        for name, value in row.items()
    }


def _json_rows(response: httpx.Response) -> list[Row]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return [_decode(row) for row in response.json()["rows"]]


def _ordering(order_by: str | None, tail: list[str]) -> Order:
    """What the API documents: the requested columns, then the key (or every column)."""
    order = [
        (item.lstrip("-"), item.startswith("-")) for item in (order_by or "").split(",") if item
    ]
    named = {column for column, _ in order}
    return order + [(column, False) for column in tail if column not in named]


def _sorted(rows: list[Row], order: Order) -> list[Row]:
    """``rows`` in ``order``; NULLs last in both directions."""

    def compare(a: Row, b: Row) -> int:
        for column, desc in order:
            x, y = a[column], b[column]
            if x == y:
                continue
            if x is None:
                return 1
            if y is None:
                return -1
            result = -1 if x < y else 1
            return -result if desc else result
        return 0

    return sorted(rows, key=cmp_to_key(compare))


def _walk(
    api: Api,
    dataset: str,
    limit: int,
    read: Callable[[httpx.Response], tuple[list[Row], str | None]],
    params: dict[str, Any] | None = None,
) -> list[list[Row]]:
    """Every page of ``dataset``, following the cursor; bounded."""
    pages: list[list[Row]] = []
    cursor: str | None = None
    for _ in range(500):
        query = {**(params or {}), "limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        rows, cursor = read(api.rows(dataset, query))
        pages.append(rows)
        if cursor is None:
            return pages
    raise AssertionError(f"more than 500 pages of {dataset}: the cursor does not advance")


def _read_json(response: httpx.Response) -> tuple[list[Row], str | None]:
    rows = _json_rows(response)
    cursor = response.json()["next_cursor"]
    assert response.headers.get("x-next-cursor") == cursor
    return rows, cursor


def _read_csv(response: httpx.Response) -> tuple[list[Row], str | None]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return _parse_scores_csv(response.text), response.headers.get("x-next-cursor")


def _read_arrow(response: httpx.Response) -> tuple[list[Row], str | None]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(response.content).read_all()
    assert [(f.name, str(f.type)) for f in table.schema] == SCORES_COLUMNS
    return table.to_pylist(), response.headers.get("x-next-cursor")


def _parse_scores_csv(text: str) -> list[Row]:
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == [name for name, _ in SCORES_COLUMNS]
    rows = []
    for user_id, events, plan, score, first_seen in lines[1:]:
        rows.append(
            {
                "user_id": user_id,
                "events": int(events),
                "plan": plan or None,
                "score": int(score) if score else None,
                "first_seen": datetime.fromisoformat(first_seen),
            }
        )
    return rows


def _error(response: httpx.Response, status: int) -> str:
    """The error message of a refused request, after checking its status and shape."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    return str(error["message"])


# -- consumers and tokens ----------------------------------------------------------


def test_consumers_add_prints_the_token_once_and_stores_only_its_hash(api: Api) -> None:
    token, printed = _add_consumer(api.project, "late", USER_SCORES)
    assert printed.count(token) == 1
    config = (api.project.root / "headwater.toml").read_text()
    assert token not in config
    stored = tomllib.loads(config)["consumers"]["late"]
    assert stored == {
        "token": "sha256:" + hashlib.sha256(token.encode()).hexdigest(),
        "datasets": [USER_SCORES],
    }
    listed = api.project.cli("consumers", "list").stdout
    assert "late" in listed
    assert token not in listed
    # The server, started before the consumer existed, takes the token without a restart.
    response = _wait_for_token(api, token)
    assert response.status_code == 200, response.text
    assert [d["name"] for d in response.json()["datasets"]] == [USER_SCORES]
    rows = _json_rows(api.get(f"/api/v1/datasets/{USER_SCORES}/rows", token))
    assert rows == api.scores
    # Nothing under the project folder (store, metadata, log) holds the token itself.
    for path in api.project.root.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer hw_ct_not-a-token-anyone-was-given",
        "WRITE_KEY",
        "Basic CONSUMER",
        "Token CONSUMER",
        "CONSUMER",
    ],
    ids=[
        "none",
        "empty",
        "scheme-only",
        "wrong-token",
        "write-key-as-bearer",
        "token-as-basic",
        "other-scheme",
        "no-scheme",
    ],
)
def test_requests_without_a_valid_token_are_401(api: Api, authorization: str | None) -> None:
    headers: dict[str, str] = {}
    if authorization is not None:
        value = authorization.replace("WRITE_KEY", f"Bearer {api.project.key}")
        basic = base64.b64encode(f"{api.reader}:".encode()).decode()
        value = value.replace("Basic CONSUMER", f"Basic {basic}")
        headers["Authorization"] = value.replace("CONSUMER", api.reader)
    paths = [
        "/api/v1/datasets",
        f"/api/v1/datasets/{USER_SCORES}/rows",
        f"/api/v1/datasets/{USER_SCORES}/rows/u01",
        "/api/v1/datasets/no_such_dataset/rows",
    ]
    for path in paths:
        response = api.http.get(path, headers=headers)
        _error(response, 401)
        assert "rows" not in response.json()


def test_a_consumer_token_writes_nothing_to_the_collector(api: Api) -> None:
    before = api.count("events")
    event = {"userId": "intruder", "event": "Wrote", "messageId": "intruder-1"}
    attempts = [
        ("/v1/track", {"auth": (api.reader, "")}, event),
        ("/v1/track", {}, {**event, "writeKey": api.reader}),
        ("/v1/batch", {"auth": (api.reader, "")}, {"batch": [{**event, "type": "track"}]}),
        ("/v1/batch", {}, {"batch": [{**event, "type": "track"}], "writeKey": api.other}),
    ]
    for path, auth, body in attempts:
        response = api.server.post(path, json=body, **auth)
        assert response.status_code == 401, (path, response.text)
    assert api.count("events") == before
    assert api.project.query(
        "SELECT count(*) AS n FROM events WHERE user_id = ?", "intruder"
    ).to_pylist() == [{"n": 0}]


def test_the_bearer_scheme_is_case_insensitive(api: Api) -> None:
    response = api.http.get("/api/v1/datasets", headers={"Authorization": f"bearer {api.reader}"})
    assert response.status_code == 200, response.text


# -- datasets: listing and grants ----------------------------------------------------


def test_listing_shows_only_granted_datasets_with_key_and_column_types(api: Api) -> None:
    response = api.get("/api/v1/datasets", api.reader)
    assert response.status_code == 200, response.text
    listed = {d["name"]: d for d in response.json()["datasets"]}
    # "ghost" is granted but does not exist; message_ids is internal, never a dataset.
    assert list(listed) == [DAU, "events", USER_SCORES]
    assert listed[USER_SCORES]["key"] == ["user_id"]
    assert [(c["name"], c["type"]) for c in listed[USER_SCORES]["columns"]] == SCORES_COLUMNS
    assert listed[DAU]["key"] == []
    assert [(c["name"], c["type"]) for c in listed[DAU]["columns"]] == DAU_COLUMNS
    assert listed["events"]["key"] == ["source", "message_id"]
    assert [(c["name"], c["type"]) for c in listed["events"]["columns"]] == [
        (f.name, str(f.type)) for f in event_schema.EVENTS
    ]

    other = api.get("/api/v1/datasets", api.other)
    assert other.status_code == 200, other.text
    assert [(d["name"], d["key"]) for d in other.json()["datasets"]] == [("failed_events", ["id"])]
    columns = [(c["name"], c["type"]) for c in other.json()["datasets"][0]["columns"]]
    assert columns == [(f.name, str(f.type)) for f in event_schema.FAILED_EVENTS]


@pytest.mark.parametrize(
    ("who", "dataset"),
    [("reader", "failed_events"), ("other", USER_SCORES), ("other", "events"), ("other", DAU)],
)
def test_a_dataset_that_exists_but_is_not_granted_is_403(api: Api, who: str, dataset: str) -> None:
    token = api.reader if who == "reader" else api.other
    for path in (f"/api/v1/datasets/{dataset}/rows", f"/api/v1/datasets/{dataset}/rows/x"):
        response = api.get(path, token)
        assert dataset in _error(response, 403)
        assert "rows" not in response.json()


@pytest.mark.parametrize("dataset", ["ghost", "message_ids"])
def test_a_granted_name_that_is_no_dataset_is_404(api: Api, dataset: str) -> None:
    # Both are granted to the reader: a grant does not make a dataset.
    for path in (f"/api/v1/datasets/{dataset}/rows", f"/api/v1/datasets/{dataset}/rows/u01"):
        _error(api.get(path, api.reader), 404)


@pytest.mark.parametrize(
    "dataset", ["no_such_dataset", "EVENTS", "failed_events", "hourly_event_counts"]
)
def test_a_name_not_granted_is_403_whether_it_exists_ran_or_not(api: Api, dataset: str) -> None:
    # Names cannot be probed: an unknown name, a dataset that exists, and one declared but
    # not computed yet (hourly_event_counts: the scheduler has not run since events came),
    # all answer as one that exists and ran.
    for suffix in ("rows", "rows/u01"):
        response = api.get(f"/api/v1/datasets/{dataset}/{suffix}", api.reader)
        known = api.get(f"/api/v1/datasets/failed_events/{suffix}", api.reader)
        assert response.status_code == known.status_code == 403
        assert response.json() == {
            "error": {
                "code": "not_granted",
                "message": known.json()["error"]["message"].replace("failed_events", dataset),
            }
        }


# -- filters -----------------------------------------------------------------------


def _hours(n: int) -> timedelta:
    return timedelta(hours=n)


#: (id, query, which rows it keeps); "T0" is the earliest first_seen, "T0+12h" after it.
FILTERS: list[tuple[str, dict[str, str], Callable[[Row, datetime], bool]]] = [
    ("int-eq", {"events": "2"}, lambda r, t: r["events"] == 2),
    ("int-in", {"events__in": "1,3"}, lambda r, t: r["events"] in (1, 3)),
    ("int-gt", {"events__gt": "2"}, lambda r, t: r["events"] > 2),
    ("int-gte", {"events__gte": "2"}, lambda r, t: r["events"] >= 2),
    ("int-lt", {"events__lt": "2"}, lambda r, t: r["events"] < 2),
    ("int-lte", {"events__lte": "3"}, lambda r, t: r["events"] <= 3),
    (
        "int-nulls",
        {"score__gte": "0", "score__lt": "20"},
        lambda r, t: r["score"] is not None and 0 <= r["score"] < 20,
    ),
    ("negative-int", {"score__lt": "0"}, lambda r, t: r["score"] is not None and r["score"] < 0),
    ("str-eq", {"plan": "pro"}, lambda r, t: r["plan"] == "pro"),
    ("str-in", {"plan__in": "free,team"}, lambda r, t: r["plan"] in ("free", "team")),
    ("str-gt", {"plan__gt": "free"}, lambda r, t: r["plan"] is not None and r["plan"] > "free"),
    ("str-gte", {"user_id__gte": "u10"}, lambda r, t: r["user_id"] >= "u10"),
    ("str-lt", {"user_id__lt": "u05"}, lambda r, t: r["user_id"] < "u05"),
    ("str-lte", {"user_id__lte": "u05"}, lambda r, t: r["user_id"] <= "u05"),
    ("str-odd", {"user_id": ODD_USERS[0]}, lambda r, t: r["user_id"] == ODD_USERS[0]),
    (
        "str-unicode",
        {"user_id__in": "zoë,a b,u03"},
        lambda r, t: r["user_id"] in ("zoë", "a b", "u03"),
    ),
    ("str-no-match", {"plan": "enterprise"}, lambda r, t: False),
    ("ts-eq", {"first_seen": "T0"}, lambda r, t: r["first_seen"] == t),
    ("ts-in", {"first_seen__in": "T0,T0+6h"}, lambda r, t: r["first_seen"] in (t, t + _hours(6))),
    ("ts-gt", {"first_seen__gt": "T0+12h"}, lambda r, t: r["first_seen"] > t + _hours(12)),
    ("ts-gte", {"first_seen__gte": "T0+12h"}, lambda r, t: r["first_seen"] >= t + _hours(12)),
    ("ts-lt", {"first_seen__lt": "T0+12h"}, lambda r, t: r["first_seen"] < t + _hours(12)),
    ("ts-lte", {"first_seen__lte": "T0+12h"}, lambda r, t: r["first_seen"] <= t + _hours(12)),
    # The same instant written with another offset, and without one (read as UTC).
    (
        "ts-offset",
        {"first_seen__lt": "T0+12h@+02:00"},
        lambda r, t: r["first_seen"] < t + _hours(12),
    ),
    ("ts-naive", {"first_seen__gte": "T0+6h@naive"}, lambda r, t: r["first_seen"] >= t + _hours(6)),
    (
        "combined",
        {"plan__in": "free,pro", "events__gte": "2", "first_seen__lt": "T0+48h"},
        lambda r, t: (
            r["plan"] in ("free", "pro") and r["events"] >= 2 and r["first_seen"] < t + _hours(48)
        ),
    ),
]


def _time_text(text: str, t0: datetime) -> str:
    """``T0``, ``T0+6h``, ``T0+6h@+02:00`` (same instant, other offset), ``T0@naive``."""
    parts = []
    for item in text.split(","):
        moment_text, _, zone = item.partition("@")
        hours = int(moment_text[3:-1]) if "+" in moment_text else 0
        moment = t0 + timedelta(hours=hours)
        if zone == "naive":
            parts.append(moment.replace(tzinfo=None).isoformat())
        elif zone:
            sign = 1 if zone[0] == "+" else -1
            offset = timedelta(hours=sign * int(zone[1:3]))
            parts.append(moment.astimezone(timezone(offset)).isoformat())
        else:
            parts.append(moment.isoformat().replace("+00:00", "Z"))
    return ",".join(parts)


@pytest.mark.parametrize(("name", "params", "keep"), FILTERS, ids=[f[0] for f in FILTERS])
def test_filters_give_exactly_the_rows_computed_in_python(
    api: Api, name: str, params: dict[str, str], keep: Callable[[Row, datetime], bool]
) -> None:
    t0 = min(row["first_seen"] for row in api.scores)
    query = {
        column: _time_text(value, t0) if value.startswith("T0") else value
        for column, value in params.items()
    }
    expected = [row for row in api.scores if keep(row, t0)]
    assert _json_rows(api.rows(USER_SCORES, {**query, "limit": 1000})) == expected
    # Each filter keeps some rows and drops others, so a filter ignored would show.
    assert len(expected) < len(api.scores)
    assert expected or name == "str-no-match"


def test_filters_on_the_event_table_and_a_keyless_dataset(api: Api) -> None:
    t0 = min(e["timestamp"] for e in api.sent)
    lower, upper = t0 + timedelta(hours=12), t0 + timedelta(hours=36)
    response = api.rows(
        "events",
        {
            "timestamp__gte": lower.isoformat(),
            "timestamp__lt": upper.isoformat(),
            "user_id__in": "u01,u02,u03,u04,u05,u06,u07,u08,zoë",
            "limit": 1000,
        },
    )
    expected = sorted(
        e["message_id"]
        for e in api.sent
        if lower <= e["timestamp"] < upper
        and e["user_id"] in {"u01", "u02", "u03", "u04", "u05", "u06", "u07", "u08", "zoë"}
    )
    rows = _json_rows(response)
    assert [r["message_id"] for r in rows] == expected  # ordered by the key (source, message_id)
    assert expected

    day = min(r["day"] for r in api.dau)
    rows = _json_rows(api.rows(DAU, {"day": day.isoformat(), "plan__in": "pro,unknown"}))
    wanted = [r for r in api.dau if r["day"] == day and r["plan"] in ("pro", "unknown")]
    assert rows == _sorted(wanted, _ordering(None, [name for name, _ in DAU_COLUMNS]))
    assert rows


@pytest.mark.parametrize(
    ("params", "column", "kind"),
    [
        ({"events": "two"}, "events", "int64"),
        ({"events": "1.5"}, "events", "int64"),
        ({"events__in": "1,x"}, "events", "int64"),
        ({"score__gt": ""}, "score", "int64"),
        ({"events__lt": "99999999999999999999999999999999999999999"}, "events", "int64"),
        ({"first_seen": "yesterday"}, "first_seen", "timestamp"),
        ({"first_seen__gte": "2026-13-01"}, "first_seen", "timestamp"),
        ({"first_seen__lt": "2026-11-01T25:00:00Z"}, "first_seen", "timestamp"),
        # Cut to the microsecond, the bound would take a row just before it.
        ({"first_seen__gte": "2026-11-01T00:00:00.9995069Z"}, "first_seen", "microsecond"),
    ],
    ids=["word", "float", "in-list", "empty", "beyond-int64", "word-ts", "month-13", "hour-25",
         "nanoseconds"],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_400_naming_column_and_type(
    api: Api, params: dict[str, str], column: str, kind: str
) -> None:
    message = _error(api.rows(USER_SCORES, params), 400)
    assert column in message
    assert kind in message


def test_filter_values_are_taken_exactly_as_the_column_holds_them() -> None:
    """A decimal bound is a decimal (a float would round it), never NaN or infinite; a time
    with zeros past the microsecond is that microsecond."""
    columns = pa.schema([("revenue", pa.decimal128(38, 9)), ("at", pa.timestamp("us", "UTC"))])
    dataset = Dataset("d", (), columns, cast(Reader, None))
    assert parse_value(dataset, "revenue", "0.100000001") == Decimal("0.100000001")
    assert parse_value(dataset, "revenue", "12345678901234567890.5") == Decimal(
        "12345678901234567890.5"
    )
    for text in ("NaN", "inf", "-Infinity", "1e", "one"):
        with pytest.raises(ApiError) as refused:
            parse_value(dataset, "revenue", text)
        assert refused.value.status == 400
        assert "revenue" in str(refused.value)
    assert parse_value(dataset, "at", "2026-11-01T00:00:00.123456000Z") == datetime(
        2026, 11, 1, 0, 0, 0, 123456, tzinfo=UTC
    )


def test_an_unknown_column_is_400_naming_the_allowed_columns(api: Api) -> None:
    for params in (
        {"nope": "1"},
        {"nope__gt": "1"},
        {"order_by": "nope"},
        {"Events": "1"},
        {"order_by": "--events"},
    ):
        message = _error(api.rows(USER_SCORES, params), 400)
        assert "nope" in message or "Events" in message or "-events" in message
        for name, _ in SCORES_COLUMNS:
            assert name in message


def test_a_filter_given_twice_is_400_not_its_last_value(api: Api) -> None:
    for query in ("plan=pro&plan=free", "plan__in=pro&plan__in=free", "limit=1&limit=2"):
        response = api.get(f"/api/v1/datasets/{USER_SCORES}/rows?{query}", api.reader)
        message = _error(response, 400)
        assert "more than once" in message
        assert query.split("=")[0] in message
        assert ("__in=" in message) == (not query.startswith("limit")), message


def test_a_json_column_of_the_events_and_a_nul_character_are_refused_by_name(api: Api) -> None:
    # Each store compares JSON in its own way, and PostgreSQL refuses NUL in text: the
    # answer must not depend on where a dataset is served from.
    for params in ({"properties": "x"}, {"context__in": "a,b"}, {"traits__gt": "{}"}):
        message = _error(api.rows("events", params), 400)
        column = next(iter(params)).partition("__")[0]
        assert f"{column} holds JSON" in message
        assert "JSON_VALUE" in message
    for params in ({"plan": "pro\x00"}, {"user_id__in": "u01,\x00"}):
        message = _error(api.rows(USER_SCORES, params), 400)
        assert "NUL" in message
        assert next(iter(params)).partition("__")[0] in message
    lookup = api.get(f"/api/v1/datasets/{USER_SCORES}/rows/u01%00", api.reader)
    assert "NUL" in _error(lookup, 400)


@pytest.mark.parametrize(
    "name", ["events__like", "events__ne", "events__gt__lt", "plan__IN", "plan__regex"]
)
def test_an_unknown_operator_is_400(api: Api, name: str) -> None:
    assert name in _error(api.rows(USER_SCORES, {name: "1"}), 400)


# -- ordering and pages --------------------------------------------------------------

SCORE_ORDERS = [
    None,
    "user_id",
    "-user_id",
    "events",
    "-events",
    "plan",
    "-plan",
    "score",
    "-score",
    "first_seen",
    "-first_seen",
    "plan,-score",
    "-events,first_seen",
    "-score,-plan,events",
]


@pytest.mark.parametrize("order_by", SCORE_ORDERS)
def test_walking_all_pages_returns_every_row_once_in_order(api: Api, order_by: str | None) -> None:
    expected = _sorted(api.scores, _ordering(order_by, ["user_id"]))
    params = {"order_by": order_by} if order_by else {}
    for limit in (1, 3, 7):
        pages = _walk(api, USER_SCORES, limit, _read_json, params)
        assert [row for page in pages for row in page] == expected, (order_by, limit)
        assert all(len(page) == limit for page in pages[:-1])
        assert 1 <= len(pages[-1]) <= limit
    # One page that holds everything: no cursor.
    assert _read_json(api.rows(USER_SCORES, {**params, "limit": 1000})) == (expected, None)


def test_pages_of_a_filtered_ordering(api: Api) -> None:
    params = {"plan__in": "free,pro,team", "order_by": "-score"}
    wanted = [r for r in api.scores if r["plan"] in ("free", "pro", "team")]
    pages = _walk(api, USER_SCORES, 2, _read_json, params)
    assert [row for page in pages for row in page] == _sorted(
        wanted, _ordering("-score", ["user_id"])
    )


@pytest.mark.parametrize("order_by", [None, "-events", "plan", "-day,-active_users"])
def test_pages_of_a_dataset_without_a_key(api: Api, order_by: str | None) -> None:
    columns = [name for name, _ in DAU_COLUMNS]
    params = {"order_by": order_by} if order_by else {}
    pages = _walk(api, DAU, 2, _read_json, params)
    assert [row for page in pages for row in page] == _sorted(api.dau, _ordering(order_by, columns))


def test_pages_of_the_event_table_by_time_with_ties(api: Api) -> None:
    pages = _walk(api, "events", 9, _read_json, {"order_by": "-timestamp"})
    got = [(r["timestamp"], r["message_id"]) for page in pages for r in page]
    expected = [
        (e["timestamp"], e["message_id"])
        for e in _sorted(api.sent, [("timestamp", True), ("message_id", False)])
    ]
    assert got == expected
    assert len({t for t, _ in got}) < len(got)  # there were ties to break


def _cursor(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("order_by", "cursor"),
    [
        (None, "not a cursor"),
        (None, "!!!!"),
        (None, _cursor({"user_id": "u01"})),
        (None, _cursor(["u01", "extra"])),
        (None, _cursor([])),
        (None, base64.urlsafe_b64encode(b"\xff\xfe[1]").decode()),
        ("events", _cursor(["many", "u01"])),
        ("events", _cursor([1.5, "u01"])),
        ("events", _cursor([10**40, "u01"])),
        ("first_seen", _cursor(["not a time", "u01"])),
        ("first_seen", _cursor([[1, 2], "u01"])),
        # Nested past any decoder's recursion: refused, not a 500.
        (None, base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode()),
    ],
    ids=[
        "text",
        "punctuation",
        "object",
        "too-long",
        "empty",
        "binary",
        "word-for-int",
        "float-for-int",
        "beyond-int64",
        "word-for-time",
        "list-for-time",
        "nested-5000-deep",
    ],
)
def test_a_tampered_cursor_is_400(api: Api, order_by: str | None, cursor: str) -> None:
    params = {"cursor": cursor, **({"order_by": order_by} if order_by else {})}
    _error(api.rows(USER_SCORES, params), 400)


def test_a_cursor_sent_with_another_order_by_is_a_bad_cursor(api: Api) -> None:
    """A cursor is the last row in the ordering it was read in: in another one (even of
    columns of the same types) it would skip or repeat rows."""
    first = api.rows(USER_SCORES, {"order_by": "events", "limit": 2})
    cursor = first.json()["next_cursor"]
    assert cursor
    for order_by in ("-events", "score", None):
        params = {"cursor": cursor, **({"order_by": order_by} if order_by else {})}
        response = api.rows(USER_SCORES, params)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "bad_cursor"
        assert "order_by" in response.json()["error"]["message"]
    again = api.rows(USER_SCORES, {"order_by": "events", "limit": 2, "cursor": cursor})
    assert again.status_code == 200, again.text


def test_a_cursor_edited_to_skip_ahead_still_reads_only_real_rows(api: Api) -> None:
    # A well-formed cursor that the API did not give is just a position.
    rows = _json_rows(api.rows(USER_SCORES, {"cursor": _cursor(["u10"]), "limit": 1000}))
    assert rows == [r for r in api.scores if r["user_id"] > "u10"]


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "100000", "abc", "1.5", ""])
def test_a_limit_outside_1_to_max_page_size_is_400(api: Api, limit: str) -> None:
    response = api.rows(USER_SCORES, {"limit": limit})
    assert "1 to 1000" in _error(response, 400)
    assert response.json()["error"]["code"] == "bad_limit"  # one code, however it is wrong


def test_the_largest_page_and_the_default_page(api: Api) -> None:
    assert _read_json(api.rows(USER_SCORES, {"limit": "1000"})) == (api.scores, None)
    assert _read_json(api.rows(USER_SCORES)) == (api.scores, None)  # default 100 > rows


# -- formats -------------------------------------------------------------------------


def test_csv_parses_back_to_the_rows_and_pages_by_header(api: Api) -> None:
    response = api.rows(USER_SCORES, {"format": "csv", "limit": 1000})
    rows, cursor = _read_csv(response)
    assert rows == api.scores
    assert cursor is None
    pages = _walk(api, USER_SCORES, 4, _read_csv, {"format": "csv", "order_by": "-score"})
    assert [row for page in pages for row in page] == _sorted(
        api.scores, _ordering("-score", ["user_id"])
    )
    assert len(pages) == -(-len(api.scores) // 4)


def test_arrow_reads_back_with_its_schema_and_pages_by_header(api: Api) -> None:
    rows, cursor = _read_arrow(api.rows(USER_SCORES, {"format": "arrow", "limit": 1000}))
    assert rows == api.scores
    assert cursor is None
    pages = _walk(api, USER_SCORES, 5, _read_arrow, {"format": "arrow", "order_by": "plan"})
    assert [row for page in pages for row in page] == _sorted(
        api.scores, _ordering("plan", ["user_id"])
    )
    assert len(pages) > 1


def test_an_unknown_format_is_400(api: Api) -> None:
    _error(api.rows(USER_SCORES, {"format": "xml"}), 400)


def test_a_method_or_path_the_api_lacks_is_answered_in_its_error_shape(api: Api) -> None:
    headers = {"Authorization": f"Bearer {api.reader}"}
    posted = api.http.post("/api/v1/datasets", headers=headers)
    assert "POST /api/v1/datasets" in _error(posted, 405)
    assert posted.headers["allow"] == "GET"
    assert posted.json()["error"]["code"] == "method_not_allowed"
    assert "/api/v1/nowhere" in _error(api.get("/api/v1/nowhere", api.reader), 404)


# -- lookup by key -------------------------------------------------------------------


@pytest.mark.parametrize("user", ["u00", "u13", *ODD_USERS])
def test_lookup_by_key_returns_the_row(api: Api, user: str) -> None:
    expected = next(r for r in api.scores if r["user_id"] == user)
    path = f"/api/v1/datasets/{USER_SCORES}/rows/{quote(user, safe='')}"
    response = api.get(path, api.reader)
    assert response.status_code == 200, response.text
    assert _decode(response.json()["row"]) == expected
    arrow = api.get(path, api.reader, {"format": "arrow"})
    assert pa.ipc.open_stream(arrow.content).read_all().to_pylist() == [expected]
    assert _parse_scores_csv(api.get(path, api.reader, {"format": "csv"}).text) == [expected]


def test_lookup_in_another_consumers_dataset_by_its_key(api: Api) -> None:
    path = f"/api/v1/datasets/failed_events/rows/{api.failed_id}"
    response = api.get(path, api.other)
    assert response.status_code == 200, response.text
    assert response.json()["row"]["id"] == api.failed_id
    assert response.json()["row"]["code"]


@pytest.mark.parametrize("key", ["u99", "U01", "u01 ", "%", "tenant"])
def test_lookup_of_a_missing_key_is_404(api: Api, key: str) -> None:
    path = f"/api/v1/datasets/{USER_SCORES}/rows/{quote(key, safe='')}"
    assert key in _error(api.get(path, api.reader), 404)


@pytest.mark.parametrize("dataset", ["events", DAU])
def test_lookup_in_a_dataset_without_a_single_key_is_400(api: Api, dataset: str) -> None:
    response = api.get(f"/api/v1/datasets/{dataset}/rows/m-001", api.reader)
    assert dataset in _error(response, 400)


# -- SQL injection -------------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1",
    "1; DROP TABLE events; --",
    '" OR ""="',
    "user_id) OR (1=1",
    "'; DELETE FROM user_scores; --",
    "\\'; DROP TABLE user_scores; --",
    "1 UNION SELECT * FROM message_ids --",
    'events"; DROP TABLE events; --',
    "x' || (SELECT count(*) FROM events) || '",
    "\x00",
    ODD_USERS[0],
]


def test_sql_injection_is_refused_or_inert_and_changes_nothing(api: Api) -> None:
    tables = ["events", "failed_events", "message_ids", USER_SCORES, DAU]
    listing = "SELECT table_name FROM information_schema.tables ORDER BY table_name"
    names_before = api.project.query(listing).to_pylist()
    before = {table: api.count(table) for table in tables}
    seen: list[tuple[str, str, int]] = []
    for text in INJECTIONS:
        probes: list[tuple[str, str, dict[str, Any] | None]] = [
            ("str-value", f"/api/v1/datasets/{USER_SCORES}/rows", {"user_id": text}),
            ("in-value", f"/api/v1/datasets/{USER_SCORES}/rows", {"plan__in": f"pro,{text}"}),
            ("int-value", f"/api/v1/datasets/{USER_SCORES}/rows", {"events": text}),
            ("ts-value", f"/api/v1/datasets/{USER_SCORES}/rows", {"first_seen__gt": text}),
            ("column", f"/api/v1/datasets/{USER_SCORES}/rows", {text: "1"}),
            ("column-op", f"/api/v1/datasets/{USER_SCORES}/rows", {f"events__{text}": "1"}),
            ("order_by", f"/api/v1/datasets/{USER_SCORES}/rows", {"order_by": text}),
            ("order_by-2", f"/api/v1/datasets/{USER_SCORES}/rows", {"order_by": f"-{text}"}),
            ("cursor", f"/api/v1/datasets/{USER_SCORES}/rows", {"cursor": text}),
            ("cursor-b64", f"/api/v1/datasets/{USER_SCORES}/rows", {"cursor": _cursor([text])}),
            ("limit", f"/api/v1/datasets/{USER_SCORES}/rows", {"limit": text}),
            ("format", f"/api/v1/datasets/{USER_SCORES}/rows", {"format": text}),
            ("dataset", f"/api/v1/datasets/{quote(text, safe='')}/rows", None),
            ("key", f"/api/v1/datasets/{USER_SCORES}/rows/{quote(text, safe='')}", None),
        ]
        for where, path, params in probes:
            response = api.get(path, api.reader, params)
            seen.append((where, text, response.status_code))
            assert response.status_code < 500, (where, text, response.text)
            if where in ("str-value", "in-value", "cursor-b64") and response.status_code == 200:
                rows = _json_rows(response)
                if where == "str-value":  # a bound value matches only itself
                    assert rows == [r for r in api.scores if r["user_id"] == text]
                elif where == "in-value":
                    assert rows == [r for r in api.scores if r["plan"] == "pro"]
                else:
                    assert rows == [r for r in api.scores if r["user_id"] > text]
            elif where == "key" and text == ODD_USERS[0]:
                assert response.status_code == 200, response.text
            else:
                assert response.status_code in (400, 403, 404), (where, text, response.text)
    # The odd user id is data: equals finds its one row.
    assert ("str-value", ODD_USERS[0], 200) in seen
    after = {table: api.count(table) for table in tables}
    assert after == before
    assert api.project.query(listing).to_pylist() == names_before
    # The store still answers, with the same rows.
    assert _json_rows(api.rows(USER_SCORES, {"limit": 1000})) == api.scores
    assert len(_json_rows(api.rows("events", {"limit": 1000}))) == len(api.sent)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
@given(
    params=st.dictionaries(
        st.one_of(
            st.sampled_from(
                ["user_id", "events", "score", "plan", "first_seen", "order_by", "cursor"]
            ),
            st.builds(
                lambda c, o: f"{c}__{o}",
                st.sampled_from([n for n, _ in SCORES_COLUMNS]),
                st.sampled_from(["in", "gt", "gte", "lt", "lte", "eq", "x"]),
            ),
            st.text(min_size=1, max_size=12),
        ),
        st.text(max_size=20),
        max_size=4,
    )
)
def test_any_query_string_is_answered_without_a_server_error(
    api: Api, params: dict[str, str]
) -> None:
    response = api.rows(USER_SCORES, params)
    assert response.status_code in (200, 400), (params, response.text)
    if response.status_code == 200:
        rows = _json_rows(response)
        assert all(row in api.scores for row in rows)


# -- schemathesis against the served OpenAPI document ------------------------------
#
# The served document is only known once the server listens, so the schema comes
# from a fixture. schemathesis.pytest.from_fixture (the lazy loader) fails on this
# pytest ("'Function' object has no attribute '_nodeid'" in schemathesis/pytest/
# lazy.py), so the tests drive schemathesis' own Hypothesis strategy for every
# operation of the document (BaseSchema.as_strategy) with @given instead.


@pytest.fixture(scope="module")
def openapi_schema(api: Api) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api.server.url}/api/v1/openapi.json", timeout=10)


def _fuzz(
    openapi_schema: schemathesis.BaseSchema,
    mode: GenerationMode,
    check: Callable[[schemathesis.Case], None],
) -> set[str]:
    """Run ``check`` on 50 generated cases over the document's operations; which ran."""
    ran: list[schemathesis.Case] = []

    # Each example is a real HTTP request (two for named datasets), hence too_slow;
    # schemathesis' strategies filter generated values, hence filter_too_much.
    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=openapi_schema.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        ran.append(case)
        check(case)

    run()
    return {f"{case.method} {case.path}" for case in ran}


OPERATIONS = {
    "GET /api/v1/datasets",
    "GET /api/v1/datasets/{name}/rows",
    "GET /api/v1/datasets/{name}/rows/{key}",
}


MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
def test_schemathesis_with_a_token_finds_no_server_error(
    api: Api, openapi_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    headers = {"Authorization": f"Bearer {api.reader}"}
    statuses: set[int] = set()

    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=api.server.url, headers=headers, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])
        statuses.add(response.status_code)
        if "name" in (case.path_parameters or {}):
            # Generated names are almost never datasets; ask the same of a real one.
            case.path_parameters = {**case.path_parameters, "name": USER_SCORES}
            response = case.call(base_url=api.server.url, headers=headers, timeout=10)
            case.validate_response(response, checks=[not_a_server_error])
            statuses.add(response.status_code)

    ran = _fuzz(openapi_schema, mode, check)
    if mode == GenerationMode.POSITIVE:
        assert ran == OPERATIONS
        assert 200 in statuses  # the real dataset was read, not only refused
    else:
        # The listing has at most its security scheme to negate; the others their params.
        assert OPERATIONS - {"GET /api/v1/datasets"} <= ran <= OPERATIONS
        assert 400 in statuses
    assert all(status < 500 for status in statuses)


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
def test_schemathesis_without_a_token_is_always_401(
    api: Api, openapi_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    statuses: set[int] = set()

    def check(case: schemathesis.Case) -> None:
        # A generated Authorization header is kept: it is never a consumer's token.
        response = case.call(base_url=api.server.url, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])
        statuses.add(response.status_code)
        assert response.status_code == 401, (case.as_curl_command(), response.text)

    # Whatever else is wrong with a request, a caller without a token learns only that.
    ran = _fuzz(openapi_schema, mode, check)
    assert ran >= OPERATIONS - {"GET /api/v1/datasets"}
    assert statuses == {401}
