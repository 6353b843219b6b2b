"""PII rules: a source's ruled values are dropped, hashed or truncated before anything is
stored, in events and in failed_events alike, by a real server fed by real clients."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import ipaddress
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import segment.analytics.client as segment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.collect.app import validate_events
from headwater.collect.pii import Redactor
from headwater.collect.settings import PiiRule
from headwater.collect.validate import Validator, decode_batch
from headwater.collect.workers import DecodePool
from headwater.store import schema
from tests.conftest import Project, Server, run_cli

KEY_VARIABLE = "HEADWATER_TEST_PII_KEY"
KEY = "k3y-" + "0123456789abcdef" * 3
RULES = [
    ("context.ip", "truncate"),
    ("traits.email", "hash"),
    ("traits.phone", "drop"),
    ("properties.card.number", "drop"),
    ("properties.signed_up_at", "truncate"),
    ("properties.account.owner", "hash"),
]
#: Where each rule applies: a traits rule also applies to context.traits.
PLACES = [(tuple(path.split(".")), action) for path, action in RULES] + [
    (("context", *path.split(".")), action) for path, action in RULES if path.startswith("traits")
]


def _rules_toml(source: str = "web") -> str:
    return "".join(
        f'[[sources.{source}.pii]]\npath = "{path}"\naction = "{action}"\n'
        for path, action in RULES
    )


def _with_key(project: Project, reference: str = f"${{{KEY_VARIABLE}}}") -> None:
    """``pii_key`` in ``[sources.web]`` (a key must be in its own table, not appended)."""
    path = project.root / "headwater.toml"
    text = path.read_text()
    assert text.count("[sources.web]\n") == 1
    path.write_text(text.replace("[sources.web]\n", f'[sources.web]\npii_key = "{reference}"\n'))


@pytest.fixture(scope="module")
def pii_project(shared_project: Project) -> Project:
    _with_key(shared_project)
    shared_project.configure(_rules_toml())
    return shared_project


@pytest.fixture(scope="module")
def pii_server(pii_project: Project) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)
        running = Server(pii_project).start()
    yield running
    running.stop()


# -- an oracle, written apart from collect/pii.py ------------------------------------


def hmac_hex(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode("utf-8"), hashlib.sha256).hexdigest()


_GONE = object()


def expected_truncate(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        return _GONE
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        if address.version == 4:
            return str(ipaddress.IPv4Network(f"{value}/24", strict=False).network_address)
        if address.ipv4_mapped is not None:
            mapped = ipaddress.IPv4Network(f"{address.ipv4_mapped}/24", strict=False)
            return f"::ffff:{mapped.network_address}"
        return str(ipaddress.IPv6Network(f"{address}/48", strict=False).network_address)
    if len(value) >= 16 and value[10] in "Tt ":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return _GONE
        hour = moment.strftime("%Y-%m-%dT%H:00:00")
        if value.endswith(("Z", "z")):
            return hour + "Z"
        if moment.tzinfo is None:
            return hour
        offset = moment.strftime("%z")  # +0530
        return f"{hour}{offset[:3]}:{offset[3:5]}"
    return _GONE


def expected(event: dict[str, Any]) -> dict[str, Any]:
    """The event as it must be stored: each rule applied to a deep copy."""
    out = copy.deepcopy(event)
    for keys, action in PLACES:
        parent: Any = out
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or keys[-1] not in parent:
            continue
        value = parent[keys[-1]]
        if action == "drop":
            del parent[keys[-1]]
        elif action == "hash":
            exact = isinstance(value, str)
            parent[keys[-1]] = hmac_hex(value) if exact else None if value is None else _HASHED
        else:
            result = expected_truncate(value)
            if result is _GONE:
                del parent[keys[-1]]
            else:
                parent[keys[-1]] = result
    return out


class _Hashed:
    """Stands for "a 64-digit hex HMAC" where the exact input is not a string."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and len(other) == 64 and set(other) <= set("0123456789abcdef")

    def __hash__(self) -> int:
        return 0


_HASHED = _Hashed()


# -- a real Segment client --------------------------------------------------------------


