"""Validation of large batches in other processes, so that every core works.

One process answers HTTP and owns the DuckDB file (its writer commits every
event), and Python runs one thread of it at a time. Decoding and validating a
batch of events is most of a request's CPU, and needs nothing the owner holds:
so a batch over ``_POOL_BYTES`` is sent as its body to a worker process, which
splits it, validates each event, builds the Arrow table of the valid ones and
their dedupe keys, and sends them back. The owner process only checks the
envelope (the key, the counts, the size), queues the table and answers.

Workers start from a fresh interpreter (``forkserver``), never by forking the
owner: its DuckDB and writer threads would be copied in an unknown state. They
hold no state between requests, so one that dies only fails the request it had
(which is answered 503 and sent again by the client).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from headwater.collect.errors import Rejection, Unavailable
from headwater.collect.pii import Redactor
from headwater.collect.validate import Validator, decode_batch
from headwater.collect.writer import FailedRow, rows_table
from headwater.store import schema
from headwater.store.dedupe import U64

#: Bodies at least this large go to a worker; smaller ones cost less to validate than to send.
POOL_BYTES = 16 * 1024

_validator: Validator | None = None


@dataclass(frozen=True, slots=True)
class Validated:
    """One request's events, validated: the table of the valid ones with their dedupe keys,
    and the refused ones (as ``failed_events`` rows and as the answer's rejections)."""

    events: pa.Table
    keys: tuple[U64, U64]
    failed: list[FailedRow]
    rejected: list[Rejection]


class DecodePool:
    """``processes`` worker processes validating whole batches."""

    def __init__(self, processes: int, *, max_event_bytes: int, max_depth: int) -> None:
        # No preload: the fork server stays a bare interpreter (about 12 MB), and each
        # worker imports what it needs at its first batch.
        context = multiprocessing.get_context("forkserver")
        self._processes = processes
        self._starting: list[Future[None]] = []
        self._pool = ProcessPoolExecutor(
            max_workers=processes,
            mp_context=context,
            initializer=_start,
            initargs=(max_event_bytes, max_depth),
        )

    def ready(self) -> bool:
        """Whether the workers have started; the first call starts them, without waiting.

        Each worker imports what it needs (a second or two) at its start: until every one
        has, batches are validated in the server, so no request waits for a worker, and
        a server that never sees a large batch never starts one.
        """
        if not self._starting:
            self._starting = [self._pool.submit(_ready) for _ in range(self._processes)]
        return all(future.done() for future in self._starting)

    async def validate(
        self,
        body: bytes,
        kind: str | None,
        source: str,
        received_us: int,
        rules: Redactor | None = None,
    ) -> Validated:
        """``rules``: the source's PII rules, sent with the body (they follow the file,
        so a worker holds none of its own)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, _validate, body, kind, source, received_us, rules
            )
        except BrokenProcessPool:
            raise Unavailable(
                "a validating process died; send the request again", retry_after=1
            ) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _start(max_event_bytes: int, max_depth: int) -> None:
    global _validator
    _validator = Validator(max_event_bytes=max_event_bytes, max_depth=max_depth)


def _ready() -> None:
    from headwater.collect import app  # noqa: F401  (what _validate needs, imported now)


def _validate(
    body: bytes, kind: str | None, source: str, received_us: int, rules: Redactor | None
) -> Validated:
    """In a worker: the body was checked by the owner (key, counts, size) before it came."""
    from headwater.collect.app import validate_events

    if _validator is None:
        raise RuntimeError("the worker was not started with its limits")
    if kind is None:
        envelope = decode_batch(body)
        raws: list[bytes] = [bytes(raw) for raw in envelope.batch]
        batch = _validator.batch(envelope)
    else:
        raws, batch = [body], None
    rows, failed, rejected = validate_events(
        _validator, raws, kind, source, received_us, batch, rules
    )
    table = rows_table(rows, schema.EVENTS)
    hi, lo = schema.message_keys([source] * len(rows), [row[0] for row in rows])
    keys = (np.asarray(hi.to_numpy()), np.asarray(lo.to_numpy()))
    return Validated(table, keys, list(failed), rejected)
