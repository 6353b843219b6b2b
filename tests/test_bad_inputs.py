"""Bad requests against a real ``headwater up``: each is refused with its status and code.

The contract (DESIGN.md "Collect", docs/events.md): a batch that parses is
answered 200 with the refused events listed; a single-event endpoint answers
400 with the same shape; a body that does not parse gets 400; oversize 413;
unknown key 401. An authenticated caller's refused events and bodies are kept
in ``failed_events``; a caller without a valid key leaves no trace. Whatever
comes in, the server keeps serving and no refused event reaches ``events``.

Each case carries a unique marker (its userId, or text in its body) so that
its rows can be found on the server shared by the whole module.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pytest

from headwater.runtime.client import ServerClient, find_server
from tests.conftest import Project, Server

Json = dict[str, Any]
Auth = Literal["basic", "none", "unknown", "bearer"]
JSON_TYPE = {"content-type": "application/json"}
UNKNOWN_KEY = "hw_wk_not-a-key-of-this-project"


# -- bodies ---------------------------------------------------------------------


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _track(marker: str, **extra: object) -> Json:
    return {"userId": marker, "event": "Bad Input Probe", **extra}


def _typed(marker: str, **extra: object) -> Json:
    return {"type": "track", **_track(marker), **extra}


def _good(marker: str) -> Json:
    """A valid batch event whose userId is ``<marker>-ok``."""
    return _typed(f"{marker}-ok")


def _batch(*events: Json | bytes, **envelope: object) -> bytes:
    """A batch body; events given as bytes are spliced in raw."""
    parts = [e if isinstance(e, bytes) else _dumps(e) for e in events]
    head = _dumps(envelope)[1:-1]
    return b'{"batch":[' + b",".join(parts) + b"]" + (b"," + head if head else b"") + b"}"


def _nested(depth: int) -> Json:
    """``properties`` with objects nested so that the event is ``depth`` levels deep."""
    inner: Json = {}
    for _ in range(depth - 2):  # the event is level 1, properties level 2
        inner = {"a": inner}
    return inner


def _deep_brackets(marker: str, levels: int) -> bytes:
    return (
        b'{"userId":"' + marker.encode() + b'","event":"e","type":"track","properties":{"x":'
        + b"[" * levels + b"]" * levels + b"}}"
    )  # fmt: skip


def _gzip_bomb(marker: str) -> bytes:
    # ~8 KB of gzip that inflates to 8 MB: a JSON prefix, then whitespace.
    return gzip.compress(
        b'{"context":{"m":"' + marker.encode() + b'"},"batch":[' + b" " * 8_000_000, 9
    )


# -- the table -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad request and what the server must answer and keep."""

    path: str
    body: Callable[[str], bytes]
    status: int
    code: str
    #: ``field`` of the rejection (and of its failed_events row)
    field: str | None = None
    #: "event": answered with ``rejected`` (batch 200, single event 400); "request": with ``error``
    shape: Literal["event", "request"] = "request"
    #: index of the refused event in ``rejected``
    index: int = 0
    #: events of the request that must be accepted (userId ``<marker>-ok``)
    accepted: int = 0
    auth: Auth = "basic"
    headers: dict[str, str] = dataclasses.field(default_factory=lambda: dict(JSON_TYPE))
    method: str = "POST"
    #: True: a failed_events row; False: no trace; None: not part of the contract
    stored: bool | None = True
    #: whether the stored payload carries the marker (False: the body was not read whole)
    payload_has_marker: bool = True
    #: an upper bound on the answer's time, in seconds
    within: float | None = None


