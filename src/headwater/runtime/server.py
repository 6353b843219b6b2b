"""``headwater up``: serve the collector on TCP and the control API on a Unix socket.

Signals are handled here rather than by uvicorn, because two servers share one
loop: SIGTERM or Ctrl-C stops accepting, lets in-flight requests finish (their
events are committed by the writer before they are answered), then drains the
writer and closes the store. A second Ctrl-C stops without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import signal
import socket
import stat
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from headwater.config.project import Project
from headwater.core.errors import ConfigError
from headwater.runtime.acceptors import Acceptors
from headwater.runtime.app import ROLES, Runtime
from headwater.runtime.client import (
    ServerInfo,
    remove_runtime_file,
    socket_path,
    write_runtime_file,
)
from headwater.runtime.control import control_app
from headwater.runtime.protocol import Limits, protocol
from headwater.runtime.workspace import (
    engine_for,
    has_warehouse,
    private_folder,
    warehouse_for,
)

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`serve`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class Listening:
    """Where the server is reachable, passed to ``on_ready``."""

    url: str
    socket: str


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _freeze_startup_objects() -> None:
    """Keep what starting the server allocated out of every later garbage collection.

    The modules, settings and app objects made so far live as long as the process, yet
    each full collection walked them all: about 100 ms with the GIL held, in whichever
    thread it fell, every 10 to 20 s under steady load. Every request waiting meanwhile
    was answered that much later, enough to set the collector's p99 acknowledgement
    latency. Frozen, they are skipped: a full collection takes about a quarter of the time.
    """
    gc.collect()
    gc.freeze()


def _socket_folder(data_dir: Path) -> Path:
    """Where a project's servers put their accept processes' sockets."""
    tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"headwater-{tag}"


def _private_socket_folder(path: Path) -> None:
    """Make ``path`` a folder only this user may enter, or check that it is one: in the
    shared temporary folder, anyone could have made it first."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    found = path.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise ConfigError(
            f"{path} is not a folder only this user may enter; the accept processes' sockets "
            "cannot go there",
            hint=f"remove {path}, then start again",
        )


