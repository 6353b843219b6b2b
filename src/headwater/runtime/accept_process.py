"""An accept process: ``python -m headwater.runtime.accept_process``, started by the server.

With ``[collector] accept_processes = N``, N of these share the server's listening
socket (inherited, so the kernel hands each new connection to one of them). Each
answers the tracking API itself (headers, key, body, validation, Arrow, dedupe
keys: all the per-event work) and sends the events to the process that owns the
store in frames (``collect/forward.py``); every other path goes to that process's
HTTP socket through :class:`~headwater.collect.forward.Proxy`. It holds no store
and no state: if it dies, the requests it had are unanswered (the clients send
them again) and the server starts another; if the owner dies, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib.abc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from headwater.collect.app import IngestApp
from headwater.collect.auth import KeyRing
from headwater.collect.forward import Forwarder, Proxy
from headwater.config.project import Project, load_project
from headwater.config.watch import ProjectWatch
from headwater.runtime.protocol import Limits, protocol

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headwater.runtime.accept_process")
    parser.add_argument("root", type=Path, help="the project's folder")
    parser.add_argument("--env", default=None)
    parser.add_argument("--fd", type=int, required=True, help="the listening socket")
    parser.add_argument("--frames", type=Path, required=True, help="the owner's frame socket")
    parser.add_argument("--http", type=Path, required=True, help="the owner's HTTP socket")
    parser.add_argument("--parent", type=int, required=True, help="the owner's process id")
    args = parser.parse_args(argv)
    sys.meta_path.insert(0, _NoPandas())
    _die_with_parent()
    if os.getppid() != args.parent:
        return 1  # the owner died before this process could ask to die with it
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s accept[%(process)d] %(name)s: %(message)s"
    )
    project = load_project(args.root, args.env)
    sock = socket.socket(fileno=args.fd)
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    runner(_serve(project, sock, args.frames, args.http))
    return 0


async def _serve(project: Project, sock: socket.socket, frames: Path, http: Path) -> None:
    settings = project.settings.collector
    watch = ProjectWatch(project)
    server: uvicorn.Server | None = None

    def lost() -> None:
        # Nothing can be stored without the owner: stop taking requests at once.
        if server is not None:
            server.should_exit = server.force_exit = True

    forwarder = Forwarder(
        frames,
        retry_after=settings.retry_after_seconds,
        queue_max_events=settings.queue_max_events,
        queue_max_bytes=settings.queue_max_bytes,
        on_lost=lost,
        frame_max_events=settings.commit_max_events,
        frame_max_bytes=settings.commit_max_bytes,
    )
    ingest = IngestApp(
        KeyRing(watch.derived(Project.source_keys)),
        settings,
        forwarder,
        rules=watch.derived(Project.source_rules),
    )
    # What the owner's floor waits for includes requests still being read or validated.
    forwarder.arrival_floor = ingest.arrival_floor
    proxy = Proxy(http)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await ingest(scope, receive, send)
        else:
            await proxy(scope, receive, send)

    limits = Limits.of(project.settings.server)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http=protocol(limits),
            timeout_graceful_shutdown=int(settings.drain_timeout_seconds) or 1,
            lifespan="off",
            log_level="warning",
            access_log=False,
            # The client's own X-Forwarded-* headers are not believed (the proxy says
            # who the client was), as the one-process server does not believe them.
            proxy_headers=False,
        )
    )
    await forwarder.connect()
    # As the server does: what starting made is left out of later full collections.
    gc.collect()
    gc.freeze()
    try:
        await server.serve(sockets=[sock])
    finally:
        await forwarder.close()
        await proxy.close()
        ingest.close()


class _NoPandas(importlib.abc.MetaPathFinder):
    """Refuses pandas. pyarrow imports it at its first conversion of anything when it is
    installed (about 50 MB of memory, and a quarter of a second), to recognize pandas
    objects; an accept process converts none and runs no one's code, so pyarrow is told
    pandas is missing (it catches the ImportError) and the process stays without it."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name} is not used in an accept process")


def _die_with_parent() -> None:
    """Linux: be killed when the server that started this process dies, however it dies
    (a SIGKILL leaves no time to stop anyone), so no orphan keeps its port."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