CASES: dict[str, Case] = {
    # Bodies that do not parse.
    "malformed-json-track": Case(
        "/v1/track",
        lambda m: b'{"userId":"' + m.encode() + b'","event":',
        400, "malformed_json", shape="event",
    ),
    "malformed-json-batch": Case(
        "/v1/batch", lambda m: _batch(_typed(m))[:-3], 400, "malformed_json"
    ),
    "malformed-json-key-in-body": Case(
        "/v1/track",
        lambda m: b'{"writeKey":"x","userId":"' + m.encode() + b'",',
        400, "malformed_json", auth="none", stored=False,
    ),
    "nan-literal-track": Case(
        "/v1/track",
        lambda m: _dumps(_track(m))[:-1] + b',"properties":{"x":NaN}}',
        400, "malformed_json", shape="event",
    ),
    "nan-literal-batch": Case(
        "/v1/batch",
        lambda m: _batch(_dumps(_typed(m))[:-1] + b',"properties":{"x":NaN}}'),
        400, "malformed_json",
    ),
    "infinity-literal-track": Case(
        "/v1/track",
        lambda m: _dumps(_track(m))[:-1] + b',"properties":{"x":-Infinity}}',
        400, "malformed_json", shape="event",
    ),
    "number-out-of-range": Case(
        "/v1/track",
        lambda m: _dumps(_track(m))[:-1] + b',"properties":{"x":1e999}}',
        400, "invalid_value", "properties", shape="event",
    ),
    "invalid-utf8-track": Case(
        "/v1/track",
        lambda m: _dumps(_track(m))[:-1] + b',"properties":{"x":"caf\xe9 \xff"}}',
        400, "invalid_utf8", shape="event",
    ),
    "invalid-utf8-whole-batch": Case(
        "/v1/batch",
        lambda m: b'{"context":{"x":"\xfe\xff"},"batch":['
        + _dumps(_typed(m))[:-1] + b',"properties":{"x":"\xff"}}]}',
        400, "malformed_json",
    ),
    "invalid-utf8-one-event-of-batch": Case(
        "/v1/batch",
        lambda m: _batch(_good(m), _dumps(_typed(m))[:-1] + b',"properties":{"x":"\xc3\x28"}}'),
        200, "invalid_utf8", shape="event", index=1, accepted=1,
    ),
    # Wrong field types.
    "event-is-a-number": Case(
        "/v1/track", lambda m: _dumps(_track(m, event=5)), 400, "invalid_type", "event",
        shape="event",
    ),
    "userid-is-an-object": Case(
        "/v1/track",
        lambda m: _dumps({"userId": {}, "anonymousId": m, "event": "e"}),
        400, "invalid_type", "userId", shape="event",
    ),
    "userid-is-a-bool": Case(
        "/v1/identify",
        lambda m: _dumps({"userId": True, "anonymousId": m}),
        400, "invalid_type", "userId", shape="event",
    ),
    "properties-is-a-list": Case(
        "/v1/track", lambda m: _dumps(_track(m, properties=[1])), 400, "invalid_type",
        "properties", shape="event",
    ),
    "context-is-a-string": Case(
        "/v1/page", lambda m: _dumps({"userId": m, "context": "web"}), 400, "invalid_type",
        "context", shape="event",
    ),
    "message-id-is-a-number": Case(
        "/v1/track", lambda m: _dumps(_track(m, messageId=7)), 400, "invalid_type",
        "messageId", shape="event",
    ),
    "body-is-a-list": Case(
        "/v1/track", lambda m: _dumps([_track(m)]), 400, "invalid_type", shape="event"
    ),
    "wrong-type-in-batch": Case(
        "/v1/batch", lambda m: _batch(_good(m), _typed(m, event=5)), 200, "invalid_type",
        "event", shape="event", index=1, accepted=1,
    ),
    "batch-event-is-a-string": Case(
        "/v1/batch", lambda m: _batch(_good(m), _dumps(m)), 200, "invalid_type",
        shape="event", index=1, accepted=1,
    ),
    "batch-is-not-a-list": Case(
        "/v1/batch", lambda m: _dumps({"batch": {"userId": m}}), 400, "invalid_batch", "batch"
    ),
    # Segment rules.
    "missing-userid-and-anonymousid": Case(
        "/v1/track",
        lambda m: _dumps({"event": "e", "properties": {"m": m}}),
        400, "missing_identity", "userId", shape="event",
    ),
    "empty-userid-and-anonymousid": Case(
        "/v1/track",
        lambda m: _dumps({"event": "e", "userId": "", "anonymousId": "", "properties": {"m": m}}),
        400, "missing_identity", "userId", shape="event",
    ),
    "missing-event-name": Case(
        "/v1/track", lambda m: _dumps({"userId": m}), 400, "missing_field", "event",
        shape="event",
    ),
    "empty-event-name": Case(
        "/v1/track", lambda m: _dumps({"userId": m, "event": ""}), 400, "missing_field",
        "event", shape="event",
    ),
    "group-without-groupid": Case(
        "/v1/group", lambda m: _dumps({"userId": m}), 400, "missing_field", "groupId",
        shape="event",
    ),
    "alias-without-previousid": Case(
        "/v1/alias", lambda m: _dumps({"userId": m}), 400, "missing_field", "previousId",
        shape="event",
    ),
    "batch-event-without-type": Case(
        "/v1/batch", lambda m: _batch(_good(m), _track(m)), 200, "missing_field", "type",
        shape="event", index=1, accepted=1,
    ),
    "batch-event-of-unknown-type": Case(
        "/v1/import", lambda m: _batch(_typed(m, type="purchase"), _good(m)), 200,
        "invalid_event_type", "type", shape="event", index=0, accepted=1,
    ),
    # Timestamps.
    "timestamp-not-a-date": Case(
        "/v1/track", lambda m: _dumps(_track(m, timestamp="yesterday")), 400,
        "invalid_timestamp", "timestamp", shape="event",
    ),
    "timestamp-month-13": Case(
        "/v1/track", lambda m: _dumps(_track(m, timestamp="2026-13-01T00:00:00Z")), 400,
        "invalid_timestamp", "timestamp", shape="event",
    ),
    "timestamp-is-a-number": Case(
        "/v1/track", lambda m: _dumps(_track(m, timestamp=1764072000)), 400, "invalid_type",
        "timestamp", shape="event",
    ),
    "original-timestamp-bad-in-batch": Case(
        "/v1/batch",
        lambda m: _batch(_good(m), _typed(m, originalTimestamp="2026-11-25 noon")),
        200, "invalid_timestamp", "originalTimestamp", shape="event", index=1, accepted=1,
    ),
    "sent-at-bad-on-event": Case(
        "/v1/screen", lambda m: _dumps({"userId": m, "sentAt": "2026-11-31T00:00:00Z"}), 400,
        "invalid_timestamp", "sentAt", shape="event",
    ),
    "sent-at-bad-on-batch": Case(
        "/v1/batch", lambda m: _batch(_typed(m), sentAt="soon"), 400, "invalid_batch", "sentAt"
    ),
    # Nesting.
    "too-deep-track": Case(
        "/v1/track", lambda m: _dumps(_track(m, properties=_nested(65))), 400, "too_deep",
        shape="event",
    ),
    "too-deep-in-batch": Case(
        "/v1/batch",
        lambda m: _batch(_good(m), _typed(m, context=_nested(65))),
        200, "too_deep", shape="event", index=1, accepted=1,
    ),
    "5000-levels-track": Case(
        "/v1/track", lambda m: _deep_brackets(m, 5000), 400, "too_deep", shape="event"
    ),
    # The batch cannot be split into events, so the body as a whole is refused.
    # Deeper than the decoder recurses: only that event is refused, the good one is kept.
    "5000-levels-batch": Case(
        "/v1/batch", lambda m: _batch(_good(m), _deep_brackets(m, 5000)),
        200, "too_deep", shape="event", index=1, accepted=1,
    ),
    # Sizes and counts.
    "empty-batch": Case(
        "/v1/batch", lambda m: _batch(context={"m": m}), 400, "empty_batch", "batch"
    ),
    "batch-key-missing": Case(
        "/v1/batch", lambda m: _dumps({"events": [_typed(m)]}), 400, "empty_batch", "batch"
    ),
    "event-over-32kb-track": Case(
        "/v1/track", lambda m: _dumps(_track(m, properties={"x": "y" * 33_000})), 400,
        "event_too_large", shape="event",
    ),
    "event-over-32kb-in-batch": Case(
        "/v1/batch",
        lambda m: _batch(_good(m), _typed(m, properties={"x": "y" * 33_000}), _good(m)),
        200, "event_too_large", shape="event", index=1, accepted=2,
    ),
    "request-over-500kb": Case(
        "/v1/batch",
        lambda m: _batch(*[_typed(m, properties={"x": "y" * 20_000})] * 26),
        413, "request_too_large", payload_has_marker=False,
    ),
    "gzip-request-over-500kb": Case(
        "/v1/batch",
        lambda m: gzip.compress(_batch(*[_typed(m, properties={"x": "y" * 20_000})] * 26)),
        413, "request_too_large", headers={**JSON_TYPE, "content-encoding": "gzip"},
        payload_has_marker=False,
    ),
    "gzip-bomb": Case(
        "/v1/batch", _gzip_bomb, 413, "request_too_large",
        headers={**JSON_TYPE, "content-encoding": "gzip"}, payload_has_marker=False, within=2.0,
    ),
    "more-than-2500-events": Case(
        "/v1/batch", lambda m: _batch(*[{"type": "track", "userId": m, "event": "e"}] * 2501),
        413, "batch_too_large", "batch",
    ),
    # Encodings and content types.
    "corrupt-gzip": Case(
        "/v1/batch", lambda m: b"\x1f\x8b\x08\x00" + m.encode() * 4, 400, "malformed_gzip",
        headers={**JSON_TYPE, "content-encoding": "gzip"}, payload_has_marker=False,
    ),
    "gzip-header-but-plain-body": Case(
        "/v1/track", lambda m: _dumps(_track(m)), 400, "malformed_gzip",
        headers={**JSON_TYPE, "content-encoding": "gzip"}, payload_has_marker=False,
    ),
    "truncated-gzip": Case(
        "/v1/batch", lambda m: gzip.compress(_batch(_typed(m)))[:-12], 400, "malformed_gzip",
        headers={**JSON_TYPE, "content-encoding": "gzip"}, payload_has_marker=False,
    ),
    "gzip-padding-then-garbage": Case(
        "/v1/batch", lambda m: gzip.compress(_batch(_typed(m))) + b"\0\0GARBAGE", 400,
        "malformed_gzip", headers={**JSON_TYPE, "content-encoding": "gzip"},
        payload_has_marker=False,
    ),
    "gzip-then-garbage": Case(
        "/v1/batch", lambda m: gzip.compress(_batch(_typed(m))) + b"GARBAGE", 400,
        "malformed_gzip", headers={**JSON_TYPE, "content-encoding": "gzip"},
        payload_has_marker=False,
    ),
    "content-type-xml": Case(
        "/v1/track", lambda m: f"<track userId='{m}'/>".encode(), 415, "unsupported_media_type",
        headers={"content-type": "application/xml"}, stored=False,
    ),
    "content-type-form": Case(
        "/v1/batch", lambda m: f"userId={m}&event=e".encode(), 415, "unsupported_media_type",
        headers={"content-type": "application/x-www-form-urlencoded"}, stored=False,
    ),
    "content-encoding-br": Case(
        "/v1/track", lambda m: _dumps(_track(m)), 415, "unsupported_encoding",
        headers={**JSON_TYPE, "content-encoding": "br"}, stored=False,
    ),
    # Write keys: no trace may be left.
    "missing-write-key": Case(
        "/v1/track", lambda m: _dumps(_track(m)), 401, "missing_write_key", auth="none",
        stored=False,
    ),
    "missing-write-key-batch": Case(
        "/v1/batch", lambda m: _batch(_typed(m)), 401, "missing_write_key", auth="none",
        stored=False,
    ),
    "bearer-instead-of-basic": Case(
        "/v1/track", lambda m: _dumps(_track(m)), 401, "missing_write_key", auth="bearer",
        stored=False,
    ),
    "unknown-write-key": Case(
        "/v1/track", lambda m: _dumps(_track(m)), 401, "unknown_write_key", auth="unknown",
        stored=False,
    ),
    "unknown-write-key-in-body": Case(
        "/v1/batch", lambda m: _batch(_typed(m), writeKey=UNKNOWN_KEY), 401,
        "unknown_write_key", auth="none", stored=False,
    ),
    "unknown-key-bad-event": Case(
        "/v1/track", lambda m: _dumps({"userId": m}), 401, "unknown_write_key", auth="unknown",
        stored=False,
    ),
    # Methods and paths.
    "get-instead-of-post": Case(
        "/v1/track", lambda m: b"", 405, "method_not_allowed", method="GET", stored=None
    ),
    "put-on-batch": Case(
        "/v1/batch", lambda m: _batch(_typed(m)), 405, "method_not_allowed", method="PUT",
        stored=None,
    ),
    "unknown-path": Case(
        "/v1/purchase", lambda m: _dumps(_track(m)), 404, "not_found", stored=None
    ),
}  # fmt: skip


