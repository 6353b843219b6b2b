"""The owner's side of accept processes: start them, watch them, commit their frames.

``[collector] accept_processes = N`` makes the server start N processes
(``runtime/accept_process.py``) on its listening socket and stop accepting on it
itself: they answer HTTP and validate, each on its own core, and send their
events here in frames (``collect/frames.py``). This process keeps what only
one process may do: the writer's group commit into the store (frames of every
accept process join the same commits), the scheduler, the deliverer, the read
API and the dashboard, which the accept processes reach through its HTTP
socket. An accept process that dies is started again; this process dying ends
them (they ask the kernel to kill them with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from headwater.collect.errors import CommitFailed, Unavailable
from headwater.collect.frames import Header, Reply, encode_reply, error_reply, read_frame
from headwater.collect.suppress import Suppression
from headwater.collect.writer import FailedRow, Outcome, Writer
from headwater.config.project import Project
from headwater.core.clock import now_us
from headwater.core.errors import ConfigError
from headwater.store.dedupe import U64

log = logging.getLogger(__name__)

#: How long the accept processes may take to start (each imports what it needs).
START_SECONDS = 60.0
#: Pause before starting again an accept process that died.
RESTART_SECONDS = 1.0


class Acceptors:
    """``count`` accept processes on ``listening``, and the frames they send."""

    def __init__(
        self,
        project: Project,
        count: int,
        listening: socket.socket,
        writer: Writer,
        suppression: Suppression,
    ) -> None:
        self._project = project
        self._count = count
        self._listening = listening
        self.frames = Frames(writer, suppression)
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stopping = False
        self._frames_path: Path | None = None
        self._http_path: Path | None = None

    def floor(self) -> int | None:
        """See :meth:`Frames.floor`."""
        return self.frames.floor()

    async def start(self, frames: socket.socket, http: Path) -> None:
        """Serve frames on ``frames`` (a private Unix socket), start the processes (they
        reach the HTTP app on ``http``), and return once each has said it is up."""
        self._frames_path = Path(frames.getsockname())
        await self.frames.listen(frames)
        self._http_path = http
        if self._stopping:  # a signal came first: nothing to start
            return
        self._processes = [self._spawn() for _ in range(self._count)]
        deadline = asyncio.get_running_loop().time() + START_SECONDS
        while self.frames.connected < self._count:
            if self._stopping:  # a signal while they start: the drain follows
                return
            for process in self._processes:
                if process.poll() is not None:
                    raise ConfigError(
                        f"an accept process exited at its start (code {process.returncode})",
                        hint="its error is above; or set [collector] accept_processes = 0",
                    )
            if asyncio.get_running_loop().time() > deadline:
                raise ConfigError(
                    f"the accept processes did not start within {START_SECONDS:.0f} s",
                    hint="set [collector] accept_processes = 0 on a machine this slow",
                )
            await asyncio.sleep(0.02)

    async def supervise(self) -> None:
        """Start again any accept process that dies, until :meth:`stop`: a second after,
        and twice as long each time one dies within a minute of its start (up to a
        minute), so a process that cannot start does not spin. Each on its own clock."""
        loop = asyncio.get_running_loop()
        count = len(self._processes)
        pauses = [RESTART_SECONDS / 2] * count
        started = [loop.time()] * count
        due: list[float | None] = [None] * count
        while not self._stopping:
            now = loop.time()
            for index, process in enumerate(self._processes):
                if due[index] is None and process.poll() is not None:
                    lived = now - started[index]
                    pauses[index] = (
                        min(pauses[index] * 2, 60.0) if lived < 60.0 else RESTART_SECONDS
                    )
                    due[index] = now + pauses[index]
                    log.error(
                        "accept process %d exited (code %s); starting another in %.0f s",
                        process.pid,
                        process.returncode,
                        pauses[index],
                    )
                at = due[index]
                if at is not None and now >= at:
                    self._processes[index] = self._spawn()
                    started[index], due[index] = now, None
            await asyncio.sleep(0.2)

    async def stop(self, timeout: float) -> None:
        """Let each accept process finish its requests (SIGTERM), within ``timeout``."""
        self._stopping = True
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        deadline = asyncio.get_running_loop().time() + timeout
        for process in self._processes:
            left = max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                await asyncio.to_thread(process.wait, left)
            except subprocess.TimeoutExpired:
                log.warning("accept process %d outlasted the drain timeout", process.pid)
                process.kill()
                await asyncio.to_thread(process.wait)
        await self.frames.close()

    def kill(self) -> None:
        self._stopping = True
        for process in self._processes:
            if process.poll() is None:
                process.kill()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Started from the event loop's thread, which lives as long as the server: an
        # accept process asks to die with the thread that started it.
        fd = self._listening.fileno()
        command = [
            sys.executable,
            "-m",
            "headwater.runtime.accept_process",
            str(self._project.root),
            "--fd",
            str(fd),
            "--frames",
            str(self._frames_path),
            "--http",
            str(self._http_path),
            "--parent",
            str(os.getpid()),
        ]
        if self._project.environment:
            command += ["--env", self._project.environment]
        # This interpreter and the project's own folder: nothing from outside.
        return subprocess.Popen(command, pass_fds=[fd], stdin=subprocess.DEVNULL)  # noqa: S603


class Frames:
    """Frames from accept processes, committed through the writer, each answered."""

    def __init__(self, writer: Writer, suppression: Suppression) -> None:
        self._writer = writer
        self._suppression = suppression
        self._floors: dict[int, int] = {}
        self._connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Frames taken and not answered yet: the arrival of each one's earliest request.
        self._frames: dict[int, int] = {}
        self._tokens = itertools.count()

    def floor(self) -> int | None:
        """Every request an accept process took before this time (µs) has been committed
        or refused; ``None`` without any accept process or frame."""
        return min([*self._floors.values(), *self._frames.values()], default=None)

    @property
    def connected(self) -> int:
        """Accept processes connected now."""
        return self._connections

    async def listen(self, frames: socket.socket) -> None:
        """Take frames on ``frames`` (a listening Unix socket) from now on."""
        self._server = await asyncio.start_unix_server(
            self._connection, sock=frames, limit=1024 * 1024
        )

    async def close(self) -> None:
        """Stop taking frames, once those taken are answered."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task

    async def _connection(self, reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        key = id(stream)
        self._floors[key] = now_us()
        first = True
        try:
            while True:
                header, events, keys, failed = await read_frame(reader)
                self._floors[key] = header.floor
                if first:
                    first = False
                    self._connections += 1
                if not header.received:
                    continue
                # Until the writer has it, the frame holds the floor here: its process may
                # be gone (and its own floor with it) before the commit starts.
                token = next(self._tokens)
                self._frames[token] = min(header.received)
                task = asyncio.create_task(
                    self._commit(header, events, keys, failed, stream, token)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the accept process stopped; its unanswered clients send again
        except ValueError as exc:
            log.error("an accept process sent a broken frame (%s); dropping it", exc)
        finally:
            self._floors.pop(key, None)
            if not first:
                self._connections -= 1
            stream.close()

    async def _commit(
        self,
        header: Header,
        events: pa.Table,
        keys: tuple[U64, U64],
        failed: pa.Table,
        stream: asyncio.StreamWriter,
        token: int,
    ) -> None:
        """Commit one frame through the writer (with the other frames and requests of its
        group) and tell the accept process what became of each request; it is answered
        whatever happens, or its requests would wait for good."""
        try:
            reply = await self._outcome(
                header, _requests(header, events, keys, failed), (events, keys)
            )
        except Exception as exc:
            log.exception("could not commit a frame of an accept process")
            reply = error_reply(header.id, CommitFailed(f"unexpected error: {exc}", retry_after=1))
        finally:
            self._frames.pop(token, None)
        with contextlib.suppress(ConnectionError, RuntimeError):
            stream.write(encode_reply(reply))
            await stream.drain()

    async def _outcome(
        self, header: Header, requests: list[_Request], whole: tuple[pa.Table, tuple[U64, U64]]
    ) -> Reply:
        """``whole``: the frame's events and keys as they came (one Arrow chunk), which
        the writer takes as they are unless an erased person's events leave them."""
        dropped = False
        for request in requests:
            dropped |= self._suppress(request)
        kept = [request.events.num_rows for request in requests]
        try:
            outcome = await self._submit(
                requests, min(header.received), sum(header.nbytes), None if dropped else whole
            )
        except CommitFailed as error:
            if len(requests) == 1:
                return error_reply(header.id, error)
            # One request the store refuses must not fail the others of its frame: each
            # alone (the writer then commits each request by itself if one still fails).
            alone = await asyncio.gather(
                *(self._submit([r], r.received, r.nbytes) for r in requests),
                return_exceptions=True,
            )
            stored, refused = [], []
            for index, result in enumerate(alone):
                if isinstance(result, BaseException):
                    if not isinstance(result, Exception):
                        raise result from error
                    refused.append(index)
                    stored.append(0)
                else:
                    stored.append(int(result.stored))
                    self._writer.acknowledged(requests[index].received)
            return Reply(
                header.id, kept, stored, refused, error.code, str(error), error.retry_after
            )
        except Unavailable as error:
            return error_reply(header.id, error)
        new = outcome.new_rows if outcome.new_rows is not None else np.zeros(0, np.bool_)
        ends = np.cumsum(kept)
        stored = [int(part.sum()) for part in np.split(new, ends[:-1])]
        for received in header.received:
            self._writer.acknowledged(received)
        return Reply(header.id, kept, stored)

    async def _submit(
        self,
        requests: list[_Request],
        received: int,
        nbytes: int,
        whole: tuple[pa.Table, tuple[U64, U64]] | None = None,
    ) -> Outcome:
        if whole is not None:
            events, keys = whole
        else:
            tables = [r.events for r in requests]
            # One chunk, as a frame comes: DuckDB reads many small chunks slowly.
            events = tables[0] if len(tables) == 1 else pa.concat_tables(tables).combine_chunks()
            keys = (
                np.concatenate([r.keys[0] for r in requests]),
                np.concatenate([r.keys[1] for r in requests]),
            )
        return await self._writer.submit(
            events,
            [row for r in requests for row in r.failed],
            received,
            nbytes=nbytes,
            keys=keys,
            per_row=True,
        )

    def _suppress(self, request: _Request) -> bool:
        """Leave out of ``request`` erased people's events and refused events; whether any
        of its events was left out."""
        if not len(self._suppression):
            return False
        filtered, keys, dropped = self._suppression.filter(request.events, request.keys)
        assert isinstance(filtered, pa.Table)
        assert keys is not None
        request.events, request.keys = filtered, keys
        request.failed, _ = self._suppression.failed(request.failed)
        return dropped > 0


@dataclass(slots=True)
class _Request:
    """One request of a frame: its events with their keys, its refused events."""

    received: int
    nbytes: int
    events: pa.Table
    keys: tuple[U64, U64]
    failed: list[FailedRow]


def _requests(
    header: Header, events: pa.Table, keys: tuple[U64, U64], failed: pa.Table
) -> list[_Request]:
    """The frame, cut by request."""
    rows = _failed_rows(failed)
    requests = []
    start = bad = 0
    for received, count, refused, nbytes in zip(
        header.received, header.counts, header.failed, header.nbytes, strict=True
    ):
        requests.append(
            _Request(
                received,
                nbytes,
                events.slice(start, count),
                (keys[0][start : start + count], keys[1][start : start + count]),
                rows[bad : bad + refused],
            )
        )
        start += count
        bad += refused
    return requests


def _failed_rows(failed: pa.Table) -> list[FailedRow]:
    """A frame's failed events as the writer's rows (times in µs, as the collector makes
    them)."""
    if not failed.num_rows:
        return []
    columns = [
        (column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column).to_pylist()
        for column in failed.columns
    ]
    return [tuple(row) for row in zip(*columns, strict=True)]