def test_a_segment_client_s_events_are_stored_with_the_rules_applied(
    pii_server: Server, pii_project: Project
) -> None:
    errors: list[Exception] = []
    client = segment.Client(
        write_key=pii_project.key,
        host=pii_server.url,
        sync_mode=True,
        max_retries=0,
        on_error=lambda error, _batch: errors.append(error),
    )
    user = f"seg-{uuid.uuid4().hex[:8]}"
    client.identify(
        user,
        {"email": "ada@example.com", "phone": "+44 20 7946 0958", "plan": "pro"},
        context={"ip": "203.0.113.77"},
    )
    client.track(
        user,
        "Card Added",
        {
            "card": {"number": "4111 1111 1111 1111", "brand": "visa"},
            "signed_up_at": "2026-11-25T12:34:56.789Z",
            "account": {"owner": "Ada Lovelace"},
        },
        context={
            "ip": "2001:db8:85a3:8d3:1319:8a2e:370:7348",
            "traits": {"email": "ada@example.com"},
        },
    )
    client.flush()
    assert errors == []

    rows = pii_project.query("SELECT * FROM events WHERE user_id = ?", user).to_pylist()
    by_type = {row["type"]: row for row in rows}
    assert sorted(by_type) == ["identify", "track"]
    identify, track = by_type["identify"], by_type["track"]

    traits = json.loads(identify["traits"])
    assert traits == {"email": hmac_hex("ada@example.com"), "plan": "pro"}
    assert json.loads(identify["context"])["ip"] == "203.0.113.0"
    assert json.loads(identify["context"])["library"]["name"] == "analytics-python"

    properties = json.loads(track["properties"])
    assert properties == {
        "card": {"brand": "visa"},
        "signed_up_at": "2026-11-25T12:00:00Z",
        "account": {"owner": hmac_hex("Ada Lovelace")},
    }
    context = json.loads(track["context"])
    assert context["ip"] == "2001:db8:85a3::"
    # The same email, hashed alike in context.traits: a join on the hash works.
    assert context["traits"] == {"email": traits["email"]}
    stored = " ".join(json.dumps(row, default=str) for row in rows)
    for raw in ("ada@example.com", "+44 20 7946 0958", "4111 1111", "Ada Lovelace", "203.0.113.77"):
        assert raw not in stored


# -- any payload: nothing raw is kept, nothing else changes -------------------------------