# -- helpers --------------------------------------------------------------------

# Built once and shared: every client here speaks plain HTTP on loopback, and
# building a TLS context per client would dominate the run time.
_TLS = ssl.create_default_context()


@dataclass
class Ingest:
    """The module's server: an authenticated client, and its store through the control socket."""

    server: Server
    project: Project
    http: httpx.Client
    control: ServerClient

    def rows(self, sql: str, *params: object) -> list[Json]:
        rows: list[Json] = self.control.query(sql, params).to_pylist()
        return rows

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST with the source's key as Basic auth."""
        return self.http.post(path, **kwargs)

    def fresh(self, **kwargs: Any) -> httpx.Client:
        """A client on a new connection, without credentials unless given."""
        return httpx.Client(base_url=self.server.url, timeout=30, verify=_TLS, **kwargs)

    def failed_by_marker(self, marker: str) -> list[Json]:
        return self.rows(
            "SELECT source, code, field, message, payload::VARCHAR AS payload "
            "FROM failed_events WHERE payload::VARCHAR LIKE ?",
            f"%{marker}%",
        )

    def failed_ids(self, code: str) -> set[str]:
        return {r["id"] for r in self.rows("SELECT id FROM failed_events WHERE code = ?", code)}

    def count_events(self, value: str) -> int:
        [row] = self.rows(
            "SELECT count(*) AS n FROM events WHERE ? IN (user_id, anonymous_id, message_id)",
            value,
        )
        return int(row["n"])


