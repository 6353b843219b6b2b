"""The top level of a JSON object, found without recursion: the slow path for bodies that
the fast decoder cannot split.

msgspec splits a ``/v1/batch`` body into raw events in C, recursing through
every value it skips; an event nested a thousand levels deep makes it give up
on the whole body, and the batch's good events would be refused with it. A
body may also hold the same key twice (two ``batch`` arrays), and a decoder
keeps the last silently. This module walks the body's tokens with a loop and a
depth counter instead: it finds each top-level key and the bytes of its value,
and each element of an array value, whatever their depth, so one deep event is
refused alone and a repeated key is refused by name.

It runs only when the fast path cannot answer, so it may be slower.

>>> fields = top_level(b'{"batch": [{"a": [1]}, 2], "sentAt": "x"}')
>>> [(key, body) for key, body in fields]
[('batch', b'[{"a": [1]}, 2]'), ('sentAt', b'"x"')]
>>> elements(b'[{"a": [1]}, 2]')
[b'{"a": [1]}', b'2']
"""

from __future__ import annotations

import re

from headwater.core import jsonio

# A string (with its escapes), or one structural character; everything else (numbers,
# true, false, null, whitespace) lies between tokens and is taken as part of a value.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.S)


class NotAnObject(ValueError):
    """The body is not one JSON object (or not JSON at all)."""


def top_level(body: bytes) -> list[tuple[str, bytes]]:
    """Each key of the top-level object, in order (repeats kept), with its value's bytes."""
    start = _skip_space(body, 0)
    if start >= len(body) or body[start : start + 1] != b"{":
        raise NotAnObject("the body is not a JSON object")
    return [(_key(body[k0:k1]), body[v0:v1].strip()) for k0, k1, v0, v1 in _members(body, start)]


def elements(array: bytes) -> list[bytes]:
    """The bytes of each element of a JSON array."""
    start = _skip_space(array, 0)
    if array[start : start + 1] != b"[":
        raise NotAnObject("the value is not a JSON array")
    found: list[bytes] = []
    depth, begin = 0, start + 1
    for token in _TOKEN.finditer(array, start):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
        elif char in (b"]", b"}"):
            depth -= 1
            if depth == 0:
                last = array[begin : token.start()].strip()
                if last:
                    found.append(last)
                return found
        elif char == b"," and depth == 1:
            found.append(array[begin : token.start()].strip())
            begin = token.end()
    raise NotAnObject("the array is not closed")


def _members(body: bytes, start: int) -> list[tuple[int, int, int, int]]:
    """(key start, key end, value start, value end) of each member of the object at
    ``start``."""
    members: list[tuple[int, int, int, int]] = []
    depth = 0
    key: tuple[int, int] | None = None
    value_start = -1
    expecting_key = False
    for token in _TOKEN.finditer(body, start):
        char = token.group()
        if char in (b"{", b"["):
            depth += 1
            expecting_key = depth == 1
        elif char in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                if key is not None:
                    members.append((*key, value_start, token.start()))
                if body[token.end() :].strip():
                    raise NotAnObject("the body holds more after its object")
                return members
        elif depth != 1:
            continue
        elif expecting_key:
            if not char.startswith(b'"'):
                raise NotAnObject("a member of the object has no key")
            key, expecting_key = (token.start(), token.end()), False
        elif char == b":" and value_start < 0:
            value_start = token.end()
        elif char == b",":
            if key is None or value_start < 0:
                raise NotAnObject("a member of the object has no value")
            members.append((*key, value_start, token.start()))
            key, value_start, expecting_key = None, -1, True
    raise NotAnObject("the object is not closed")


def _key(token: bytes) -> str:
    """A key as its writer meant it, escapes decoded: ``"b\\u0061tch"`` is ``batch``."""
    value = jsonio.loads(token)
    if not isinstance(value, str):
        raise NotAnObject("a key of the object is not a string")
    return value


def _skip_space(data: bytes, at: int) -> int:
    while at < len(data) and data[at] in b" \t\r\n":
        at += 1
    return at