_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
)
_plain = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), _text)
_other = st.recursive(
    _plain,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abxy"), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def secret(draw: st.DrawFn) -> str:
    """A string that occurs nowhere else: a raw value a rule must not let through."""
    return f"SECRET{uuid.uuid4().hex[:12]}{draw(_text)}"


@st.composite
def sensitive(draw: st.DrawFn) -> Any:
    """What a dropped or hashed path may hold: a secret, or a secret inside something."""
    value = draw(secret())
    return draw(st.sampled_from([value, {"inner": value}, [value, 1], {"a": [{"b": value}]}]))


_truncatable = st.one_of(
    st.none(),
    st.integers(),
    _text,
    st.ip_addresses().map(str),
    st.sampled_from(
        [
            "2026-11-25T12:34:56.789Z",
            "2026-11-25T12:34:56+05:30",
            "2026-11-25 23:59:59",
            "2026-11-25T12:34",
            "2026-11-25",
            "::ffff:198.51.100.23",
        ]
    ),
)


@st.composite
def member(draw: st.DrawFn, keys: tuple[str, ...], action: str) -> dict[str, Any]:
    """An object holding a value at ``keys``, or a near miss: nothing there, or a value
    that is not an object part of the way down (the path then holds nothing)."""
    shape = draw(st.sampled_from(["present", "present", "absent", "non-object"]))
    if shape == "absent":
        return {}
    cut = len(keys)
    inner: Any = draw(_truncatable if action == "truncate" else sensitive())
    if shape == "non-object" and len(keys) > 1:
        cut = draw(st.integers(1, len(keys) - 1))
        inner = draw(st.sampled_from(["x", [1, "y"], 7, None, True]))
    for key in reversed(keys[:cut]):
        inner = {key: inner}
    return inner  # type: ignore[no-any-return]


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            _merge(into[key], value)
        else:
            into[key] = value


@st.composite
def event(draw: st.DrawFn, tag: str, number: int) -> dict[str, Any]:
    found: dict[str, Any] = {
        "type": draw(st.sampled_from(["track", "identify", "page", "group"])),
        "messageId": f"{tag}-{number}",
        "event": "Thing Happened",
        "groupId": "g1",
    }
    if draw(st.booleans()) or number == 0:
        found["userId"] = f"{tag}-u"  # else refused: missing_identity
    for _ in range(draw(st.integers(0, len(PLACES)))):
        keys, action = draw(st.sampled_from(PLACES))
        _merge(found, draw(member(keys, action)))
    for root in ("properties", "traits", "context"):
        if draw(st.booleans()):
            extra = draw(st.dictionaries(st.sampled_from(["n", "ünï", "card", "ip"]), _other))
            found.setdefault(root, {})
            if isinstance(found[root], dict):
                for key, value in extra.items():
                    found[root].setdefault(key, value)
    return found


@st.composite
def request(draw: st.DrawFn) -> tuple[str, dict[str, Any] | None, bytes, list[str], str]:
    """(path, the body as an object or None, its bytes, the secrets in it, its kind)."""
    tag = f"h{uuid.uuid4().hex[:10]}"
    events = [draw(event(tag, i)) for i in range(draw(st.integers(1, 4)))]
    kind = draw(st.sampled_from(["batch", "batch", "single", "bad envelope", "broken", "wrapped"]))
    if kind == "single":
        path, body = f"/v1/{events[0]['type']}", events[0]
    elif kind == "wrapped":
        # Events where a body should not hold them: refused whole, and kept whole.
        path, body = draw(
            st.sampled_from(
                [
                    ("/v1/batch", {"batch": events[0]}),
                    ("/v1/batch", {"events": events}),
                    ("/v1/track", {"message": events[0]}),
                    ("/v1/batch", {"batch": [], "data": {"items": [events]}}),
                ]
            )
        )
    else:
        path, body = "/v1/batch", {"batch": events}
        if draw(st.booleans()):
            keys, action = draw(st.sampled_from([p for p in PLACES if p[0][0] == "context"]))
            body["context"] = draw(member(keys[1:], action))
        if kind == "bad envelope":
            body["sentAt"] = "not a time"  # the whole body is refused, and kept
    data = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    if kind == "broken":
        data = data[:-1]  # does not parse: kept without its payload
    secrets = sorted(set(_secrets(body)))
    return path, None if kind == "broken" else body, data, secrets, kind


def _secrets(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value.startswith("SECRET"):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secrets(item)


def _store_text(project: Project) -> str:
    events = project.query("SELECT * FROM events").to_pylist()
    failed = project.query("SELECT * FROM failed_events").to_pylist()
    return json.dumps([events, failed], default=str, ensure_ascii=False)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=request())
def test_no_raw_value_of_a_dropped_or_hashed_path_is_stored(
    pii_server: Server, pii_project: Project, sent: tuple[str, Any, bytes, list[str], str]
) -> None:
    path, body, data, secrets, kind = sent
    with httpx.Client(base_url=pii_server.url, timeout=30, auth=(pii_project.key, "")) as client:
        answer = client.post(path, content=data, headers={"content-type": "application/json"})
    assert answer.status_code in (200, 400), answer.text

    text = _store_text(pii_project)
    for value in secrets:
        assert value not in text
        assert json.dumps(value)[1:-1] not in text
        assert json.dumps(value, ensure_ascii=False)[1:-1] not in text

    if body is None:
        return
    if kind == "wrapped":
        tag = str(_first_id(body)).rsplit("-", 1)[0]
        assert _payloads(pii_project, tag) == [expected_anywhere(body)]
        return
    events = body.get("batch", [body])
    ids = [e["messageId"] for e in events]
    stored = {
        row["message_id"]: row
        for row in pii_project.query(
            f"SELECT * FROM events WHERE message_id IN ({', '.join('?' * len(ids))})", *ids
        ).to_pylist()
    }
    for sent_event in events:
        row = stored.get(sent_event["messageId"])
        if row is None:
            continue
        shared, own = body.get("context") or {}, sent_event.get("context") or {}
        want = expected({**sent_event, "context": {**shared, **own}} if shared else sent_event)
        for root in ("properties", "traits", "context"):
            got = None if row[root] is None else json.loads(row[root])
            assert got == want.get(root), root
    payloads = _payloads(pii_project, ids[0].rsplit("-", 1)[0])
    if "sentAt" in body:
        assert payloads == [expected_payload(body)]
    else:
        # Each refused event is kept alone, as validated (the batch's context under its
        # own, when its own is an object), with the rules applied.
        shared = body.get("context") or {}

        def validated(event: dict[str, Any]) -> dict[str, Any]:
            own = event.get("context")
            if not shared or not (own is None or isinstance(own, dict)):
                return event
            return {**event, "context": {**shared, **(own or {})}}

        refused = [expected(validated(e)) for e in events if e["messageId"] not in stored]
        assert payloads == refused


def _payloads(project: Project, tag: str) -> list[Any]:
    """The kept payloads of the refused events and bodies of one request."""
    kept = project.query("SELECT payload FROM failed_events WHERE payload LIKE ?", f"%{tag}%")
    return [json.loads(p) for p in kept.column("payload").to_pylist()]


def _first_id(value: Any) -> str | None:
    """The first messageId in ``value``, at any depth."""
    if isinstance(value, dict):
        if "messageId" in value:
            return str(value["messageId"])
        value = list(value.values())
    if isinstance(value, list):
        return next((f for f in map(_first_id, value) if f is not None), None)
    return None


def expected_anywhere(value: Any) -> Any:
    """A refused body of any shape as kept: every object in it outside the rules' roots
    taken as an event, the rules applied to its roots once."""
    if isinstance(value, list):
        return [expected_anywhere(item) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: item if key in ("properties", "traits", "context") else expected_anywhere(item)
        for key, item in expected(value).items()
    }


def expected_payload(body: dict[str, Any]) -> dict[str, Any]:
    """A whole refused body as kept: the rules applied to it and to each of its events."""
    if "batch" not in body:
        return expected(body)
    out = expected({k: v for k, v in body.items() if k != "batch"})
    out["batch"] = [expected(e) for e in body["batch"]]
    return out


# -- the validating processes apply the same rules ---------------------------------------


def test_a_worker_applies_the_rules_as_the_server_does() -> None:
    rules = Redactor([PiiRule(path=p, action=a) for p, a in RULES], KEY.encode())  # type: ignore[arg-type]
    events: list[dict[str, object]] = [
        {
            "type": "identify",
            "userId": f"u{i}",
            "messageId": f"w-{i}",
            "traits": {"email": f"user{i}@example.com", "phone": "+1 555 CALL ME"},
            "context": {"ip": "198.51.100.200"},
        }
        for i in range(40)
    ]
    events[3] = {"type": "identify", "messageId": "w-bad", "traits": {"email": "x@example.com"}}
    body = json.dumps(
        {"batch": events, "context": {"traits": {"phone": "+1 555 CALL ME"}}}
    ).encode()
    pool = DecodePool(1, max_event_bytes=32_768, max_depth=64)
    try:
        validated = asyncio.run(pool.validate(body, None, "web", 1_700_000_000_000_000, rules))
    finally:
        pool.close()
    validator = Validator(max_event_bytes=32_768, max_depth=64)
    envelope = decode_batch(body)
    rows, failed, _ = validate_events(
        validator, envelope.batch, None, "web", 1, validator.batch(envelope), rules
    )
    traits = validated.events.column("traits").to_pylist()
    assert traits == [row[schema.EVENTS.names.index("traits")] for row in rows]
    assert json.loads(traits[0]) == {"email": hmac_hex("user0@example.com")}
    contexts = [json.loads(c) for c in validated.events.column("context").to_pylist()]
    assert all(c == {"traits": {}, "ip": "198.51.100.0"} for c in contexts)
    assert [row[6] for row in validated.failed] == [row[6] for row in failed]
    (payload,) = [json.loads(row[6] or "null") for row in validated.failed]
    assert payload["traits"] == {"email": hmac_hex("x@example.com")}
    # a phone number written in no hex digit: an ID or a digest cannot contain it by chance
    assert "CALL ME" not in json.dumps(validated.failed)


# -- bad rules are load errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "said", "fix"),
    [
        ('path = "traits..email"\naction = "drop"', "rule 1 (path = 'traits..email')", "dots"),
        ('path = "user.email"\naction = "drop"', "starts at 'user'", "properties.user.email"),
        ('path = "trait.email"\naction = "drop"', "starts at 'trait'", "'traits.email'"),
        ('path = "traits"\naction = "drop"', "the whole of traits", "traits.email"),
        ('path = "properties.items[0].sku"\naction = "drop"', "members of objects", "whole"),
        ('path = "properties.*"\naction = "drop"', "members of objects", "whole"),
        (
            'path = "traits.email"\naction = "mask"',
            "rule 1: Invalid enum value 'mask'",
            "drop, hash",
        ),
        ('path = "traits.email"', "missing required field `action`", "action"),
        ('path = "traits.email"\naction = "hash"\nkey = "x"', "unknown field `key`", "pii_key"),
        (
            'path = "traits.email"\naction = "hash"',
            "has no pii_key",
            'pii_key = "${HEADWATER_PII_KEY}"',
        ),
        (
            'path = "traits.email"\naction = "drop"\n[[sources.web.pii]]\n'
            'path = "context.traits.email.work"\naction = "hash"',
            "rules 1 ('traits.email', drop) and 2",
            "one rule per value",
        ),
    ],
)
def test_a_bad_rule_is_refused_by_validate_naming_it(
    project: Project, rules: str, said: str, fix: str
) -> None:
    if "pii_key" not in said:
        _with_key(project)
    project.configure(f"[[sources.web.pii]]\n{rules}\n")
    result = project.cli("validate", check=False)
    assert result.returncode == 1, result.stdout
    assert "[[sources.web.pii]]" in result.stderr
    assert said in result.stderr
    assert fix in result.stderr