@pytest.fixture(scope="module")
def ingest(shared_server: Server, shared_project: Project) -> Iterator[Ingest]:
    control = find_server(shared_project.data_dir)
    assert control is not None, "the shared server answers on its control socket"
    auth = httpx.BasicAuth(shared_project.key, "")
    with httpx.Client(base_url=shared_server.url, timeout=30, verify=_TLS, auth=auth) as http:
        yield Ingest(shared_server, shared_project, http, control)
    control.close()


def _marker(name: str) -> str:
    return f"bad-{name}-{uuid.uuid4().hex[:10]}"


def _auth(kind: Auth, project: Project) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    if kind == "basic":
        return {}, httpx.BasicAuth(project.key, "")
    if kind == "unknown":
        return {}, httpx.BasicAuth(UNKNOWN_KEY, "")
    if kind == "bearer":
        return {"authorization": f"Bearer {project.key}"}, None
    return {}, None


def _assert_still_serving(ingest: Ingest, marker: str) -> None:
    user = f"{marker}-after"
    response = ingest.post("/v1/track", json={"userId": user, "event": "After Bad Input"})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    assert ingest.count_events(user) == 1


def _assert_refusal(case: Case, answer: Json) -> None:
    """Check the answer's shape and code, by where the code travels."""
    assert answer["success"] is False
    if case.shape == "request":
        assert answer["error"]["code"] == case.code
        assert answer["error"]["message"].strip()
        return
    assert answer["accepted"] == case.accepted
    assert answer["duplicates"] == 0
    [rejection] = answer["rejected"]
    assert rejection["index"] == case.index
    assert (rejection["code"], rejection["field"]) == (case.code, case.field)
    assert isinstance(rejection["message"], str)
    assert rejection["message"].strip()
    if case.code == "malformed_json":  # worded as a whole body's is, with the fix
        assert "is not valid JSON" in rejection["message"], rejection


