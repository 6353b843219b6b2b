"""The collector's front door, probed as an attacker and as the SDKs that use it.

A real ``headwater up`` on loopback, per test or per module. Every test is bounded in
count and time.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Project, Server


def _event(**extra: object) -> dict[str, object]:
    return {"type": "track", "event": "Front Door", "userId": "u", "messageId": str(uuid.uuid4()),
            **extra}  # fmt: skip


def _stored(project: Project, message_id: str) -> list[dict[str, object]]:
    return project.query(
        "SELECT type, source FROM events WHERE message_id = ?", message_id
    ).to_pylist()


def _failed(project: Project, code: str) -> list[dict[str, object]]:
    return project.query(
        "SELECT source, field, payload::VARCHAR AS payload FROM failed_events WHERE code = ?",
        code,
    ).to_pylist()


def _marked(rows: list[dict[str, object]], marker: str) -> list[dict[str, object]]:
    return [row for row in rows if marker in str(row["payload"])]


# -- any content type that carries JSON ----------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        # RudderStack's Node.js SDK labels its gzip JSON as a form.
        ("application/x-www-form-urlencoded", "gzip"),
        ("text/plain;charset=UTF-8", None),  # browsers' sendBeacon
        ("application/octet-stream", None),
        ("application/json; charset=utf-8", None),
        (None, None),
    ],
)
def test_a_json_body_is_taken_whatever_its_content_type_says(
    shared_server: Server, shared_project: Project, content_type: str | None, encoding: str | None
) -> None:
    event = _event()
    body = json.dumps({"batch": [event]}).encode()
    headers = {}
    if content_type is not None:
        headers["content-type"] = content_type
    if encoding == "gzip":
        body, headers["content-encoding"] = gzip.compress(body), "gzip"
    answer = shared_server.post(
        "/v1/batch", content=body, headers=headers, auth=(shared_project.key, "")
    )
    assert answer.status_code == 200, answer.text
    assert _stored(shared_project, str(event["messageId"])) == [{"type": "track", "source": "web"}]


@pytest.mark.parametrize(("encoding", "padding"), [("gzip", b""), ("gzip", b"\0" * 9),
                                                   ("deflate", b"")])  # fmt: skip
def test_a_gzip_body_of_several_members_is_read_whole_and_sent_in_small_pieces(
    shared_server: Server, shared_project: Project, encoding: str, padding: bytes
) -> None:
    """RFC 1952: a gzip file may be several members one after the other (what
    concatenated gzip outputs are), perhaps followed by zero bytes; each member is read,
    however the body arrives (deflate takes gzip members too)."""
    events = [_event(), _event()]
    text = json.dumps({"batch": events}).encode()
    half = len(text) // 2
    body = gzip.compress(text[:half]) + gzip.compress(text[half:]) + padding

    def pieces() -> Iterator[bytes]:
        yield from (body[i : i + 7] for i in range(0, len(body), 7))

    answer = shared_server.post(
        "/v1/batch", content=pieces(), auth=(shared_project.key, ""),
        headers={"content-type": "application/json", "content-encoding": encoding},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    for event in events:
        assert _stored(shared_project, str(event["messageId"])) == [
            {"type": "track", "source": "web"}
        ]


def test_a_body_that_is_not_json_is_415_only_when_it_says_it_is_something_else(
    shared_server: Server, shared_project: Project
) -> None:
    auth = (shared_project.key, "")
    form = shared_server.post(
        "/v1/batch", content=b"userId=u&event=e", auth=auth,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert form.status_code == 415
    assert form.json()["error"]["code"] == "unsupported_media_type"
    broken = shared_server.post(
        "/v1/batch", content=b'{"batch": [', auth=auth, headers={"content-type": "text/plain"}
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == "malformed_json"


# -- analytics.js's paths ------------------------------------------------------------------

SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}


@pytest.mark.parametrize("letter", sorted(SHORT))
def test_analytics_js_one_letter_paths_take_their_event_type(
    shared_server: Server, shared_project: Project, letter: str
) -> None:
    event = {"userId": "u", "event": "E", "groupId": "g", "previousId": "p",
             "messageId": str(uuid.uuid4()), "writeKey": shared_project.key}  # fmt: skip
    answer = shared_server.post(
        f"/v1/{letter}", content=json.dumps(event), headers={"content-type": "text/plain"}
    )
    assert answer.status_code == 200, answer.text
    assert _stored(shared_project, str(event["messageId"])) == [
        {"type": SHORT[letter], "source": "web"}
    ]


def test_analytics_js_batches_and_metrics(shared_server: Server, shared_project: Project) -> None:
    event = _event()
    body = {"batch": [event], "writeKey": shared_project.key}
    answer = shared_server.post("/v1/b", content=json.dumps(body))
    assert answer.status_code == 200, answer.text
    assert len(_stored(shared_project, str(event["messageId"]))) == 1
    # Its own usage metrics are read and dropped: no event, no failed event.
    before = shared_project.query("SELECT count(*) AS n FROM events")["n"][0].as_py()
    metrics = shared_server.post("/v1/m", content=b'{"series":[{"type":"Counter"}]}')
    assert metrics.status_code == 200
    assert shared_project.query("SELECT count(*) AS n FROM events")["n"][0].as_py() == before


# -- amplification by a write key ------------------------------------------------------------


def _amplifier(key: str, marker: str) -> bytes:
    """The probe: 2,500 tiny events and a 32.5 KB batch context (about 147 KB)."""
    context = {"padding": "x" * 32_500, "marker": marker}
    tiny = [{"type": "track", "event": "a", "userId": "u"} for _ in range(2500)]
    return json.dumps({"batch": tiny, "context": context, "writeKey": key}).encode()


def test_a_batch_context_cannot_amplify_what_one_request_stores(
    shared_server: Server, shared_project: Project
) -> None:
    marker = str(uuid.uuid4())
    body = _amplifier(shared_project.key, marker)
    assert len(body) < 160_000
    events_before = shared_project.query("SELECT count(*) AS n FROM events")["n"][0].as_py()
    answer = shared_server.post("/v1/batch", content=body)
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"]["code"] == "request_too_large"
    assert "context" in answer.json()["error"]["message"]
    assert shared_project.query("SELECT count(*) AS n FROM events")["n"][0].as_py() == (
        events_before
    )
    # Kept once, as sent (its key removed), not once per event.
    [kept] = [
        row for row in _failed(shared_project, "request_too_large") if marker in row["payload"]
    ]
    assert kept["source"] == "web"
    assert len(kept["payload"]) < 2 * len(body)
    assert shared_project.key not in kept["payload"]
    # A batch whose context is merged into a sensible number of events goes through.
    fine = {"batch": [_event() for _ in range(20)], "context": {"padding": "x" * 10_000}}
    assert (
        shared_server.post("/v1/batch", json=fine, auth=(shared_project.key, "")).status_code == 200
    )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.timeout(120)
def test_repeated_amplification_keeps_the_server_under_its_memory_cap(
    project: Project, server: Server
) -> None:
    """Eight senders, ten probes each: before the bound, 3.4 GB and /healthz late by 1 s."""
    assert server.process is not None
    body = _amplifier(project.key, "memory")
    with server.client() as warm:
        assert warm.post("/v1/batch", content=body).status_code == 413
    baseline = _peak_rss_mb(server.process.pid)
    late: list[float] = []
    stop = threading.Event()

    def probe_health() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                late.append(time.monotonic() - started)
                time.sleep(0.05)

    def send() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(10):
                assert client.post("/v1/batch", content=body).status_code == 413

    health = threading.Thread(target=probe_health)
    health.start()
    senders = [threading.Thread(target=send) for _ in range(8)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(90)
    stop.set()
    health.join(10)
    peak = _peak_rss_mb(server.process.pid)
    # The cap: what one refused request costs, not what 2,500 merged contexts would.
    assert peak - baseline < 150, (baseline, peak)
    assert max(late) < 1.0, max(late)


# -- bodies the decoder would have misread ----------------------------------------------------


def test_a_batch_with_two_batch_keys_is_refused_and_kept(
    shared_server: Server, shared_project: Project
) -> None:
    first, second = _event(), _event()
    body = (
        b'{"batch": [' + json.dumps(first).encode() + b'], "batch": ['
        + json.dumps(second).encode() + b"]}"
    )  # fmt: skip
    answer = shared_server.post("/v1/batch", content=body, auth=(shared_project.key, ""))
    assert answer.status_code == 400, answer.text
    assert (answer.json()["error"]["code"], "batch") == ("duplicate_key", "batch")
    assert _stored(shared_project, str(first["messageId"])) == []
    assert _stored(shared_project, str(second["messageId"])) == []
    kept = [
        r
        for r in _failed(shared_project, "duplicate_key")
        if str(first["messageId"]) in r["payload"]
    ]
    assert len(kept) == 1


def test_a_batch_key_spelled_with_escapes_is_still_a_duplicate(
    shared_server: Server, shared_project: Project
) -> None:
    first, second = _event(), _event()
    body = (
        b'{"batch": [' + json.dumps(first).encode() + b'], "b\\u0061tch": ['
        + json.dumps(second).encode() + b"]}"
    )  # fmt: skip
    answer = shared_server.post("/v1/batch", content=body, auth=(shared_project.key, ""))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "duplicate_key"
    assert _stored(shared_project, str(second["messageId"])) == []


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("sentAt", '"2026-12-01T00:00:00Z"', '"2026-12-02T00:00:00Z"'),
        ("context", '{"ip": "192.0.2.1"}', '{"x": 1}'),
        ("writeKey", '"KEY"', '"other"'),
    ],
)
def test_an_envelope_name_given_twice_is_refused_even_when_events_use_it(
    shared_server: Server, shared_project: Project, name: str, first: str, second: str
) -> None:
    # Every event of a real batch has its own context (and analytics.js's its writeKey):
    # those are not the envelope's, and the batch is taken; the envelope's twice is not.
    events = [
        _event(context={"page": {"path": "/"}}, writeKey=shared_project.key) for _ in range(3)
    ]
    batch = '"batch": ' + json.dumps(events)
    fine = f'{{"{name}": {first.replace("KEY", shared_project.key)}, {batch}}}'
    answer = shared_server.post("/v1/batch", content=fine, auth=(shared_project.key, ""))
    assert (answer.status_code, answer.json()["accepted"]) == (200, 3), answer.text
    repeated = [_event(writeKey=shared_project.key) for _ in range(3)]
    body = (
        f'{{"{name}": {first.replace("KEY", shared_project.key)}, '
        f'"batch": {json.dumps(repeated)}, "{name}": {second}}}'
    )
    answer = shared_server.post("/v1/batch", content=body, auth=(shared_project.key, ""))
    assert answer.status_code == 400, answer.text
    assert (answer.json()["error"]["code"], answer.json()["code"]) == ("duplicate_key",) * 2
    assert name in answer.json()["message"]
    assert _stored(shared_project, str(repeated[0]["messageId"])) == []


def test_a_body_that_breaks_the_slow_scanner_is_a_400_not_a_500(shared_server: Server) -> None:
    # An invalid escape in a key, seen by the duplicate check before any key is checked.
    answer = shared_server.post("/v1/batch", content=b'{"\\x":1,"batch":[1],"batch":[2]}')
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "malformed_json"


def test_write_keys_inside_the_events_of_a_refused_batch_are_removed(
    shared_server: Server, shared_project: Project
) -> None:
    """analytics.js puts the key in every event of a batch; a batch refused whole is kept
    whole, and no copy of the key may stay in it."""
    marker = str(uuid.uuid4())
    key = shared_project.key
    events = [_event(writeKey=key, event=marker) for _ in range(3)]
    twice = json.dumps({"batch": events, "writeKey": key})
    body = twice[:-1] + ', "batch": ' + json.dumps(events) + "}"
    assert shared_server.post("/v1/b", content=body).status_code == 400
    # A body that is a list, not an object: refused as a whole, and kept.
    listed = json.dumps([{"writeKey": key, "event": marker}])
    assert shared_server.post("/v1/batch", content=listed, auth=(key, "")).status_code == 400
    rows = [
        row
        for code in ("duplicate_key", "invalid_batch")
        for row in _marked(_failed(shared_project, code), marker)
    ]
    assert len(rows) == 2, rows
    for row in rows:
        assert key not in row["payload"]
    assert str(rows[0]["payload"]).count("<removed>") >= 3


def test_a_refused_body_authenticated_only_by_its_write_key_is_kept_without_it(
    shared_server: Server, shared_project: Project
) -> None:
    marker = str(uuid.uuid4())
    key = shared_project.key
    # Not JSON, so nothing parses it: the key is found in its text.
    broken = f'{{"writeKey": "{key}", "batch": [{{"event": "{marker}"'.encode()
    assert shared_server.post("/v1/batch", content=broken).status_code == 400
    # The key's name spelled with JSON escapes, in a body that parses but is refused.
    escaped = f'{{"write\\u004bey": "{key}", "batch": [], "m": "{marker}"}}'.encode()
    assert shared_server.post("/v1/batch", content=escaped).status_code == 400
    # And in one that does not parse at all.
    both = f'{{"write\\u004bey": "{key}", "m": "{marker}", "batch": [1,'.encode()
    assert shared_server.post("/v1/batch", content=both).status_code == 400
    rows = [
        row
        for code in ("malformed_json", "empty_batch")
        for row in _failed(shared_project, code)
        if marker in row["payload"]
    ]
    assert len(rows) == 3, rows
    for row in rows:
        assert row["source"] == "web"
        assert key not in row["payload"]
        assert "<removed>" in row["payload"]
    # An unknown key authenticates nothing: such a body is not kept.
    stranger = f'{{"writeKey": "hw_wk_nobody", "batch": [{{"event": "{marker}-x"'.encode()
    assert shared_server.post("/v1/batch", content=stranger).status_code in (400, 401)
    assert not [
        r for r in _failed(shared_project, "malformed_json") if f"{marker}-x" in r["payload"]
    ]


# -- slow and huge requests -----------------------------------------------------------------


@pytest.fixture
def strict(project: Project) -> Iterator[Server]:
    """A server with short read deadlines, so the tests wait seconds, not minutes."""
    text = (project.root / "headwater.toml").read_text()
    (project.root / "headwater.toml").write_text(
        text.replace(
            "[server]\n",
            "[server]\nheader_timeout_seconds = 1\nbody_timeout_seconds = 1\n"
            "max_connections = 200\n",
            1,
        )
    )
    running = Server(project).start()
    yield running
    running.stop()


def _connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


@pytest.mark.timeout(60)
def test_huge_headers_are_431_and_slow_ones_408_while_others_are_served(
    strict: Server, project: Project
) -> None:
    huge = _connect(strict)
    huge.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert _read_answer(huge, 5).startswith(b"HTTP/1.1 431")
    huge.close()

    slow_head = _connect(strict)
    slow_head.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    assert _read_answer(slow_head, 5).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 4
    slow_head.close()

    slow_body = _connect(strict)
    slow_body.sendall(
        b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    assert _read_answer(slow_body, 5).startswith(b"HTTP/1.1 408")
    slow_body.close()
    assert strict.post("/v1/track", json=_event(), auth=(project.key, "")).status_code == 200


@pytest.mark.timeout(60)
def test_trickling_connections_are_closed_and_do_not_hold_the_collector(
    strict: Server, project: Project
) -> None:
    trickling = []
    for _ in range(150):
        sock = _connect(strict)
        sock.sendall(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
        trickling.append(sock)
    # Legitimate requests meanwhile keep being answered, quickly.
    with strict.client() as client:
        for _ in range(20):
            started = time.monotonic()
            answer = client.post("/v1/track", json=_event(), auth=(project.key, ""))
            assert answer.status_code == 200
            assert time.monotonic() - started < 1.0
    # Every trickler is closed by its deadline.
    deadline = time.monotonic() + 10
    for sock in trickling:
        answer = _read_answer(sock, max(0.1, deadline - time.monotonic()))
        assert answer == b"" or answer.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")), answer[:80]
        sock.close()


# -- the data folder is its owner's -------------------------------------------------------


def test_the_project_file_and_the_data_folder_are_owner_only(
    project: Project, server: Server
) -> None:
    assert server.post("/v1/track", json=_event(), auth=(project.key, "")).status_code == 200
    config = project.root / "headwater.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(project.data_dir.stat().st_mode) == 0o700
    files = [p for p in project.data_dir.iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert {"events.duckdb", "metadata.sqlite", "server.json"} <= names, names
    loose = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077}
    assert loose == {}
    # A source added later keeps the file owner-only.
    project.cli("sources", "add", "backend")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_a_data_folder_left_open_by_an_older_version_is_closed_when_opened(
    project: Project,
) -> None:
    project.data_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(project.data_dir, 0o755)
    old = project.data_dir / "server.log"  # any file an older version left readable
    old.write_text("left over")
    old.chmod(0o644)
    project.cli("status")
    assert stat.S_IMODE(project.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert all(not p.stat().st_mode & 0o077 for p in project.data_dir.iterdir() if p.is_file())
