"""The wire between accept processes and the process that owns the store.

An accept process (``runtime/accept_process.py``) answers HTTP and validates; the owner
commits. What one sends the other is a *frame*: the events of every request the
accept process took since its last frame, as one Arrow IPC stream with their
dedupe keys, the refused events of those requests as another, and a header
saying which rows are whose. The owner answers each frame with a *reply*: per
request, how many of its events were kept (not of an erased person) and how
many of those were new, or why none was stored.

A frame without requests is a heartbeat: it carries the accept process's
arrival floor (every request it took before that time is in a frame or
answered), which the owner folds into the floor pipelines wait for.

On the socket each message is its parts, each a 4-byte big-endian length and its
bytes: a frame has three (header, events, failed events), a reply one.
"""

from __future__ import annotations

import asyncio
import struct

import msgspec
import numpy as np
import pyarrow as pa

from headwater.collect.errors import CommitFailed, Overloaded, ShuttingDown, Unavailable
from headwater.store import schema
from headwater.store.dedupe import U64

_LENGTH = struct.Struct(">I")
#: The wire's version, in every header: an accept process started from other code (an
#: upgrade in place) is refused rather than misread.
WIRE_VERSION = 1
#: Dedupe keys ride with the events, as two more columns of their table.
KEY_HI, KEY_LO = "__key_hi", "__key_lo"
#: The classes of error a reply can carry, by their code.
_ERRORS: dict[str, type[Unavailable]] = {
    cls.code: cls for cls in (Unavailable, Overloaded, ShuttingDown, CommitFailed)
}
#: Largest part a reader takes: a frame holds at most ``commit_max_bytes`` of bodies
#: (8 MB by default), whose Arrow form is about as large; past this the peer is broken.
MAX_PART_BYTES = 256 * 1024 * 1024


class Header(msgspec.Struct, array_like=True, frozen=True):
    """Which rows of a frame's events table belong to which request."""

    #: First, and always there: a header of another version cannot decode as this one.
    version: int
    id: int
    #: Every request the accept process took before this time (µs) is in this frame, an
    #: earlier one, or answered.
    floor: int
    #: Per request: when it arrived (µs), its valid events (rows, in order), its refused
    #: events (rows of the failed table, in order), its body's bytes.
    received: list[int] = []
    counts: list[int] = []
    failed: list[int] = []
    nbytes: list[int] = []


class Reply(msgspec.Struct, array_like=True, frozen=True):
    """What became of a frame: per request, events kept and events new; or an error."""

    id: int
    kept: list[int] = []
    stored: list[int] = []
    #: With ``error``: the requests it answers (by position); none stored. An error with
    #: no ``kept`` answers every request of the frame.
    refused: list[int] = []
    error: str | None = None
    message: str = ""
    retry_after: int = 1

    def error_of(self, request: int) -> Unavailable | None:
        """What request number ``request`` of the frame is answered with, if not stored."""
        if self.error is None or (self.kept and request not in self.refused):
            return None
        cls = _ERRORS.get(self.error, Unavailable)
        return cls(self.message, retry_after=self.retry_after)


def error_reply(frame_id: int, error: Unavailable) -> Reply:
    return Reply(frame_id, error=error.code, message=str(error), retry_after=error.retry_after)


_header_decoder = msgspec.msgpack.Decoder(Header)
_reply_decoder = msgspec.msgpack.Decoder(Reply)
_encoder = msgspec.msgpack.Encoder()


def encode_frame(
    header: Header, events: pa.Table, keys: tuple[U64, U64], failed: pa.Table
) -> bytes:
    """The frame's bytes: ``events`` (of ``schema.EVENTS``) carry ``keys`` as two columns."""
    if events.num_rows:
        events = events.append_column(KEY_HI, pa.array(keys[0], pa.uint64()))
        events = events.append_column(KEY_LO, pa.array(keys[1], pa.uint64()))
        events_part = _ipc(events)
    else:
        events_part = b""
    failed_part = _ipc(failed) if failed.num_rows else b""
    return b"".join(
        _LENGTH.pack(len(part)) + part
        for part in (_encoder.encode(header), events_part, failed_part)
    )


def encode_reply(reply: Reply) -> bytes:
    body = _encoder.encode(reply)
    return _LENGTH.pack(len(body)) + body


async def read_frame(
    reader: asyncio.StreamReader,
) -> tuple[Header, pa.Table, tuple[U64, U64], pa.Table]:
    """The next frame: its header, events (of ``schema.EVENTS``), their keys, failed events.

    Raises :class:`asyncio.IncompleteReadError` when the peer has gone.
    """
    header = _header_decoder.decode(await _part(reader))
    events_part, failed_part = await _part(reader), await _part(reader)
    if events_part:
        table = _table(events_part)
        keys = (
            np.asarray(table[KEY_HI].to_numpy(), np.uint64),
            np.asarray(table[KEY_LO].to_numpy(), np.uint64),
        )
        events = table.select(schema.EVENTS.names)
    else:
        empty = np.empty(0, np.uint64)
        events, keys = schema.EVENTS.empty_table(), (empty, empty)
    failed = _table(failed_part) if failed_part else schema.FAILED_EVENTS.empty_table()
    if header.version != WIRE_VERSION:
        raise ValueError(
            f"an accept process speaks version {header.version} of the wire, this server "
            f"{WIRE_VERSION}: restart the server after an upgrade"
        )
    requests = len(header.received)
    if (
        len(header.counts) != requests
        or len(header.failed) != requests
        or len(header.nbytes) != requests
        or sum(header.counts) != events.num_rows
        or sum(header.failed) != failed.num_rows
    ):
        raise ValueError("a frame's header does not match its events")
    return header, events, keys, failed


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    return _reply_decoder.decode(await _part(reader))


async def _part(reader: asyncio.StreamReader) -> bytes:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_PART_BYTES:
        raise ValueError(f"a frame part of {size} bytes is over the limit")
    return await reader.readexactly(size) if size else b""


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    return bytes(sink.getvalue())


def _table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