# -- the table test -------------------------------------------------------------


@pytest.mark.parametrize(("name", "case"), list(CASES.items()), ids=list(CASES))
def test_bad_request_is_refused_and_the_server_goes_on(
    ingest: Ingest, name: str, case: Case
) -> None:
    marker = _marker(name)
    body = case.body(marker)
    before = ingest.failed_ids(case.code)

    headers, auth = _auth(case.auth, ingest.project)
    with ingest.fresh(auth=auth) as client:
        started = time.monotonic()
        response = client.request(
            case.method, case.path, content=body, headers={**case.headers, **headers}
        )
        elapsed = time.monotonic() - started

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    _assert_refusal(case, response.json())
    if case.within is not None:
        assert elapsed < case.within, f"answered after {elapsed:.2f}s"

    # No refused event reached `events`; the good ones of the same batch did.
    assert ingest.count_events(marker) == 0
    assert ingest.count_events(f"{marker}-ok") == case.accepted

    new = ingest.failed_ids(case.code) - before
    if case.stored is True:
        assert len(new) == 1, f"expected one failed_events row with code {case.code}"
        [row] = ingest.rows(
            "SELECT source, code, field, message, payload::VARCHAR AS payload "
            "FROM failed_events WHERE id = ?",
            next(iter(new)),
        )
        assert row["source"] == "web"
        assert (row["code"], row["field"]) == (case.code, case.field)
        assert row["message"].strip()
        if case.payload_has_marker:
            assert ingest.failed_by_marker(marker) == [row]
            json.loads(row["payload"])  # JSON, whether or not the body was
        else:
            assert row["payload"] is None or marker not in row["payload"]
    elif case.stored is False:
        assert new == set()
        assert ingest.failed_by_marker(marker) == []

    _assert_still_serving(ingest, marker)


