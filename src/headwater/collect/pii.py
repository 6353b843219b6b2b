"""PII rules: what the collector does to named values of a source's events before anything
is stored.

A rule names one value by a dotted path into ``properties``, ``traits`` or
``context`` and says what becomes of it: ``drop`` removes the member, ``hash``
replaces it with its keyed HMAC-SHA256 (hex), ``truncate`` keeps an IP
address's network or a timestamp's hour. Rules run on the decoded event,
before its row is built, and on the payload of a refused event before it is
kept in ``failed_events``: no raw value of a ruled path is ever written.

A path names members of objects only: no array indexes, no wildcards. A rule
whose path meets a value that is not an object on the way, or no member,
does nothing (the value is not at that path). A ``traits.`` rule applies to
``context.traits`` too, where Segment libraries carry a user's traits on
events other than identify. The paths of one source's rules never overlap
(checked at load), so the rules commute and their order does not matter.

>>> rules = [PiiRule(path="context.ip", action="truncate"),
...          PiiRule(path="properties.card", action="drop")]
>>> redactor = Redactor(rules, key=None)
>>> redactor.event({"card": {"number": "4111"}, "n": 1}, None, {"ip": "203.0.113.7"})
({'n': 1}, None, {'ip': '203.0.113.0'})
"""

from __future__ import annotations

import difflib
import hmac
import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from headwater.collect.settings import PiiRule, SourceSettings
from headwater.core.errors import ConfigError
from headwater.core.secrets import environment_value

ROOTS = ("properties", "traits", "context")
#: Shortest HMAC key accepted, in characters: 32 hex digits are 128 bits.
MIN_KEY_CHARS = 32
KEY_HINT = 'export it with a random value: python -c "import secrets; print(secrets.token_hex(32))"'

# A date, a time to the minute at least: what ``truncate`` takes for a timestamp (a date
# alone has no hour to truncate to).
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_canonical = msgspec.json.Encoder(order="sorted")
# A dotted-quad IPv4 address as ipaddress takes it: 0-255, no leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z", re.ASCII)


class _Drop:
    """What an action returns to remove the member."""


_DROP = _Drop()
Action = Callable[[Any], Any]
#: One rule at one place: the root it starts at, the keys below it, and its action.
Target = tuple[str, tuple[str, ...], Action]


