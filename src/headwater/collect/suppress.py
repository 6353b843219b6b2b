"""Suppression at ingest: events of erased people are dropped before they are stored.

The list is a set of SHA-256 hashes of ids (:func:`id_hash`), held in memory and replaced
when the metadata database's list changes (the server looks every few seconds), so an
event costs a hash and a set lookup, never a query. An event is dropped when its
``userId`` or ``anonymousId`` is on the list, or an alias's ``previousId`` is (either
kind, as an erasure deletes it); it is answered as accepted (a client must
not send it again), counted by the ``headwater_events_suppressed`` metric and in the
list's own counts, and stored nowhere. A refused event (a ``failed_events`` row) is
dropped likewise when any string in its payload is a listed id, as an erasure finds it;
its payload is parsed only when the list has entries.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import numpy as np
import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter

from headwater.collect.writer import FailedRow
from headwater.store import schema
from headwater.store.dedupe import U64

R = TypeVar("R", bound=Sequence[object])

#: The id columns an erasure names and ingest checks.
KINDS = ("user_id", "anonymous_id")
#: An event's columns checked at ingest, each against the kinds of id it may hold: an
#: alias's ``previous_id`` is the id the person had before, a user id or an anonymous
#: one (an erasure deletes such an event, so ingest drops it).
_CHECKED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("user_id", ("user_id",)),
    ("anonymous_id", ("anonymous_id",)),
    ("previous_id", KINDS),
)
_INDEX = {column: schema.EVENTS.get_field_index(column) for column, _ in _CHECKED}
#: A JSON string in a body that did not parse (kept as its text): where an id may be.
_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')


def id_hash(kind: str, value: str) -> str:
    """The hash an id is kept and looked up by: the same in every source (an erasure is of
    a person, not of one source's events), apart per kind.

    >>> id_hash("user_id", "u1") == id_hash("user_id", "u1") != id_hash("anonymous_id", "u1")
    True
    """
    return hashlib.sha256(f"headwater-person\x00{kind}\x00{value}".encode()).hexdigest()


def strings(value: object) -> Iterator[str]:
    """Every string value in a parsed JSON ``value``, at any depth: where a person's id
    may be in a payload whose shape is not known (a refused event)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _candidates(value: object) -> Iterator[str]:
    yield from strings(value)
    if isinstance(value, str):
        # A body that did not parse is kept as its text: the ids quoted in it count too.
        for literal in _LITERAL.findall(value):
            try:
                found = json.loads(literal)
            except ValueError:
                continue
            if isinstance(found, str):
                yield found


class Suppression:
    """The hashes whose events are dropped, and how many were dropped since last asked."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._hashes: frozenset[str] = frozenset()
        self._dropped: dict[str, int] = {}
        self._lock = threading.Lock()
        self._counter = (
            None
            if registry is None
            else Counter(
                "headwater_events_suppressed",
                "Events dropped at ingest because their person was erased (not stored).",
                registry=registry,
            )
        )

    def replace(self, hashes: Iterable[str]) -> None:
        self._hashes = frozenset(hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def take_dropped(self) -> dict[str, int]:
        """What was dropped since the last call, by hash (to add to the list's counts)."""
        with self._lock:
            dropped, self._dropped = self._dropped, {}
        return dropped

    def filter(
        self, events: pa.Table | list[R], keys: tuple[U64, U64] | None
    ) -> tuple[pa.Table | list[R], tuple[U64, U64] | None, int]:
        """``events`` (rows or a table) without those of suppressed ids, their dedupe keys
        likewise, and how many were dropped."""
        hashes = self._hashes
        if not hashes:
            return events, keys, 0
        if isinstance(events, pa.Table):
            ids = [events.column(column).to_pylist() for column, _ in _CHECKED]
            marks = [self._hit(hashes, [col[i] for col in ids]) for i in range(events.num_rows)]
        else:
            marks = [self._hit(hashes, [row[_INDEX[c]] for c, _ in _CHECKED]) for row in events]
        dropped = sum(m is not None for m in marks)
        if not dropped:
            return events, keys, 0
        self._count(m for m in marks if m is not None)
        if isinstance(events, pa.Table):
            keep = np.array([m is None for m in marks], dtype=bool)
            kept_keys = None if keys is None else (keys[0][keep], keys[1][keep])
            return events.filter(pa.array(keep)), kept_keys, dropped
        return [row for row, m in zip(events, marks, strict=True) if m is None], keys, dropped

    def failed(self, rows: list[FailedRow]) -> tuple[list[FailedRow], int]:
        """``rows`` without those whose payload holds a suppressed id (as any string
        value, of either kind), and how many were dropped."""
        hashes = self._hashes
        if not hashes or not rows:
            return rows, 0
        marks = [self._held(hashes, row[6]) for row in rows]
        hits = [m for m in marks if m is not None]
        if not hits:
            return rows, 0
        self._count(hits)
        return [row for row, m in zip(rows, marks, strict=True) if m is None], len(hits)

    @staticmethod
    def _held(hashes: frozenset[str], payload: str | None) -> str | None:
        if payload is None:
            return None
        try:
            value = json.loads(payload)
        except ValueError:
            return None
        for text in _candidates(value):
            for kind in KINDS:
                if (found := id_hash(kind, text)) in hashes:
                    return found
        return None

    @staticmethod
    def _hit(hashes: frozenset[str], values: Sequence[object]) -> str | None:
        for (_, kinds), value in zip(_CHECKED, values, strict=True):
            if isinstance(value, str):
                for kind in kinds:
                    if (found := id_hash(kind, value)) in hashes:
                        return found
        return None

    def _count(self, hits: Iterable[str]) -> None:
        with self._lock:
            n = 0
            for found in hits:
                self._dropped[found] = self._dropped.get(found, 0) + 1
                n += 1
        if self._counter is not None:
            self._counter.inc(n)