def test_unauthenticated_refusals_leave_no_trace(ingest: Ingest) -> None:
    marker = _marker("no-trace")
    for auth in (None, httpx.BasicAuth(UNKNOWN_KEY, "")):
        with ingest.fresh(auth=auth) as client:
            assert client.post("/v1/track", json={"userId": marker}).status_code == 401
    rows = ingest.rows(
        "SELECT count(*) AS n FROM failed_events WHERE code LIKE '%write_key%' OR source IS NULL"
    )
    assert rows == [{"n": 0}]


def test_405_names_the_allowed_method(ingest: Ingest) -> None:
    # RFC 9110 section 15.5.6: a 405 answer must carry Allow.
    response = ingest.http.get("/v1/batch")
    assert response.status_code == 405
    assert response.headers.get("allow") == "POST"


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_the_request_limit_is_exact(ingest: Ingest, encoding: str) -> None:
    # max_request_bytes as `headwater init` writes it; counted after decompression.
    limit = 512_000
    m = _marker(f"limit-{encoding}")
    body = _batch(*[_typed(m, properties={"x": "y" * 25_000})] * 20)
    assert len(body) < limit
    headers = {**JSON_TYPE, "content-encoding": encoding}
    for size, status in ((limit, 200), (limit + 1, 413)):
        padded = body + b" " * (size - len(body))  # JSON may end in whitespace
        content = gzip.compress(padded) if encoding == "gzip" else padded
        with ingest.fresh(auth=httpx.BasicAuth(ingest.project.key, "")) as client:
            response = client.post("/v1/batch", content=content, headers=headers)
        assert response.status_code == status, (size, response.text)
    assert ingest.count_events(m) == 20


# -- good and bad together -------------------------------------------------------


def test_write_key_in_the_body_instead_of_basic_auth(ingest: Ingest) -> None:
    m = _marker("body-key")
    key = ingest.project.key
    with ingest.fresh() as client:
        single = client.post(
            "/v1/identify", json={"writeKey": key, "userId": f"{m}-1", "source": "spoofed"}
        )
        assert single.status_code == 200, single.text
        batch = client.post(
            "/v1/batch", json={"writeKey": key, "batch": [_typed(f"{m}-2", source="x")]}
        )
        assert batch.status_code == 200, batch.text
        assert batch.json()["accepted"] == 1
    rows = ingest.rows(
        "SELECT user_id, type, source FROM events WHERE user_id LIKE ? ORDER BY user_id",
        f"{m}-%",
    )
    # The key names the source; a `source` in the body is ignored.
    assert rows == [
        {"user_id": f"{m}-1", "type": "identify", "source": "web"},
        {"user_id": f"{m}-2", "type": "track", "source": "web"},
    ]