def _private_unix_socket(path: Path) -> socket.socket:
    """A listening Unix socket only its owner can use from the moment it exists: its mode is
    its authentication, so there must be no moment when others may connect."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o077)
    try:
        sock.bind(str(path))
    finally:
        os.umask(previous)
    sock.listen(64)
    return sock


def refuse_collectors(project: Project) -> None:
    """A warehouse engine takes loads, not a commit per request: collectors write a hot
    store, which is offloaded into it."""
    store = project.settings.store
    if store.can_collect:
        return
    env = project.environment
    table = f"environments.{env}." if env else ""
    why = {
        "bigquery": "every commit would be a load job and two billed queries, one merge at a time",
        "spark": "one process writes it, holding the dedupe keys in its memory, so collectors "
        "cannot scale out",
    }.get(store.engine, "it takes loads, not a commit per request")
    raise ConfigError(
        f"collectors cannot write a {store.engine} store ([{table}store] engine = "
        f'"{store.engine}"): {why}',
        hint=(
            f"write events to a hot store, offloaded into {store.engine} every hour:\n"
            f"  [{table}store]\n"
            '  engine = "postgres"\n'
            '  url = "${DATABASE_URL}"\n'
            f"  [{table}warehouse]\n"
            f'  engine = "{store.engine}"\n'
            "  ... (the keys of the current store table)"
        ),
    )


def serve(
    project: Project,
    *,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[Listening], None] | None = None,
    roles: frozenset[str] = ROLES,
) -> None:
    """Run the server until SIGTERM or Ctrl-C, doing ``roles`` (default: everything)."""
    if "collect" in roles:
        refuse_collectors(project)
    settings = project.settings.server
    host = host or settings.host
    port = settings.port if port is None else port
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another with --port (or [server] port), or stop what uses it",
        ) from None
    private_folder(project.data_dir)
    engine = engine_for(project)
    warehouse = None
    try:
        # A collector alone never opens the warehouse (a Spark session, a BigQuery client),
        # unless it owns the store: then every other command comes to it.
        if has_warehouse(project) and (roles - {"collect"} or not engine.shared):
            warehouse = warehouse_for(project)
        runtime = Runtime(project, engine, roles, warehouse=warehouse)
    except BaseException:
        engine.close()
        if warehouse is not None:
            warehouse.close()
        raise
    runner: Callable[..., None] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    try:
        runner(_serve(project, runtime, sock, on_ready))
    finally:
        sock.close()


async def _serve(
    project: Project,
    runtime: Runtime,
    sock: socket.socket,
    on_ready: Callable[[Listening], None] | None,
) -> None:
    data_dir = project.data_dir
    uds = socket_path(data_dir)
    uds.unlink(missing_ok=True)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    status: dict[str, object] = {"pid": os.getpid(), "url": url}

    drain = project.settings.collector.drain_timeout_seconds
    limits = Limits.of(project.settings.server)
    accepting = project.settings.collector.accept_processes if "collect" in runtime.roles else 0
    # The accept processes' sockets, named by this server's port in a folder of the
    # project's own under the temporary folder: short paths wherever the project lives.
    sockets = _socket_folder(data_dir) if accepting else None
    http_path = (sockets or data_dir) / f"{port}.http.sock"
    frames_path = (sockets or data_dir) / f"{port}.frames.sock"
    main = _Server(
        uvicorn.Config(
            runtime,
            http=protocol(limits),
            timeout_graceful_shutdown=int(drain) or 1,
            lifespan="off",
            log_level="warning",
            log_config=None,  # its records go to the handler the command line set up
            access_log=False,
            # With accept processes, only they connect (to a socket only this user may
            # use) and they say who their client was.
            proxy_headers=bool(accepting),
            forwarded_allow_ips="*" if accepting else None,
        )
    )
    acceptors = None
    if accepting:
        acceptors = Acceptors(project, accepting, sock, runtime.writer, runtime.ingest.suppression)
        runtime.acceptors = acceptors
    # The control socket lets commands reach a store only this process may open; a
    # shared store is opened by the commands themselves, from any number of processes.
    control = _Server(
        uvicorn.Config(
            control_app(runtime.workspace.engine, status, runtime.workspace),
            lifespan="off",
            log_level="warning",
            log_config=None,  # its records go to the handler the command line set up
            access_log=False,
        )
    )
    private = not (runtime.engine.shared and runtime.workspace.engine.shared)

    draining: asyncio.Task[None] | None = None

    def finish() -> None:
        if main.should_exit:
            main.force_exit = True
        main.should_exit = True
        # Open live pages would hold the graceful shutdown until its timeout.
        if runtime.fanout is not None:
            runtime.fanout.close()

    async def drain_acceptors() -> None:
        # They finish their requests first, which this process's writer commits. Open live
        # pages end now (they would hold the accept processes' drain to its end), and new
        # connections are refused: none is started again to take them.
        assert acceptors is not None
        if runtime.fanout is not None:
            runtime.fanout.close()
        sock.close()
        await acceptors.stop(drain + 5)
        finish()

    def stop() -> None:
        nonlocal draining
        if acceptors is not None and draining is None:
            draining = asyncio.get_running_loop().create_task(drain_acceptors())
            return
        if acceptors is not None:  # a second signal: stop now
            acceptors.kill()
        finish()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    runtime.start()
    control_task = None
    if private:
        control_task = asyncio.create_task(control.serve(sockets=[_private_unix_socket(uds)]))
    if acceptors is not None:
        assert sockets is not None
        _private_socket_folder(sockets)
        for path in (http_path, frames_path):
            path.unlink(missing_ok=True)  # left by a server of this port that was killed
        main_task = asyncio.create_task(main.serve(sockets=[_private_unix_socket(http_path)]))
    else:
        main_task = asyncio.create_task(main.serve(sockets=[sock]))
    supervising: asyncio.Task[None] | None = None
    background = asyncio.gather(
        runtime.schedule(), runtime.deliver(), runtime.publish_floor(), runtime.suppress()
    )
    try:
        while not (main.started and (control.started or not private)):
            if main_task.done() or (control_task is not None and control_task.done()):
                break
            await asyncio.sleep(0.01)
        if acceptors is not None and main.started and draining is None:
            await acceptors.start(_private_unix_socket(frames_path), http_path)
            supervising = asyncio.create_task(acceptors.supervise())
        stopped = draining is not None or main.should_exit
        if main.started and (control.started or not private) and not stopped:
            _freeze_startup_objects()
            # Said first, then the runtime file: whoever sees the file finds the words.
            if on_ready is not None:
                on_ready(Listening(url=url, socket=str(uds) if private else ""))
            if private:
                info = ServerInfo(pid=os.getpid(), url=url, socket=str(uds))
                write_runtime_file(data_dir, info)
        await main_task
    finally:
        if private:
            remove_runtime_file(data_dir)
        if acceptors is not None:
            acceptors.kill()
            if supervising is not None:
                supervising.cancel()
        if sockets is not None:
            for path in (http_path, frames_path):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another server of the project may use it
                sockets.rmdir()
        runtime.stop()
        # A pass in progress stops after its current interval (or webhook batch),
        # which must end before the store closes under it.
        try:
            await asyncio.wait_for(asyncio.shield(background), drain)
            finished = True
        except TimeoutError:
            log.warning("a pipeline run outlasted the drain timeout; its interval stays undone")
            finished = False
        if control_task is not None:
            control.should_exit = True
            await control_task
        # Requests still waiting were answered by now; commit anything left.
        if finished:
            await asyncio.to_thread(runtime.close)
        else:
            runtime.writer.close(drain)
        uds.unlink(missing_ok=True)