class BadPath(ValueError):
    """A rule's path that names no member of an event."""

    def __init__(self, problem: str, hint: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


def parse_path(path: str) -> tuple[str, ...]:
    """The keys of ``path``, root first; :class:`BadPath` says what is wrong with it.

    >>> parse_path("traits.address.city")
    ('traits', 'address', 'city')
    """
    keys = tuple(path.split("."))
    root = keys[0]
    if not path:
        raise BadPath("the path is empty", 'name a member, e.g. path = "traits.email"')
    if any(not key for key in keys):
        raise BadPath(
            "the path has an empty key (two dots together, or a dot at an end)",
            "write the keys joined by single dots, e.g. properties.card.number",
        )
    if root not in ROOTS:
        near = difflib.get_close_matches(root, ROOTS, n=1)
        raise BadPath(
            f"the path starts at {root!r}; rules apply to properties, traits and context",
            f"did you mean {'.'.join((near[0], *keys[1:]))!r}?"
            if near
            else f"start it with one of them, e.g. properties.{path}",
        )
    if len(keys) == 1:
        raise BadPath(
            f"the path names the whole of {root}, not a member of it",
            f"name the member, e.g. {root}.email",
        )
    for key in keys[1:]:
        if key == "*" or "[" in key or "]" in key:
            raise BadPath(
                f"the key {key!r} addresses array elements or every member: paths name "
                "members of objects only",
                "name the member that holds the array or object, to drop or hash it whole",
            )
        if key != key.strip():
            raise BadPath(
                f"the key {key!r} begins or ends with a space",
                "remove the spaces around the dots",
            )
    return keys


def places(keys: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Where a rule applies: its path, and for ``traits.X`` also ``context.traits.X``."""
    if keys[0] == "traits":
        return [keys, ("context", *keys)]
    return [keys]


def overlap(paths: Sequence[str]) -> tuple[int, int] | None:
    """The indexes of the first two paths of which one covers the other (equal, or one
    inside the other, ``traits.X`` counting as ``context.traits.X`` too)."""
    seen: list[tuple[int, tuple[str, ...]]] = []
    for index, path in enumerate(paths):
        for place in places(parse_path(path)):
            for other, earlier in seen:
                shorter = min(len(place), len(earlier))
                if other != index and place[:shorter] == earlier[:shorter]:
                    return other, index
            seen.append((index, place))
    return None


class Redactor:
    """One source's rules, ready to apply; ``key``: the HMAC key of its ``hash`` rules.

    Values are never changed in place: a batch's ``context`` is shared by the
    dicts of all its events, so each change copies the objects on its path.
    """

    __slots__ = ("_by_root", "_key", "_mac", "_rules")

    def __init__(self, rules: Sequence[PiiRule], key: bytes | None) -> None:
        self._key = key
        # The key's pads hashed once: each value then costs a copy, not a key setup.
        self._mac = hmac.new(key or b"", digestmod="sha256")
        self._rules = tuple(rules)
        by_root: dict[str, list[tuple[tuple[str, ...], Action]]] = {root: [] for root in ROOTS}
        for rule in rules:
            action = self._action(rule.action)
            for place in places(parse_path(rule.path)):
                by_root[place[0]].append((place[1:], action))
        self._by_root = {root: tuple(found) for root, found in by_root.items()}

    def __reduce__(self) -> tuple[type[Redactor], tuple[tuple[PiiRule, ...], bytes | None]]:
        # Sent to the validating processes (collect/workers.py) with each large batch.
        return Redactor, (self._rules, self._key)

    def _action(self, name: str) -> Action:
        if name == "drop":
            return _drop
        if name == "truncate":
            return truncate
        if self._key is None:
            raise ValueError("a hash rule needs the source's key")
        return self._hash

    def _hash(self, value: Any) -> Any:
        """The hex HMAC-SHA256 of a string's UTF-8 bytes, or of any other value's compact
        JSON (object keys sorted): 42 and "42" hash alike, as userId 42 is stored "42".
        ``null`` holds nothing and stays."""
        if value is None:
            return None
        mac = self._mac.copy()
        mac.update(value.encode() if isinstance(value, str) else _canonical.encode(value))
        return mac.hexdigest()

    def event(
        self,
        properties: dict[str, Any] | None,
        traits: dict[str, Any] | None,
        context: dict[str, Any] | None,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
        """An event's ``properties``, ``traits`` and ``context`` with the rules applied."""
        return (
            _apply(properties, self._by_root["properties"]),
            _apply(traits, self._by_root["traits"]),
            _apply(context, self._by_root["context"]),
        )

    def payload(self, value: object) -> object | None:
        """A refused body or event with the rules applied, for ``failed_events``: to the
        ``properties``, ``traits`` and ``context`` of every object in it, at any depth. A
        refused body's events may sit in any shape (``batch`` as an object, a list under a
        name of the sender's own): each object outside the roots is looked at as an event,
        so no ruled value is kept raw wherever it was put. ``value`` is a freshly
        parsed body and is changed in place. ``None`` for a value that is not an object:
        where its events' values are cannot be told, so none of it is kept.

        >>> redactor = Redactor([PiiRule(path="properties.ssn", action="drop")], key=None)
        >>> redactor.payload({"events": [{"properties": {"ssn": "1", "n": 2}}]})
        {'events': [{'properties': {'n': 2}}]}
        """
        if not isinstance(value, dict):
            return None
        # A loop, not recursion: the payload may be nested as deeply as its decoder allowed.
        stack: list[object] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for root in ROOTS:
                    if isinstance(item.get(root), dict):
                        item[root] = _apply(item[root], self._by_root[root])
                # Not into a root the rules were applied to: a hash hashed again (of
                # ``context.traits``, say, by the ``traits.`` rules) would not be the one
                # the accepted events hold.
                stack.extend(
                    v for k, v in item.items() if k not in ROOTS and isinstance(v, dict | list)
                )
            elif isinstance(item, list):
                stack.extend(v for v in item if isinstance(v, dict | list))
        return value


def _apply(
    value: dict[str, Any] | None, targets: tuple[tuple[tuple[str, ...], Action], ...]
) -> dict[str, Any] | None:
    for keys, action in targets:
        if value is None:
            break
        value = _at(value, keys, action)
    return value


def _at(value: dict[str, Any], keys: tuple[str, ...], action: Action) -> dict[str, Any]:
    """``value`` with ``action`` applied at ``keys``: a copy along the path if anything
    changed, else ``value`` itself."""
    key = keys[0]
    if key not in value:
        return value
    inner = value[key]
    if len(keys) > 1:
        if not isinstance(inner, dict):
            return value
        changed = _at(inner, keys[1:], action)
        if changed is inner:
            return value
        copy = dict(value)
        copy[key] = changed
        return copy
    copy = dict(value)
    result = action(inner)
    if result is _DROP:
        del copy[key]
    else:
        copy[key] = result
    return copy


def _drop(value: Any) -> Any:
    return _DROP


def truncate(value: Any) -> Any:
    """An IPv4 address's /24 or an IPv6 address's /48 network address, or an ISO 8601
    timestamp at the start of its hour (its offset as written). A value that is neither
    is removed: it was declared sensitive and cannot be made less so. ``null`` stays.

    >>> truncate("203.0.113.7"), truncate("2001:db8:85a3:8d3:1319:8a2e:370:7348")
    ('203.0.113.0', '2001:db8:85a3::')
    >>> truncate("2026-11-25T12:34:56.789Z"), truncate("2026-11-25T12:34:56+05:30")
    ('2026-11-25T12:00:00Z', '2026-11-25T12:00:00+05:30')
    """
    if value is None:
        return None
    if not isinstance(value, str):
        return _DROP
    if _IPV4.match(value):
        # The common case, without ipaddress's objects (a tenth of the time).
        return value[: value.rindex(".")] + ".0"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return _hour(value)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{_network(address.ipv4_mapped)}"
    return _network(address)


def _network(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network((address, prefix), strict=False).network_address)


def _hour(value: str) -> Any:
    if not _TIMESTAMP.match(value):
        return _DROP
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _DROP
    text = moment.replace(minute=0, second=0, microsecond=0).isoformat()
    if value[-1] in "Zz" and text.endswith("+00:00"):
        text = text[: -len("+00:00")] + "Z"
    return text


def redactor(name: str, source: SourceSettings) -> Redactor | None:
    """The source's rules with their key read from the environment; ``None`` when it has
    none. Raises :class:`ConfigError` when the key is not set or too short."""
    if not source.pii:
        return None
    key = None
    if source.pii_key is not None and any(rule.action == "hash" for rule in source.pii):
        where = f"[sources.{name}] pii_key"
        text = environment_value(source.pii_key, where=where)
        if len(text) < MIN_KEY_CHARS:
            raise ConfigError(
                f"{where}: the key in the environment has {len(text)} characters, fewer "
                f"than {MIN_KEY_CHARS}: a short key can be guessed",
                hint=KEY_HINT,
            )
        key = text.encode()
    return Redactor(source.pii, key)
