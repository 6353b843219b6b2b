"""One process, one store: collector, read API, scheduler, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from headwater.collect.app import IngestApp
from headwater.collect.auth import KeyRing
from headwater.collect.metrics import CollectorMetrics
from headwater.collect.suppress import Suppression
from headwater.collect.workers import DecodePool
from headwater.collect.writer import Writer
from headwater.config.project import Project
from headwater.config.watch import ProjectWatch
from headwater.core.clock import from_us, now_us, parse_duration, utc_now
from headwater.core.errors import HeadwaterError, TransientError
from headwater.core.secrets import environment_value
from headwater.dashboard.tail import Fanout
from headwater.deliver.settings import PostgresSink
from headwater.runtime import failed
from headwater.runtime.metrics import DeliveryCounters, StateMetrics
from headwater.runtime.workspace import Workspace, state_for
from headwater.serve.catalog import Served
from headwater.serve.query import Reader
from headwater.store.engine import Engine, collectors_floor

if TYPE_CHECKING:
    from headwater.runtime.acceptors import Acceptors
    from headwater.store.postgres.reader import PostgresReader

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: What one process can do; ``headwater up`` does all of it.
ROLES = frozenset({"collect", "api", "schedule", "deliver"})
#: Served by the process itself, before the dashboard (which has everything else at ``/``).
ADMIN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
FLOOR_EVERY_SECONDS = 1.0
#: How often a collector looks whether the suppression list changed.
SUPPRESSION_EVERY_SECONDS = 2.0
#: The admins' erasure API, apart from the consumers' read API.
ERASURES = "/api/v1/erasures"


class SuppressionUnavailable(TransientError):
    """The list of erased people could not be read before the collector's first request."""