def test_a_key_written_in_the_file_is_refused(project: Project) -> None:
    _with_key(project, reference="the-key-itself-0123456789abcdef0123")
    project.configure('[[sources.web.pii]]\npath = "traits.email"\naction = "hash"\n')
    result = project.cli("validate", check=False)
    assert result.returncode == 1
    assert "pii_key must be an environment reference" in result.stderr


@pytest.mark.parametrize(("value", "said"), [(None, "is not set"), ("short", "fewer than 32")])
def test_the_server_does_not_start_without_a_usable_key(
    project: Project, monkeypatch: pytest.MonkeyPatch, value: str | None, said: str
) -> None:
    _with_key(project)
    project.configure('[[sources.web.pii]]\npath = "traits.email"\naction = "hash"\n')
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    assert project.cli("validate").returncode == 0  # no credentials needed to validate
    if value is not None:
        monkeypatch.setenv(KEY_VARIABLE, value)
    result = run_cli(project, "up", "--port", "0", check=False)
    assert result.returncode != 0
    assert said in result.stderr
    assert KEY_VARIABLE in result.stderr or "[sources.web] pii_key" in result.stderr


def test_a_body_that_does_not_parse_is_kept_without_its_payload(
    pii_server: Server, pii_project: Project
) -> None:
    tag = f"broken-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"type": "identify", "userId": tag, "traits": {"email": f"{tag}@x.io"}})
    answer = pii_server.post("/v1/identify", content=body[:-1].encode(), auth=(pii_project.key, ""))
    assert answer.status_code == 400
    assert [r["code"] for r in answer.json()["rejected"]] == ["malformed_json"]
    rows = pii_project.query(
        "SELECT code, payload, message FROM failed_events WHERE code = 'malformed_json'"
    ).to_pylist()
    assert rows
    assert all(row["payload"] is None for row in rows)
    assert tag not in json.dumps(rows, default=str)