def test_a_batch_mixing_good_and_bad_keeps_the_good(ingest: Ingest) -> None:
    m = _marker("mixed")
    batch = [
        {"type": "track", "userId": f"{m}-a", "event": "Good", "messageId": f"{m}-id-a"},
        {"type": "track", "userId": f"{m}-bad1", "event": 5},
        {"type": "identify", "anonymousId": f"{m}-b", "traits": {"plan": "pro"}},
        {"type": "page", "properties": {"m": f"{m}-bad2"}},
        {"type": "track", "userId": f"{m}-bad3", "event": "Late", "timestamp": "tomorrow"},
        {"type": "screen", "userId": 42, "name": "Home", "properties": {"m": f"{m}-c"}},
    ]
    response = ingest.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["success"] is False
    assert (answer["accepted"], answer["duplicates"]) == (3, 0)
    assert [(r["index"], r["code"], r["field"]) for r in answer["rejected"]] == [
        (1, "invalid_type", "event"),
        (3, "missing_identity", "userId"),
        (4, "invalid_timestamp", "timestamp"),
    ]
    assert all(r["message"].strip() for r in answer["rejected"])

    stored = ingest.rows(
        "SELECT type, user_id, anonymous_id, message_id, traits::VARCHAR AS traits FROM events "
        "WHERE user_id LIKE ? OR anonymous_id LIKE ? OR properties::VARCHAR LIKE ? "
        "ORDER BY type",
        f"{m}-%",
        f"{m}-%",
        f"%{m}-%",
    )
    assert [(r["type"], r["user_id"], r["anonymous_id"]) for r in stored] == [
        ("identify", None, f"{m}-b"),
        ("screen", "42", None),
        ("track", f"{m}-a", None),
    ]
    assert json.loads(stored[0]["traits"]) == {"plan": "pro"}
    assert stored[2]["message_id"] == f"{m}-id-a"

    failed = ingest.rows(
        "SELECT source, code, field, message FROM failed_events "
        "WHERE payload::VARCHAR LIKE ? ORDER BY code",
        f"%{m}-bad%",
    )
    assert [(f["source"], f["code"], f["field"]) for f in failed] == [
        ("web", "invalid_timestamp", "timestamp"),
        ("web", "invalid_type", "event"),
        ("web", "missing_identity", "userId"),
    ]
    assert all(f["message"].strip() for f in failed)


def test_a_duplicate_message_id_in_one_batch_is_stored_once(ingest: Ingest) -> None:
    m = _marker("dup")
    event = {"type": "track", "userId": m, "event": "Twice", "messageId": f"{m}-id"}
    other = {**event, "messageId": f"{m}-other"}
    first = ingest.post("/v1/batch", json={"batch": [event, other, event]})
    assert first.status_code == 200, first.text
    assert first.json() == {"success": True, "accepted": 3, "duplicates": 1, "rejected": []}
    # And again in a second request: now a duplicate of what is stored.
    second = ingest.post("/v1/batch", json={"batch": [event]})
    assert second.json() == {"success": True, "accepted": 1, "duplicates": 1, "rejected": []}
    rows = ingest.rows(
        "SELECT message_id, count(*) AS n FROM events WHERE user_id = ? GROUP BY 1 ORDER BY 1", m
    )
    assert rows == [{"message_id": f"{m}-id", "n": 1}, {"message_id": f"{m}-other", "n": 1}]