class Runtime:
    """The parts of a running Headwater: store, writer, pipelines, read API, one HTTP app.

    ``roles`` choose what this process does: ``collect`` (the tracking API and
    its writer), ``api`` (the read API), ``schedule`` (due pipelines) and
    ``deliver`` (owed deliveries). Separate processes on a shared store split
    them; ``headwater up`` has them all.
    """

    def __init__(
        self,
        project: Project,
        engine: Engine,
        roles: frozenset[str] = ROLES,
        *,
        warehouse: Engine | None = None,
    ) -> None:
        """``engine`` is the store collectors write; ``warehouse``, when given, is where
        pipelines run and the read API reads, fed from ``engine`` by offloads."""
        settings = project.settings.collector
        self.project = project
        self.watch = ProjectWatch(project)
        self.engine = engine
        self.roles = roles
        self.collector_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.registry = CollectorRegistry()
        self.metrics = CollectorMetrics(self.registry)
        self._broken_gauge = Gauge(
            "headwater_pipeline_broken",
            "1 for each pipeline that does not load (reason does_not_load) or reads one that "
            "does not (reason waits)",
            ["pipeline", "reason"],
            registry=self.registry,
        )
        window = parse_duration(settings.dedupe_window)
        self.writer = Writer(
            engine,
            self.metrics,
            dedupe_window_us=window // timedelta(microseconds=1),
            queue_max_events=settings.queue_max_events,
            queue_max_bytes=settings.queue_max_bytes,
            commit_max_events=settings.commit_max_events,
            commit_max_bytes=settings.commit_max_bytes,
            retry_after=settings.retry_after_seconds,
        )
        processes = settings.validate_processes
        pool = None
        if processes > 0 and "collect" in roles:
            pool = DecodePool(
                processes, max_event_bytes=settings.max_event_bytes, max_depth=settings.max_depth
            )
        self.ingest = IngestApp(
            KeyRing(self.watch.derived(Project.source_keys)),
            settings,
            self.writer,
            pool,
            rules=self.watch.derived(Project.source_rules),
        )
        self.ingest.suppression = Suppression(self.registry)
        #: Set by the server when accept processes answer the tracking API.
        self.acceptors: Acceptors | None = None
        self._suppression_stamp: tuple[object, ...] | None = None
        self.workspace = Workspace(
            self.watch, warehouse or engine, state_for(project), store=engine, floor=self._floor
        )
        if "collect" in roles:
            # Replayed failed events join the collector's group commit: one writer.
            self.workspace.replay_commit = failed.through_writer(self.writer)
        self.deliveries = DeliveryCounters(self.registry)
        self.workspace.deliverer.on_result = self.deliveries.observe
        pipelines = self.workspace.pipelines
        offloader = self.workspace.offloader
        self.registry.register(
            StateMetrics(
                self.workspace.state,
                self.workspace.graph,
                lambda: min(pipelines.floor(), pipelines.clock()),
                offload_lag=None if offloader is None else offloader.lag_seconds,
            )
        )
        self.stopping = threading.Event()
        self._floor_wait = threading.Event()
        self._readers: dict[str, tuple[PostgresSink, PostgresReader]] = {}
        # Readers whose sink's settings changed: a dataset cached a few seconds may still
        # read through one, so they are closed when the process stops.
        self._retired: list[PostgresReader] = []
        self._readers_lock = threading.Lock()
        self._deliver_now = threading.Event()
        self.workspace.pipelines.on_published = self._deliver_now.set
        # The read API (FastAPI, pydantic: about 30 MB) is built at its first request, so a
        # collector that nobody reads from never holds it.
        self._api: ASGIApp | None = None
        self._erasures: ASGIApp | None = None
        self._api_lock = threading.Lock()
        # Committed events for the dashboard's live tail (nothing is done while nobody looks).
        self.fanout = Fanout() if "collect" in roles else None
        if self.fanout is not None:
            self.writer.on_commit = self.fanout.publish
        self._dashboard: ASGIApp | None = None
        self.admin = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
            ]
        )

    def start(self) -> None:
        if "collect" not in self.roles:
            return
        # Before the first request: an erased person's events must never be taken for lack
        # of the list. Later looks that fail keep the last list (see suppress).
        try:
            self.refresh_suppression()
        except Exception as exc:
            raise SuppressionUnavailable(
                f"cannot read the suppression list of erased people from the metadata "
                f"database ({exc}); the collector does not start without it",
                hint="check that the metadata database is reachable and migrated "
                "(`headwater migrate`), then start again",
            ) from exc
        if self.engine.floors is not None:
            # Before the first request: runs elsewhere must wait for what arrives here.
            self.engine.floors.publish(self.collector_id, now_us())
        self.writer.start()

    def arrival_floor(self) -> int:
        """Every event that arrived at this server before this time (µs) is committed or
        refused: requests this process answers, and its accept processes' requests."""
        floor = self.ingest.arrival_floor()
        if self.acceptors is not None:
            theirs = self.acceptors.floor()
            if theirs is not None:
                floor = min(floor, theirs)
        return floor

    def _floor(self) -> datetime:
        """Events received before this time are committed: this process's collector, and on a
        shared store every live collector's."""
        floor = self.arrival_floor() if "collect" in self.roles else now_us()
        return collectors_floor(self.engine, from_us(floor))

    async def publish_floor(self) -> None:
        """On a shared store, tell other processes this collector's floor every second."""
        floors = self.engine.floors
        if "collect" not in self.roles or floors is None:
            return
        while not self.stopping.is_set():
            try:
                floor = self.arrival_floor()
                await asyncio.to_thread(floors.publish, self.collector_id, floor)
            except HeadwaterError as exc:
                log.error("could not publish the arrival floor: %s", exc)
            except Exception:  # keep publishing: a silent collector fences its own commits
                log.exception("could not publish the arrival floor")
            await asyncio.to_thread(self._floor_wait.wait, FLOOR_EVERY_SECONDS)

    def stop(self) -> None:
        """Ask the scheduler and the deliverer to stop after the step they are on."""
        self.stopping.set()
        self._deliver_now.set()
        self._floor_wait.set()

    def close(self) -> None:
        """Commit and answer what is queued, then release the store."""
        self.writer.close(self.project.settings.collector.drain_timeout_seconds)
        self.ingest.close()
        if "collect" in self.roles and self.engine.floors is not None:
            try:
                self.engine.floors.retire(self.collector_id)
            except HeadwaterError as exc:
                log.warning("could not retire the arrival floor: %s", exc)
        for _, reader in self._readers.values():
            reader.close()
        for reader in self._retired:
            reader.close()
        self.workspace.close()

    async def schedule(self) -> None:
        """Run due pipelines every tick until :attr:`stopping` is set.

        Each pass runs in a worker thread, so the collector keeps answering; a
        broken pipeline file is logged and retried at the next tick.
        """
        tick = self.project.settings.pipelines.tick_seconds
        pipelines = self.workspace.pipelines
        while "schedule" in self.roles and not self.stopping.is_set():
            try:
                # Whole intervals of arrival into the warehouse first: they are what the
                # pipelines by arrival wait for.
                await asyncio.to_thread(self.workspace.offload, self.stopping.is_set)
            except HeadwaterError as exc:
                log.error("offload: %s", exc)
            except Exception:
                log.exception("offload failed")
            try:
                # A few bounded batches per table: a backlog of old rows takes several
                # ticks, and no pass holds the store for long.
                await asyncio.to_thread(self.workspace.retain, self.stopping.is_set)
            except HeadwaterError as exc:
                log.error("retention: %s", exc)
            except Exception:
                log.exception("retention failed")
            try:
                await asyncio.to_thread(pipelines.run_due, should_stop=self.stopping.is_set)
            except HeadwaterError as exc:
                log.error("scheduler: %s", exc)
            except Exception:
                log.exception("scheduler pass failed")
            waited = 0.0
            while waited < tick and not self.stopping.is_set():
                await asyncio.sleep(0.1)
                waited += 0.1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/v1/") and "collect" in self.roles:
            await self.ingest(scope, receive, send)
        elif scope["type"] == "http" and path.startswith(ERASURES) and "api" in self.roles:
            await self.erasures()(scope, receive, send)
        elif scope["type"] == "http" and path.startswith("/api/") and "api" in self.roles:
            await self.api()(scope, receive, send)
        elif path in ADMIN_PATHS or "api" not in self.roles:
            await self.admin(scope, receive, send)
        else:
            await self.dashboard()(scope, receive, send)

    def api(self) -> ASGIApp:
        """The read API, built once, at its first request."""
        with self._api_lock:
            if self._api is None:
                from headwater.serve.app import api_app
                from headwater.serve.auth import ConsumerRing
                from headwater.serve.catalog import DatasetCatalog

                engine = self.workspace.engine
                self._api = api_app(
                    ConsumerRing(self.watch.derived(Project.consumer_tokens)),
                    DatasetCatalog(engine, self._served, reader=_reader_of(engine)),
                    self.project.settings.api,
                )
            return self._api

    def dashboard(self) -> ASGIApp:
        """The dashboard at ``/``, built once, at its first request (with the read API)."""
        with self._api_lock:
            if self._dashboard is None:
                from headwater.dashboard.app import dashboard_app
                from headwater.runtime import operations

                workspace = self.workspace
                self._dashboard = dashboard_app(
                    lambda name, args: operations.call(workspace, name, args),
                    workspace.state.admin_actions,
                    self.watch.derived(Project.admin_tokens),
                    self.registry,
                    self.fanout,
                    self.roles,
                    workspace.state.session_secret.get,
                )
            return self._dashboard

    def erasures(self) -> ASGIApp:
        """The admins' erasure API, built at its first request."""
        with self._api_lock:
            if self._erasures is None:
                from headwater.runtime import erasure
                from headwater.runtime.erasure_api import erasure_app
                from headwater.serve.auth import AdminRing

                workspace = self.workspace

                def erase(ids: dict[str, list[str]], admin: str) -> dict[str, Any]:
                    done = erasure.erase(workspace, ids, f"admin:{admin}")
                    self.refresh_suppression()
                    return done

                self._erasures = erasure_app(
                    AdminRing(self.watch.derived(Project.admin_tokens)),
                    erase,
                    lambda erasure_id: erasure.receipt(workspace, erasure_id),
                )
            return self._erasures

    def refresh_suppression(self) -> None:
        """Take the suppression list again if it changed, and count what was dropped: one
        cheap query, every few seconds, whatever the traffic."""
        erasures = self.workspace.state.erasures
        erasures.count_dropped(self.ingest.suppression.take_dropped(), utc_now())
        stamp = erasures.stamp()
        if stamp != self._suppression_stamp:
            self.ingest.suppression.replace(erasures.suppressed())
            self._suppression_stamp = stamp

    async def suppress(self) -> None:
        """Keep the collector's suppression list current until :attr:`stopping` is set."""
        while "collect" in self.roles and not self.stopping.is_set():
            try:
                await asyncio.to_thread(self.refresh_suppression)
            except HeadwaterError as exc:
                log.error("suppression list: %s", exc)
            except Exception:
                log.exception("could not read the suppression list")
            await asyncio.to_thread(self._floor_wait.wait, SUPPRESSION_EVERY_SECONDS)
        if "collect" in self.roles:
            # What was dropped since the last look is counted before the process ends.
            await asyncio.to_thread(self._count_dropped)

    def _count_dropped(self) -> None:
        try:
            self.workspace.state.erasures.count_dropped(
                self.ingest.suppression.take_dropped(), utc_now()
            )
        except Exception:
            log.exception("could not count the suppressed events")

    async def deliver(self) -> None:
        """Deliver owed intervals until :attr:`stopping` is set.

        Woken at once when a run publishes an interval with sinks, and every
        ``[delivery] poll_seconds`` for retries that have come due.
        """
        poll = self.project.settings.delivery.poll_seconds
        while "deliver" in self.roles and not self.stopping.is_set():
            self._deliver_now.clear()
            try:
                await asyncio.to_thread(self.workspace.deliver, self.stopping.is_set)
            except HeadwaterError as exc:
                log.error("delivery: %s", exc)
            except Exception:
                log.exception("delivery pass failed")
            try:
                # Erasures a sink still owes are retried like deliveries, when due.
                await asyncio.to_thread(self._erase_owed)
            except HeadwaterError as exc:
                log.error("erasure: %s", exc)
            except Exception:
                log.exception("erasure pass failed")
            await asyncio.to_thread(self._deliver_now.wait, poll)

    def _erase_owed(self) -> None:
        from headwater.runtime import erasure

        erasure.resume(self.workspace, due_only=True, should_stop=self.stopping.is_set)

    def _served(self) -> dict[str, Served]:
        """What the read API can serve: every pipeline's output, and the event tables.

        A pipeline delivered to a PostgreSQL sink with ``serve = true`` is read
        from there (by its key, the table's primary key).
        """
        served = {"events": Served(("source", "message_id")), "failed_events": Served(("id",))}
        try:
            outputs = self.workspace.graph().outputs()
        except HeadwaterError as exc:
            log.warning("read API: pipelines do not load (%s); serving the event tables", exc)
            return served
        sinks = self.workspace.project.settings.sinks
        for pipeline in outputs.values():
            key = tuple(pipeline.header.key)
            served[pipeline.name] = Served(key)
            for name in pipeline.header.sinks:
                sink = sinks.get(name)
                if isinstance(sink, PostgresSink) and sink.serve:
                    table = (sink.schema, f"{sink.table_prefix}{pipeline.name}")
                    # A table of each key's latest row is looked up by that key.
                    by = tuple(sink.latest.get(pipeline.name, key))
                    served[pipeline.name] = Served(by, self._reader(name, sink), table)
                    break
        return served

    def _reader(self, name: str, sink: PostgresSink) -> PostgresReader:
        """A pool on the sink's database, kept while its settings stay the same (asked for
        from the read API's worker threads)."""
        with self._readers_lock:
            current = self._readers.get(name)
            if current is not None and current[0] == sink:
                return current[1]
            if current is not None:
                self._retired.append(current[1])
            from headwater.store.postgres.reader import PostgresReader

            url = environment_value(sink.url, where=f"[sinks.{name}] url")
            reader = PostgresReader(name, url, sink.pool_size)
            self._readers[name] = (sink, reader)
            return reader

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def _readyz(self, request: Request) -> Response:
        problems = []
        pipelines = await asyncio.to_thread(self._pipeline_health)
        if "collect" not in self.roles:
            return JSONResponse({"status": "ready", "roles": sorted(self.roles), **pipelines})
        if not self.writer.accepting:
            problems.append("the writer is not accepting events (shutting down)")
        if not self.writer.healthy:
            problems.append("the last commit to the store failed")
        if self.writer.queued >= self.project.settings.collector.queue_max_events:
            problems.append("the writer's queue is full")
        if problems:
            return JSONResponse({"status": "unready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", **pipelines})

    def _pipeline_health(self) -> dict[str, object]:
        """Pipeline files that do not load. They stop only themselves and their readers, so
        the process stays ready (a collector taken out of rotation would lose events)."""
        try:
            broken = self.workspace.graph().broken
        except HeadwaterError as exc:
            return {"pipelines": f"do not load: {exc}"}
        self._broken_gauge.clear()
        for name, item in broken.items():
            self._broken_gauge.labels(pipeline=name, reason="waits" if item.blocked_by else
                                      "does_not_load").set(1)  # fmt: skip
        if not broken:
            return {}
        return {
            "pipelines_broken": {
                name: {"error": str(item.error), "waits_for": item.blocked_by}
                for name, item in sorted(broken.items())
            }
        }

    async def _metrics(self, request: Request) -> Response:
        # Pipeline and delivery metrics read the run state: off the event loop.
        await asyncio.to_thread(self._pipeline_health)
        body = await asyncio.to_thread(generate_latest, self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _reader_of(engine: Engine) -> Reader | None:
    """How the read API reads the engine's tables: the embedded store through its reader,
    which keeps a cursor per thread; other engines through themselves."""
    from headwater.store.duckdb import DuckDBEngine

    return engine.reader() if isinstance(engine, DuckDBEngine) else None