def test_rules_that_cannot_apply_after_an_edit_refuse_the_source_s_events(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEADWATER_UNSET_PII_KEY", raising=False)
    project.configure('[[sources.web.pii]]\npath = "context.ip"\naction = "truncate"\n')
    server = Server(project).start()
    try:
        event = {"type": "identify", "userId": "u1", "traits": {"email": "ada@example.com"}}
        first = server.post("/v1/identify", json=event, auth=(project.key, ""))
        assert first.status_code == 200
        # The file now names a key the running server's environment does not hold.
        _with_key(project, reference="${HEADWATER_UNSET_PII_KEY}")
        project.configure('[[sources.web.pii]]\npath = "traits.email"\naction = "hash"\n')
        refused = None
        for _ in range(100):
            answer = server.post(
                "/v1/identify", json={**event, "userId": "u2"}, auth=(project.key, "")
            )
            if answer.status_code == 503:
                refused = answer
                break
            assert answer.status_code == 200  # the edit is not seen yet: the old rules hold
            server.post("/v1/identify", json=event, auth=(project.key, ""))
        assert refused is not None, "the edit was never seen"
        assert refused.json()["error"]["code"] == "pii_rules_unavailable"
        assert "HEADWATER_UNSET_PII_KEY" in refused.json()["error"]["message"]
    finally:
        server.stop()
    stored = project.query("SELECT traits FROM events WHERE user_id = 'u2'").to_pylist()
    failed = project.query("SELECT payload FROM failed_events").to_pylist()
    assert "ada@example.com" not in json.dumps(failed)
    # Only what arrived before the edit was seen is stored, with the rules of then.
    assert all(json.loads(row["traits"]) == {"email": "ada@example.com"} for row in stored)