def test_an_event_without_message_id_gets_one(ingest: Ingest) -> None:
    m = _marker("no-id")
    event = {"type": "track", "userId": m, "event": "No Message Id"}
    batch = ingest.post("/v1/batch", json={"batch": [event, event]})
    assert batch.json() == {"success": True, "accepted": 2, "duplicates": 0, "rejected": []}
    assert ingest.post("/v1/track", json=event).status_code == 200
    ids = [
        r["message_id"] for r in ingest.rows("SELECT message_id FROM events WHERE user_id = ?", m)
    ]
    # Three identical events without ids are three events, each with its own id.
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert all(isinstance(i, str) and len(i) >= 16 for i in ids)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def test_clock_skew_is_corrected_against_received_at(ingest: Ingest) -> None:
    m = _marker("skew")
    # The client's clock is years behind; 10.530865 s passed between the event and its sending.
    original = datetime.fromisoformat("2020-01-01T00:00:00.123456+00:00")
    sent = original + timedelta(seconds=10, microseconds=530_865)
    single = ingest.post(
        "/v1/track",
        json={
            "userId": f"{m}-single",
            "event": "Skewed",
            "originalTimestamp": _iso(original),
            "sentAt": _iso(sent),
        },
    )
    assert single.status_code == 200, single.text
    # In a batch, sentAt comes from the envelope (also when an event's is null).
    batch = ingest.post(
        "/v1/batch",
        json={
            "sentAt": _iso(sent),
            "batch": [
                {"type": "track", "userId": f"{m}-batch", "event": "Skewed",
                 "timestamp": _iso(original)},
                {"type": "track", "userId": f"{m}-null-sent", "event": "Skewed",
                 "timestamp": _iso(original), "sentAt": None},
            ],
        },
    )  # fmt: skip
    assert batch.json()["accepted"] == 2
    lone = ingest.post(
        "/v1/track",
        json={"userId": f"{m}-lone", "event": "No Sent", "timestamp": "2021-06-01T12:00:00+02:00"},
    )
    assert lone.status_code == 200
    assert ingest.post("/v1/track", json={"userId": f"{m}-bare", "event": "No"}).status_code == 200

    rows = {
        r["user_id"]: r
        for r in ingest.rows(
            "SELECT user_id, timestamp, original_timestamp, sent_at, received_at FROM events "
            "WHERE user_id LIKE ?",
            f"{m}-%",
        )
    }
    assert len(rows) == 5
    now = datetime.now(UTC)
    for user in (f"{m}-single", f"{m}-batch", f"{m}-null-sent"):
        row = rows[user]
        assert row["original_timestamp"] == original
        assert row["sent_at"] == sent
        assert abs(now - row["received_at"]) < timedelta(minutes=1)
        assert row["timestamp"] == row["received_at"] - (sent - original)
    # Without sentAt, the client's time is kept as it is (in UTC).
    lone_row = rows[f"{m}-lone"]
    assert lone_row["timestamp"] == datetime.fromisoformat("2021-06-01T10:00:00+00:00")
    assert lone_row["original_timestamp"] == lone_row["timestamp"]
    assert lone_row["sent_at"] is None
    # Without either, the server's clock.
    bare_row = rows[f"{m}-bare"]
    assert bare_row["timestamp"] == bare_row["received_at"]
    assert bare_row["original_timestamp"] is None


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize(
    "context",
    [{"blob": "x" * 40_000}, _nested(100)],
    ids=["over-32kb", "over-64-levels"],
)
def test_a_batch_context_cannot_carry_events_past_their_limits(
    ingest: Ingest, context: Json
) -> None:
    # The batch's context is merged into every event: each stored event must still
    # keep the per-event limits (32 KB, 64 levels), or one 500 KB request could
    # store 2,500 copies of a 480 KB context.
    m = _marker("context")
    body = {"context": context, "batch": [_typed(m), _typed(m, messageId=f"{m}-2")]}
    response = ingest.post("/v1/batch", json=body)
    assert response.status_code in (200, 400, 413), response.text
    for row in ingest.rows("SELECT context::VARCHAR AS c FROM events WHERE user_id = ?", m):
        stored = json.loads(row["c"])
        event = _dumps({**_typed(m, messageId=f"{m}-2"), "context": stored})
        assert len(event) <= 32_768, f"an event of {len(event)} bytes was stored"
        assert 1 + _depth(stored) <= 64, f"an event {1 + _depth(stored)} levels deep was stored"
    _assert_still_serving(ingest, m)


@pytest.mark.parametrize(
    "times",
    [
        {"timestamp": "9999-12-31T23:59:59-23:59"},
        {"originalTimestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
    ],
    ids=["after-year-9999-in-utc", "skew-before-year-1"],
)
def test_a_timestamp_out_of_range_does_not_break_queries(ingest: Ingest, times: Json) -> None:
    # Either refused as invalid_timestamp, or stored so that it can be read back.
    m = _marker("far")
    response = ingest.post("/v1/track", json=_track(m, **times))
    if response.status_code == 400:
        [rejected] = response.json()["rejected"]
        assert rejected["code"] == "invalid_timestamp"
        if "sentAt" not in times:  # the message says what the bounds are
            assert "0001-01-02 to 9999-12-30" in rejected["message"], rejected
    else:
        assert response.status_code == 200, response.text
    result = ingest.project.cli(
        "query", f"SELECT user_id, timestamp FROM events WHERE user_id = '{m}'", check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr


def test_zero_padding_arriving_apart_from_the_bytes_after_it_is_still_refused() -> None:
    """The body arrives in pieces: zero bytes after the stream in one, other bytes in the
    next. The zeros are padding only if nothing else follows them."""
    from headwater.collect.body import _DECODERS, _Inflater
    from headwater.collect.errors import RequestRefused

    member = gzip.compress(b'{"batch": []}')
    inflater = _Inflater(_DECODERS["gzip"])
    assert inflater.feed(member, 1_000) == b'{"batch": []}'
    assert inflater.feed(b"\0\0\0", 1_000) == b""
    inflater.finish()
    with pytest.raises(RequestRefused) as refused:
        inflater.feed(b"GARBAGE", 1_000)
    assert refused.value.code == "malformed_gzip"
